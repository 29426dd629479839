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

from .colour import luminance, rgb_to_ycbcr, ycbcr_to_rgb
from .errors import InputError
from .fusion import get_method
from .fusion.ops import resolve_device
from .fusion.runner import DEFAULT_MAX_SLAB_VOXELS, ProgressCallback, fuse_arrays
from .image import Image
from .preprocess import check_finite_and_varying, normalize_intensity, resample_to

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
    is used as it is unless a window is asked for.
    """
    if image.is_rgb:
        image = luminance(image)
        if window is None:
            check_finite_and_varying(image.array, name=name)
            return image.array
    return normalize_intensity(image, window=window, name=name)


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
    spec = get_method(method or DEFAULT_METHOD)
    params = spec.resolve_parameters(parameters)
    dev = resolve_device(device)
    if a.ndim != b.ndim:
        raise InputError(f"cannot fuse a {a.ndim}-D image ({name_a}) with a {b.ndim}-D image ({name_b})")
    if a.ndim not in spec.dims:
        raise InputError(f"{spec.name} does not fuse {a.ndim}-D images ({name_a})")

    b_on_a = resample_to(
        b, a, interpolation=interpolation, transform=transform, name=name_b, reference_name=name_a
    )
    gray_a = _normalised_gray(a, name=name_a, window=window_a)
    gray_b = _normalised_gray(b_on_a, name=name_b, window=window_b)

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
        rgb = source.array.astype(np.float32) / (255.0 if source.array.dtype == np.uint8 else 1.0)
        _, cb, cr = rgb_to_ycbcr(rgb)
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
