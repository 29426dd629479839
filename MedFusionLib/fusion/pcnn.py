"""Pulse-coupled neural network fusion: the parameter-adaptive PCNN (PA-PCNN) of Yin et al.

M. Yin, X. Liu, Y. Liu, X. Chen, "Medical image fusion with parameter-adaptive pulse coupled
neural network in nonsubsampled shearlet transform domain", IEEE Trans. Instrum. Meas.
68(1):49-64, 2019. The method has three parts, each implemented here from the paper:

1. **Multi-scale decomposition.** The paper uses the nonsubsampled shearlet transform (NSST,
   4 levels). NSST is not available in our stack, so we use its first, multi-scale stage alone:
   a *non-subsampled* (a trous) Laplacian pyramid, as in the first stage of NSCT/NSST. Level
   ``j`` smooths the previous approximation with the B3-spline kernel ``[1 4 6 4 1]/16`` along
   every axis, upsampled by inserting ``2**j - 1`` zeros between taps (no decimation); the
   detail band is the difference of consecutive approximations, so the image is exactly the
   last approximation plus the sum of the details. The shearlet *directional* split of each
   scale is not reproduced: each scale is one isotropic band (in 2-D and 3-D alike).
2. **Low-frequency band:** the paper's WLE x WSEML rule. The weighted local energy is the
   ``[1 2 1]/4``-per-axis weighted sum of ``L**2`` over the 3x3 (3x3x3) window (in 2-D exactly
   the paper's ``W = [1 2 1; 2 4 2; 1 2 1]/16``); the eight-neighbourhood modified Laplacian
   sums ``|2 L(x) - L(x - d) - L(x + d)| / |d|`` over the 4 (2-D) or 13 (3-D) directions ``d`` of
   the 8- (26-) neighbourhood, i.e. inverse-distance weights ``1, 1/sqrt 2, 1/sqrt 3`` (in 2-D
   exactly the paper's EML); WSEML weights it with the same window. The source with the larger
   ``WLE * WSEML`` gives the coefficient (A on ties, as the paper's ``>=``).
3. **High-frequency bands:** the PA-PCNN fed with ``S = |band|`` (amplitude normalised to
   ``[0, 1]`` by the band's maximum, as the paper states for its parameter estimates)::

       L[n] = sum_k W_k Y_k[n-1]          (linking input, W = synaptic weights)
       U[n] = exp(-alpha_f) U[n-1] + S (1 + lambda L[n])
       Y[n] = U[n] > E[n-1]
       E[n] = exp(-alpha_e) E[n-1] + V_E Y[n]          with U[0] = E[0] = Y[0] = 0

   with the paper's adaptive parameters from the band's own statistics: ``alpha_f =
   log(1 / sigma(S))``, ``lambda = (S_max / S' - 1) / K``, ``V_E = exp(-alpha_f) + 1 + K lambda``,
   ``alpha_e = ln(V_E / (S' (1 - exp(-3 alpha_f)) / (1 - exp(-alpha_f)) + K lambda
   exp(-alpha_f)))``, ``S'`` the Otsu threshold of ``S`` (256-level histogram, as MATLAB's
   ``graythresh``) and ``K = sum(W)``. In 2-D ``W = [0.5 1 0.5; 1 0 1; 0.5 1 0.5]`` and ``K = 6``,
   the paper's values. In 3-D ``W`` is the 3x3x3 neighbourhood weighted by the inverse *squared*
   distance (1, 1/2, 1/3): the paper's 2-D weights are exactly ``1/d**2`` (0.5 at distance
   sqrt 2), so every axial plane of the 3-D kernel is the paper's kernel; ``K = 44/3``. Since
   ``lambda K = S_max/S' - 1`` whatever ``K`` is, replacing 6 by ``K`` is the same as scaling
   ``W`` to sum 6. Firing counts ``T = sum_n Y[n]`` are accumulated over ``N = 110`` iterations
   and the coefficient whose neuron fired more often is kept. The paper keeps A on equal
   counts (``T_A >= T_B``); counts are small integers that tie often (a few per cent of the
   voxels tie with different coefficients), which would make the result depend on the order
   of A and B, so equal counts keep the coefficient of larger magnitude instead.

The PCNN runs as whole-tensor operations on all bands of both sources at once (up to a memory
budget), with the binary pulses and the linking sums in ``uint8`` and the rest in ``float32``.
It uses global band statistics, so the method runs on the whole volume (``halo=None``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from .ops import correlate_axis, pad_axis, separable_filter
from .registry import Parameter, register_method

OTSU_BINS = 256
_B3_SPLINE = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)
# Bands of both sources are run through the PCNN together until their voxels exceed this.
_PCNN_BATCH_VOXELS = 1 << 23


# --- Otsu threshold -----------------------------------------------------------------------


def otsu_threshold(x: torch.Tensor, *, bins: int = OTSU_BINS) -> torch.Tensor:
    """Otsu's threshold of values in ``[0, 1]`` on a ``bins``-level histogram (0-d CPU tensor).

    Values are quantised to the levels ``k / (bins - 1)`` (rounding, values outside ``[0, 1]``
    clipped), as MATLAB's ``graythresh`` does for 256 levels. The result is the level ``k``
    that maximises the between-class variance of ``{<= k}`` and ``{> k}``, the first one on
    ties; a constant input gives its own level. Deterministic (integer histogram).
    """
    if bins < 2:
        raise ValueError("Otsu's threshold needs at least 2 bins")
    levels = (x.reshape(-1) * (bins - 1)).clamp_(0, bins - 1).round_()
    dtype = torch.uint8 if bins <= 256 else torch.int64
    # the histogram on x's device, the few-bin arithmetic in float64 on the CPU
    counts = torch.bincount(levels.to(dtype), minlength=bins).to("cpu", torch.float64)
    del levels
    p = counts / counts.sum()
    grid = torch.arange(bins, dtype=torch.float64)
    omega = p.cumsum(0)
    mu = (p * grid).cumsum(0)
    denominator = omega * (1.0 - omega)
    valid = denominator > 1e-12
    between = torch.where(valid, (mu[-1] * omega - mu) ** 2 / denominator.clamp_min(1e-300), -1.0)
    best = torch.argmax(between)  # the first maximum
    first_occupied = torch.argmax((counts > 0).to(torch.uint8))
    k = torch.where(valid.any(), best, first_occupied)
    return k.to(torch.float64) / (bins - 1)


# --- the PA-PCNN ----------------------------------------------------------------------------


def _linking_weights(ndim: int) -> tuple[int, list[int]]:
    """Integer weights ``w[k]`` of a neighbour with ``k`` non-zero offsets, and their scale.

    ``w[k] / scale = 1 / k`` is the inverse squared distance; ``scale = lcm(1..ndim)``.
    """
    scale = math.lcm(*range(1, ndim + 1))
    return scale, [0] + [scale // k for k in range(1, ndim + 1)]


def linking_weight_sum(ndim: int) -> float:
    """``K = sum(W)``: 6 for the paper's 2-D kernel, 44/3 for the 3-D one."""
    return sum(math.comb(ndim, k) * 2**k / k for k in range(1, ndim + 1))


