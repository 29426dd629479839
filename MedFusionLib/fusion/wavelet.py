"""Wavelet-domain fusion: decimated (DWT) and undecimated (SWT) wavelet transforms in torch.

The transforms run on the last ``nd`` axes of a tensor (1-, 2- or 3-D; leading axes are a
batch), for every discrete wavelet PyWavelets knows; PyWavelets supplies only the filter
coefficients (``pywt.Wavelet(name).dec_lo`` etc.). Filtering is separable, one axis at a time,
with no Python loop over slices:

* decimated levels are a stride-2 ``convNd`` per axis (analysis) and a polyphase ``convNd``
  plus an interleave per axis (synthesis), after PyWavelets' symmetric padding;
* undecimated levels are sums of shifted (dilated) views written in place into reused
  buffers (a stride-1 convolution with a 2-tap dilated kernel is several times slower on CPU).

Transforms, tested coefficient by coefficient against PyWavelets:

* :func:`wavedecn_torch` / :func:`waverecn_torch` reproduce ``pywt.wavedecn`` /
  ``pywt.waverecn`` with PyWavelets' default ``mode="symmetric"`` (half-sample symmetric
  extension ``dcba|abcd|dcba``), its output sizes ``floor((N + L - 1) / 2)`` and its keys
  (``"a"``/``"d"`` per axis, first axis first).
* :func:`swtn_torch` / :func:`iswtn_torch` reproduce ``pywt.swtn`` / ``pywt.iswtn`` (periodic
  extension, filters upsampled by ``2**(j-1)`` at level ``j``; PyWavelets needs sizes that are
  multiples of ``2**level``, the torch transform takes any size).

Fusion rules (registered methods, family ``"wavelet"``):

* ``dwt`` -- Li, Manjunath & Mitra (1995): approximation averaged, detail coefficients chosen
  by an area-based activity (maximum absolute value in a window) followed by consistency
  verification (majority filter on the binary decision map).
* ``swt`` -- Rockinger (1997): approximation averaged, details by maximum absolute value, on
  the shift-invariant ("a trous") transform of Nason & Silverman (1995). For fusion the image
  is extended symmetrically once by the transform's reach and every filter is applied in
  "valid" mode: the transform is then exactly invertible (``fuse(X, X) == X``), equal to the
  undecimated transform of the symmetrically extended image, and local, so slab-wise
  fusion with ``halo = (L - 1)(2**levels - 1)`` (+ the rule's window) is exact.

Both methods transform the two images as one batch of two.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pywt
import torch
import torch.nn.functional as F

from ..errors import ParameterError
from .ops import pad_index
from .registry import Parameter, register_method

#: Every discrete wavelet PyWavelets provides (``pywt.wavelist(kind="discrete")``).
DISCRETE_WAVELETS: tuple[str, ...] = tuple(pywt.wavelist(kind="discrete"))

Coefficients = list  # [approximation, {key: detail}, ...] as pywt.wavedecn returns


# ----------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class FilterBank:
    """The four 1-D filters of a discrete wavelet (PyWavelets' conventions)."""

    name: str
    dec_lo: tuple[float, ...]
    dec_hi: tuple[float, ...]
    rec_lo: tuple[float, ...]
    rec_hi: tuple[float, ...]

    @property
    def length(self) -> int:
        """Filter length ``L`` (even for every discrete PyWavelets wavelet)."""
        return len(self.dec_lo)


@functools.cache
def filter_bank(wavelet: str) -> FilterBank:
    """Filters of the PyWavelets discrete wavelet ``wavelet``; :class:`ParameterError` if unknown."""
    if not isinstance(wavelet, str) or wavelet not in DISCRETE_WAVELETS:
        raise ParameterError(
            f"unknown wavelet {wavelet!r}: use a discrete PyWavelets wavelet such as "
            "haar, db2, db4, sym4, coif1, bior2.2 (see pywt.wavelist(kind='discrete'))"
        )
    w = pywt.Wavelet(wavelet)
    bank = FilterBank(wavelet, tuple(w.dec_lo), tuple(w.dec_hi), tuple(w.rec_lo), tuple(w.rec_hi))
    if bank.length % 2 or len(bank.rec_lo) != bank.length:  # pragma: no cover - pywt invariant
        raise ParameterError(f"wavelet {wavelet!r}: unsupported filter lengths")
    return bank


@functools.lru_cache(maxsize=512)
def _axis_kernel(
    kind: str, wavelet: str, nd: int, axis: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A 1-D filter pair laid along ``axis`` of an ``nd``-D convolution kernel.

    ``analysis``: ``(2, 1, L)``, the time-reversed low/high analysis filters (correlation).
    ``polyphase``: ``(2 phases, 2 bands, L/2)``; output sample ``2p + r`` of a 1-D decimated
    synthesis is ``sum_u f[r + L - 2 - 2u] c[p + u]`` (PyWavelets' "valid" upsampling
    convolution, ``f`` the band's reconstruction filter).
    """
    bank = filter_bank(wavelet)
    length = bank.length
    if kind == "analysis":
        weights = [[bank.dec_lo[::-1]], [bank.dec_hi[::-1]]]
    elif kind == "polyphase":
        pair = (bank.rec_lo, bank.rec_hi)
        weights = [[[f[r + length - 2 - 2 * u] for u in range(length // 2)] for f in pair] for r in (0, 1)]
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    kernel = torch.tensor(weights, dtype=torch.float64)
    shape = list(kernel.shape[:2]) + [1] * nd
    shape[2 + axis] = kernel.shape[2]
    return kernel.reshape(shape).to(dtype=dtype, device=device)


def _conv(nd: int):
    if nd not in (1, 2, 3):
        raise ValueError(f"wavelet transforms support 1 to 3 axes, not {nd}")
    return (F.conv1d, F.conv2d, F.conv3d)[nd - 1]


def _axis_tuple(nd: int, axis: int, value: int) -> tuple[int, ...]:
    return tuple(value if k == axis else 1 for k in range(nd))


# ----------------------------------------------------------------------------- one level


def _pad(x: torch.Tensor, axis: int, before: int, after: int, mode: str, *, first: int = 2) -> torch.Tensor:
    """Pad spatial ``axis`` (tensor dim ``first + axis``, by default of ``(P, C, *S)``);
    ``mode`` "symmetric" (``dcba|abcd``) or "periodic"."""
    if before == 0 and after == 0:
        return x
    dim = first + axis
    n = x.shape[dim]
    if mode == "periodic":
        index = torch.arange(-before, n + after, device=x.device).remainder(n)
    else:
        index = pad_index(n, before, after, mode, x.device)
    return x.index_select(dim, index)


def _split(x: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    """``(P, C, *S) -> (P, 2C, *S')``: a stride-2 filter pair along ``axis``; the new band bit
    is the least significant (so the first axis ends up the most significant)."""
    p, c = x.shape[:2]
    nd = x.ndim - 2
    y = _conv(nd)(x.reshape(p * c, 1, *x.shape[2:]), kernel, stride=_axis_tuple(nd, axis, 2))
    return y.reshape(p, 2 * c, *y.shape[2:])


def _dwt_level(x: torch.Tensor, wavelet: str) -> torch.Tensor:
    """``(P, 1, *S) -> (P, 2**nd, *S')``: one level of PyWavelets' symmetric-mode DWT.

    PyWavelets computes ``y[k] = sum_j dec[j] x[2k + 1 - j]`` over the symmetric extension,
    ``k = 0 .. floor((N + L - 1) / 2) - 1``: along each axis, a stride-2 correlation with the
    reversed filter of the signal padded by ``L - 2`` samples before and ``L - 1`` after.
    """
    nd = x.ndim - 2
    length = filter_bank(wavelet).length
    for axis in range(nd):
        x = _pad(x, axis, length - 2, length - 1, "symmetric")
        x = _split(x, _axis_kernel("analysis", wavelet, nd, axis, x.dtype, x.device), axis)
    return x


def _merge(c: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    """``(P, 2C, *S) -> (P, C, *S')``: decimated synthesis of the least significant band bit
    along ``axis`` (polyphase kernel, then phase ``r`` of output ``p`` goes to sample ``2p + r``)."""
    p, c2 = c.shape[:2]
    nd = c.ndim - 2
    y = _conv(nd)(c.reshape(p * c2 // 2, 2, *c.shape[2:]), kernel)  # (Q, 2 phases, *m)
    y = y.movedim(1, 2 + axis)
    shape = list(y.shape)
    y = y.reshape(*shape[: 1 + axis], 2 * shape[1 + axis], *shape[3 + axis :])
    return y.reshape(p, c2 // 2, *y.shape[y.ndim - nd :])


def _idwt_level(c: torch.Tensor, wavelet: str, shape: Sequence[int] | None = None) -> torch.Tensor:
    """``(P, 2**nd, *n) -> (P, 1, *m)``: one level of PyWavelets' inverse DWT.

    The result has ``2n - L + 2`` samples per axis (PyWavelets' size), cropped to ``shape``
    when given (``pywt.waverecn`` crops the approximation to the next detail's size).
    """
    nd = c.ndim - 2
    for axis in range(nd - 1, -1, -1):
        c = _merge(c, _axis_kernel("polyphase", wavelet, nd, axis, c.dtype, c.device), axis)
        if shape is not None and c.shape[2 + axis] != shape[axis]:
            c = c.narrow(2 + axis, 0, shape[axis])
    return c


@functools.cache
def _undecimated_taps(wavelet: str) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """Python-float taps for the shifted-view undecimated filter bank: analysis
    ``(dec_lo, dec_hi)`` reversed, synthesis ``(rec_lo, rec_hi)`` reversed and halved."""
    bank = filter_bank(wavelet)
    analysis = (bank.dec_lo[::-1], bank.dec_hi[::-1])
    synthesis = (tuple(0.5 * v for v in bank.rec_lo[::-1]), tuple(0.5 * v for v in bank.rec_hi[::-1]))
    return analysis, synthesis


class _Workspace:
    """Scratch tensors reused across levels (and calls), by slot name.

    A fresh multi-megabyte CPU tensor page-faults on first touch, which costs as much as the
    filtering itself; every temporary of the undecimated fusion therefore lives in a slot
    that is allocated once at its largest (first-level) size. Between calls a few workspaces
    are pooled with their small buffers (see :func:`_release`), so repeated 2-D fusions
    touch no new memory while large 3-D buffers are given back.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, slot: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        numel = math.prod(shape)
        buffer = self._buffers.get(slot)
        if (
            buffer is None
            or buffer.numel() < numel
            or buffer.dtype != like.dtype
            or buffer.device != like.device
        ):
            buffer = like.new_empty(numel)
            self._buffers[slot] = buffer
        return buffer[:numel].view(*shape)

    def trim(self, max_bytes: int) -> None:
        """Forget every buffer larger than ``max_bytes``."""
        self._buffers = {
            slot: buffer
            for slot, buffer in self._buffers.items()
            if buffer.numel() * buffer.element_size() <= max_bytes
        }


_POOL: list[_Workspace] = []
_POOL_LOCK = threading.Lock()
_POOL_SIZE = 2  # workspaces kept between calls (concurrent calls each get their own)
_POOL_MAX_BUFFER = 8 * 2**20  # bytes: larger buffers (volumes) are freed after each call


def _acquire() -> _Workspace:
    with _POOL_LOCK:
        return _POOL.pop() if _POOL else _Workspace()


def _release(ws: _Workspace) -> None:
    ws.trim(_POOL_MAX_BUFFER)
    with _POOL_LOCK:
        if len(_POOL) < _POOL_SIZE:
            _POOL.append(ws)


def _scratch(ws: _Workspace | None, slot: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(shape) if ws is None else ws.get(slot, shape, like)


def _weighted_sum(
    out: torch.Tensor, views: Sequence[torch.Tensor], weights: Sequence[float], *, accumulate: bool
) -> None:
    """``out (+)= sum_i weights[i] * views[i]`` in place, skipping zero weights."""
    for view, weight in zip(views, weights, strict=True):
        if weight == 0.0:
            continue
        if accumulate:
            out.add_(view, alpha=weight)
        else:
            torch.mul(view, weight, out=out)
            accumulate = True
    if not accumulate:  # every weight zero
        out.zero_()


def _split_shifted(x: torch.Tensor, taps: Sequence[Sequence[float]], axis: int, step: int) -> torch.Tensor:
    """Undecimated "valid" filter pair along spatial ``axis``, as sums of shifted views.

    ``(B, P, *S) -> (2B, P, *S')`` (bands outermost, the new band bit the most significant)
    with ``S'[axis] = S[axis] - step (L - 1)`` and ``y_b[i] = sum_m taps[b][m] x[i + m step]``.
    """
    dim = 2 + axis
    n = x.shape[dim] - step * (len(taps[0]) - 1)
    shape = list(x.shape)
    shape[dim] = n
    out = x.new_empty(2, *shape)
    views = [x.narrow(dim, m * step, n) for m in range(len(taps[0]))]
    for band in (0, 1):
        _weighted_sum(out[band], views, taps[band], accumulate=False)
    return out.reshape(2 * shape[0], *shape[1:])


def _merge_shifted(c: torch.Tensor, taps: Sequence[Sequence[float]], axis: int, step: int) -> torch.Tensor:
    """``(2B, P, *S) -> (B, P, *S')``: ``x[i] = sum_b sum_m taps[b][m] c_b[i + m step]``, ``b``
    the most significant band bit."""
    pairs = c.reshape(2, c.shape[0] // 2, *c.shape[1:])
    dim = 2 + axis
    n = c.shape[dim] - step * (len(taps[0]) - 1)
    shape = list(pairs.shape[1:])
    shape[dim] = n
    out = c.new_empty(shape)
    views = [pairs[band].narrow(dim, m * step, n) for band in (0, 1) for m in range(len(taps[0]))]
    _weighted_sum(out, views, [*taps[0], *taps[1]], accumulate=False)
    return out


def _swt_level(x: torch.Tensor, wavelet: str, step: int) -> torch.Tensor:
    """``(1, P, *S) -> (2**nd, P, *S)``: one level of PyWavelets' ``swtn`` (periodic), filters
    upsampled by ``step``: ``y[i] = sum_m dec[m] x[(i + step L / 2 - m step) mod N]`` along each
    axis. Band ``i`` is high-pass along axis ``k`` when bit ``k`` of ``i`` is set."""
    nd = x.ndim - 2
    length = filter_bank(wavelet).length
    for axis in range(nd):
        x = _pad(x, axis, step * (length // 2 - 1), step * (length // 2), "periodic")
        x = _split_shifted(x, _undecimated_taps(wavelet)[0], axis, step)
    return x


def _iswt_level(c: torch.Tensor, wavelet: str, step: int) -> torch.Tensor:
    """``(2**nd, P, *S) -> (1, P, *S)``: inverse of :func:`_swt_level`,
    ``x[i] = 1/2 sum_bands sum_m rec[m] c[(i + step (L / 2 - 1) - m step) mod N]`` along each
    axis (the filter bank's perfect reconstruction ``rec_lo * dec_lo + rec_hi * dec_hi =
    2 delta[n - (L - 1)]``)."""
    nd = c.ndim - 2
    length = filter_bank(wavelet).length
    for axis in range(nd - 1, -1, -1):
        c = _pad(c, axis, step * (length // 2), step * (length // 2 - 1), "periodic")
        c = _merge_shifted(c, _undecimated_taps(wavelet)[1], axis, step)
    return c


# ----------------------------------------------------------------------------- pywt-like API


def _keys(nd: int) -> list[str]:
    """PyWavelets' keys in band order: ``"a"``/``"d"`` per axis, axis 0 the most significant."""
    return ["".join("ad"[(band >> (nd - 1 - k)) & 1] for k in range(nd)) for band in range(2**nd)]


def _swt_keys(nd: int) -> list[str]:
    """Keys of the undecimated bands in band order (axis ``k`` is bit ``k``)."""
    return ["".join("ad"[(band >> k) & 1] for k in range(nd)) for band in range(2**nd)]


def _check_level(level: int | None, shape: Sequence[int], wavelet: str) -> int:
    if level is None:
        return max(0, pywt.dwt_max_level(min(shape), filter_bank(wavelet).length))
    if not isinstance(level, int) or level < 0:
        raise ValueError(f"level must be a non-negative integer, got {level!r}")
    return level


def wavedecn_torch(
    x: torch.Tensor, wavelet: str, level: int | None = None, *, ndim: int | None = None
) -> Coefficients:
    """Multi-level n-D DWT, equal to ``pywt.wavedecn(x, wavelet, mode="symmetric", level=level)``.

    Args:
        x: tensor whose last ``ndim`` axes (all axes by default, 1 to 3) are transformed;
            leading axes are a batch.
        wavelet: a discrete PyWavelets wavelet name.
        level: decomposition levels (``None``: ``pywt.dwt_max_level`` of the smallest axis).

    Returns:
        ``[cA_n, {"ad": ..., "da": ..., "dd": ...}, ..., {details of level 1}]``.
    """
    nd = x.ndim if ndim is None else ndim
    spatial = tuple(x.shape[x.ndim - nd :])
    lead = tuple(x.shape[: x.ndim - nd])
    level = _check_level(level, spatial, wavelet)
    keys = _keys(nd)[1:]
    a = x.reshape(-1, 1, *spatial)
    details = []
    for _ in range(level):
        c = _dwt_level(a, wavelet)
        details.append({key: c[:, 1 + i].reshape(*lead, *c.shape[2:]) for i, key in enumerate(keys)})
        a = c[:, :1]
    return [a.reshape(*lead, *a.shape[2:]), *details[::-1]]


def waverecn_torch(coeffs: Coefficients, wavelet: str, *, ndim: int | None = None) -> torch.Tensor:
    """Inverse of :func:`wavedecn_torch`, equal to ``pywt.waverecn(coeffs, wavelet)``.

    Like PyWavelets the result has ``2n - L + 2`` samples per axis (one more than an odd
    input); crop it to the input's shape.
    """
    approx = coeffs[0]
    if not coeffs[1:]:
        return approx
    nd = len(next(iter(coeffs[1].keys()))) if ndim is None else ndim
    keys = _keys(nd)[1:]
    for details in coeffs[1:]:
        ref = details[keys[0]]
        lead = tuple(ref.shape[: ref.ndim - nd])
        shape = tuple(ref.shape[ref.ndim - nd :])
        a = approx
        for k, size in enumerate(shape):  # pywt crops the approximation to the detail size
            dim = a.ndim - nd + k
            if a.shape[dim] != size:
                a = a.narrow(dim, 0, size)
        band = torch.stack([a, *(details[key] for key in keys)], dim=a.ndim - nd).reshape(-1, 2**nd, *shape)
        rec = _idwt_level(band, wavelet)
        approx = rec.reshape(*lead, *rec.shape[2:])
    return approx


def swtn_torch(
    x: torch.Tensor, wavelet: str, level: int, *, ndim: int | None = None
) -> list[dict[str, torch.Tensor]]:
    """Undecimated n-D wavelet transform, equal to ``pywt.swtn(x, wavelet, level)``.

    Periodic extension, level ``j`` filters upsampled by ``2**(j-1)``; returns
    ``[{"aa": cA_n, "ad": ..., ...}, ..., {level 1}]`` (coarsest first, approximations kept,
    like ``trim_approx=False``).
    """
    nd = x.ndim if ndim is None else ndim
    spatial = tuple(x.shape[x.ndim - nd :])
    lead = tuple(x.shape[: x.ndim - nd])
    keys = _swt_keys(nd)
    a = x.reshape(1, -1, *spatial)
    out = []
    for j in range(level):
        c = _swt_level(a, wavelet, 2**j)
        out.append({key: c[i].reshape(*lead, *spatial) for i, key in enumerate(keys)})
        a = c[:1]
    return out[::-1]


def iswtn_torch(
    coeffs: Sequence[Mapping[str, torch.Tensor]], wavelet: str, *, ndim: int | None = None
) -> torch.Tensor:
    """Inverse of :func:`swtn_torch`, equal to ``pywt.iswtn(coeffs, wavelet)``."""
    nd = len(next(iter(coeffs[0].keys()))) if ndim is None else ndim
    keys = _swt_keys(nd)
    approx = coeffs[0][keys[0]]
    lead = tuple(approx.shape[: approx.ndim - nd])
    shape = tuple(approx.shape[approx.ndim - nd :])
    level = len(coeffs)
    for i, details in enumerate(coeffs):
        band = torch.stack([approx, *(details[key] for key in keys[1:])]).reshape(2**nd, -1, *shape)
        approx = _iswt_level(band, wavelet, 2 ** (level - 1 - i)).reshape(*lead, *shape)
    return approx


# ----------------------------------------------------------------------------- fusion rules


def _window_max(x: torch.Tensor, radius: int, nd: int) -> torch.Tensor:
    """Maximum over a ``(2r+1)^nd`` window of the last ``nd`` axes of a non-negative ``x``.

    Zero padding, so near the border the window covers the existing samples only.
    """
    if radius == 0:
        return x
    x = F.pad(x, (radius, radius) * nd)
    for k in range(nd):
        dim = x.ndim - nd + k
        n = x.shape[dim] - 2 * radius
        out = torch.maximum(x.narrow(dim, 0, n), x.narrow(dim, 1, n))
        for offset in range(2, 2 * radius + 1):
            torch.maximum(out, x.narrow(dim, offset, n), out=out)
        x = out
    return x


def _majority(votes: torch.Tensor, radius: int, nd: int) -> torch.Tensor:
    """Majority filter of a decision map (Li et al.'s consistency verification).

    ``votes`` holds +1 (take A), -1 (take B) or 0 (tie) per coefficient; each coefficient
    takes the sign of the sum of the votes in its ``(2r+1)^nd`` window (existing coefficients
    only) and keeps its own vote when that sum is 0. The sums are exact small integers.
    """
    total = F.pad(votes, (radius, radius) * nd)
    for k in range(nd):
        dim = total.ndim - nd + k
        n = total.shape[dim] - 2 * radius
        acc = total.narrow(dim, 0, n) + total.narrow(dim, 1, n)
        for offset in range(2, 2 * radius + 1):
            acc.add_(total.narrow(dim, offset, n))
        total = acc
    # |2 * sum| >= 2 > |own vote| unless the sum is 0: sign(2 sum + own) is the majority.
    return total.mul_(2.0).add_(votes).sign_()


def _consistency_radius(window: int, consistency: bool) -> int:
    """The majority filter's radius: the activity window's, at least 1 (3x3 / 3x3x3)."""
    return max(1, window) if consistency else 0


def select_details(
    details: torch.Tensor, *, window: int, consistency: bool, nd: int, ws: _Workspace | None = None
) -> torch.Tensor:
    """Li et al.'s selection: ``(K, 2, *S)`` sub-bands of A and B -> ``(K, *S)`` fused.

    The activity is the maximum absolute coefficient in a ``(2 window + 1)^nd`` window of the
    same sub-band (``window = 0``: the coefficient itself); the coefficient of the image with
    the larger activity is taken (the mean of the two on an exact tie, which keeps
    ``fuse(X, X) == X``); with ``consistency`` the binary decision map first passes a majority
    filter. Written with ``sign``/``lerp`` rather than boolean masks, which are several times
    slower on CPU.
    """
    shape = (details.shape[0], *details.shape[2:])
    first = torch.abs(details[:, 0], out=_scratch(ws, "act0", shape, details))
    second = torch.abs(details[:, 1], out=_scratch(ws, "act1", shape, details))
    if window:
        first, second = _window_max(first, window, nd), _window_max(second, window, nd)
    votes = first.sub_(second).sign_()  # +1: A, -1: B, 0: tie
    radius = _consistency_radius(window, consistency)
    if radius:
        votes = _majority(votes, radius, nd)
    weight = votes.add_(1.0).mul_(0.5)  # 1: A, 0: B, 0.5: tie
    return torch.lerp(details[:, 1], details[:, 0], weight)


def effective_levels(shape: Sequence[int], wavelet: str, levels: int) -> int:
    """DWT levels actually used: ``levels`` clamped to ``pywt.dwt_max_level`` of the smallest
    axis (at least 1), so that no level filters a signal shorter than the filter."""
    limit = pywt.dwt_max_level(min(shape), filter_bank(wavelet).length)
    return max(1, min(levels, limit))


def swt_levels(shape: Sequence[int], wavelet: str, levels: int) -> int:
    """SWT levels actually used: at most as many as keep the coarsest dilated filter,
    ``(L - 1) 2**(J-1)`` samples, within the image's last axis (at least 1 level).

    Only the last axis counts, which slab-wise fusion (it cuts axis 0) never changes. Without
    the limit a long wavelet at many levels would pad the image by ``(L - 1)(2**J - 1)``
    samples (e.g. 19 125 for ``db38`` at 8 levels).
    """
    span = filter_bank(wavelet).length - 1
    limit = 1
    while limit < levels and span * 2**limit <= shape[-1]:
        limit += 1
    return limit


def _rule_reach(params: Mapping[str, Any]) -> int:
    window = int(params.get("window", 0))
    return window + _consistency_radius(window, bool(params.get("consistency", False)))


def _dwt_halo(params: Mapping[str, Any]) -> int:
    """Context along axis 0 for slab-wise DWT fusion.

    Analysis followed by synthesis reaches ``(L - 1)(2**J - 1)`` samples on each side and the
    selection windows ``reach * 2**J`` (they act on level-``J`` coefficients); a slab must also
    be long enough (``(L - 1) 2**J``) for the level clamp to keep ``J`` levels.
    """
    length = filter_bank(params["wavelet"]).length
    levels = int(params["levels"])
    reach = (length - 1) * (2**levels - 1) + _rule_reach(params) * 2**levels
    return max(reach, (length - 1) * 2**levels)


def _dwt_alignment(params: Mapping[str, Any]) -> int:
    return 2 ** int(params["levels"])


def _swt_halo(params: Mapping[str, Any]) -> int:
    """Undecimated: analysis + synthesis reach ``(L - 1)(2**J - 1)``, plus the rule windows."""
    length = filter_bank(params["wavelet"]).length
    return (length - 1) * (2 ** int(params["levels"]) - 1) + _rule_reach(params)


def _wavelet_parameter(default: str) -> Parameter:
    return Parameter(
        "wavelet",
        "str",
        default,
        choices=DISCRETE_WAVELETS,
        help="discrete PyWavelets wavelet (pywt.wavelist(kind='discrete'))",
    )


@register_method(
    "dwt",
    family="wavelet",
    citation="H. Li, B. S. Manjunath, S. K. Mitra, Multisensor image fusion using the wavelet "
    "transform, Graphical Models and Image Processing 57(3):235-245, 1995.",
    parameters=(
        _wavelet_parameter("db4"),
        Parameter(
            "levels",
            "int",
            3,
            min=1,
            max=8,
            help="decomposition levels; clamped to pywt.dwt_max_level of the smallest axis",
        ),
        Parameter(
            "window",
            "int",
            1,
            min=0,
            max=5,
            help="activity window radius (1: 3x3, 2: 5x5, as in Li et al.; 0: coefficient itself)",
        ),
        Parameter(
            "consistency",
            "bool",
            True,
            help="majority filter on the decision map (window radius, at least 1)",
        ),
    ),
    halo=_dwt_halo,
    alignment=_dwt_alignment,
)
def dwt(
    a: torch.Tensor, b: torch.Tensor, *, wavelet: str, levels: int, window: int, consistency: bool
) -> torch.Tensor:
    """DWT fusion: approximation averaged, details by maximum windowed activity + consistency.

    Decimated wavelet transform with PyWavelets' symmetric extension; ``levels`` is clamped to
    ``pywt.dwt_max_level(min(shape), L)`` (at least 1) for small images.

    Defaults: the activity is the maximum absolute value in a 3x3 window and the decision map
    passes a 3x3 majority filter, as Li et al. describe (they mention 3x3 and 5x5 windows).
    Li et al. used Daubechies filters and compared several kernels; the filter and level count
    of their experiments could not be checked against the paper's text here, so ``db4``
    (Daubechies' 8-tap filter) at 3 levels is this implementation's choice, not a quotation.
    """
    nd = a.ndim
    x = torch.stack((a, b)).unsqueeze(1)  # (2, 1, *S): both images in one batch
    shapes = [tuple(a.shape)]
    fused_details = []
    for _ in range(effective_levels(a.shape, wavelet, levels)):
        c = _dwt_level(x, wavelet)
        fused_details.append(
            select_details(c[:, 1:].transpose(0, 1), window=window, consistency=consistency, nd=nd)
        )
        shapes.append(tuple(c.shape[2:]))
        x = c[:, :1]
    approx = x.mean(0)  # (1, *S_J)
    for j in range(len(fused_details) - 1, -1, -1):
        band = torch.cat((approx, fused_details[j])).unsqueeze(0)
        approx = _idwt_level(band, wavelet, shapes[j])[0]
    return approx[0]


@register_method(
    "swt",
    family="wavelet",
    citation="O. Rockinger, Image sequence fusion using a shift-invariant wavelet transform, "
    "Proc. ICIP 1997, vol. 3, pp. 288-291; stationary transform: G. P. Nason, B. W. Silverman, "
    "The stationary wavelet transform and some statistical applications, Lecture Notes in "
    "Statistics 103:281-299, 1995.",
    parameters=(
        _wavelet_parameter("haar"),
        Parameter(
            "levels",
            "int",
            4,
            min=1,
            max=8,
            help="decomposition levels; reduced while the coarsest dilated filter exceeds the last axis",
        ),
        Parameter(
            "window",
            "int",
            0,
            min=0,
            max=5,
            help="activity window radius (0: maximum absolute coefficient, as Rockinger)",
        ),
        Parameter("consistency", "bool", False, help="majority filter on the decision map"),
    ),
    halo=_swt_halo,
)
def swt(
    a: torch.Tensor, b: torch.Tensor, *, wavelet: str, levels: int, window: int, consistency: bool
) -> torch.Tensor:
    """Shift-invariant (undecimated) wavelet fusion: approximation averaged, details by max-abs.

    Defaults follow Rockinger's shift-invariant DWT fusion (the Haar wavelet, 4 levels, mean of
    the base band, the larger absolute coefficient elsewhere), as in his Image Fusion Toolbox
    (``fuse_sih``); ``window``/``consistency`` optionally add Li et al.'s rule.

    The images are extended symmetrically once by the transform's reach, transformed with
    "valid" dilated filters (exactly invertible) and the fused result is cropped back.
    ``levels`` is reduced for images too small for it (:func:`swt_levels`).
    """
    levels = swt_levels(a.shape, wavelet, levels)
    fusion = _UndecimatedFusion(wavelet, a.ndim, levels, window, consistency)
    try:
        return fusion.fuse(a, b)
    finally:
        _release(fusion.ws)


class _UndecimatedFusion:
    """Undecimated fusion of two images, one level at a time, bands visited depth first.

    Positions are in input samples, the same on every axis. An analysis output ``i`` mixes
    inputs ``i .. i + span`` (it starts ``span`` later than its input); a synthesis output
    ``i`` mixes coefficients ``i .. i + span`` (same start). The input is extended by
    ``pad = (L - 1)(2**levels - 1) + rule`` on each side, so every coefficient the output
    needs is computed from real (extended) samples; the fused level-``j`` details are only
    needed on ``[0, N + spans of levels 1..j)`` (plus ``rule`` for whole selection windows)
    and are computed on that region alone. Visiting the bands depth first (one axis per depth)
    needs one two-band scratch tensor per axis rather than all ``2**nd`` bands at once. For
    volumes, as the synthesis is linear, each level's fused details are synthesised (then
    low-pass filtered down to level 0) as soon as they are chosen, so no level is kept: memory
    is a few times the padded input whatever ``levels``, at the price of
    ``levels (levels + 1) / 2`` single-band low-pass passes.
    """

    def __init__(
        self, wavelet: str, nd: int, levels: int, window: int, consistency: bool, stream: bool | None = None
    ) -> None:
        self.nd, self.levels = nd, levels
        self.stream = nd >= 3 if stream is None else stream
        self.window, self.consistency = window, consistency
        self.length = filter_bank(wavelet).length
        self.analysis, self.synthesis = _undecimated_taps(wavelet)
        self._pairs: dict[tuple[torch.dtype, torch.device, int], list[torch.Tensor]] = {}
        self.rule = _rule_reach({"window": window, "consistency": consistency})
        self.ws = _acquire()

    def fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        nd, size = self.nd, tuple(a.shape)
        pad = (self.length - 1) * (2**self.levels - 1) + self.rule
        x = torch.stack((a, b))  # (2 images, *S)
        for axis in range(nd):
            x = _pad(x, axis, pad, pad, "symmetric", first=1)
        start, spans = -pad, 0
        # Volumes: the synthesis is linear, so each level's fused details are synthesised at
        # once (details only, then carried down to level 0 by the low-pass synthesis filters)
        # and forgotten; no level is kept in memory. Images: levels are kept and synthesised
        # coarse to fine as usual, which takes fewer (small) operations.
        stream = self.stream
        total, kept = None, []
        for j in range(self.levels):
            span = 2**j * (self.length - 1)
            start += span
            spans += span
            fused: dict[int, torch.Tensor] = {}
            x = self._analyse(x, 0, 0, j, start, [n + spans for n in size], fused)
            if stream:
                part = self._lowpass(self._synthesise(0, 0, j, None, fused), j)
                total = part.clone() if total is None else total.add_(part)
            else:
                kept.append(fused)
        approx = _crop(x.unsqueeze(0), start, 0, [n + spans for n in size])[0].mean(0)  # starts at 0
        if stream:
            return total.add_(self._lowpass(approx, self.levels))
        for j in range(self.levels - 1, -1, -1):
            approx = self._synthesise(0, 0, j, approx, kept[j])
        return approx.clone()  # the workspace is reused by later calls

    def _lowpass(self, t: torch.Tensor, levels: int) -> torch.Tensor:
        """Low-pass synthesis of levels ``levels - 1 .. 0`` (no details) of a band at level
        ``levels``, which starts at position 0."""
        for i in range(levels - 1, -1, -1):
            step = 2**i
            for k in range(self.nd - 1, -1, -1):
                shape = list(t.shape)
                shape[k] -= step * (self.length - 1)
                out = self.ws.get(f"lowpass{(i * self.nd + k) % 2}", shape, t)
                views = [t.narrow(k, m * step, shape[k]) for m in range(self.length)]
                _weighted_sum(out, views, self.synthesis[0], accumulate=False)
                t = out
        return t

    def pair_taps(self, like: torch.Tensor) -> list[torch.Tensor]:
        """Per tap, the (low, high) analysis weights shaped to broadcast over ``(2, *like)``."""
        key = (like.dtype, like.device, like.ndim)
        if key not in self._pairs:
            pairs = torch.tensor(list(zip(*self.analysis, strict=True)), dtype=like.dtype, device=like.device)
            self._pairs[key] = [p.reshape(2, *([1] * like.ndim)) for p in pairs]
        return self._pairs[key]

    def _analyse(
        self,
        t: torch.Tensor,
        k: int,
        prefix: int,
        j: int,
        start: int,
        needed: list[int],
        fused: dict[int, torch.Tensor],
    ) -> torch.Tensor | None:
        """Split band ``prefix`` (``(2 images, *S)``) along axis ``k`` and recurse; at the last
        axis fuse the details into ``fused[prefix]`` and return the approximation."""
        nd, step = self.nd, 2**j
        shape = list(t.shape)
        shape[1 + k] -= step * (self.length - 1)
        slot = f"analysis{k}" if nd > 1 else f"analysis{k}-{j % 2}"  # 1-D: output feeds the next level
        out = self.ws.get(slot, (2, *shape), t)  # (low, high) x (2 images, *S')
        _split_valid(t, self.pair_taps(t), 1 + k, step, out)
        if k < nd - 1:
            approx = None
            for side in (1, 0):  # high first: band 0 (the approximation) is visited last
                approx = self._analyse(out[side], k + 1, prefix | side << k, j, start, needed, fused)
            return approx
        details = out if prefix else out[1:]  # bands prefix (+ high along the last axis)
        details = _crop(details, start, -self.rule, [n + 2 * self.rule for n in needed])
        chosen = select_details(details, window=self.window, consistency=self.consistency, nd=nd, ws=self.ws)
        fused[prefix] = _crop(chosen.unsqueeze(1), -self.rule, 0, needed)[:, 0]
        return out[0]  # the approximation when prefix == 0, visited last: its slot survives

    def _synthesise(
        self, k: int, band: int, j: int, approx: torch.Tensor | None, fused: dict[int, torch.Tensor]
    ) -> torch.Tensor | None:
        """Rebuild the node ``band`` (axes ``< k`` decided) at level ``j`` by merging its children
        along ``k``; ``approx=None`` leaves the approximation out (details only)."""
        nd, step = self.nd, 2**j
        if k == nd:  # a leaf: the band's (fused) coefficients
            if band == 0:
                return approx
            prefix = band & ((1 << (nd - 1)) - 1)
            return fused[prefix][0 if prefix == 0 else band >> (nd - 1)]
        low = self._synthesise(k + 1, band, j, approx, fused)
        high = self._synthesise(k + 1, band | 1 << k, j, approx, fused)
        assert high is not None  # only the approximation path can be absent
        shape = list(high.shape)
        shape[k] -= step * (self.length - 1)
        # children stay alive until their parent merges them; the root may feed the next level
        out = self.ws.get(f"synthesis{k}-{band >> (k - 1) & 1}" if k else f"synthesis0-{j % 2}", shape, high)
        pairs = ((low, self.synthesis[0]), (high, self.synthesis[1]))
        views = [
            v.narrow(k, m * step, shape[k]) for v, _ in pairs if v is not None for m in range(self.length)
        ]
        weights = [w for v, taps in pairs if v is not None for w in taps]
        _weighted_sum(out, views, weights, accumulate=False)
        return out


def _split_valid(
    x: torch.Tensor, taps: Sequence[torch.Tensor], dim: int, step: int, out: torch.Tensor
) -> None:
    """``out[b, i] = sum_m taps[m][b] x[i + m step]`` along ``dim`` of ``x`` ("valid"; ``out``,
    of shape ``(2, ...)``, sets the size): both bands at once, one broadcast op per tap."""
    n = out.shape[1 + dim]
    for m, weights in enumerate(taps):
        view = x.narrow(dim, m * step, n).unsqueeze(0)
        if m == 0:
            torch.mul(view, weights, out=out)
        else:
            out.addcmul_(view, weights)


def _crop(x: torch.Tensor, start: int, new_start: int, lengths: Sequence[int]) -> torch.Tensor:
    """View of the spatial axes ``2..`` of ``x`` (whose index 0 lies at ``start``) from
    position ``new_start``, ``lengths[k]`` samples along axis ``k``."""
    for k, n in enumerate(lengths):
        x = x.narrow(2 + k, new_start - start, n)
    return x
