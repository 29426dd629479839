"""The whole fusion job on :class:`~MedFusionLib.image.Image` objects.

Data flows one way: check both images, resample B onto A's grid in world coordinates,
normalise each to ``[0, 1]`` (modality presets, or the luminance of an RGB slice), fuse on
torch, and wrap the result with A's geometry. A pseudo-colour source (an RGB PET or SPECT
slice) is fused on its luminance (BT.601 Y) and its chroma is put back, so the output is
RGB, as the fusion literature does for the Harvard PET/SPECT sets.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from .colour import rgb_to_ycbcr, ycbcr_to_rgb
from .errors import GeometryError, InputError
from .fusion import get_method
from .fusion.runner import DEFAULT_MAX_SLAB_VOXELS, ProgressCallback, fuse_arrays
from .image import Image
from .preprocess import (
    INTERPOLATIONS,
    check_finite_and_varying,
    check_window,
    normalize_intensity,
    resample_to,
)
from .validation import (
    check_callback,
    check_choice,
    check_device,
    check_image,
    check_int,
    check_name,
    check_transform,
    gray_voxels,
)

DEFAULT_METHOD = "laplacian_pyramid"


@dataclass(frozen=True)
class FusionResult:
    """The fused image and a record of how it was made."""

    image: Image
    method: str
    parameters: dict[str, Any]
    device: str
    seconds: float
    colour_source: str | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description of what was done."""
        return {
            "method": self.method,
            "parameters": self.parameters,
            "device": self.device,
            "seconds": round(self.seconds, 4),
            "size": list(self.image.size),
            "spacing": list(self.image.spacing),
            "rgb": self.image.is_rgb,
            "colour_source": self.colour_source,
        }


def _normalised_gray(image: Image, *, name: str, window: str | tuple[float, float] | None) -> np.ndarray:
    """``[0, 1]`` float32 voxels: luminance for RGB input, modality presets otherwise.

    An RGB slice's luminance is already in ``[0, 1]`` (8-bit / 255, the field's protocol) and
    is used as it is unless a window is asked for; as in :func:`normalize_intensity`, its NaN
    voxels count as background (the finite minimum).
    """
    if image.is_rgb:
        image = image.with_array(gray_voxels(image, name=name))
        if window is None:
            low, _ = check_finite_and_varying(image.array, name=name)
            gray = image.array
            bad = ~np.isfinite(gray)
            if bad.any():
                gray = np.where(bad, np.float32(low), gray)
            return gray
    return normalize_intensity(image, window=window, name=name)


def _lost_on_grid(a: Image, b: Image, b_on_a: Image, *, name_a: str, name_b: str) -> GeometryError:
    """B varies on its own grid but not once resampled onto A's: the grids barely meet."""
    gray = gray_voxels(b_on_a, name=name_b)
    finite = gray[np.isfinite(gray)] if gray.dtype.kind == "f" else gray.ravel()
    what = f"constant ({float(finite[0]):g})" if finite.size else "not finite"
    return GeometryError(
        f"{name_b} varies on its own grid but is {what} where {name_a}'s grid samples it "
        f"({name_a}: {_grid_text(a)}; {name_b}: {_grid_text(b)}); check both images' spacing and origin"
    )


def _grid_text(image: Image) -> str:
    size = "x".join(map(str, image.size))
    spacing = " x ".join(f"{s:g}" for s in image.spacing)
    origin = ", ".join(f"{o:g}" for o in image.origin)
    return f"{size} voxels of {spacing} mm at ({origin})"