def linking_kernel(ndim: int) -> torch.Tensor:
    """The synaptic weights ``W`` as a dense 3x3 (3x3x3) float tensor (for reference/tests)."""
    grids = torch.meshgrid(*[torch.arange(-1, 2)] * ndim, indexing="ij")
    nonzero = sum(g.abs() for g in grids).to(torch.float32)
    return torch.where(nonzero > 0, 1.0 / nonzero.clamp_min(1.0), torch.zeros(()))


def _neighbours(x: torch.Tensor, out: torch.Tensor, dim: int) -> torch.Tensor:
    """``out = x(i - 1) + x(i + 1)`` along ``dim`` with zeros outside (neurons that don't exist)."""
    n = x.shape[dim]
    if n == 1:
        return out.zero_()
    if n > 2:
        torch.add(x.narrow(dim, 0, n - 2), x.narrow(dim, 2, n - 2), out=out.narrow(dim, 1, n - 2))
    out.narrow(dim, 0, 1).copy_(x.narrow(dim, 1, 1))
    out.narrow(dim, n - 1, 1).copy_(x.narrow(dim, n - 2, 1))
    return out


def _add_neighbours(x: torch.Tensor, out: torch.Tensor, dim: int) -> torch.Tensor:
    """``out += x(i - 1) + x(i + 1)`` along ``dim`` (zeros outside)."""
    n = x.shape[dim]
    if n > 1:
        out.narrow(dim, 1, n - 1).add_(x.narrow(dim, 0, n - 1))
        out.narrow(dim, 0, n - 1).add_(x.narrow(dim, 1, n - 1))
    return out


