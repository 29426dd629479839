"""Structural-similarity fusion metrics: Yang's Q_Y, multi-scale SSIM and Piella's Q_E.

All three compare local windows of the fused image with the same windows of each source
(means, variances, covariance), and weigh the two sources by their local saliency (variance)
where the paper does. Windows are 'valid' (full windows only); in 3-D they are cubes and the
gradients are the 3-D Sobel ones. Work is streamed tile by tile over the first two spatial
axes (:func:`~MedFusionLib.metrics.filters.valid_tiles`), so a 256^3 volume never holds more
than a few tile-sized (about 1 MiB) temporaries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch

from .filters import (
    box_sum_valid,
    correlate_valid,
    gaussian_window_1d,
    sobel_magnitude,
    spatial_dims,
    valid_tiles,
)
from .registry import register_metric

Tensor = torch.Tensor

# scikit-image structural_similarity defaults (Wang et al. 2004 constants, uniform window).
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0
C1 = (SSIM_K1 * DATA_RANGE) ** 2
C2 = (SSIM_K2 * DATA_RANGE) ** 2

Q_Y_THRESHOLD = 0.75

MS_SSIM_WINDOW = 11
MS_SSIM_SIGMA = 1.5
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

Q_E_WINDOW = 7
Q_E_ALPHA = 1.0

FLAT_TOLERANCE = 1e-10
"""A local variance at most this times the window's mean square counts as zero (a flat window):
it is rounding noise of the window sums (exact zeros for integer-valued data)."""


def _item_sum(x: Tensor) -> Tensor:
    return x.flatten(1).sum(dim=1)


def _item_dot(x: Tensor, y: Tensor) -> Tensor:
    """``sum(x * y)`` per batch item without the product's temporary."""
    n = x.shape[0]
    return torch.bmm(x.reshape(n, 1, -1), y.reshape(n, -1, 1)).view(n)


def _window_sums(
    images: Sequence[Tensor],
    products: Sequence[tuple[int, int]],
    width: int,
    window: Callable[[Tensor], Tensor],
) -> Iterator[tuple[list[Tensor], list[Tensor]]]:
    """Tile by tile, the ``window``-filtered images and products ``images[i] * images[j]``.

    ``window`` maps a tile to its full-window ('valid') responses; the tiles' outputs
    partition the full windows of the images (:func:`~MedFusionLib.metrics.filters.valid_tiles`).
    """
    for index in valid_tiles(images[0], width):
        tiles = [x[index] for x in images]
        singles = [window(t) for t in tiles]
        pairs = [window(tiles[i] * tiles[j]) for i, j in products]
        yield singles, pairs


def _box(width: int, dims: tuple[int, ...]) -> Callable[[Tensor], Tensor]:
    return lambda x: box_sum_valid(x, width, dims)


class _WindowStats:
    """Uniform-window statistics of one tile from window sums, in scaled units that avoid divisions.

    With ``n`` samples per window, ``S_x`` the window sum and ``S_xy`` the window sum of
    products: ``square[x] = S_x**2 = n**2 m_x**2`` and ``spread[x] = n S_xx - S_x**2 =
    n (n - 1) v_x``, where ``m`` is the mean and ``v`` the sample variance (scikit-image's
    ``structural_similarity`` normalisation ``n / (n - 1)``); ``cross(x, y) = S_x S_y`` and
    ``co_spread(x, y) = n S_xy - S_x S_y = n (n - 1) c_xy``. A window is flat when its spread is
    at most ``FLAT_TOLERANCE * n S_xx`` (rounding noise; exactly 0 for integer-valued data),
    and :meth:`saliency` is then exactly 0.
    """

    def __init__(self, count: int, sums: Sequence[Tensor], squares: Sequence[Tensor]) -> None:
        self.n = float(count)
        self.sums = list(sums)
        self.square = [s * s for s in sums]
        self.spread = []
        self.flat = []
        self._saliency: list[Tensor | None] = [None] * len(self.sums)
        for total_sq, square in zip(squares, self.square, strict=True):
            scaled = total_sq.mul_(self.n)  # the window sums of squares are not needed afterwards
            threshold = scaled * FLAT_TOLERANCE
            self.spread.append(scaled.sub_(square))
            self.flat.append(self.spread[-1] <= threshold)

    def saliency(self, k: int) -> Tensor:
        """``n (n - 1)`` times the local variance of image ``k``, exactly 0 in flat windows (cached)."""
        if self._saliency[k] is None:
            self._saliency[k] = self.spread[k].masked_fill(self.flat[k], 0.0)
        return self._saliency[k]

    def cross(self, i: int, j: int) -> Tensor:
        """``S_x S_y`` of images ``i`` and ``j``."""
        return self.sums[i] * self.sums[j]


