"""Putting two images on one grid and mapping their intensities to ``[0, 1]``.

:func:`resample_to` moves an image onto a reference grid in world coordinates (origin,
spacing and direction, never array indices), which is what makes volumes stored with
different axis orders or flips line up. :func:`normalize_intensity` turns CT Hounsfield
units, MR, PET and SPECT values into the float32 ``[0, 1]`` range the fusion methods expect,
with CT windows and percentile presets per modality.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import SimpleITK as sitk

from .errors import GeometryError, InputError, ParameterError
from .image import Image
from .validation import check_image, check_transform, check_voxels

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
}
INTERPOLATIONS: tuple[str, ...] = tuple(_INTERPOLATORS)
"""Values of ``interpolation`` accepted by :func:`resample_to`."""

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "bone": (400.0, 1800.0),
    "soft_tissue": (50.0, 400.0),
    "lung": (-600.0, 1500.0),
}
"""CT display windows as ``(level, width)`` in Hounsfield units.

Values from Radiopaedia, "Windowing (CT)" (https://radiopaedia.org/articles/windowing-ct):
brain W:80 L:40, subdural W:130-300 L:50-100 (the middle of both ranges here), bones W:1800
L:400, soft tissues W:350-400 L:20-60, lungs W:1500 L:-600.
"""

DEFAULT_CT_WINDOW = "soft_tissue"
"""The window :func:`normalize_intensity` applies to CT when no window is given."""

PERCENTILE_PRESETS: dict[str, tuple[float, float]] = {
    "MR": (0.5, 99.5),
    "PET": (0.0, 99.9),
    "SPECT": (0.0, 99.9),
}
"""Percentiles ``(low, high)`` mapped to 0 and 1 per modality. MR drops the outermost 0.5 %
on both sides (bias-field hot spots, noise floor); PET and SPECT keep the zero background
and clip only the hottest 0.1 % of voxels."""


# --- resampling --------------------------------------------------------------------------
def _format_box(low: np.ndarray, high: np.ndarray) -> str:
    return " x ".join(f"[{lo:.1f}, {hi:.1f}]" for lo, hi in zip(low, high, strict=True)) + " mm"


def resample_to(
    image: Image,
    reference: Image,
    *,
    interpolation: str = "linear",
    default_value: float = 0.0,
    transform: sitk.Transform | None = None,
    name: str = "B",
    reference_name: str = "A",
) -> Image:
    """Resample ``image`` onto the voxel grid of ``reference``, in world coordinates.

    Each output voxel takes the value of ``image`` at the same world (LPS) position, so a
    flipped or permuted storage order, other spacing or another field of view is handled.

    Args:
        image: the image to move (gray or RGB; its modality and metadata are kept).
        reference: the image whose size, spacing, origin and direction the result gets.
        interpolation: ``"linear"``, ``"nearest"`` or ``"bspline"`` (cubic B-spline).
        default_value: value of output voxels that fall outside ``image``.
        transform: optional SimpleITK transform mapping reference (output) points to
            ``image`` points, ITK's convention for registration results.
        name, reference_name: how error messages call the two images.

    Returns:
        The resampled image, with the dtype of ``image``: integer voxels are rounded and
        clipped to their type's range. ``image`` itself (not a copy) when the grids already
        match and no transform is given.

    Raises:
        ParameterError: unknown ``interpolation``; ``transform`` not a SimpleITK transform of
            the images' dimension.
        InputError: not an Image, unusable voxels or geometry (see
            :func:`MedFusionLib.validation.check_image`); one image is 2-D and the other 3-D.
        GeometryError: the two images do not overlap in world space.

    Example:
        >>> spect_on_t1 = resample_to(spect, t1)  # doctest: +SKIP
    """
    if not isinstance(interpolation, str) or interpolation not in _INTERPOLATORS:
        raise ParameterError(
            f"unknown interpolation {interpolation!r}; use one of {', '.join(_INTERPOLATORS)}"
        )
    check_image(image, name=name)
    check_image(reference, name=reference_name)
    if image.ndim != reference.ndim:
        raise InputError(
            f"cannot resample {name} ({image.ndim}-D) onto {reference_name} ({reference.ndim}-D): "
            "both images must be 2-D or both 3-D"
        )
    check_transform(transform, ndim=reference.ndim, name="transform")
    if transform is None and image.same_grid(reference):
        return image

    ref_low, ref_high = reference.world_bounds()
    if transform is not None:  # where the reference box lands in the image's space
        extremes = itertools.product(*zip(ref_low, ref_high, strict=True))
        corners = np.array([transform.TransformPoint(tuple(map(float, c))) for c in extremes])
        ref_low, ref_high = corners.min(axis=0), corners.max(axis=0)
    low, high = image.world_bounds()
    if np.any(np.maximum(low, ref_low) >= np.minimum(high, ref_high)):
        ref_box = reference.world_bounds()
        raise GeometryError(
            f"images do not overlap in world space ({reference_name} spans {_format_box(*ref_box)}, "
            f"{name} spans {_format_box(low, high)})"
        )

    dtype = image.array.dtype
    work = np.float64 if dtype in (np.float64, np.int64, np.uint64, np.int32, np.uint32) else np.float32
    source = image.with_array(image.array.astype(work, copy=False)).to_sitk()
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in reference.size])
    resampler.SetOutputSpacing(reference.spacing)
    resampler.SetOutputOrigin(reference.origin)
    resampler.SetOutputDirection(reference.direction)
    resampler.SetInterpolator(_INTERPOLATORS[interpolation])
    resampler.SetDefaultPixelValue(float(default_value))
    resampler.SetOutputPixelType(source.GetPixelID())
    if transform is not None:
        resampler.SetTransform(transform)
    array = sitk.GetArrayFromImage(resampler.Execute(source))
    if dtype.kind in "iub":
        if dtype.kind == "b":
            array = array >= 0.5
        else:
            info = np.iinfo(dtype)
            array = np.clip(np.rint(array), info.min, info.max).astype(dtype)
    elif array.dtype != dtype:
        array = array.astype(dtype)
    return Image(
        array=array,
        spacing=reference.spacing,
        origin=reference.origin,
        direction=reference.direction,
        modality=image.modality,
        metadata=dict(image.metadata),
    )


# --- intensity ---------------------------------------------------------------------------
def check_finite_and_varying(
    array: np.ndarray, *, name: str = "image", purpose: str = "fuse"
) -> tuple[float, float]:
    """The minimum and maximum of the finite voxels of ``array``.

    ``purpose`` ends the message about a constant image (``nothing to fuse``).

    Raises:
        InputError: no voxel is finite, or all finite voxels have one value (or the voxels are
            not numbers: see :func:`MedFusionLib.validation.check_voxels`).
    """
    check_voxels(array, name=name)
    if array.dtype.kind in "iub":
        if array.size == 0:
            raise InputError(f"{name} contains no finite voxels")
        low, high = float(array.min()), float(array.max())
    else:
        finite = np.isfinite(array)
        if not finite.any():
            raise InputError(f"{name} contains no finite voxels")
        if finite.all():
            low, high = float(np.min(array)), float(np.max(array))
        else:
            values = array[finite]
            low, high = float(values.min()), float(values.max())
    if low == high:
        raise InputError(f"{name} is constant (value {low:g}): nothing to {purpose}")
    return low, high


def check_window(
    window: str | tuple[float, float] | None, *, name: str = "window"
) -> str | tuple[float, float] | None:
    """``None``, a :data:`CT_WINDOWS` name, or a finite ``(level, width)`` pair with width > 0.

    Args:
        window: the value to check.
        name: how the message names it (``window_a`` in the API, ``--window-a`` on the command line).

    Returns:
        ``window`` itself, a pair as two floats.

    Raises:
        ParameterError: an unknown preset, not a pair of numbers, not finite, or width <= 0.
    """
    if window is None:
        return None
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise ParameterError(f"{name}: unknown CT window {window!r}; use one of {', '.join(CT_WINDOWS)}")
        return window
    try:
        level, width = (float(v) for v in window)
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(f"{name} must be a preset name or (level, width), got {window!r}") from None
    if not (math.isfinite(level) and math.isfinite(width)):
        raise ParameterError(f"{name}: (level, width) must be finite, got {window!r}")
    if width <= 0:
        raise ParameterError(f"{name}: window width must be > 0, got {width:g}")
    return level, width


def _resolve_window(window: str | tuple[float, float], *, name: str = "window") -> tuple[float, float]:
    """``(low, high)`` HU of a preset name or a ``(level, width)`` pair."""
    checked = check_window(window, name=name)
    level, width = CT_WINDOWS[checked] if isinstance(checked, str) else checked
    return level - width / 2.0, level + width / 2.0


def _check_percentiles(percentiles: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = (float(p) for p in percentiles)
    except (TypeError, ValueError):
        raise ParameterError(f"percentiles must be a pair (low, high), got {percentiles!r}") from None
    if not (0.0 <= low < high <= 100.0):
        raise ParameterError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
    return low, high


def normalize_intensity(
    image: Image,
    *,
    window: str | tuple[float, float] | None = None,
    percentiles: tuple[float, float] | None = None,
    name: str = "image",
) -> np.ndarray:
    """Map a gray image's voxels linearly to float32 ``[0, 1]`` (values beyond are clipped).

    The range mapped to ``[0, 1]`` is chosen by the first rule that applies:

    1. ``window``: a :data:`CT_WINDOWS` name or ``(level, width)``; ``level - width/2``
       maps to 0, ``level + width/2`` to 1 (so the level itself maps to 0.5).
    2. ``percentiles``: ``(low, high)`` percentiles of the finite voxels.
    3. the modality: CT uses the :data:`DEFAULT_CT_WINDOW`; MR, PET and SPECT the
       :data:`PERCENTILE_PRESETS`.
    4. unknown modality: uint8 voxels are divided by 255 (the convention of the fusion
       literature's PNG benchmarks, so results compare with published numbers); other data
       types map their minimum to 0 and maximum to 1.

    When the two percentiles coincide (for example a PET that is mostly zero background) the
    minimum and maximum are used instead. NaN and infinite voxels count as background: they
    are ignored when computing ranges and percentiles and then take the finite minimum's
    value. The input array is never modified.

    Args:
        image: a gray image (take :func:`~MedFusionLib.colour.luminance` of RGB first).
        window: CT window preset name or ``(level, width)`` in the image's units (HU).
        percentiles: ``(low, high)`` in ``0..100`` with ``low < high``.
        name: how error messages call the image (a file name, ``"A"``...).

    Returns:
        A new float32 array of the image's spatial shape.

    Raises:
        InputError: RGB image; no finite voxel; all finite voxels equal.
        ParameterError: unknown window preset, width <= 0, percentiles out of range.

    Example:
        >>> ct = Image.from_array(np.array([[-150.0, 50.0], [250.0, 1000.0]]), modality="CT")
        >>> normalize_intensity(ct).tolist()
        [[0.0, 0.5], [1.0, 1.0]]
    """
    if not isinstance(image, Image):
        check_image(image, name=name)  # raises: not an Image
    bounds = _resolve_window(window) if window is not None else None
    if bounds is None and percentiles is not None:
        percentiles = _check_percentiles(percentiles)
    if image.is_rgb:
        raise InputError(f"{name} is RGB: normalize its luminance instead (MedFusionLib.colour.luminance)")
    array = image.array
    low, high = check_finite_and_varying(array, name=name)
    if bounds is None and percentiles is None:
        if image.modality == "CT":
            bounds = _resolve_window(DEFAULT_CT_WINDOW)
        elif image.modality in PERCENTILE_PRESETS:
            percentiles = PERCENTILE_PRESETS[image.modality]
        elif array.dtype == np.uint8:
            bounds = (0.0, 255.0)
        else:
            bounds = (low, high)

    work = np.float64 if array.dtype.itemsize > 4 or array.dtype in (np.int32, np.uint32) else np.float32
    values = array.astype(work)  # always a copy: the input stays untouched
    bad = ~np.isfinite(values) if array.dtype.kind == "f" else None
    if bad is not None and bad.any():
        values[bad] = low
    else:
        bad = None
    if bounds is None:
        p_low, p_high = np.percentile(values if bad is None else values[~bad], percentiles)
        bounds = (float(p_low), float(p_high)) if p_high > p_low else (low, high)
    lo, hi = bounds
    values -= lo
    values /= hi - lo
    np.clip(values, 0.0, 1.0, out=values)
    return values.astype(np.float32, copy=False)
