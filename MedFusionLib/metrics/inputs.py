"""Turn images into the grey levels (0-255 scale) the metrics are defined on.

The reference protocol (``harvard_reference_metrics.json``) scores 8-bit images: a gray
PNG as it is, an RGB PNG by its BT.601 luminance rounded to an integer. Other images are
brought to the same scale the way the fusion pipeline sees them: float images already in
``[0, 1]`` (MedFusion's own fused output) are multiplied by 255; anything else (CT in HU,
MR, PET counts) is normalised with the modality window or percentiles of
:func:`~MedFusionLib.preprocess.normalize_intensity` and then multiplied by 255.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..image import Image
from ..preprocess import normalize_intensity, resample_to


def bt601_luminance(rgb: np.ndarray) -> np.ndarray:
    """``0.299 R + 0.587 G + 0.114 B`` in float64, summed in that order as the reference does
    (the order matters for which values land exactly on a half-level tie)."""
    rgb = rgb.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def grey_levels_from_image(
    image: Image, *, name: str = "image", window: str | tuple[float, float] | None = None
) -> np.ndarray:
    """Float64 grey levels on the 0-255 scale (see the module docstring for the rules)."""
    array = image.array
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values")
    if image.is_rgb:
        if array.dtype == np.uint8:
            return np.round(bt601_luminance(array))
        if array.min() >= 0 and array.max() <= 1:
            return bt601_luminance(array) * 255.0
        raise InputError(f"{name}: RGB images must be 8-bit or floats in [0, 1], got {array.dtype}")
    if window is None:
        if array.dtype == np.uint8:
            return array.astype(np.float64)
        if array.dtype.kind == "f" and array.min() >= 0 and array.max() <= 1:
            return array.astype(np.float64) * 255.0
    return normalize_intensity(image, window=window, name=name).astype(np.float64) * 255.0


def grey_levels_for_scoring(
    a: Image,
    b: Image,
    fused: Image,
    *,
    names: tuple[str, str, str] = ("A", "B", "F"),
    window_a: str | tuple[float, float] | None = None,
    window_b: str | tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grey levels of A, of B resampled onto A's grid, and of F, which must lie on A's grid."""
    name_a, name_b, name_f = names
    if fused.ndim != a.ndim or not fused.same_grid(a):
        raise InputError(
            f"{name_f} is not on {name_a}'s grid (size {fused.size} vs {a.size}); "
            "score a fused image against the sources it was made from"
        )
    if b.ndim != a.ndim:
        raise InputError(f"{name_b} is {b.ndim}-D but {name_a} is {a.ndim}-D")
    b_on_a = b if b.same_grid(a) else resample_to(b, a, name=name_b, reference_name=name_a)
    return (
        grey_levels_from_image(a, name=name_a, window=window_a),
        grey_levels_from_image(b_on_a, name=name_b, window=window_b),
        grey_levels_from_image(fused, name=name_f),
    )