def _ssim_from(stats: _WindowStats, i: int, j: int, total_xy: Tensor) -> Tensor:
    """SSIM of images ``i`` and ``j`` of ``stats`` per window (consumes ``total_xy``)."""
    n = stats.n
    cross = stats.cross(i, j)
    numerator = total_xy.mul_(2.0 * n).sub_(cross, alpha=2.0).add_(n * (n - 1.0) * C2)
    numerator.mul_(cross.mul_(2.0).add_(n * n * C1))
    denominator = (stats.spread[i] + stats.spread[j]).add_(n * (n - 1.0) * C2)
    denominator.mul_((stats.square[i] + stats.square[j]).add_(n * n * C1))
    return numerator.div_(denominator)


def _source_weight(sal_a: Tensor, sal_b: Tensor) -> Tensor:
    """``lambda = s_A / (s_A + s_B)``, 0.5 where both windows are flat."""
    total = sal_a + sal_b
    return torch.where(total > 0, sal_a / total, 0.5)


def _nan(n: int, like: Tensor) -> Tensor:
    return torch.full((n,), math.nan, dtype=torch.float64, device=like.device)


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator``, NaN where the denominator is 0 (no warning)."""
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, 1.0), math.nan)


# --- Q_Y ---------------------------------------------------------------------------------------


@register_metric(
    "Q_Y",
    citation=(
        "C. Yang, J.-Q. Zhang, X.-R. Wang, X. Liu, 'A novel similarity based quality metric for image "
        "fusion', Information Fusion 9(2):156-160, 2008"
    ),
    summary=(
        "Yang's SSIM-based metric: skimage-style 7x7 (7x7x7) uniform-window SSIM, variance weights, "
        "threshold 0.75 on SSIM(A,B)"
    ),
    min_size=SSIM_WINDOW,
    undefined_when=(
        "Q_Y never (inputs of at least 7 per axis); Q_Y_A (Q_Y_B) when every window has lambda = 0 (1), "
        "i.e. A (B) is flat in every window where the other source is not"
    ),
)
def q_y(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """Yang et al.'s structural similarity based fusion metric ``Q_Y`` (Information Fusion 2008).

    In every 7-wide window ``w`` (7x7; 3-D: 7x7x7), ``SSIM(X, Y | w)`` is scikit-image's
    ``structural_similarity`` local value (uniform window, K1 = 0.01, K2 = 0.03, data range
    255, sample (co)variances); ``lambda(w) = s_A / (s_A + s_B)`` with ``s`` the local
    variance (0.5 where both windows are flat). Then

    ``Q_Y(w) = lambda SSIM(A,F|w) + (1 - lambda) SSIM(B,F|w)`` where ``SSIM(A,B|w) >= 0.75``,
    ``max(SSIM(A,F|w), SSIM(B,F|w))`` elsewhere, and ``Q_Y`` is the mean over all full windows
    (the windows scikit-image's mean SSIM averages over). 1 when A = B = F.

    Parts (not in the paper): ``Q_Y_A = sum_w lambda SSIM(A,F|w) / sum_w lambda``, the
    ``lambda``-weighted mean local SSIM of F with A, and ``Q_Y_B`` the same with B and
    ``1 - lambda``; F = A gives ``Q_Y_A = 1``. Windows count as flat when their variance is
    below ``FLAT_TOLERANCE`` times their mean square (exactly zero variance for 8-bit data).

    3-D: 7x7x7 windows (343 samples, sample normalisation 343/342), as scikit-image's SSIM of a
    volume. Differences from Z. Liu's widely used ``metricYang.m``: that code uses a 7x7
    Gaussian window (sigma 1.5) and ``C1 = C2 = 2e-16``; here the window and constants are
    scikit-image's, as the project's SSIM, so ``SSIM(X,Y|w)`` is the map behind the reference
    SSIM value (checked against ``skimage.metrics.structural_similarity`` to 1e-14).
    """
    dims = spatial_dims(a)
    size = SSIM_WINDOW ** len(dims)
    n = a.shape[0]
    sums = torch.zeros(5, n, dtype=torch.float64, device=a.device)  # Q, lam SSIM_AF, lam, ..._B
    count = 0
    products = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
    for singles, (saa, sbb, sff, sab, saf, sbf) in _window_sums(
        (a, b, f), products, SSIM_WINDOW, _box(SSIM_WINDOW, dims)
    ):
        stats = _WindowStats(size, singles, (saa, sbb, sff))
        lam = _source_weight(stats.saliency(0), stats.saliency(1))
        ssim_ab = _ssim_from(stats, 0, 1, sab)
        ssim_af = _ssim_from(stats, 0, 2, saf)
        ssim_bf = _ssim_from(stats, 1, 2, sbf)
        best = torch.maximum(ssim_af, ssim_bf)
        weighted_a = ssim_af.mul_(lam)
        weighted_b = ssim_bf.mul_(1.0 - lam)
        local = torch.where(ssim_ab >= Q_Y_THRESHOLD, weighted_a + weighted_b, best)
        for k, values in enumerate((local, weighted_a, lam, weighted_b)):
            sums[k] += _item_sum(values)
        count += local[0].numel()
    sums[4] = count - sums[2]
    if count == 0:
        return {"Q_Y": _nan(n, a), "Q_Y_A": _nan(n, a), "Q_Y_B": _nan(n, a)}
    return {"Q_Y": sums[0] / count, "Q_Y_A": _ratio(sums[1], sums[2]), "Q_Y_B": _ratio(sums[3], sums[4])}


# --- MS-SSIM -----------------------------------------------------------------------------------


def _scale_count(shape: Sequence[int]) -> int:
    """How many of the five scales fit: the coarsest must be at least 11 on every axis."""
    scales = 0
    sizes = list(shape)
    while scales < len(MS_SSIM_WEIGHTS) and min(sizes) >= MS_SSIM_WINDOW:
        scales += 1
        sizes = [-(-s // 2) for s in sizes]
    return scales


def _halve(x: Tensor) -> Tensor:
    """2x average pooling on every spatial axis (2x2, 3-D 2x2x2); an odd axis first repeats its
    last sample, which is MATLAB ``msssim.m``'s ``imfilter(x, ones(2)/4, 'symmetric')`` then
    ``x(1:2:end, 1:2:end)``."""
    for dim in spatial_dims(x):
        if x.shape[dim] % 2:
            x = torch.cat((x, x.narrow(dim, x.shape[dim] - 1, 1)), dim=dim)
        pairs = x.unflatten(dim, (x.shape[dim] // 2, 2))
        x = (pairs.select(dim + 1, 0) + pairs.select(dim + 1, 1)) * 0.5
    return x


@register_metric(
    "MS_SSIM",
    citation=(
        "Z. Wang, E. P. Simoncelli, A. C. Bovik, 'Multiscale structural similarity for image quality "
        "assessment', 37th Asilomar Conference on Signals, Systems and Computers, 2003, pp. 1398-1402"
    ),
    summary=(
        "multi-scale SSIM of F with each source (11-tap Gaussian sigma 1.5, valid, 5 scales, 2x average "
        "pooling, K 0.01/0.03, L 255), summed over the two sources"
    ),
    min_size=MS_SSIM_WINDOW,
    undefined_when="an axis is shorter than 11",
)
def ms_ssim(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik, Asilomar 2003) of F against each source.

    Per scale ``j``: local statistics under an 11-tap Gaussian window (sigma 1.5, MATLAB
    ``fspecial``; 'valid' filtering; population (co)variances as in the paper's code and
    ``pytorch_msssim``); ``cs_j`` is the mean of the contrast-structure map
    ``(2 s_xy + C2) / (s_x^2 + s_y^2 + C2)``, and at the coarsest scale ``M`` the mean of the
    full SSIM map replaces it; ``MS-SSIM = prod_{j<M} cs_j^b_j * ssim_M^b_M`` with
    ``b = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``, K1 = 0.01, K2 = 0.03, L = 255. Between
    scales, 2x average pooling (an odd axis repeats its last sample, as ``msssim.m``).

    Conventions: ``cs_j`` and ``ssim_M`` below 0 are clamped to 0 (as ``pytorch_msssim``'s
    ``relu``), so a negatively correlated scale gives MS-SSIM 0 instead of a NaN power. An
    image too small for five scales uses as many as fit, the coarsest at least 11 samples on
    every axis (256: 5 scales; 128: 4; 100: 4; 40: 2), with the exponents of those scales
    renormalised to sum to 1 (with all five, the published exponents are used as they are; they
    sum to 1.0001). 3-D: 11x11x11 separable Gaussian, 2x2x2 pooling, same exponents.

    Parts: ``MS_SSIM_A = MS-SSIM(F, A)``, ``MS_SSIM_B = MS-SSIM(F, B)`` (each in [0, 1], 1 for
    F equal to that source), ``MS_SSIM = MS_SSIM_A + MS_SSIM_B``, the sum over the two sources
    as the project's (reference) SSIM. Agrees with ``pytorch_msssim.ms_ssim`` (float64 input)
    to about 3e-7, the effect of that package's float32 Gaussian taps (1e-16 with float64 taps).
    """
    n = a.shape[0]
    scales = _scale_count(a.shape[1:])
    if scales == 0:
        return {"MS_SSIM": _nan(n, a), "MS_SSIM_A": _nan(n, a), "MS_SSIM_B": _nan(n, a)}
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64, device=a.device)
    if scales < len(MS_SSIM_WEIGHTS):
        weights = weights / weights.sum()
    taps = gaussian_window_1d(MS_SSIM_WINDOW, MS_SSIM_SIGMA)
    dims = spatial_dims(a)

    def window(x: Tensor) -> Tensor:
        return correlate_valid(x, taps, dims)

    result = []
    products = ((0, 0), (1, 1), (2, 2), (2, 0), (2, 1))
    for scale in range(scales):
        last = scale == scales - 1
        sums = torch.zeros(2, n, dtype=torch.float64, device=a.device)
        count = 0
        for (ma, mb, mf), (eaa, ebb, eff, efa, efb) in _window_sums(
            (a, b, f), products, MS_SSIM_WINDOW, window
        ):
            mean_f_sq = mf * mf
            var_f = eff.sub_(mean_f_sq)
            for k, (mx, exx, efx) in enumerate(((ma, eaa, efa), (mb, ebb, efb))):
                mean_fx = mf * mx
                mean_x_sq = mx * mx
                # contrast-structure (2 s_fx + C2) / (s_f^2 + s_x^2 + C2), population (co)variances
                cs = efx.sub_(mean_fx).mul_(2.0).add_(C2).div_(exx.sub_(mean_x_sq).add_(var_f).add_(C2))
                if last:  # times the luminance term (2 m_f m_x + C1) / (m_f^2 + m_x^2 + C1)
                    cs.mul_(mean_fx.mul_(2.0).add_(C1).div_(mean_x_sq.add_(mean_f_sq).add_(C1)))
                sums[k] += _item_sum(cs)
            count += ma[0].numel()
        result.append((sums / count).clamp_(min=0.0))
        if not last:
            a, b, f = _halve(a), _halve(b), _halve(f)
    stacked = torch.stack(result)  # (scales, 2, n)
    value = torch.prod(stacked ** weights.view(-1, 1, 1), dim=0)
    return {"MS_SSIM": value[0] + value[1], "MS_SSIM_A": value[0], "MS_SSIM_B": value[1]}


