"""Mutual-information registration of a moving image onto a fixed one (SimpleITK).

Rigid (Euler), affine and deformable B-spline (after affine) alignment, all driven by Mattes
mutual information (Mattes et al., "PET-CT image registration in the chest using free-form
deformations", IEEE TMI 22(1), 2003) in a multi-resolution pyramid (shrink and smooth per
level), sampling a fraction of the fixed image's voxels (at most ``max_samples``) at random
physical positions with a fixed seed, from a geometry- or moments-centred start (ITK's
``CenteredTransformInitializer``). B-spline free-form deformation follows Rueckert et al.,
"Nonrigid registration using free-form deformations: application to breast MR images",
IEEE TMI 18(8), 1999.

The transform maps points of the fixed image's physical space to the moving image's (ITK's
resampling convention): ``sitk.Resample(moving, fixed, transform)`` aligns the moving image
onto the fixed one. A result whose metric did not improve, or that leaves too little of the
fixed image inside the moving one, raises :class:`~MedFusionLib.errors.RegistrationError`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from .colour import luminance
from .errors import GeometryError, InputError, RegistrationError
from .image import Image
from .io import short_reason
from .preprocess import check_finite_and_varying
from .validation import (
    check_choice,
    check_fraction,
    check_image,
    check_int,
    check_name,
    check_seed,
    check_transform,
    gray_voxels,
)

TRANSFORM_TYPES = ("rigid", "affine", "bspline")
INITIALISATIONS = ("geometry", "moments")
DEFAULT_SEED = 20261124
MIN_SEED = 1  # ITK reads a seed of 0 as "seed from the wall clock": results would not repeat
DEFAULT_MAX_SAMPLES = 100_000  # at full resolution; a level shrunk by s samples at most 1/s of it
MIN_SAMPLES = 20_000  # per pyramid level, or every voxel of a smaller level
GRADIENT_IMAGE_MAX_VOXELS = 2_000_000  # above this, metric gradients at sample points only
BSPLINE_ITERATIONS = 20  # per level; L-BFGS-B on a coarse (40 mm) control grid converges early
MIN_OVERLAP = 0.25  # of the fixed image's corners-box volume that must map inside the moving image


@dataclass(frozen=True)
class RegistrationResult:
    """What a registration produced and how it went."""

    transform: sitk.Transform
    type: str
    metric_initial: float
    metric_final: float
    iterations_per_level: list[int]
    seconds: float
    overlap: float
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready record (Mattes MI is reported as ITK does: negative, lower is better)."""
        return {
            "type": self.type,
            "metric": "Mattes mutual information (ITK sign: lower is better)",
            "metric_initial": round(self.metric_initial, 6),
            "metric_final": round(self.metric_final, 6),
            "iterations_per_level": self.iterations_per_level,
            "seconds": round(self.seconds, 3),
            "overlap": round(self.overlap, 4),
            "warnings": self.warnings,
        }


def _as_float_sitk(image: Image) -> sitk.Image:
    gray = luminance(image) if image.is_rgb else image
    return sitk.Cast(gray.to_sitk(), sitk.sitkFloat32)