def fuse_images(
    a: Image,
    b: Image,
    *,
    method: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    device: str = "auto",
    window_a: str | tuple[float, float] | None = None,
    window_b: str | tuple[float, float] | None = None,
    interpolation: str = "linear",
    name_a: str = "image A",
    name_b: str = "image B",
    max_slab_voxels: int = DEFAULT_MAX_SLAB_VOXELS,
    progress: ProgressCallback | None = None,
    transform: sitk.Transform | None = None,
) -> FusionResult:
    """Fuse ``b`` into ``a``'s grid with a registered method.

    Args:
        a: the reference (usually anatomical) image; the output has its geometry.
        b: the second image, resampled onto ``a``'s grid in world coordinates.
        method: registry name; ``None`` picks :data:`DEFAULT_METHOD`.
        parameters: overrides of the method's defaults.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        window_a, window_b: intensity window (preset name or ``(level, width)``) overriding
            the modality preset of each image.
        interpolation: for resampling ``b`` (``linear``, ``nearest`` or ``bspline``).
        name_a, name_b: how errors name the two inputs (file paths in the CLI).
        max_slab_voxels: volumes above this fuse in overlapping slabs.
        progress: ``progress(done, total)`` after each slab.
        transform: a registration result (``a``'s points to ``b``'s, ITK's convention) used
            when resampling ``b`` onto ``a``; see :mod:`MedFusionLib.registration`.

    Returns:
        A :class:`FusionResult` whose image is float32 in ``[0, 1]`` (RGB when a source
        was pseudo-colour) on ``a``'s grid.

    Example:
        >>> from MedFusionLib.io import read_image
        >>> result = fuse_images(read_image("t1.nii.gz"), read_image("pet.nii.gz"))  # doctest: +SKIP
    """
    start = time.perf_counter()
    spec = get_method(DEFAULT_METHOD if method is None else method)
    params = spec.resolve_parameters(parameters)
    dev = check_device(device)
    window_a = check_window(window_a, name="window_a")
    window_b = check_window(window_b, name="window_b")
    check_choice(interpolation, INTERPOLATIONS, name="interpolation")
    check_int(max_slab_voxels, name="max_slab_voxels", low=1)
    check_callback(progress, name="progress")
    name_a, name_b = check_name(name_a, name="name_a"), check_name(name_b, name="name_b")
    check_image(a, name=name_a)
    check_image(b, name=name_b)
    if a.ndim != b.ndim:
        raise InputError(f"cannot fuse a {a.ndim}-D image ({name_a}) with a {b.ndim}-D image ({name_b})")
    if a.ndim not in spec.dims:
        raise InputError(f"{spec.name} does not fuse {a.ndim}-D images ({name_a})")
    check_transform(transform, ndim=a.ndim, name="transform")

    # each input's content is checked on its own grid, before any resampling
    gray_a = _normalised_gray(a, name=name_a, window=window_a)
    if transform is not None or not b.same_grid(a):
        check_finite_and_varying(gray_voxels(b, name=name_b), name=name_b)
    b_on_a = resample_to(
        b, a, interpolation=interpolation, transform=transform, name=name_b, reference_name=name_a
    )
    try:
        gray_b = _normalised_gray(b_on_a, name=name_b, window=window_b)
    except InputError:
        if b_on_a is b:
            raise
        raise _lost_on_grid(a, b, b_on_a, name_a=name_a, name_b=name_b) from None

    fused = fuse_arrays(
        gray_a,
        gray_b,
        method=spec,
        parameters=params,
        device=dev,
        max_slab_voxels=max_slab_voxels,
        progress=progress,
    )

    colour_source = None
    if b_on_a.is_pseudo_colour or a.is_pseudo_colour:
        colour_source, source = (name_b, b_on_a) if b_on_a.is_pseudo_colour else (name_a, a)
        rgb = source.array if source.array.dtype in (np.uint8, np.uint16) else source.array.astype(np.float32)
        _, cb, cr = rgb_to_ycbcr(rgb)  # uint8 / 255, uint16 / 65535, floats as they are
        cb, cr = (np.where(np.isfinite(c), c, np.float32(0.5)) for c in (cb, cr))  # NaN: no chroma
        fused = ycbcr_to_rgb(fused, cb, cr).astype(np.float32)

    image = Image(
        array=fused,
        spacing=a.spacing,
        origin=a.origin,
        direction=a.direction,
        modality=None,
    )
    return FusionResult(
        image=image,
        method=spec.name,
        parameters=params,
        device=str(dev),
        seconds=time.perf_counter() - start,
        colour_source=colour_source,
    )