# --- Q_E ---------------------------------------------------------------------------------------


def _quality_from(stats: _WindowStats, i: int, j: int, total_xy: Tensor) -> Tensor:
    """Wang & Bovik's universal quality index ``Q0 = 4 c_xy m_x m_y / ((v_x + v_y)(m_x^2 + m_y^2))``
    of images ``i`` and ``j`` per window (consumes ``total_xy``), with ``img_qi.m``'s cases for zero
    denominators: only the variances zero (both windows flat) gives ``2 m_x m_y / (m_x^2 + m_y^2)``,
    only the means zero gives ``2 c_xy / (v_x + v_y)``, both zero gives 1. So two flat windows
    score 1 when equal, less when their levels differ, 0 when one is black; a flat window against
    a textured one scores 0 (exactly so for integer-valued data).

    Computed as ``S * L`` with ``S = 2 c / (v_x + v_y)`` (1 where both are flat) and
    ``L = 2 m_x m_y / (m_x^2 + m_y^2)`` (1 where both means are 0), which covers the four cases.
    """
    den_var = stats.saliency(i) + stats.saliency(j)
    den_mean = stats.square[i] + stats.square[j]
    cross = stats.cross(i, j)
    structure = total_xy.mul_(stats.n).sub_(cross).mul_(2.0).div_(den_var)
    structure = torch.where(den_var > 0, structure, 1.0)
    luminance = torch.where(den_mean > 0, cross.mul_(2.0).div_(den_mean), 1.0)
    return structure.mul_(luminance)


