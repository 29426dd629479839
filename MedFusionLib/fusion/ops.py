"""Torch building blocks shared by the fusion methods, for 2-D and 3-D tensors alike.

Every function takes tensors whose every axis is spatial (``(H, W)`` or ``(D, H, W)``), so
one code path serves slices and volumes on any device. Separable filters run one axis at a
time as sums of shifted views, which keeps memory at a few copies of the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import ParameterError

PadMode = str  # "reflect" (dcba|abcd), "symmetric" (abcd|dcba) or "replicate" (aaaa|abcd)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Map ``"auto"`` to CUDA, then MPS, then CPU; check that a named device exists."""
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise ParameterError(f"unknown device {name!r} (use auto, cpu, cuda or mps)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device {name!r} requested but CUDA is not available")
    if resolved.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ParameterError(f"device {name!r} requested but MPS is not available")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ParameterError(f"unsupported device {name!r} (use auto, cpu, cuda or mps)")
    return resolved


def pad_index(length: int, before: int, after: int, mode: PadMode, device: torch.device) -> torch.Tensor:
    """Indices into an axis of ``length`` that realise the padding ``mode``."""
    idx = torch.arange(-before, length + after, device=device)
    if mode == "replicate" or length == 1:
        return idx.clamp(0, length - 1)
    if mode == "reflect":
        period = 2 * (length - 1)
        idx = idx.remainder(period)
        return torch.where(idx >= length, period - idx, idx)
    if mode == "symmetric":
        period = 2 * length
        idx = idx.remainder(period)
        return torch.where(idx >= length, period - 1 - idx, idx)
    raise ValueError(f"unknown padding mode {mode!r}")


def pad_axis(x: torch.Tensor, dim: int, before: int, after: int, mode: PadMode = "reflect") -> torch.Tensor:
    """Pad one axis of ``x`` by ``before``/``after`` samples."""
    if before == 0 and after == 0:
        return x
    return x.index_select(dim, pad_index(x.shape[dim], before, after, mode, x.device))


def correlate_axis(
    x: torch.Tensor, kernel: Sequence[float] | torch.Tensor, dim: int, *, mode: PadMode = "reflect"
) -> torch.Tensor:
    """Correlate ``x`` along one axis with a centred odd-length 1-D kernel (same size out)."""
    weights = [float(w) for w in kernel]
    radius = len(weights) // 2
    padded = pad_axis(x, dim, radius, radius, mode)
    length = x.shape[dim]
    out = padded.narrow(dim, 0, length) * weights[0]
    for offset in range(1, len(weights)):
        if weights[offset] != 0.0:
            out.add_(padded.narrow(dim, offset, length), alpha=weights[offset])
    return out


def separable_filter(
    x: torch.Tensor, kernel: Sequence[float] | torch.Tensor, *, mode: PadMode = "reflect"
) -> torch.Tensor:
    """Apply the same 1-D kernel along every axis of ``x``."""
    for dim in range(x.ndim):
        x = correlate_axis(x, kernel, dim, mode=mode)
    return x


def gaussian_kernel(sigma: float, *, radius: int | None = None) -> list[float]:
    """Normalised sampled Gaussian; radius defaults to ``ceil(3 sigma)``."""
    if radius is None:
        radius = max(1, math.ceil(3 * sigma))
    values = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    total = sum(values)
    return [v / total for v in values]


def gaussian_filter(
    x: torch.Tensor, sigma: float, *, radius: int | None = None, mode: PadMode = "reflect"
) -> torch.Tensor:
    """Isotropic Gaussian smoothing (in voxels)."""
    return separable_filter(x, gaussian_kernel(sigma, radius=radius), mode=mode)


