"""Pyramid fusion: Laplacian, ratio-of-low-pass, gradient and contrast pyramids, in 2-D and 3-D.

All four methods rest on Burt & Adelson's Gaussian pyramid: ``REDUCE`` filters with the 5-tap
generating kernel ``w = (1/4 - a/2, 1/4, a, 1/4, 1/4 - a/2)`` and keeps every second sample;
``EXPAND`` interpolates back with ``2 w`` per axis (``2**d w`` in ``d`` dimensions, the paper's
``4 w`` in 2-D). Both are separable and run one axis at a time over every axis of the tensor,
so one code path serves ``(H, W)`` slices and ``(D, H, W)`` volumes. ``REDUCE`` computes only
the kept samples and decimates right after each axis (axis 0 first), so the later axes touch
half, then a quarter of the data; ``EXPAND`` writes even and odd samples straight into the
output. The Laplacian, ratio and contrast pyramids use ``a = 0.4``; the gradient pyramid uses
Burt & Kolczynski's binomial kernel ``a = 0.375`` (``w = w' * w'``, which its identities need).

Conventions shared by the four methods:

- Sizes need not be ``2**N + 1``: level ``k+1`` has ``ceil(n/2)`` samples along an axis of
  ``n``. Borders are whole-sample symmetric ("reflect", ``dcb|abcd``) at every level, and
  ``EXPAND`` uses the extension this implies on the coarse grid, so a constant image gives
  constant pyramids.
- ``levels`` is clamped to the largest number that keeps at least 2 samples on every axis at
  the top level (``ceil(n / 2**levels) >= 2``), so small images and thin volumes still work.
- The top (coarsest Gaussian) level is averaged; the band-pass levels are combined by the
  method's rule. Fusing an image with itself returns it (to float rounding).
- Slab-wise fusion is exact: ``halo(params)`` is the exact reach of a slab's cut edges through
  ``REDUCE``, the rule's window and ``EXPAND`` (:func:`pyramid_halo`; 47 voxels for 4 levels)
  and ``alignment(params) = 2**levels`` keeps every slab on the global decimation grid.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from itertools import product
from typing import Any

import torch

from .ops import box_filter, pad_index
from .registry import Parameter, register_method

BURT_ADELSON_A = 0.4
"""Burt & Adelson's generating-kernel parameter: ``w = (.05, .25, .4, .25, .05)``."""

BINOMIAL_A = 0.375
"""``w = (1, 4, 6, 4, 1)/16 = w' * w'`` with ``w' = (1, 2, 1)/4``: Burt & Kolczynski's kernel."""

MAX_LEVELS = 8


# --------------------------------------------------------------------------------------------
# REDUCE / EXPAND
# --------------------------------------------------------------------------------------------


def generating_kernel(a: float = BURT_ADELSON_A) -> tuple[float, float, float, float, float]:
    """Burt & Adelson's 5-tap kernel ``(1/4 - a/2, 1/4, a, 1/4, 1/4 - a/2)`` (sums to 1)."""
    c = 0.25 - 0.5 * a
    return (c, 0.25, a, 0.25, c)


def _take(x: torch.Tensor, dim: int, start: int, stop: int | None, step: int = 1) -> torch.Tensor:
    index: list[slice] = [slice(None)] * x.ndim
    index[dim] = slice(start, stop, step)
    return x[tuple(index)]


def _reflect(j: int, n: int) -> int:
    """Index ``j`` of a whole-sample symmetric extension of an axis of length ``n``."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    j %= period
    return period - j if j >= n else j


@functools.lru_cache(maxsize=256)
def _cpu_index(key: tuple[str, int, int, int]) -> torch.Tensor:
    kind, n, before, after = key
    if kind == "reflect":
        return pad_index(n, before, after, "reflect", torch.device("cpu"))
    p = (n + 1) // 2  # "coarse": a ceil(n/2)-sample level padded by 1 as EXPAND needs
    return torch.tensor([_coarse_index(j, p, n) for j in range(-1, p + 1)])


def _index(kind: str, n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Cached padding indices (they are rebuilt for every level and call otherwise)."""
    index = _cpu_index((kind, n, before, after))
    return index if device.type == "cpu" else index.to(device)