class _LinkingSum:
    """``scale * sum_k W_k Y_k`` for a batch ``(B, *spatial)`` of binary ``uint8`` maps.

    ``W`` is the inverse-squared-distance 3^d neighbourhood; the sum is separable by groups:
    with ``N_a`` the two-neighbour sum along axis ``a``, ``sum_K w(|K|) prod_{a in K} N_a Y``
    over non-empty axis sets ``K``. Axes after the first are folded into ``G[k]`` (the sum over
    ``k``-subsets), the first axis is applied once to a weighted combination. All in ``uint8``
    (at most 12 in 2-D, 88 in 3-D) with preallocated buffers.
    """

    def __init__(self, shape: Sequence[int], device: torch.device) -> None:
        self.ndim = len(shape) - 1
        self.scale, self.weights = _linking_weights(self.ndim)

        def buffer() -> torch.Tensor:
            return torch.empty(tuple(shape), dtype=torch.uint8, device=device)

        self.groups = [buffer() for _ in range(self.ndim - 1)]  # G[1..ndim-1]
        self.combined = buffer()
        self.out = buffer()

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        groups: list[torch.Tensor] = [y]
        for dim in range(self.ndim, 1, -1):  # spatial axes after the first, last first
            count = len(groups)
            new = self.groups[count - 1]
            _neighbours(groups[count - 1], new, dim)
            for k in range(count - 1, 0, -1):  # G[k] += N(G[k-1]), old G[k-1]
                _add_neighbours(groups[k - 1], groups[k], dim)
            groups.append(new)
        w = self.weights
        torch.mul(groups[0], w[1], out=self.combined)
        for k in range(1, len(groups)):
            self.combined.add_(groups[k], alpha=w[k + 1])
        out = _neighbours(self.combined, self.out, 1)
        for k in range(1, len(groups)):
            out.add_(groups[k], alpha=w[k])
        return out


def pcnn_parameters(s: torch.Tensor, ndim: int) -> dict[str, torch.Tensor]:
    """The paper's adaptive parameters for each band of ``s`` ``(B, *spatial)`` in ``[0, 1]``.

    Returns float64 CPU tensors of shape ``(B,)``: ``alpha_f``, ``lam`` (lambda = beta V_L),
    ``v_e``, ``alpha_e`` and the Otsu threshold ``threshold``. ``S_max`` is 1 (normalised input).
    """
    k_sum = linking_weight_sum(ndim)
    flat = s.reshape(s.shape[0], -1)
    sigma = flat.std(dim=1).to("cpu", torch.float64).clamp_min(1e-12)
    threshold = torch.stack([otsu_threshold(band) for band in flat])
    # A threshold at level 0 would make lambda infinite: use the edge of the first bin.
    safe = threshold.clamp_min(0.5 / (OTSU_BINS - 1))
    s_max = 1.0
    alpha_f = torch.log(1.0 / sigma)
    decay_f = torch.exp(-alpha_f)
    lam = (s_max / safe - 1.0) / k_sum
    v_e = decay_f + 1.0 + k_sum * lam
    # (1 - exp(-3 a)) / (1 - exp(-a)) = 1 + exp(-a) + exp(-2 a), finite for every a > 0
    geometric = 1.0 + decay_f + decay_f * decay_f
    alpha_e = torch.log(v_e / (safe * geometric + k_sum * lam * decay_f))
    return {"alpha_f": alpha_f, "lam": lam, "v_e": v_e, "alpha_e": alpha_e, "threshold": threshold}