def box_filter(x: torch.Tensor, radius: int, *, mode: PadMode = "reflect") -> torch.Tensor:
    """Mean over a ``(2r+1)^d`` window, by running sums (cost independent of ``r``)."""
    if radius == 0:
        return x.clone()
    width = 2 * radius + 1
    if width <= 9:  # a few shifted adds beat running sums for small windows
        return separable_filter(x, [1.0 / width] * width, mode=mode)
    for dim in range(x.ndim):
        padded = pad_axis(x, dim, radius + 1, radius, mode)
        csum = padded.to(torch.float64).cumsum(dim) if x.dtype != torch.float64 else padded.cumsum(dim)
        length = x.shape[dim]
        x = (csum.narrow(dim, width, length) - csum.narrow(dim, 0, length)).to(x.dtype) / width
    return x


def window_sum(x: torch.Tensor, radius: int, *, mode: PadMode = "reflect") -> torch.Tensor:
    """Sum over a ``(2r+1)^d`` window."""
    return box_filter(x, radius, mode=mode) * float((2 * radius + 1) ** x.ndim)


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of central-difference gradients (replicated borders)."""
    total = torch.zeros_like(x)
    for dim in range(x.ndim):
        g = correlate_axis(x, (-0.5, 0.0, 0.5), dim, mode="replicate")
        total.addcmul_(g, g)
    return total.sqrt_()


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """Discrete Laplacian (sum of second differences along every axis)."""
    out = torch.zeros_like(x)
    for dim in range(x.ndim):
        out.add_(correlate_axis(x, (1.0, -2.0, 1.0), dim, mode="replicate"))
    return out


def pad_axis_concat(x: torch.Tensor, dim: int, radius: int, mode: PadMode = "reflect") -> torch.Tensor:
    """:func:`pad_axis` by ``radius`` on both sides, built by concatenating flipped edge slices.

    The same values as ``pad_axis``, several times faster along the last (contiguous) axis,
    where ``index_select`` gathers element by element; falls back to ``pad_axis`` when the
    axis is too short for a single reflection.
    """
    length = x.shape[dim]
    if radius == 0:
        return x
    if mode == "replicate" or (mode in ("reflect", "symmetric") and length == 1):
        size = list(x.shape)
        size[dim] = radius
        left, right = x.narrow(dim, 0, 1).expand(size), x.narrow(dim, length - 1, 1).expand(size)
        return torch.cat((left, x, right), dim=dim)
    if mode == "reflect" and radius < length:
        left, right = x.narrow(dim, 1, radius), x.narrow(dim, length - 1 - radius, radius)
    elif mode == "symmetric" and radius <= length:
        left, right = x.narrow(dim, 0, radius), x.narrow(dim, length - radius, radius)
    else:
        return pad_axis(x, dim, radius, radius, mode)
    return torch.cat((left.flip(dim), x, right.flip(dim)), dim=dim)


def window_sum_axes(
    x: torch.Tensor, radius: int, dims: Sequence[int], *, mode: PadMode = "reflect"
) -> torch.Tensor:
    """Sum over ``2 * radius + 1`` samples along each axis in ``dims`` (the others untouched).

    Unlike :func:`box_filter`, leading axes can be a batch (pass only the spatial ``dims``),
    and the sum is a fixed tree of shifted adds (``log2`` of the width doublings plus one add
    per set bit): about ``2 log2(2r+1)`` passes per axis in float32, with the same rounding
    for every voxel wherever it sits in the array, so slab-wise and whole-volume results match
    bit for bit.
    """
    width = 2 * radius + 1
    for dim in dims:
        length = x.shape[dim]
        partial = pad_axis_concat(x, dim, radius, mode)  # sums of `span` samples, starting anywhere
        span, offset, total = 1, 0, None
        while True:
            if width & span:
                term = partial.narrow(dim, offset, length)
                total = term.clone() if total is None else total.add_(term)
                offset += span
            if 2 * span > width:
                break
            count = partial.shape[dim] - span
            partial = partial.narrow(dim, 0, count) + partial.narrow(dim, span, count)
            span *= 2
        x = total
    return x