def _pad(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Whole-sample symmetric padding of one axis (``ops.pad_axis(..., "reflect")``, cached indices)."""
    return x.index_select(dim, _index("reflect", x.shape[dim], before, after, x.device))


_PAD_BELOW = 1 << 18
"""Axes of arrays up to this many elements are padded once (fewer, larger ops); bigger arrays
get strided interior ops plus border patches (no padded copy of the array)."""


def reduce_axis(x: torch.Tensor, dim: int, a: float = BURT_ADELSON_A) -> torch.Tensor:
    """Filter one axis with the generating kernel and keep samples ``0, 2, 4, ...``.

    ``out[i] = sum_t w[t] x[2i + t]`` for ``t = -2..2``, reflect borders; ``ceil(n/2)`` samples.
    Only the kept samples are computed (five strided multiply-adds).
    """
    n = x.shape[dim]
    if n == 1:
        return x.clone()
    m = (n + 1) // 2
    w = generating_kernel(a)
    if x.numel() <= _PAD_BELOW:
        xp = _pad(x, dim, 2, 2)
        out = _take(xp, dim, 2, 2 * m + 1, 2) * w[2]
        for t in (-2, -1, 1, 2):
            out.add_(_take(xp, dim, 2 + t, 2 * m + 1 + t, 2), alpha=w[t + 2])
        return out
    out = _take(x, dim, 0, None, 2) * w[2]
    for t in (-2, -1, 1, 2):
        lo = (1 - t) // 2 if t < 0 else 0  # first i with 2i + t >= 0
        hi = min(m, (n - 1 - t) // 2 + 1)  # one past the last i with 2i + t <= n - 1
        if hi > lo:
            start = 2 * lo + t
            out.narrow(dim, lo, hi - lo).add_(
                _take(x, dim, start, start + 2 * (hi - lo) - 1, 2), alpha=w[t + 2]
            )
        for i in [*range(0, min(lo, m)), *range(max(hi, lo), m)]:
            out.narrow(dim, i, 1).add_(x.narrow(dim, _reflect(2 * i + t, n), 1), alpha=w[t + 2])
    return out


def _dims(x: torch.Tensor, dims: Sequence[int] | None) -> Sequence[int]:
    return range(x.ndim) if dims is None else dims


def reduce(x: torch.Tensor, a: float = BURT_ADELSON_A, dims: Sequence[int] | None = None) -> torch.Tensor:
    """Burt & Adelson's ``REDUCE`` over ``dims`` (default: every axis), first axis first.

    Decimating right after each axis's filter makes later axes cheaper.
    """
    for dim in _dims(x, dims):
        x = reduce_axis(x, dim, a)
    return x


def _coarse_index(j: int, p: int, n: int) -> int:
    """Coarse sample ``j`` (at fine position ``2j``) of a ``p``-sample level under a reflected fine axis."""
    return j if 0 <= j < p else _reflect(2 * j, n) // 2


def expand_axis(g: torch.Tensor, dim: int, n: int, a: float = BURT_ADELSON_A) -> torch.Tensor:
    """Interpolate one axis from ``ceil(n/2)`` samples back to ``n`` (Burt & Adelson's ``EXPAND``).

    ``out[i] = 2 sum_t w[t] g[(i - t)/2]`` over integer ``(i - t)/2``: even outputs are
    ``2(c, a, c)`` and odd outputs ``2(1/4, 1/4)`` combinations of coarse samples. The coarse
    grid is extended by the same whole-sample reflection as the fine one (coarse sample ``j``
    sits at fine position ``2j``), which is what ``REDUCE`` of a reflected axis gives.
    """
    p = g.shape[dim]
    if p != (n + 1) // 2:
        raise ValueError(f"expand_axis: {p} coarse samples cannot expand to {n}")
    c, b, a_ = generating_kernel(a)[:3]
    shape = list(g.shape)
    shape[dim] = n
    out = g.new_empty(shape)
    even = _take(out, dim, 0, None, 2)  # p samples
    odd = _take(out, dim, 1, None, 2)  # q = n // 2 samples
    q = n // 2
    if g.numel() <= _PAD_BELOW // 2:
        gp = g.index_select(dim, _index("coarse", n, 1, 1, g.device))
        torch.mul(gp.narrow(dim, 1, p), 2.0 * a_, out=even)
        even.add_(gp.narrow(dim, 0, p), alpha=2.0 * c).add_(gp.narrow(dim, 2, p), alpha=2.0 * c)
        if q > 0:
            torch.add(gp.narrow(dim, 1, q), gp.narrow(dim, 2, q), out=odd).mul_(2.0 * b)
        return out
    torch.mul(g, 2.0 * a_, out=even)
    even.narrow(dim, 0, 1).add_(g.narrow(dim, _coarse_index(-1, p, n), 1), alpha=2.0 * c)
    if p > 1:
        even.narrow(dim, 1, p - 1).add_(g.narrow(dim, 0, p - 1), alpha=2.0 * c)
        even.narrow(dim, 0, p - 1).add_(g.narrow(dim, 1, p - 1), alpha=2.0 * c)
    even.narrow(dim, p - 1, 1).add_(g.narrow(dim, _coarse_index(p, p, n), 1), alpha=2.0 * c)
    inner = min(q, p - 1)
    if inner > 0:
        torch.add(g.narrow(dim, 0, inner), g.narrow(dim, 1, inner), out=odd.narrow(dim, 0, inner))
    if q > inner:  # n even: the last odd sample needs the coarse sample past the end
        torch.add(
            g.narrow(dim, p - 1, 1), g.narrow(dim, _coarse_index(p, p, n), 1), out=odd.narrow(dim, p - 1, 1)
        )
    if q > 0:
        odd.mul_(2.0 * b)
    return out


def expand(
    g: torch.Tensor, shape: Sequence[int], a: float = BURT_ADELSON_A, dims: Sequence[int] | None = None
) -> torch.Tensor:
    """Burt & Adelson's ``EXPAND`` to ``shape`` over ``dims`` (default: every axis), last axis first.

    Expanding the first axis last writes the largest array in whole contiguous planes.
    """
    for dim in reversed(_dims(g, dims)):
        g = expand_axis(g, dim, shape[dim], a)
    return g


def effective_levels(shape: Sequence[int], levels: int) -> int:
    """``levels`` clamped so the top level keeps at least 2 samples on every axis."""
    fit = min(max(0, math.ceil(math.log2(n)) - 1) if n > 1 else 0 for n in shape)
    return max(0, min(levels, fit))


def gaussian_pyramid(x: torch.Tensor, levels: int, a: float = BURT_ADELSON_A) -> list[torch.Tensor]:
    """``[G_0 = x, G_1, ..., G_L]`` with ``L = effective_levels(x.shape, levels)``."""
    pyramid = [x]
    for _ in range(effective_levels(x.shape, levels)):
        pyramid.append(reduce(pyramid[-1], a))
    return pyramid


def laplacian_decompose(
    x: torch.Tensor, levels: int, a: float = BURT_ADELSON_A
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Burt & Adelson's Laplacian pyramid: bands ``L_k = G_k - EXPAND(G_{k+1})`` and the top ``G_L``."""
    bands = []
    g = x
    for _ in range(effective_levels(x.shape, levels)):
        coarse = reduce(g, a)
        band = expand(coarse, g.shape, a)
        bands.append(torch.sub(g, band, out=band))
        g = coarse
    return bands, g


def laplacian_reconstruct(
    bands: Sequence[torch.Tensor], top: torch.Tensor, a: float = BURT_ADELSON_A
) -> torch.Tensor:
    """Invert :func:`laplacian_decompose`: ``G_k = L_k + EXPAND(G_{k+1})`` from the top down."""
    out = top
    for band in reversed(bands):
        out = expand(out, band.shape, a).add_(band)
    return out


# --------------------------------------------------------------------------------------------
# Slab context
# --------------------------------------------------------------------------------------------


def pyramid_halo(levels: int, band_radius: int, expand_radius: int | None = None) -> int:
    """Exact context (level-0 samples) a slab needs for pyramid fusion to equal the whole volume.

    Follows how far wrong values reach in from a slab's cut edge, level by level, in that
    level's samples. Slabs start at multiples of ``2**levels`` and (except at the volume's end)
    stop at one, so at the start edge ``REDUCE`` turns a wrong width ``e`` into
    ``ceil((e + 2) / 2)`` and ``EXPAND`` turns ``c`` into ``2c + 1``; at the end edge (even
    lengths) into ``1 + ceil((e - 1) / 2)`` and ``2c + 2``. A fused band at level ``k`` is wrong
    within ``band_radius`` of wrong ``G_k`` samples and within ``expand_radius`` (default: the
    same) of wrong ``EXPAND(G_{k+1})`` samples; reconstruction adds ``EXPAND`` of the fused level
    above; the top level is combined sample by sample.
    """
    if expand_radius is None:
        expand_radius = band_radius
    worst = 0
    for start_edge in (True, False):
        wrong = [0]
        for _ in range(levels):
            e = wrong[-1]
            wrong.append(math.ceil((e + 2) / 2) if start_edge else 1 + math.ceil((e - 1) / 2))

        def grow(c: int, start_edge: bool = start_edge) -> int:
            return 2 * c + 1 if start_edge else 2 * c + 2

        reach = wrong[levels]
        for k in reversed(range(levels)):
            band = max(wrong[k] + band_radius, grow(wrong[k + 1]) + expand_radius)
            reach = max(band, grow(reach))
        worst = max(worst, reach)
    return worst


def _alignment(params: Mapping[str, Any]) -> int:
    return 2 ** int(params["levels"])


def _mean_pair(x: torch.Tensor) -> torch.Tensor:
    """Mean of a stacked pair ``(2, ...)``."""
    return torch.add(x[0], x[1]).mul_(0.5)


def _pair_bands(
    a: torch.Tensor,
    b: torch.Tensor,
    depth: int,
    kernel_a: float,
    combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Laplacian bands of A and B level by level, each pair merged by ``combine(la, lb)`` at once.

    The two images travel stacked as ``(2, ...)`` from level 1 up (half the operations); level
    0 is reduced image by image so that no stacked copy of the full-size inputs is made. Only
    one level's pair of bands is alive at a time. Returns the fused bands and the stacked top.
    """
    spatial = range(1, a.ndim + 1)
    fused: list[torch.Tensor] = []
    x: torch.Tensor | None = None
    for k in range(depth):
        if k == 0:
            n = torch.stack((reduce(a, kernel_a), reduce(b, kernel_a)))
            e = expand(n, (2, *a.shape), kernel_a, spatial)
            torch.sub(a, e[0], out=e[0])
            torch.sub(b, e[1], out=e[1])
        else:
            assert x is not None
            n = reduce(x, kernel_a, spatial)
            e = expand(n, x.shape, kernel_a, spatial)
            torch.sub(x, e, out=e)
        fused.append(combine(e[0], e[1]))
        del e
        x = n
    top = torch.stack((a, b)) if x is None else x
    return fused, top


# --------------------------------------------------------------------------------------------
# Laplacian pyramid
# --------------------------------------------------------------------------------------------


def _select_max_abs(la: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    """Coefficient of larger magnitude (A on ties)."""
    return torch.where(la.abs() >= lb.abs(), la, lb)


def _select_local_energy(radius: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Coefficient whose ``(2r+1)^d`` window has the larger energy ``sum L^2`` (A on ties)."""

    def select(la: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
        return torch.where(box_filter(la * la, radius) >= box_filter(lb * lb, radius), la, lb)

    return select


def _laplacian_halo(params: Mapping[str, Any]) -> int:
    radius = int(params["window"]) if params["rule"] == "local_energy" else 0
    return pyramid_halo(int(params["levels"]), radius)


@register_method(
    "laplacian_pyramid",
    family="multiscale",
    citation="P. J. Burt, E. H. Adelson, The Laplacian pyramid as a compact image code, "
    "IEEE Transactions on Communications 31(4):532-540, 1983.",
    parameters=(
        Parameter(
            "levels", "int", 4, min=1, max=MAX_LEVELS, help="band-pass levels (clamped for small images)"
        ),
        Parameter(
            "rule",
            "str",
            "max_abs",
            choices=("max_abs", "local_energy"),
            help="detail rule: larger |coefficient|, or larger window energy",
        ),
        Parameter(
            "window", "int", 1, min=1, max=4, help="local_energy window radius (samples at each level)"
        ),
        Parameter(
            "kernel_a", "float", BURT_ADELSON_A, min=0.3, max=0.6, help="generating kernel parameter a"
        ),
    ),
    halo=_laplacian_halo,
    alignment=_alignment,
)
def laplacian_pyramid(
    a: torch.Tensor, b: torch.Tensor, *, levels: int, rule: str, window: int, kernel_a: float
) -> torch.Tensor:
    """Laplacian pyramid fusion: keep the stronger detail at every scale, average the base.

    Burt & Adelson (1983) build ``G_{k+1} = REDUCE(G_k)`` with the generating kernel
    ``a = 0.4`` and the bands ``L_k = G_k - EXPAND(G_{k+1})``; the image is exactly
    ``sum_k EXPAND^k(L_k) + EXPAND^L(G_L)``. Fusion (Burt's pyramid selection) takes, at every
    band sample, the coefficient of larger magnitude (``rule="max_abs"``) or the one whose
    ``(2 window + 1)^d`` neighbourhood has the larger energy ``sum L^2`` (``"local_energy"``,
    the window salience of Burt & Kolczynski 1993), averages the top Gaussian level and
    reconstructs. ``levels`` is clamped so the top level keeps 2 samples per axis. Fusing an
    image with itself returns it (to rounding).
    """
    combine = _select_max_abs if rule == "max_abs" else _select_local_energy(window)
    fused, top = _pair_bands(a, b, effective_levels(a.shape, levels), kernel_a, combine)
    return laplacian_reconstruct(fused, _mean_pair(top), kernel_a)


# --------------------------------------------------------------------------------------------
# Ratio-of-low-pass and contrast pyramids (Toet)
# --------------------------------------------------------------------------------------------


def _contrast_bands(
    a: torch.Tensor, b: torch.Tensor, depth: int, offset: float
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Fused contrasts ``C_k = G_k / EXPAND(G_{k+1}) - 1`` (larger ``|C|``, A on ties) and the stacked top.

    Both images get ``offset`` added first, so every Gaussian level is positive.
    """
    spatial = range(1, a.ndim + 1)
    x = torch.stack((a, b)).add_(offset)
    fused: list[torch.Tensor] = []
    for _ in range(depth):
        n = reduce(x, BURT_ADELSON_A, spatial)
        e = expand(n, x.shape, BURT_ADELSON_A, spatial)
        c = torch.div(x, e, out=e).sub_(1.0)
        fused.append(torch.where(c[0].abs() >= c[1].abs(), c[0], c[1]))
        del e, c
        x = n
    return fused, x


def _ratio_halo(params: Mapping[str, Any]) -> int:
    return pyramid_halo(int(params["levels"]), 0)


_OFFSET_HELP = "added to both images before taking ratios and removed after (avoids 0/0 on black)"


@register_method(
    "ratio_pyramid",
    family="multiscale",
    citation="A. Toet, Image fusion by a ratio of low-pass pyramid, Pattern Recognition Letters "
    "9(4):245-253, 1989.",
    parameters=(
        Parameter("levels", "int", 4, min=1, max=MAX_LEVELS, help="ratio levels (clamped for small images)"),
        Parameter("offset", "float", 0.01, min=1e-4, max=1.0, help=_OFFSET_HELP),
    ),
    halo=_ratio_halo,
    alignment=_alignment,
)
def ratio_pyramid(a: torch.Tensor, b: torch.Tensor, *, levels: int, offset: float) -> torch.Tensor:
    """Ratio-of-low-pass (ROLP) pyramid fusion: keep the larger local luminance contrast.

    Toet (1989) decomposes each image into ratios of successive Gaussian levels,
    ``R_k = G_k / EXPAND(G_{k+1})`` (Burt & Adelson's kernel, ``a = 0.4``), with ``R_L = G_L``;
    ``R_k - 1`` is the local luminance contrast. At every sample the fused ratio is the one
    further from unity (larger ``|R - 1|``), the top level is averaged, and the image is
    rebuilt multiplicatively, ``G_k = R_k EXPAND(G_{k+1})``. Medical images have black
    backgrounds where ratios are 0/0, so ``offset`` (not in the paper; 0.01 of full scale) is
    added to both images first and subtracted from the result; larger offsets damp the ratio
    method's known overshoot in dark regions. Fusing an image with itself returns it.
    """
    fused, top = _contrast_bands(a, b, effective_levels(a.shape, levels), offset)
    out = _mean_pair(top)
    for contrast in reversed(fused):
        out = expand(out, contrast.shape).mul_(contrast.add_(1.0))  # R = 1 + C
    return out.sub_(offset)


@register_method(
    "contrast_pyramid",
    family="multiscale",
    citation="A. Toet, L. J. van Ruyven, J. M. Valeton, Merging thermal and visual images by a "
    "contrast pyramid, Optical Engineering 28(7):789-792, 1989.",
    parameters=(
        Parameter(
            "levels", "int", 4, min=1, max=MAX_LEVELS, help="contrast levels (clamped for small images)"
        ),
        Parameter("offset", "float", 0.01, min=1e-4, max=1.0, help=_OFFSET_HELP),
    ),
    halo=_ratio_halo,
    alignment=_alignment,
)
def contrast_pyramid(a: torch.Tensor, b: torch.Tensor, *, levels: int, offset: float) -> torch.Tensor:
    """Contrast pyramid fusion: keep the larger absolute local luminance contrast.

    Toet, van Ruyven & Valeton (1989) define the contrast pyramid
    ``C_k = G_k / EXPAND(G_{k+1}) - 1`` (Burt & Adelson's kernel, ``a = 0.4``), top level
    ``C_L = G_L``; the fused pyramid takes the contrast of larger magnitude at every sample,
    the top level is averaged, and ``G_k = (1 + C_k) EXPAND(G_{k+1})`` rebuilds the image.
    The decision is the ROLP pyramid's (``|C| = |R - 1|``), so the two methods agree to
    rounding; they differ only in how the product is formed. ``offset`` (not in the paper) is
    added to both images first and subtracted at the end, so black backgrounds do not give 0/0.
    Fusing an image with itself returns it.
    """
    fused, top = _contrast_bands(a, b, effective_levels(a.shape, levels), offset)
    out = _mean_pair(top)
    for contrast in reversed(fused):
        e = expand(out, contrast.shape)
        out = e.addcmul_(e, contrast)  # (1 + C) EXPAND(G_{k+1})
    return out.sub_(offset)


# --------------------------------------------------------------------------------------------
# Gradient pyramid (Burt & Kolczynski)
# --------------------------------------------------------------------------------------------


def gradient_directions(ndim: int) -> list[tuple[tuple[int, ...], float]]:
    """Oriented difference directions ``v`` and reconstruction weights ``c_v`` for ``ndim`` axes.

    ``v`` runs over the ``(3**d - 1)/2`` lattice directions of the ``3^d`` neighbourhood (first
    non-zero component positive): in 2-D the horizontal, vertical and two diagonal directions of
    Burt & Kolczynski; in 3-D the 3 axes, 6 face diagonals and 4 body diagonals. With
    ``w' = (1, 2, 1)/4`` on every axis, ``c_v = w'(v) = 2**(zeros in v) / 4**d`` makes
    ``-sum_v c_v (second difference along v) = 1 - w'`` exactly (in 2-D: ``c = 1/8`` on the axes
    and ``1/16`` on the diagonals, Burt & Kolczynski's ``-1/8 sum_l d_l * d_l`` with their
    ``1/sqrt(2)`` diagonal filters).
    """
    out = []
    for v in product((-1, 0, 1), repeat=ndim):
        nonzero = [s for s in v if s]
        if nonzero and nonzero[0] > 0:
            out.append((v, 2.0 ** v.count(0) / 4.0**ndim))
    return out


def _crop(x: torch.Tensor, margin: int, dims: Sequence[int]) -> torch.Tensor:
    for dim in dims:
        x = x.narrow(dim, margin, x.shape[dim] - 2 * margin)
    return x


def _shift(x: torch.Tensor, margin: int, offset: Sequence[int], dims: Sequence[int]) -> torch.Tensor:
    """View of ``x`` shifted by ``offset`` with ``margin`` samples dropped on each side."""
    for dim, o in zip(dims, offset, strict=True):
        x = x.narrow(dim, margin + o, x.shape[dim] - 2 * margin)
    return x


def _valid_filter(x: torch.Tensor, kernel: Sequence[float], dims: Sequence[int]) -> torch.Tensor:
    """Correlate along ``dims`` keeping only samples whose window lies inside ``x``."""
    radius = len(kernel) // 2
    for dim in dims:
        length = x.shape[dim] - 2 * radius
        out = x.narrow(dim, 0, length) * kernel[0]
        for t in range(1, len(kernel)):
            out.add_(x.narrow(dim, t, length), alpha=kernel[t])
        x = out
    return x


def _gradient_band(x: torch.Tensor, base: torch.Tensor, *, alpha: float, window: int) -> torch.Tensor:
    """One level of Burt & Kolczynski fusion of the stacked pair ``x = (G_k(A), G_k(B))``.

    Returns ``base + (1 + w) * L_delta``, where ``L_delta = -sum_v c_v d_v^T (D_C - (D_A + D_B)/2)``
    is the FSD Laplacian of the fused gradient pyramid minus that of the inputs' mean, and
    ``base`` is the band the result has when A and B agree. Computed on the pair reflected by
    ``5 + window`` samples, every filter taken "valid", so borders follow the reflection.
    """
    nd = x.ndim - 1
    sp = range(1, nd + 1)  # spatial axes of the pair (2, ...)
    sv = range(2, nd + 2)  # spatial axes of a (3, V, ...) stack of oriented gradients
    margin = 5 + window  # w' (1) + d_v (1) + window + d_v^T (1) + (1 + w) (2)
    for dim in sp:
        x = _pad(x, dim, margin, margin)
    p = _valid_filter(x, (0.25, 0.5, 0.25), sp).add_(_crop(x, 1, sp))  # (1 + w') G
    del x
    pa, pb = p[0], p[1]
    pd = pa - pb
    inner = _crop(pd, 1, range(nd)).shape  # where D_v = P(x + v) - P(x) is defined
    centres = [_crop(q, 1, range(nd)) for q in (pa, pb, pd)]
    directions = gradient_directions(nd)
    per_chunk = max(1, min(len(directions), _GRADIENT_CHUNK // pd.numel()))
    # w_A - 1/2 = +-(1/2 - w_min) = +-min(1/2, k (1 - M)), k = 1/(2(1 - alpha)); the sign is
    # that of S_A - S_B, and 1 - M = sum_window (D_A - D_B)^2 / (S_A + S_B)
    k = 0.5 / (1.0 - alpha)
    tiny = torch.finfo(p.dtype).tiny
    lap = p.new_zeros(_crop(pd, 2 + window, range(nd)).shape)
    # one workspace per level: two ping-pong stacks (3, V, ...) and D_A - D_B (V, ...)
    stack = 3 * per_chunk * math.prod(inner)
    workspace = p.new_empty(2 * stack + per_chunk * math.prod(inner))
    buffers = (workspace[:stack], workspace[stack : 2 * stack])
    for first in range(0, len(directions), per_chunk):
        chunk = directions[first : first + per_chunk]
        count = len(chunk)
        # D_v for A, B and A - B: (3, V, ...)
        grads = buffers[0][: 3 * count * math.prod(inner)].view(3, count, *inner)
        for q, centre, out in zip((pa, pb, pd), centres, grads, strict=True):
            torch.stack([_shift(q, 1, v, range(nd)) for v, _ in chunk], out=out).sub_(centre)
        diff = workspace[2 * stack : 2 * stack + count * math.prod(inner)].view(count, *inner)
        diff.copy_(grads[2])
        # D_A^2, D_B^2, (D_A - D_B)^2 summed over the window: S_A, S_B and (1 - M)(S_A + S_B)
        energy = grads.square_()
        for j, dim in enumerate(sv):
            shape = list(energy.shape)
            shape[dim] -= 2 * window
            out = buffers[(j + 1) % 2][: math.prod(shape)].view(shape)
            torch.add(energy.narrow(dim, 0, shape[dim]), energy.narrow(dim, 1, shape[dim]), out=out)
            for t in range(2, 2 * window + 1):
                out.add_(energy.narrow(dim, t, shape[dim]))
            energy = out
        spare = buffers[(len(sv) + 1) % 2]  # the ping-pong buffer not holding energy
        total = spare[: energy[0].numel()].view(energy[0].shape)
        torch.add(energy[0], energy[1], out=total).clamp_min_(tiny)
        delta = energy[2].div_(total).mul_(k).clamp_max_(0.5)
        delta.mul_(energy[0].sub_(energy[1]).sign_()).mul_(_crop(diff, window, sp))  # D_C - (D_A+D_B)/2
        # FSD Laplacian of delta: sum_v c_v (delta_v(x - v) - delta_v(x)), valid
        weights = torch.tensor([-c for _, c in chunk], dtype=delta.dtype).view(-1, *([1] * nd))
        lap.add_((_crop(delta, 1, sp) * weights.to(delta.device)).sum(0))
        for i, (v, c) in enumerate(chunk):
            lap.add_(_shift(delta[i], 1, tuple(-s for s in v), range(nd)), alpha=c)
    del workspace, buffers, grads, diff, energy, total, delta, p, pd
    # (1 + w) L: Burt & Kolczynski's FSD-to-RE conversion, with w = w' * w'
    re_band = _valid_filter(lap, generating_kernel(BINOMIAL_A), range(nd)).add_(_crop(lap, 2, range(nd)))
    return re_band.add_(base)


_GRADIENT_CHUNK = 1 << 21
"""Oriented-gradient samples per image handled at once (directions x voxels): all 4 directions
of a 2-D slice together, fewer of the 13 in 3-D; the level's workspace is 7 times this."""


def _filter_same(x: torch.Tensor, kernel: Sequence[float]) -> torch.Tensor:
    """Separable correlation over every axis, reflect borders, same size."""
    radius = len(kernel) // 2
    for dim in range(x.ndim):
        x = _valid_filter(_pad(x, dim, radius, radius), kernel, (dim,))
    return x


def _gradient_halo(params: Mapping[str, Any]) -> int:
    # a band sample depends on G_k within 4 + window (w' 1, forward then backward difference 1,
    # window, (1 + w) 2) and on EXPAND(G_{k+1}) at the sample itself (exact_reconstruction)
    return pyramid_halo(int(params["levels"]), 4 + int(params["window"]), 0)


@register_method(
    "gradient_pyramid",
    family="multiscale",
    citation="P. J. Burt, R. J. Kolczynski, Enhanced image capture through fusion, Proceedings "
    "of the 4th International Conference on Computer Vision (ICCV), Berlin, pp. 173-182, 1993.",
    parameters=(
        Parameter(
            "levels", "int", 4, min=1, max=MAX_LEVELS, help="pyramid levels (clamped for small images)"
        ),
        Parameter(
            "alpha", "float", 0.85, min=0.0, max=0.999, help="match threshold: select below, average above"
        ),
        Parameter("window", "int", 1, min=1, max=3, help="salience/match window radius (1: 3x3 or 3x3x3)"),
        Parameter(
            "exact_reconstruction",
            "bool",
            True,
            help="add back the inputs' mean FSD-to-RE residual so fuse(X, X) = X (false: the paper's approximation)",
        ),
    ),
    halo=_gradient_halo,
    alignment=_alignment,
)
def gradient_pyramid(
    a: torch.Tensor, b: torch.Tensor, *, levels: int, alpha: float, window: int, exact_reconstruction: bool
) -> torch.Tensor:
    """Gradient pyramid fusion: oriented salience with Burt & Kolczynski's match-gated select/average.

    Burt & Kolczynski (1993) filter every Gaussian level (binomial kernel
    ``w = w' * w' = (1,4,6,4,1)/16``) with ``(1 + w')``, ``w' = (1,2,1)/4``, and take oriented
    differences ``D_kv = d_v * [(1 + w') G_k]``: horizontal, vertical and the two diagonals in
    2-D; in 3-D the same construction over all 13 lattice directions (3 axes, 6 face and 4 body
    diagonals), weighted so the identity ``-sum_v c_v d_v^T d_v (1 + w') = 1 - w`` still holds
    exactly (:func:`gradient_directions`). Per orientation, salience is the window energy
    ``S = sum_p D^2`` (``(2 window + 1)^d`` box) and the match ``M = 2 sum_p D_A D_B / (S_A + S_B)``;
    where ``M <= alpha`` the more salient coefficient is selected, else the two are averaged
    with ``w_min = 1/2 - 1/2 (1 - M)/(1 - alpha)``, ``w_max = 1 - w_min`` (the larger weight to
    the more salient). The fused gradients give the FSD Laplacian ``-sum_v c_v d_v^T D_v``,
    converted to a reduce-expand band with ``(1 + w)``; the top Gaussian level is averaged. The
    paper's conversion is approximate, so an image fused with itself comes back slightly
    changed; with ``exact_reconstruction`` (default) the mean of the two inputs' residuals
    ``L_RE - (1 + w) L_FSD`` is added back, which makes fuse(X, X) = X exactly and leaves the
    fused gradients as they are. Borders are reflected.
    """
    spatial = range(1, a.ndim + 1)
    x = torch.stack((a, b))
    bands: list[torch.Tensor] = []
    for _ in range(effective_levels(a.shape, levels)):
        n = reduce(x, BINOMIAL_A, spatial)
        mean = _mean_pair(x)
        if exact_reconstruction:
            # (L_RE(A) + L_RE(B)) / 2 = mean - EXPAND(REDUCE(mean))
            expanded = expand(_mean_pair(n), mean.shape, BINOMIAL_A)
            base = torch.sub(mean, expanded, out=expanded)
        else:
            # (1 + w) of the mean FSD band G - w G; with the (1 + w) L_delta this is (1 + w) L_FSD(C)
            fsd = mean.sub_(_filter_same(mean, generating_kernel(BINOMIAL_A)))
            base = fsd.add_(_filter_same(fsd, generating_kernel(BINOMIAL_A)))
        bands.append(_gradient_band(x, base, alpha=alpha, window=window))
        x = n
    return laplacian_reconstruct(bands, _mean_pair(x), BINOMIAL_A)
