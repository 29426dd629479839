"""Argument checks shared by the public API and the ``medfusion`` command.

Every check raises one of the project's exceptions (:mod:`MedFusionLib.errors`) with a
one-line message that starts with the culprit's name, the way the caller spells it: the
Python API passes its argument name (``seed``), the command line its option (``--seed``),
so both front ends say the same thing about the same value.

Rules (see ``Docs/reliability.md``):

- Images (:class:`~MedFusionLib.image.Image`): voxels of a boolean, integer or real
  floating-point type (complex, object and string voxels are refused, never converted);
  spacing finite and > 0, origin finite, direction finite and orthonormal within
  :data:`MedFusionLib.image.DIRECTION_TOLERANCE` (a sheared or singular direction is refused),
  the reader's rules.
- Tensors and arrays given to the fusion runner: floating point (float16, bfloat16,
  float32 or float64) with finite values in ``[0, 1]``; integer and boolean data are
  refused with a hint (divide 8-bit data by 255, or call
  :func:`~MedFusionLib.pipeline.fuse_images`, which normalises any image). There is no
  implicit scaling: a tensor's dtype does not say whether its values are 8-bit grey levels,
  Hounsfield units or already normalised.
- Integers (seeds, thread counts, sizes) are Python or NumPy integers, or floats with an
  integral value; booleans are not numbers here.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError, ParameterError

if TYPE_CHECKING:
    import SimpleITK as sitk
    import torch

    from .image import Image

VALUE_TOLERANCE = 1e-3
"""How far outside ``[0, 1]`` a fusion input may stray (round-off of a user's normalisation)."""

SEED_MAX = 2**32 - 1
"""Largest seed: ITK's random sampling takes an unsigned 32-bit seed."""

MAX_THREADS = 1024
"""Largest CPU thread count accepted (torch refuses 0 and overflows far above)."""

_VOXEL_KINDS = "biuf"  # bool, signed and unsigned integers, real floating point
_FLOAT_TENSOR_HINT = (
    "fusion takes floating-point tensors with values in [0, 1] "
    "(divide 8-bit data by 255 first, or use pipeline.fuse_images, which normalises any image)"
)


# --- scalars ---------------------------------------------------------------------------------
def check_int(value: Any, *, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` within ``[low, high]`` (either bound may be ``None``).

    Raises:
        ParameterError: not an integer (booleans and non-integral floats included) or out of range.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    if not isinstance(value, numbers.Integral):
        if not (math.isfinite(float(value)) and float(value).is_integer()):
            raise ParameterError(f"{name} must be an integer, got {value!r}")
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise ParameterError(f"{name} must be {_range_text(low, high)}, got {number}")
    return number


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"in {low}..{high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def check_fraction(value: Any, *, name: str) -> float:
    """A finite real number in ``(0, 1]``.

    Raises:
        ParameterError: not a real number, not finite, or outside ``(0, 1]``.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a number in (0, 1], got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and 0.0 < number <= 1.0):
        raise ParameterError(f"{name} must be in (0, 1], got {number:g}")
    return number


def check_seed(value: Any, *, name: str, low: int = 0) -> int:
    """A random seed in ``low..2**32 - 1`` (ITK's unsigned 32-bit seed)."""
    return check_int(value, name=name, low=low, high=SEED_MAX)


def check_threads(value: Any, *, name: str) -> int:
    """A CPU thread count in ``1..MAX_THREADS``."""
    return check_int(value, name=name, low=1, high=MAX_THREADS)


def check_choice(value: Any, choices: Sequence[str], *, name: str) -> str:
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(f"unknown {name} {value!r} (use {', '.join(choices)})")
    return value


def check_name(value: Any, *, name: str) -> str:
    """A string (or path) used to name an input in messages, as a string."""
    if not isinstance(value, str | os.PathLike):
        raise ParameterError(f"{name} must be a string, got {type(value).__name__}")
    return str(value)


def check_callback(value: Any, *, name: str) -> Callable[..., Any] | None:
    """``None`` or a callable."""
    if value is not None and not callable(value):
        raise ParameterError(f"{name} must be callable or None, got {type(value).__name__}")
    return value


def check_names(value: Any, *, count: int, name: str) -> tuple[str, ...]:
    """A sequence of ``count`` strings (how errors name several inputs)."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != count:
        raise ParameterError(f"{name} must be a sequence of {count} strings, got {value!r}")
    if not all(isinstance(item, str) for item in value):
        raise ParameterError(f"{name} must be a sequence of {count} strings, got {value!r}")
    return tuple(value)


def check_device(device: Any, *, name: str = "device") -> torch.device:
    """The torch device ``device`` names (``auto``, ``cpu``, ``cuda[:N]``, ``mps``), checked to exist.

    Raises:
        ParameterError: not a string or ``torch.device``, unknown, or not available here.
    """
    import torch

    from .fusion.ops import resolve_device

    if not isinstance(device, str | torch.device):
        raise ParameterError(
            f"{name}: a device is a name such as 'cpu' or 'cuda', got {type(device).__name__}"
        )
    try:
        resolved = resolve_device(device)
    except ParameterError as error:
        raise ParameterError(f"{name}: {error}") from None
    if resolved.type == "cuda" and resolved.index is not None:
        count = torch.cuda.device_count()
        if resolved.index >= count:
            raise ParameterError(f"{name}: device {str(device)!r} does not exist ({count} CUDA device(s))")
    return resolved


# --- images ----------------------------------------------------------------------------------
def check_path(value: Any, *, name: str) -> Path:
    """A file-system path given as ``str`` or ``os.PathLike``, not empty.

    Raises:
        InputError: another type (``None``, an array, ...) or an empty string.
    """
    if not isinstance(value, str | os.PathLike) or isinstance(value, bytes):
        raise InputError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
    if not os.fspath(value):
        raise InputError(f"{name} is an empty path")
    return Path(value)


def check_voxels(array: Any, *, name: str) -> np.ndarray:
    """A NumPy array of boolean, integer or real floating-point voxels, not empty.

    Raises:
        InputError: not an array, complex / object / string voxels, or no voxels.
    """
    if not isinstance(array, np.ndarray):
        raise InputError(f"{name}: voxels must be a NumPy array, got {type(array).__name__}")
    kind = array.dtype.kind
    if kind == "c":
        raise InputError(
            f"{name} has complex voxels ({array.dtype}): take the magnitude or the real part first"
        )
    if kind not in _VOXEL_KINDS:
        raise InputError(f"{name} has voxels of type {array.dtype}: use integer or floating-point voxels")
    if array.size == 0:
        raise InputError(f"{name} has no voxels (shape {array.shape})")
    return array


def check_geometry(image: Image, *, name: str) -> None:
    """Spacing finite and > 0, origin finite, direction finite and orthonormal.

    The rules of :func:`MedFusionLib.image.check_geometry` (the reader's), without its bound
    on an axis' extent: an in-memory image may be odd but deliberate, and the pipeline says
    when its grid cannot meet the other image's.

    Raises:
        InputError: what is wrong, with the offending values, after the image's name.
    """
    from .image import check_geometry as check_grid

    try:
        check_grid(image.spacing, image.origin, image.direction, size=image.size, max_extent_mm=None)
    except InputError as error:
        raise InputError(f"{name}: {error}") from None


def check_image(image: Any, *, name: str) -> Image:
    """An :class:`~MedFusionLib.image.Image` with usable voxels and geometry.

    Raises:
        InputError: not an Image, unusable voxels (see :func:`check_voxels`) or geometry (see :func:`check_geometry`).
    """
    from .image import Image

    if not isinstance(image, Image):
        raise InputError(
            f"{name} must be a MedFusionLib.image.Image, got {type(image).__name__} "
            "(wrap arrays with Image.from_array, or read files with MedFusionLib.io.read_image)"
        )
    check_voxels(image.array, name=name)
    check_geometry(image, name=name)
    return image


def check_transform(transform: Any, *, ndim: int, name: str) -> sitk.Transform | None:
    """``None`` or a SimpleITK transform of dimension ``ndim``."""
    import SimpleITK as sitk

    if transform is None:
        return None
    if not isinstance(transform, sitk.Transform):
        raise ParameterError(f"{name} must be a SimpleITK transform, got {type(transform).__name__}")
    if transform.GetDimension() != ndim:
        raise ParameterError(
            f"{name} is a {transform.GetDimension()}-D transform but the images are {ndim}-D"
        )
    return transform


def gray_voxels(image: Image, *, name: str) -> np.ndarray:
    """The gray voxels of ``image``: its luminance when RGB, its array otherwise.

    Raises:
        InputError: an RGB image whose voxels colour conversion does not take (named ``name``).
    """
    if not image.is_rgb:
        return image.array
    from .colour import luminance

    try:
        return luminance(image).array
    except InputError as error:
        raise InputError(f"{name}: {error}") from None


# --- fusion inputs ---------------------------------------------------------------------------
def check_fusion_tensors(
    a: Any, b: Any, *, names: tuple[str, str] = ("a", "b")
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two floating-point tensors of one shape and device, finite, with values in ``[0, 1]``.

    Tensors of two floating-point types are both promoted to the wider one.

    Raises:
        InputError: not a tensor, integer / boolean / complex dtype, empty, different devices or
            shapes, NaN or infinite values, values outside ``[0, 1]``.
    """
    import torch

    for tensor, name in zip((a, b), names, strict=True):
        if not isinstance(tensor, torch.Tensor):
            raise InputError(
                f"{name} must be a torch.Tensor, got {type(tensor).__name__} (use fuse_arrays for NumPy arrays)"
            )
        if not tensor.is_floating_point():
            raise InputError(f"{name} is a {tensor.dtype} tensor: {_FLOAT_TENSOR_HINT}")
        if tensor.numel() == 0:
            raise InputError(f"{name} is empty (shape {tuple(tensor.shape)})")
    if a.device != b.device:
        raise InputError(f"{names[0]} is on {a.device} but {names[1]} on {b.device}: put both on one device")
    if a.shape != b.shape:
        raise InputError(f"images to fuse differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        common = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(common), b.to(common)
    for tensor, name in zip((a, b), names, strict=True):
        low, high = (float(v) for v in torch.aminmax(tensor))
        _check_unit_range(low, high, name=name)
    return a, b


def check_fusion_arrays(a: Any, b: Any, *, names: tuple[str, str] = ("a", "b")) -> None:
    """The NumPy counterpart of :func:`check_fusion_tensors` (same rules, same messages)."""
    for array, name in zip((a, b), names, strict=True):
        if not isinstance(array, np.ndarray):
            raise InputError(
                f"{name} must be a NumPy array, got {type(array).__name__} (use fuse_tensors for tensors)"
            )
        if array.dtype.kind != "f":
            raise InputError(f"{name} is a {array.dtype} array: {_FLOAT_TENSOR_HINT}")
        if array.size == 0:
            raise InputError(f"{name} is empty (shape {array.shape})")
    if a.shape != b.shape:
        raise InputError(f"images to fuse differ in shape: {a.shape} and {b.shape}")
    for array, name in zip((a, b), names, strict=True):
        _check_unit_range(float(array.min()), float(array.max()), name=name)


def _check_unit_range(low: float, high: float, *, name: str) -> None:
    """``low``/``high`` are NaN or infinite when the data hold such values (min/max propagate NaN)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"{name} contains NaN or infinite values")
    if low < -VALUE_TOLERANCE or high > 1.0 + VALUE_TOLERANCE:
        raise InputError(f"{name} has values in [{low:g}, {high:g}]: {_FLOAT_TENSOR_HINT}")