def pcnn_firing_counts(
    s: torch.Tensor,
    iterations: int,
    *,
    alpha_f: torch.Tensor,
    lam: torch.Tensor,
    v_e: torch.Tensor,
    alpha_e: torch.Tensor,
) -> torch.Tensor:
    """Firing counts ``T = sum_n Y[n]`` of the PA-PCNN for a batch of inputs.

    Args:
        s: ``(B, *spatial)`` non-negative feeding inputs (the normalised ``|band|``).
        iterations: ``N``.
        alpha_f, lam, v_e, alpha_e: per-band parameters, tensors of shape ``(B,)``.

    Returns:
        ``(B, *spatial)`` counts, ``uint8`` when ``iterations <= 255`` else ``int16``.

    The state is kept in units of ``V_E`` (``U / V_E``, ``E / V_E``), which turns the
    threshold update into ``E = exp(-alpha_e) E + Y`` without changing which neuron fires.
    """
    ndim = s.ndim - 1
    bshape = (s.shape[0],) + (1,) * ndim

    def per_band(value: torch.Tensor) -> torch.Tensor:
        return value.to(device=s.device, dtype=torch.float32).reshape(bshape)

    link = _LinkingSum(s.shape, s.device)
    feed = s / per_band(v_e)  # S / V_E
    linking = feed * per_band(lam / link.scale)  # lambda S / (V_E scale), times the integer sum
    decay_f, decay_e = per_band(torch.exp(-alpha_f)), per_band(torch.exp(-alpha_e))
    u = torch.zeros_like(s)
    e = torch.zeros_like(s)
    scratch = torch.empty_like(s)  # float copy of the linking sum, then of the pulses
    fired = torch.zeros(s.shape, dtype=torch.bool, device=s.device)
    y = fired.view(torch.uint8)
    counts = torch.zeros(s.shape, dtype=torch.uint8 if iterations <= 255 else torch.int16, device=s.device)
    for n in range(iterations):
        torch.addcmul(feed, u, decay_f, out=u)  # U = exp(-alpha_f) U + S
        if n > 0:  # no pulses before the first iteration
            u.addcmul_(linking, scratch.copy_(link(y)))  # ... + lambda S L
        torch.gt(u, e, out=fired)
        torch.addcmul(scratch.copy_(y), e, decay_e, out=e)  # E = exp(-alpha_e) E + Y
        counts.add_(y)
    return counts


# --- decomposition and low-frequency rule ----------------------------------------------------


def _atrous_kernel(level: int) -> list[float]:
    """The B3-spline kernel with ``2**level - 1`` zeros between taps."""
    step = 2**level
    kernel = [0.0] * (4 * step + 1)
    for i, w in enumerate(_B3_SPLINE):
        kernel[i * step] = w
    return kernel


def _smooth(x: torch.Tensor, level: int) -> torch.Tensor:
    """A trous smoothing of a batch ``(B, *spatial)`` along its spatial axes."""
    kernel = _atrous_kernel(level)
    for dim in range(1, x.ndim):
        x = correlate_axis(x, kernel, dim, mode="reflect")
    return x