def _levels_for(image: sitk.Image) -> tuple[list[int], list[float]]:
    """Shrink factors and smoothing sigmas (mm): 4-2-1 where the image is large enough."""
    smallest = min(image.GetSize())
    shrinks = [s for s in (4, 2, 1) if smallest // s >= 8] or [1]
    spacing = max(image.GetSpacing())
    return shrinks, [0.5 * spacing * (s - 1) if s > 1 else 0.0 for s in shrinks]


def _corners(image: sitk.Image) -> list[tuple[float, ...]]:
    size = image.GetSize()
    return [
        image.TransformContinuousIndexToPhysicalPoint(
            [(-0.5 if c == 0 else n - 0.5) for c, n in zip(corner, size, strict=True)]
        )
        for corner in itertools.product((0, 1), repeat=image.GetDimension())
    ]


def overlap_fraction(
    fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, samples: int = 4096
) -> float:
    """Fraction of points spread over the fixed image that the transform maps inside the moving image."""
    rng = np.random.default_rng(0)
    size = np.array(fixed.GetSize(), dtype=float)
    inside = 0
    moving_size = np.array(moving.GetSize(), dtype=float)
    for index in rng.uniform(0.0, 1.0, (samples, fixed.GetDimension())) * size - 0.5:
        point = transform.TransformPoint(fixed.TransformContinuousIndexToPhysicalPoint(index.tolist()))
        continuous = np.array(moving.TransformPhysicalPointToContinuousIndex(point))
        inside += bool(np.all(continuous >= -0.5) and np.all(continuous <= moving_size - 0.5))
    return inside / samples


def _check_boxes_overlap(fixed: sitk.Image, moving: sitk.Image, names: tuple[str, str]) -> None:
    fixed_pts, moving_pts = np.array(_corners(fixed)), np.array(_corners(moving))
    low = np.maximum(fixed_pts.min(axis=0), moving_pts.min(axis=0))
    high = np.minimum(fixed_pts.max(axis=0), moving_pts.max(axis=0))
    if np.any(high <= low):
        raise GeometryError(
            f"{names[1]} and {names[0]} do not overlap in world space; give an initial transform "
            "or check the images' origins"
        )


def _base_transform(dimension: int) -> sitk.Transform:
    return sitk.Euler3DTransform() if dimension == 3 else sitk.Euler2DTransform()


def _method(
    fixed: sitk.Image,
    *,
    sampling_fraction: float,
    max_samples: int,
    seed: int,
    fixed_mask: sitk.Image | None,
    moving_mask: sitk.Image | None,
    bins: int,
) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # Smoothed gradient images make smooth PET/SPECT pairs more accurate (0.93 vs 1.06 mm mean
    # TRE for SPM SPECT to T1) but cost seconds per level on large volumes, where gradients at
    # the sample points alone do as well (a 512x512x48 CT: 17 s -> 9 s; a 1 mm brain: 7.2 s -> 6.4 s).
    small = float(np.prod(fixed.GetSize())) <= GRADIENT_IMAGE_MAX_VOXELS
    method.SetMetricUseFixedImageGradientFilter(small)
    method.SetMetricUseMovingImageGradientFilter(small)
    shrinks, sigmas = _levels_for(fixed)
    # A level shrunk by s samples 1/s as many points as the full image (a larger fraction of its
    # fewer voxels, so the coarse metric is not too noisy), at least MIN_SAMPLES (small 2-D
    # slices), and at most max_samples / s: the cap keeps a 1 mm volume (7 M voxels) about as
    # cheap per iteration as a 2 mm one. Samples outside a fixed mask are dropped, so a mask
    # raises the fraction drawn.
    voxels = float(np.prod(fixed.GetSize()))
    dimension = fixed.GetDimension()
    kept = 1.0 if fixed_mask is None else max(float(sitk.GetArrayViewFromImage(fixed_mask).mean()), 1e-3)
    fractions = []
    for s in shrinks:
        level_voxels = voxels / s**dimension
        wanted = max(sampling_fraction * voxels / s, min(level_voxels, MIN_SAMPLES))
        fractions.append(min(1.0, min(wanted, max_samples / s) / (level_voxels * kept)))
    method.SetMetricSamplingPercentagePerLevel(fractions, seed)
    method.SetInterpolator(sitk.sitkLinear)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    if moving_mask is not None:
        method.SetMetricMovingMask(moving_mask)
    method.SetShrinkFactorsPerLevel(shrinks)
    method.SetSmoothingSigmasPerLevel(sigmas)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetNumberOfThreads(os.cpu_count() or 1)
    return method


def _run(
    method: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image
) -> tuple[sitk.Transform, list[int]]:
    iterations: list[int] = []
    method.AddCommand(sitk.sitkMultiResolutionIterationEvent, lambda: iterations.append(0))

    def count() -> None:
        if iterations:
            iterations[-1] += 1

    method.AddCommand(sitk.sitkIterationEvent, count)
    return method.Execute(fixed, moving), iterations


@contextlib.contextmanager
def _itk_failures_as_errors(names: tuple[str, str]) -> Iterator[None]:
    """ITK's exceptions (e.g. every sample mapping outside the moving image) as one-line errors."""
    try:
        yield
    except RuntimeError as error:
        raise RegistrationError(
            f"registration of {names[1]} to {names[0]} failed: {short_reason(error)}"
        ) from None


def _unwrap(transform: sitk.Transform) -> sitk.Transform:
    """The single transform inside a one-element composite (what Slicer and readers expect)."""
    if transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        if composite.GetNumberOfTransforms() == 1:
            return composite.GetNthTransform(0).Downcast()
    return transform.Downcast() if hasattr(transform, "Downcast") else transform


def _mask(mask: Image | None) -> sitk.Image | None:
    if mask is None:
        return None
    return sitk.Cast(mask.to_sitk() > 0, sitk.sitkUInt8)


def _check_mask(mask: Any, *, ndim: int, name: str) -> None:
    """``None`` or a gray image of ``ndim`` dimensions with at least one non-zero voxel."""
    if mask is None:
        return
    check_image(mask, name=name)
    if mask.is_rgb or mask.ndim != ndim:
        raise InputError(f"{name} must be a {ndim}-D gray image like the image it masks")
    if not np.any(mask.array > 0):
        raise InputError(f"{name} has no non-zero voxel: it would mask out every sample")


def _check_arguments(fixed: Any, moving: Any, options: dict[str, Any]) -> None:
    """Every argument of :func:`register`, in the order a user would fix them (see there)."""
    name_fixed = check_name(options["name_fixed"], name="name_fixed")
    name_moving = check_name(options["name_moving"], name="name_moving")
    check_choice(options["type"], TRANSFORM_TYPES, name="registration type")
    check_choice(options["initialisation"], INITIALISATIONS, name="initialisation")
    check_fraction(options["sampling_fraction"], name="sampling_fraction")
    check_int(options["max_samples"], name="max_samples", low=1000)
    check_int(options["histogram_bins"], name="histogram_bins", low=8, high=256)
    check_seed(options["seed"], name="seed", low=MIN_SEED)
    check_image(fixed, name=name_fixed)
    check_image(moving, name=name_moving)
    if fixed.ndim != moving.ndim:
        raise GeometryError(
            f"cannot register a {moving.ndim}-D {name_moving} to a {fixed.ndim}-D {name_fixed}"
        )
    check_transform(options["initial_transform"], ndim=fixed.ndim, name="initial_transform")
    _check_mask(options["fixed_mask"], ndim=fixed.ndim, name="fixed_mask")
    _check_mask(options["moving_mask"], ndim=moving.ndim, name="moving_mask")
    for image, name in ((fixed, name_fixed), (moving, name_moving)):  # on its own grid
        check_finite_and_varying(gray_voxels(image, name=name), name=name, purpose="register")


def register(
    fixed: Image,
    moving: Image,
    *,
    type: str = "rigid",
    initial_transform: sitk.Transform | None = None,
    initialisation: str = "geometry",
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
    sampling_fraction: float = 0.1,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    histogram_bins: int = 50,
    seed: int = DEFAULT_SEED,
    name_fixed: str = "fixed",
    name_moving: str = "moving",
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed``; see the module docstring for the method.

    Args:
        fixed, moving: 2-D or 3-D images (RGB uses its luminance), any spacing and direction.
        type: ``"rigid"``, ``"affine"`` (rigid first) or ``"bspline"`` (affine first, then a
            B-spline with control points about 40 mm apart).
        initial_transform: a starting transform (fixed to moving points); else a centred one.
        initialisation: ``"geometry"`` (image centres) or ``"moments"`` (centres of mass).
        fixed_mask, moving_mask: images on the fixed / moving grids; non-zero voxels are used.
        sampling_fraction: fraction of fixed voxels sampled per iteration (0 < f <= 1).
        max_samples: at most this many samples per pyramid level (at least 1000).
        histogram_bins: Mattes MI histogram bins.
        seed: random sampling seed in ``1..2**32 - 1`` (the same seed gives the same result on
            one machine; ITK would read 0 as "seed from the clock").
        name_fixed, name_moving: how errors name the images.

    Raises:
        ParameterError: unknown type or initialisation, out-of-range options, an initial
            transform of another dimension.
        InputError: not an Image, unusable voxels, an image without finite voxels or constant
            (checked on its own grid), an empty or mismatched mask.
        GeometryError: unusable geometry, 2-D with 3-D, no overlap.
        RegistrationError: the metric did not improve, or the result leaves the field of view.
    """
    _check_arguments(
        fixed,
        moving,
        {
            "type": type,
            "initial_transform": initial_transform,
            "initialisation": initialisation,
            "fixed_mask": fixed_mask,
            "moving_mask": moving_mask,
            "sampling_fraction": sampling_fraction,
            "max_samples": max_samples,
            "histogram_bins": histogram_bins,
            "seed": seed,
            "name_fixed": name_fixed,
            "name_moving": name_moving,
        },
    )
    name_fixed, name_moving = str(name_fixed), str(name_moving)
    sampling_fraction, max_samples = float(sampling_fraction), int(max_samples)
    histogram_bins, seed = int(histogram_bins), int(seed)
    start = time.perf_counter()
    fixed_itk, moving_itk = _as_float_sitk(fixed), _as_float_sitk(moving)
    names = (name_fixed, name_moving)
    options = {
        "sampling_fraction": sampling_fraction,
        "max_samples": max_samples,
        "seed": seed,
        "fixed_mask": _mask(fixed_mask),
        "moving_mask": _mask(moving_mask),
        "bins": histogram_bins,
    }
    if initial_transform is None:
        _check_boxes_overlap(fixed_itk, moving_itk, names)
        mode = (
            sitk.CenteredTransformInitializerFilter.GEOMETRY
            if initialisation == "geometry"
            else sitk.CenteredTransformInitializerFilter.MOMENTS
        )
        initial_transform = sitk.CenteredTransformInitializer(
            fixed_itk, moving_itk, _base_transform(fixed.ndim), mode
        )

    with _itk_failures_as_errors(names):
        transform, iterations, metric_initial, metric_final = _optimise(
            fixed_itk, moving_itk, initial_transform, type=type, options=options
        )
    overlap = overlap_fraction(fixed_itk, moving_itk, transform)
    warnings: list[str] = []
    if overlap < MIN_OVERLAP:
        raise RegistrationError(
            f"registration of {name_moving} to {name_fixed} failed: only {overlap:.0%} of {name_fixed} maps inside "
            f"{name_moving} (it covers too little of {name_fixed}, or the transform moved it out of the field of view)"
        )
    if not metric_final < metric_initial:
        raise RegistrationError(
            f"registration of {name_moving} to {name_fixed} failed: mutual information did not improve "
            f"({-metric_initial:.4f} -> {-metric_final:.4f})"
        )
    if overlap < 0.6:
        warnings.append(f"only {overlap:.0%} of {name_fixed} maps inside {name_moving}")
    return RegistrationResult(
        transform=transform,
        type=type,
        metric_initial=float(metric_initial),
        metric_final=float(metric_final),
        iterations_per_level=iterations,
        seconds=time.perf_counter() - start,
        overlap=overlap,
        warnings=warnings,
    )


def _optimise(
    fixed_itk: sitk.Image,
    moving_itk: sitk.Image,
    initial_transform: sitk.Transform,
    *,
    type: str,
    options: dict[str, Any],
) -> tuple[sitk.Transform, list[int], float, float]:
    """The rigid, affine and B-spline stages; returns the transform, iterations and metric before/after."""
    dimension = fixed_itk.GetDimension()
    metric_initial = _metric_value(fixed_itk, moving_itk, initial_transform, options)

    def linear_stage(start: sitk.Transform) -> tuple[sitk.Transform, list[int]]:
        """Optimise a rigid or affine transform with regular-step gradient descent."""
        stage = _method(fixed_itk, **options)
        stage.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0,
            minStep=1e-3,
            numberOfIterations=100,
            relaxationFactor=0.5,
            gradientMagnitudeTolerance=1e-8,
        )
        stage.SetOptimizerScalesFromPhysicalShift()
        stage.SetInitialTransform(start, inPlace=False)
        result, counts = _run(stage, fixed_itk, moving_itk)
        return _unwrap(result), counts

    transform, iterations = linear_stage(initial_transform)
    if type in ("affine", "bspline"):
        affine = sitk.AffineTransform(dimension)
        affine.SetMatrix(transform.GetMatrix())
        affine.SetTranslation(transform.GetTranslation())
        affine.SetCenter(transform.GetCenter())
        transform, more = linear_stage(affine)
        iterations += more
    if type == "bspline":
        physical = [sz * sp for sz, sp in zip(fixed_itk.GetSize(), fixed_itk.GetSpacing(), strict=True)]
        mesh = [max(1, round(extent / 40.0)) for extent in physical]
        bspline = sitk.BSplineTransformInitializer(fixed_itk, mesh, order=3)
        stage = _method(fixed_itk, **options)
        stage.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-4,
            numberOfIterations=BSPLINE_ITERATIONS,
            maximumNumberOfCorrections=5,
        )
        stage.SetMovingInitialTransform(transform)
        stage.SetInitialTransform(bspline, inPlace=True)
        deformable, more = _run(stage, fixed_itk, moving_itk)
        iterations += more
        composite = sitk.CompositeTransform(dimension)
        composite.AddTransform(transform)
        composite.AddTransform(deformable)
        transform = composite

    return transform, iterations, metric_initial, _metric_value(fixed_itk, moving_itk, transform, options)


def _metric_value(
    fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, options: dict[str, Any]
) -> float:
    """Mattes MI (negated, lower is better) at full resolution on a fixed random sample."""
    method = _method(fixed, **options)
    method.SetShrinkFactorsPerLevel([1])
    method.SetSmoothingSigmasPerLevel([0.0])
    sample = min(1.0, options["max_samples"] / float(np.prod(fixed.GetSize())))
    method.SetMetricSamplingPercentagePerLevel([sample], options["seed"])
    method.SetInitialTransform(transform, inPlace=False)
    return method.MetricEvaluate(fixed, moving)
