"""Colour handling for pseudo-colour PET/SPECT: full-range BT.601 YCbCr and luminance.

The fusion literature fuses the luminance ``Y`` of a pseudo-colour PET or SPECT slice with
the gray MRI and then puts the source's chroma ``(Cb, Cr)`` back. The transform is the
full-range ITU-R BT.601 one of JPEG (JFIF) and OpenCV, on floats in ``[0, 1]``::

    Y  = 0.299 R + 0.587 G + 0.114 B
    Cb = 0.5 + (B - Y) / 1.772
    Cr = 0.5 + (R - Y) / 1.402

:func:`ycbcr_to_rgb` is its exact inverse (then clipped to ``[0, 1]``).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .image import Image

KR = 0.299
"""BT.601 red weight of the luminance."""
KB = 0.114
"""BT.601 blue weight of the luminance."""
KG = 1.0 - KR - KB
"""BT.601 green weight of the luminance (0.587)."""

_CB_SCALE = 2.0 * (1.0 - KB)  # 1.772
_CR_SCALE = 2.0 * (1.0 - KR)  # 1.402
_FLOAT_TOLERANCE = 1e-6


def _as_unit_float(values: np.ndarray, *, what: str) -> np.ndarray:
    """Voxels as floats in ``[0, 1]``: uint8 / 255, uint16 / 65535, floats checked."""
    if values.dtype == np.uint8 or values.dtype == np.uint16:
        return values.astype(np.float32) / np.float32(np.iinfo(values.dtype).max)
    if values.dtype.kind == "f":
        if values.size:
            low, high = np.nanmin(values), np.nanmax(values)
            if low < -_FLOAT_TOLERANCE or high > 1.0 + _FLOAT_TOLERANCE:
                raise InputError(
                    f"{what} has float values in [{low:g}, {high:g}]; colour conversion expects [0, 1]"
                )
        return values
    raise InputError(
        f"{what} has {values.dtype} values; colour conversion takes uint8, uint16 or floats in [0, 1]"
    )


def _result_dtype(values: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if values.dtype == np.float64 else np.dtype(np.float32)


def rgb_to_ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split RGB into full-range BT.601 luminance and chroma.

    Args:
        rgb: array with a trailing axis of 3; floats in ``[0, 1]``, or uint8/uint16 (scaled
            by 255/65535 first).

    Returns:
        ``(y, cb, cr)``, each of ``rgb.shape[:-1]``, in ``[0, 1]`` (neutral chroma is 0.5);
        float64 for float64 input, float32 otherwise.

    Raises:
        InputError: no trailing axis of 3, another data type, floats outside ``[0, 1]``.

    Example:
        >>> y, cb, cr = rgb_to_ycbcr(np.array([1.0, 0.0, 0.0]))
        >>> round(float(y), 3), round(float(cb), 3), round(float(cr), 3)
        (0.299, 0.331, 1.0)
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise InputError(f"RGB array must have a trailing axis of 3, got shape {rgb.shape}")
    dtype = _result_dtype(rgb)
    values = _as_unit_float(rgb, what="RGB array").astype(np.float64)
    r, g, b = values[..., 0], values[..., 1], values[..., 2]
    y = KR * r + KG * g + KB * b
    cb = 0.5 + (b - y) / _CB_SCALE
    cr = 0.5 + (r - y) / _CR_SCALE
    return y.astype(dtype), cb.astype(dtype), cr.astype(dtype)


def ycbcr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Recombine full-range BT.601 luminance and chroma into RGB in ``[0, 1]``.

    Args:
        y, cb, cr: arrays of one shape (as :func:`rgb_to_ycbcr` returns them); ``y`` is
            typically a fused luminance.

    Returns:
        RGB with a trailing axis of 3, clipped to ``[0, 1]``; float64 if ``y`` is float64,
        float32 otherwise.

    Raises:
        InputError: the three arrays differ in shape.
    """
    y, cb, cr = np.asarray(y), np.asarray(cb), np.asarray(cr)
    if not (y.shape == cb.shape == cr.shape):
        raise InputError(f"Y, Cb and Cr must have one shape, got {y.shape}, {cb.shape} and {cr.shape}")
    dtype = _result_dtype(y)
    y64 = y.astype(np.float64)
    r = y64 + _CR_SCALE * (cr.astype(np.float64) - 0.5)
    b = y64 + _CB_SCALE * (cb.astype(np.float64) - 0.5)
    g = (y64 - KR * r - KB * b) / KG
    rgb = np.stack([r, g, b], axis=-1)
    np.clip(rgb, 0.0, 1.0, out=rgb)
    return rgb.astype(dtype)


def luminance(image: Image) -> Image:
    """The float32 gray ``[0, 1]`` image a fusion method takes from a (pseudo-colour) image.

    RGB images give their BT.601 luma ``Y``; gray stored as RGB (equal channels) gives that
    gray value exactly. Gray images are only rescaled. uint8 voxels are divided by 255,
    uint16 by 65535; float voxels must already lie in ``[0, 1]``. Geometry, modality and
    metadata are kept.

    Raises:
        InputError: other data types, or float voxels outside ``[0, 1]``.

    Example:
        >>> rgb = Image.from_array(np.full((2, 2, 3), 255, np.uint8), rgb=True)
        >>> luminance(rgb).array.tolist()
        [[1.0, 1.0], [1.0, 1.0]]
    """
    array = image.array
    if not image.is_rgb:
        gray = _as_unit_float(array, what="image")
    elif not image.is_pseudo_colour:
        gray = _as_unit_float(array[..., 0], what="image")
    else:
        gray = rgb_to_ycbcr(array)[0]
    gray = np.clip(gray, 0.0, 1.0).astype(np.float32, copy=False)  # clip copies: input untouched
    return image.with_array(gray)