def nonsubsampled_pyramid(x: torch.Tensor, levels: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(level, detail)`` for ``level = 0..levels-1``, then ``(levels, approximation)``.

    ``x`` is a batch ``(B, *spatial)``; ``x == approximation + sum(details)`` up to rounding.
    Each detail is yielded before the next is computed, so a caller can stream the levels.
    ``x`` is consumed: its storage becomes the level-0 detail (pass a copy to keep it).
    """
    low = x
    del x
    for level in range(levels):
        smoother = _smooth(low, level)
        yield level, low.sub_(smoother)
        low = smoother
    yield levels, low


def _half_neighbourhood(ndim: int) -> list[tuple[int, ...]]:
    """Offsets in ``{-1, 0, 1}^ndim`` whose first non-zero entry is positive (4 or 13)."""
    offsets = []
    for flat in range(3**ndim):
        offset = tuple((flat // 3**i) % 3 - 1 for i in reversed(range(ndim)))
        nonzero = [o for o in offset if o]
        if nonzero and nonzero[0] > 0:
            offsets.append(offset)
    return offsets


def modified_laplacian(low: torch.Tensor) -> torch.Tensor:
    """EML: ``sum_d |2 L(x) - L(x - d) - L(x + d)| / |d|`` over the 8 (26) neighbourhood.

    In 2-D these are the paper's four directions with weights 1, 1, 1/sqrt 2, 1/sqrt 2.
    Borders are mirrored (``reflect``).
    """
    padded = low
    for dim in range(low.ndim):
        padded = pad_axis(padded, dim, 1, 1, "reflect")
    shape = low.shape
    out = torch.zeros_like(low)
    temp = torch.empty_like(low)
    for offset in _half_neighbourhood(low.ndim):
        plus = padded[tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, shape, strict=True))]
        minus = padded[tuple(slice(1 - o, 1 - o + n) for o, n in zip(offset, shape, strict=True))]
        torch.add(plus, minus, out=temp).sub_(low, alpha=2.0).abs_()
        out.add_(temp, alpha=1.0 / math.sqrt(sum(o != 0 for o in offset)))
    return out


def low_frequency_activity(low: torch.Tensor) -> torch.Tensor:
    """``WLE * WSEML`` of one low-frequency band (2-D or 3-D, no batch axis)."""
    window = (0.25, 0.5, 0.25)  # per axis; in 2-D the paper's [1 2 1; 2 4 2; 1 2 1] / 16
    wle = separable_filter(low * low, window, mode="reflect")
    wseml = separable_filter(modified_laplacian(low), window, mode="reflect")
    return wle.mul_(wseml)


# --- the method ------------------------------------------------------------------------------


def _fuse_details(pending: list[torch.Tensor], iterations: int, fused: torch.Tensor) -> None:
    """Run the PCNN on pending detail levels (each ``(2, *spatial)``: A, B) and add the
    selected coefficients of every level to ``fused``.

    Bands go through the PCNN together, in groups of at most ``_PCNN_BATCH_VOXELS`` voxels
    (at least one band), which bounds the PCNN's state for large volumes.
    """
    ndim = fused.ndim
    bands = pending[0] if len(pending) == 1 else torch.cat(pending)
    s = bands.abs()
    del bands
    peak = s.reshape(s.shape[0], -1).amax(dim=1)
    inverse = torch.where(peak > 0, 1.0 / peak.clamp_min(1e-30), torch.zeros_like(peak))
    s.mul_(inverse.reshape((-1,) + (1,) * ndim))  # amplitude normalised into [0, 1]
    params = pcnn_parameters(s, ndim)
    del params["threshold"]
    per_group = max(1, _PCNN_BATCH_VOXELS // fused.numel())
    counts = torch.cat(
        [
            pcnn_firing_counts(
                s[start : start + per_group],
                iterations,
                **{name: value[start : start + per_group] for name, value in params.items()},
            )
            for start in range(0, s.shape[0], per_group)
        ]
    )
    del s
    for i, detail in enumerate(pending):
        count_a, count_b = counts[2 * i], counts[2 * i + 1]
        # the larger firing count wins; on a tie the larger magnitude, so that A and B are alike
        take_a = (count_a > count_b) | ((count_a == count_b) & (detail[0].abs() >= detail[1].abs()))
        fused.add_(torch.where(take_a, detail[0], detail[1]))


@register_method(
    "pa_pcnn",
    family="pcnn",
    citation="M. Yin, X. Liu, Y. Liu, X. Chen, Medical image fusion with parameter-adaptive pulse "
    "coupled neural network in nonsubsampled shearlet transform domain, IEEE Trans. Instrum. "
    "Meas. 68(1):49-64, 2019 (NSST replaced by a non-subsampled a trous Laplacian pyramid).",
    parameters=(
        Parameter(
            "levels",
            "int",
            4,
            min=1,
            max=8,
            help="decomposition levels (the paper's NSST depth is 4); detail bands per source",
        ),
        Parameter(
            "iterations",
            "int",
            110,
            min=1,
            max=1000,
            help="PCNN iterations N (the paper uses 110)",
        ),
    ),
    halo=None,
)
def pa_pcnn(a: torch.Tensor, b: torch.Tensor, *, levels: int, iterations: int) -> torch.Tensor:
    """Non-subsampled pyramid fusion: PA-PCNN firing counts pick the detail coefficients,
    weighted local energy x weighted modified Laplacian picks the base.

    See the module docstring for the paper's rules and the 3-D generalisation.
    """
    fused = torch.zeros_like(a, dtype=torch.float32)
    pending: list[torch.Tensor] = []
    low = fused
    for level, band in nonsubsampled_pyramid(torch.stack([a, b]).to(torch.float32), levels):
        if level == levels:
            low = band
            break
        pending.append(band)
        del band  # so that a fused level is freed before the next one is computed
        if len(pending) * pending[0].numel() >= _PCNN_BATCH_VOXELS:
            _fuse_details(pending, iterations, fused)
            pending = []
    if pending:
        _fuse_details(pending, iterations, fused)
    del pending
    activity_a = low_frequency_activity(low[0])
    activity_b = low_frequency_activity(low[1])
    return fused.add_(torch.where(activity_a >= activity_b, low[0], low[1]))
