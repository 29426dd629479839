"""Run a registered fusion method on tensors or arrays, slab by slab for large volumes.

A volume larger than ``max_slab_voxels`` is cut along its first axis into slabs that
overlap by the method's ``halo``; each slab is fused on the device and only its core is
kept, so the result equals the whole-volume computation (tests check it) while memory stays
bounded by the slab size. Methods that use global statistics (``halo=None``) run whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..validation import check_callback, check_device, check_fusion_arrays, check_fusion_tensors, check_int
from .registry import FusionMethod, get_method

DEFAULT_MAX_SLAB_VOXELS = 4_000_000

ProgressCallback = Callable[[int, int], None]

_HALF_TYPES = (torch.float16, torch.bfloat16)  # computed in float32: the methods' tested precision


def _method(method: str | FusionMethod) -> FusionMethod:
    return method if isinstance(method, FusionMethod) else get_method(method)


def _check_dims(spec: FusionMethod, ndim: int) -> None:
    if ndim not in spec.dims:
        raise InputError(f"{spec.name} fuses {' or '.join(f'{d}-D' for d in spec.dims)} images, not {ndim}-D")


def fuse_tensors(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    method: str | FusionMethod,
    parameters: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Fuse two same-shaped floating-point tensors with values in ``[0, 1]`` (no slabs).

    The inputs must be float16, bfloat16, float32 or float64 tensors on one device, finite,
    with values in ``[0, 1]``: integer and boolean tensors are refused, not rescaled (divide
    8-bit data by 255 first; :func:`~MedFusionLib.pipeline.fuse_images` normalises any
    image). Two floating-point types are promoted to the wider one. float16 and bfloat16 are
    computed in float32, as are all types for the CNN methods (their weights' type); the
    result has the inputs' type.

    Returns:
        The fused tensor, clamped to ``[0, 1]``, on the inputs' device and of their dtype.

    Raises:
        InputError: see :func:`MedFusionLib.validation.check_fusion_tensors`; a
            dimensionality the method does not fuse.
        ParameterError: unknown method, bad ``parameters``.
    """
    spec = _method(method)
    params = spec.resolve_parameters(parameters)
    a, b = check_fusion_tensors(a, b)
    _check_dims(spec, a.ndim)
    return _fuse_checked(spec, a, b, params)


def _fuse_checked(
    spec: FusionMethod, a: torch.Tensor, b: torch.Tensor, params: dict[str, Any]
) -> torch.Tensor:
    """Run the method on inputs that passed the checks; clamp to ``[0, 1]``."""
    dtype = a.dtype
    if dtype != torch.float32 and (spec.family == "cnn" or dtype in _HALF_TYPES):
        a, b = a.float(), b.float()
    with torch.no_grad():
        fused = spec.function(a, b, **params)
    return fused.clamp_(0.0, 1.0).to(dtype)


def slab_bounds(
    depth: int, plane_voxels: int, *, halo: int, alignment: int, max_voxels: int
) -> list[tuple[int, int, int, int]]:
    """``(read_start, read_stop, keep_start, keep_stop)`` for each slab along axis 0."""
    alignment = max(1, alignment)
    halo = math.ceil(halo / alignment) * alignment
    core = (max_voxels // max(1, plane_voxels) - 2 * halo) // alignment * alignment
    core = max(core, alignment, halo)
    core = math.ceil(core / alignment) * alignment
    bounds = []
    for start in range(0, depth, core):
        stop = min(depth, start + core)
        bounds.append((max(0, start - halo), min(depth, stop + halo), start, stop))
    return bounds


def fuse_arrays(
    a: np.ndarray,
    b: np.ndarray,
    *,
    method: str | FusionMethod,
    parameters: Mapping[str, Any] | None = None,
    device: str | torch.device = "auto",
    max_slab_voxels: int = DEFAULT_MAX_SLAB_VOXELS,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Fuse two same-shaped floating-point arrays in ``[0, 1]``; returns a new float32 array.

    The inputs follow :func:`fuse_tensors`'s rules (floating point, finite, in ``[0, 1]``;
    integer and boolean arrays are refused) and are fused as float32.

    Args:
        a, b: 2-D ``(H, W)`` or 3-D ``(D, H, W)`` arrays on one grid.
        method: registry name or :class:`FusionMethod`.
        parameters: overrides of the method's defaults.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        max_slab_voxels: volumes above this run in overlapping slabs (when the method allows).
        progress: called as ``progress(done, total)`` after each slab.
    """
    spec = _method(method)
    params = spec.resolve_parameters(parameters)
    dev = check_device(device)
    max_slab_voxels = check_int(max_slab_voxels, name="max_slab_voxels", low=1)
    check_callback(progress, name="progress")
    check_fusion_arrays(a, b)
    _check_dims(spec, a.ndim)
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)

    if a.ndim != 3 or spec.halo is None or a.size <= max_slab_voxels:
        bounds = [(0, a.shape[0], 0, a.shape[0])]
    else:
        bounds = slab_bounds(
            a.shape[0],
            a.shape[1] * a.shape[2],
            halo=spec.halo(params),
            alignment=spec.alignment(params),
            max_voxels=max_slab_voxels,
        )
    out = np.empty_like(a)
    for i, (lo, hi, keep_lo, keep_hi) in enumerate(bounds):
        ta = torch.from_numpy(a[lo:hi]).to(dev)
        tb = torch.from_numpy(b[lo:hi]).to(dev)
        fused = _fuse_checked(spec, ta, tb, params)
        out[keep_lo:keep_hi] = fused[keep_lo - lo : keep_hi - lo].cpu().numpy()
        del ta, tb, fused
        if progress is not None:
            progress(i + 1, len(bounds))
    return out