def _weighted_quality(a: Tensor, b: Tensor, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Piella's ``Q_W(A, B, F)`` and the per-source ``Q_WA = sum_w c(w) Q0(A,F|w)``, ``Q_WB``."""
    dims = spatial_dims(a)
    size = Q_E_WINDOW ** len(dims)
    n = a.shape[0]
    sums = torch.zeros(7, n, dtype=torch.float64, device=a.device)  # c-weighted Q, QA, QB; plain; sum c
    count = 0
    products = ((0, 0), (1, 1), (2, 2), (0, 2), (1, 2))
    for singles, (saa, sbb, sff, saf, sbf) in _window_sums(
        (a, b, f), products, Q_E_WINDOW, _box(Q_E_WINDOW, dims)
    ):
        stats = _WindowStats(size, singles, (saa, sbb, sff))
        sal_a, sal_b = stats.saliency(0), stats.saliency(1)
        q_af = _quality_from(stats, 0, 2, saf)
        q_bf = _quality_from(stats, 1, 2, sbf)
        lam = _source_weight(sal_a, sal_b)
        local = torch.lerp(q_bf, q_af, lam)
        weight = torch.maximum(sal_a, sal_b)
        for k, values in enumerate((local, q_af, q_bf)):
            sums[k] += _item_dot(weight, values)
            sums[k + 3] += _item_sum(values)
        sums[6] += _item_sum(weight)
        count += local[0].numel()
    if count == 0:
        return _nan(n, a), _nan(n, a), _nan(n, a)
    flat = sums[6] == 0
    out = torch.where(flat, sums[3:6] / count, sums[:3] / torch.where(flat, 1.0, sums[6]))
    return out[0], out[1], out[2]


@register_metric(
    "Q_E",
    citation=(
        "G. Piella, H. Heijmans, 'A new quality metric for image fusion', Proc. IEEE International "
        "Conference on Image Processing (ICIP) 2003, vol. 3, pp. 173-176"
    ),
    summary=(
        "Piella's edge-dependent fusion quality index Q_W(A,B,F) * Q_W(A',B',F')^1: Wang-Bovik Q0 in 7x7 "
        "(7x7x7) uniform windows, variance saliency, A' = Sobel gradient magnitude"
    ),
    min_size=Q_E_WINDOW,
    undefined_when="never (inputs of at least 7 per axis)",
)
def q_e(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """Piella & Heijmans' edge-dependent fusion quality index ``Q_E`` (ICIP 2003).

    ``Q0(X, F | w)`` is Wang & Bovik's universal image quality index in 7-wide uniform windows
    (7x7; 3-D: 7x7x7; Wang & Bovik used 8x8, 7 matches the project's SSIM window), with
    ``img_qi.m``'s conventions for flat windows (:func:`_quality_from`). With the saliency
    ``s(X|w)`` = local variance, ``lambda(w) = s_A / (s_A + s_B)`` (0.5 where both are flat) and
    ``c(w) = max(s_A, s_B) / sum_w' max(s_A, s_B)``,

    ``Q_W(A, B, F) = sum_w c(w) (lambda(w) Q0(A,F|w) + (1 - lambda(w)) Q0(B,F|w))`` and
    ``Q_E = Q_W(A, B, F) * Q_W(A', B', F')^alpha`` with ``alpha = 1`` and ``X'`` the Sobel
    gradient magnitude of ``X`` (zero-padded 3x3 Sobel, 3-D: 3x3x3;
    :func:`~MedFusionLib.metrics.filters.sobel_magnitude`), whose windows take their saliency
    from ``A'`` and ``B'``. If no window of a pair has any variance (e.g. constant sources),
    all windows weigh the same. Up to 1, reached when A = B = F.

    Parts (not in the paper): ``Q_E_A = Q_WA(A, F) * Q_WA(A', F')`` with
    ``Q_WA = sum_w c(w) Q0(A,F|w) / sum_w c(w)``, the saliency-weighted mean quality of F
    against A alone (the same ``c`` as ``Q_W``), and ``Q_E_B`` likewise; F = A gives
    ``Q_E_A = 1``. Windows count as flat below ``FLAT_TOLERANCE`` (exact zeros for 8-bit data).
    """
    q_w, q_wa, q_wb = _weighted_quality(a, b, f)
    e_w, e_wa, e_wb = _weighted_quality(sobel_magnitude(a), sobel_magnitude(b), sobel_magnitude(f))
    return {
        "Q_E": q_w * e_w**Q_E_ALPHA,
        "Q_E_A": q_wa * e_wa**Q_E_ALPHA,
        "Q_E_B": q_wb * e_wb**Q_E_ALPHA,
    }
