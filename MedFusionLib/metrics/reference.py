"""The eleven metrics of the field's de facto reference, reproduced convention for convention.

CDDFuse, DDFM, EMMA and FILM compute their published tables with one evaluator (the CDDFuse
repository's ``utils/Evaluator.py``, with scikit-image's SSIM). These functions follow its
conventions exactly, as ``../shared/data/harvard_reference_metrics.json`` states them, and
agree with that file to 1e-6 on all of its entries (``Testing/test_metrics_reference.py``).
The conventions that matter, and the reference's quirks kept on purpose, are in each
docstring. Inputs are grey levels on the 0-255 scale.

3-D: every metric is the natural volume form (three-axis differences and Sobel gradients,
cubic windows); 2-D batches reproduce the reference.
"""

from __future__ import annotations

import math

import torch

from .filters import (
    batch_mean,
    batch_sum,
    box_mean_valid,
    correlate_valid,
    correlation,
    downsample,
    entropy,
    gaussian_window_1d,
    grey_levels,
    histogram,
    joint_histogram,
    mutual_information,
    spatial_dims,
    valid_tiles,
)
from .registry import register_metric

Tensor = torch.Tensor

# VIFp (Sheikh & Bovik 2006, pixel domain) as the reference runs it.
VIF_SCALES = 4
VIF_NOISE_VARIANCE = 2.0
VIF_EPS = 1e-10

# Xydeas & Petrovic (2000) constants as the reference sets them.
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8

# scikit-image structural_similarity defaults (Wang et al. 2004 constants, uniform window).
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0


def _parts(total: Tensor, part_a: Tensor, part_b: Tensor, name: str) -> dict[str, Tensor]:
    return {name: total, f"{name}_A": part_a, f"{name}_B": part_b}


@register_metric(
    "EN",
    citation="C. E. Shannon, A mathematical theory of communication, Bell Syst. Tech. J. 27, 1948",
    summary="Shannon entropy (bits) of the 256-bin histogram of round(F)",
    parts=False,
    reference=True,
    min_size=1,
    undefined_when="never",
)
def entropy_of_fused(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """Entropy in bits of the fused image's 8-bit histogram (``uint8(round(F))``)."""
    return {"EN": entropy(histogram(grey_levels(f)), base=2.0)}


@register_metric(
    "SD",
    citation="as in J. Ma, Y. Ma, C. Li, Infrared and visible image fusion methods and applications: a survey, "
    "Inf. Fusion 45, 2019",
    summary="population standard deviation of F",
    parts=False,
    reference=True,
    min_size=1,
    undefined_when="never",
)
def standard_deviation(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """Population standard deviation (``ddof=0``) of the fused image."""
    return {"SD": f.flatten(1).std(dim=1, correction=0)}


@register_metric(
    "SF",
    citation="A. M. Eskicioglu, P. S. Fisher, Image quality measures and their performance, IEEE Trans. Commun. 43(12), 1995",
    summary="spatial frequency: sqrt of the summed mean squared first differences along each axis",
    parts=False,
    reference=True,
    undefined_when="never",
)
def spatial_frequency(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """``sqrt(sum over axes of mean(first difference^2))``; rows and columns in 2-D, three axes in 3-D."""
    total = torch.zeros(f.shape[0], dtype=f.dtype, device=f.device)
    for dim in spatial_dims(f):
        total += batch_mean(torch.diff(f, dim=dim) ** 2)
    return {"SF": total.sqrt()}


def _central_gradient(x: Tensor, dim: int) -> Tensor:
    """Central differences inside, one-sided at the two borders (NumPy ``gradient``)."""
    length = x.shape[dim]
    inner = (x.narrow(dim, 2, length - 2) - x.narrow(dim, 0, length - 2)) / 2
    first = x.narrow(dim, 1, 1) - x.narrow(dim, 0, 1)
    last = x.narrow(dim, length - 1, 1) - x.narrow(dim, length - 2, 1)
    return torch.cat((first, inner, last), dim=dim)


@register_metric(
    "AG",
    citation="G. Cui, H. Feng, Z. Xu, Q. Li, Y. Chen, Detail preserved fusion of visible and infrared images "
    "using regional saliency extraction and multi-scale image decomposition, Opt. Commun. 341, 2015",
    summary="average gradient: mean of sqrt(sum of squared central differences / number of axes)",
    parts=False,
    reference=True,
    min_size=3,
    undefined_when="never",
)
def average_gradient(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """``mean(sqrt((Gx^2 + Gy^2) / 2))`` in 2-D, ``/ 3`` over three axes in 3-D."""
    dims = spatial_dims(f)
    squares = sum(_central_gradient(f, dim) ** 2 for dim in dims)
    return {"AG": batch_mean(torch.sqrt(squares / len(dims)))}


@register_metric(
    "MI",
    citation="G. Qu, D. Zhang, P. Yan, Information measure for performance of image fusion, Electron. Lett. 38(7), 2002",
    summary="mutual information in nats on grey levels: MI(F,A) + MI(F,B)",
    reference=True,
    min_size=1,
    undefined_when="never (0 against a constant image)",
)
def mutual_information_metric(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """Natural-log mutual information of the joint grey-level histograms.

    The reference calls scikit-learn's ``mutual_info_score`` on the raw values, which are
    integers 0-255 in its protocol; here values are rounded to grey levels first, which is
    the same on such data and keeps the joint table 256 x 256 for any input.
    """
    levels_f = grey_levels(f)
    mi_a = mutual_information(joint_histogram(levels_f, grey_levels(a)))
    mi_b = mutual_information(joint_histogram(levels_f, grey_levels(b)))
    return _parts(mi_a + mi_b, mi_a, mi_b, "MI")


@register_metric(
    "SCD",
    citation="V. Aslantas, E. Bendes, A new image quality metric for image fusion: the sum of the correlations "
    "of differences, AEU Int. J. Electron. Commun. 69(12), 2015",
    summary="sum of the correlations of differences: corr(A, F-B) + corr(B, F-A)",
    reference=True,
    undefined_when="a source is constant, or F minus a source is constant (e.g. F equals a source)",
)
def sum_of_correlations_of_differences(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """``SCD_A = corr(A, F - B)`` (what F adds to B that looks like A) and ``SCD_B = corr(B, F - A)``."""
    part_a = correlation(a, f - b)
    part_b = correlation(b, f - a)
    return _parts(part_a + part_b, part_a, part_b, "SCD")


def _vif_terms(sigma1_sq: Tensor, sigma2_sq: Tensor, sigma12: Tensor) -> tuple[Tensor, Tensor]:
    """VIFp numerator and denominator sums of one scale, with the reference's clamping."""
    g = sigma12 / (sigma1_sq + VIF_EPS)
    sv_sq = sigma2_sq - g * sigma12
    flat_ref = sigma1_sq < VIF_EPS
    g = torch.where(flat_ref, 0.0, g)
    sv_sq = torch.where(flat_ref, sigma2_sq, sv_sq)
    sigma1_sq = torch.where(flat_ref, 0.0, sigma1_sq)
    flat_dist = sigma2_sq < VIF_EPS
    g = torch.where(flat_dist, 0.0, g)
    sv_sq = torch.where(flat_dist, 0.0, sv_sq)
    negative = g < 0
    sv_sq = torch.where(negative, sigma2_sq, sv_sq)
    g = g.clamp(min=0)
    sv_sq = sv_sq.clamp(min=VIF_EPS)
    num = batch_sum(torch.log10(1 + g * g * sigma1_sq / (sv_sq + VIF_NOISE_VARIANCE)))
    den = batch_sum(torch.log10(1 + sigma1_sq / VIF_NOISE_VARIANCE))
    return num, den


def _vif_pixel(refs: list[Tensor], dist: Tensor) -> list[Tensor]:
    """Pixel-domain VIF (Sheikh & Bovik 2006) of ``dist`` against each of ``refs``, per batch item.

    Four scales; scale ``s`` uses a Gaussian window of width ``2^(5-s) + 1`` and sigma
    ``width / 5``; filtering is 'valid'; from scale 2 the images are low-passed and
    decimated by two. Noise variance 2, the reference's clamping of the local statistics.
    Each scale runs tile by tile so its temporaries stay in cache. Returns NaN where the
    reference returns 1.0 (a constant reference image: 0 / 0).
    """
    dims = spatial_dims(dist)
    zeros = torch.zeros(dist.shape[0], dtype=dist.dtype, device=dist.device)
    num = [zeros.clone() for _ in refs]
    den = [zeros.clone() for _ in refs]
    for scale in range(1, VIF_SCALES + 1):
        width = 2 ** (VIF_SCALES - scale + 1) + 1
        window = gaussian_window_1d(width, width / 5.0)
        if scale > 1:
            refs = [downsample(correlate_valid(ref, window, dims)) for ref in refs]
            dist = downsample(correlate_valid(dist, window, dims))
        for tile in valid_tiles(dist, width):
            d = dist[tile]
            mu2 = correlate_valid(d, window, dims)
            sigma2_sq = (correlate_valid(d * d, window, dims) - mu2 * mu2).clamp_(min=0)
            for k, ref in enumerate(refs):
                r = ref[tile]
                mu1 = correlate_valid(r, window, dims)
                sigma1_sq = (correlate_valid(r * r, window, dims) - mu1 * mu1).clamp_(min=0)
                sigma12 = correlate_valid(r * d, window, dims) - mu1 * mu2
                tile_num, tile_den = _vif_terms(sigma1_sq, sigma2_sq, sigma12)
                num[k] += tile_num
                den[k] += tile_den
    return [n / d for n, d in zip(num, den, strict=True)]


@register_metric(
    "VIF",
    citation="H. R. Sheikh, A. C. Bovik, Image information and visual quality, IEEE Trans. Image Process. 15(2), "
    "2006 (pixel-domain VIFp); Y. Han, Y. Cai, Y. Cao, X. Xu, A new image fusion performance metric based on "
    "visual information fidelity, Inf. Fusion 14(2), 2013 (its use for fusion)",
    summary="pixel-domain VIF, 4 scales, Gaussian windows, noise variance 2: VIF(A,F) + VIF(B,F)",
    reference=True,
    min_size=41,
    undefined_when="a source is constant (the reference returns 1.0 there; MedFusion reports NaN)",
)
def visual_information_fidelity(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """``VIF_A = VIFp(A -> F)``, ``VIF_B = VIFp(B -> F)``; a source copied into F scores 1 on its part.

    3-D: cubic Gaussian windows and decimation along all three axes. The image must be
    at least 41 voxels along each axis (four scales of 'valid' filtering and decimation).
    """
    part_a, part_b = _vif_pixel([a, b], f)
    return _parts(part_a + part_b, part_a, part_b, "VIF")


def _sobel_valid(x: Tensor) -> list[Tensor]:
    """Sobel derivatives of the interior of ``x`` (one sample lost at each side of every axis).

    Applied to a zero-padded image this equals the reference's ``convolve2d(..., 'same')``
    Sobel (rows: ``[[1, 2, 1], [0, 0, 0], [-1, -2, -1]]``, columns: ``[[-1, 0, 1], [-2, 0, 2],
    [-1, 0, 1]]``, both convolved).
    """
    dims = spatial_dims(x)
    derivatives = []
    for dim in dims:
        length = x.shape[dim] - 2
        ahead, behind = x.narrow(dim, 2, length), x.narrow(dim, 0, length)
        # the reference's column Sobel differentiates right-to-left; with pi/2 standing in for
        # atan where Sx = 0 the sign convention matters, so it is kept
        g = behind - ahead if len(dims) == 2 and dim == 2 else ahead - behind
        for other in dims:
            if other != dim:
                inner = g.shape[other] - 2
                g = (g.narrow(other, 0, inner) + g.narrow(other, 2, inner)).add_(
                    g.narrow(other, 1, inner), alpha=2.0
                )
        derivatives.append(g)
    return derivatives


def _edge_strength_and_orientation(x: Tensor) -> tuple[Tensor, Tensor]:
    """Sobel gradient magnitude and orientation of a padded tile.

    2-D: ``atan(Sy / Sx)`` with pi/2 where ``Sx = 0`` (the reference); 3-D: the gradient vectors.
    """
    gradients = _sobel_valid(x)
    strength = torch.sqrt(sum(g * g for g in gradients))
    if len(gradients) == 2:
        s_y, s_x = gradients
        safe_x = torch.where(s_x == 0, 1.0, s_x)
        return strength, torch.where(s_x == 0, math.pi / 2, torch.atan(s_y / safe_x))
    return strength, torch.stack(gradients)


def _edge_preservation(strength_x: Tensor, orient_x: Tensor, strength_f: Tensor, orient_f: Tensor) -> Tensor:
    """Xydeas-Petrovic edge preservation ``Q^{XF}`` per pixel.

    Strength ratio: the smaller over the larger; where the two strengths are exactly equal
    the reference uses the fused strength itself (a quirk kept for reproduction).
    Orientation: ``1 - |alpha_X - alpha_F| / (pi / 2)`` in 2-D; in 3-D ``1 - theta / (pi / 2)``
    with ``theta`` the angle between the two gradient lines (0 where either is zero).
    """
    larger = torch.maximum(strength_x, strength_f)
    smaller = torch.minimum(strength_x, strength_f)
    ratio = torch.where(strength_x == strength_f, strength_f, smaller / torch.where(larger > 0, larger, 1.0))
    if orient_x.ndim == strength_x.ndim:
        alignment = 1 - torch.abs(orient_x - orient_f) / (math.pi / 2)
    else:
        dot = (orient_x * orient_f).sum(dim=0).abs()
        norms = strength_x * strength_f
        cosine = torch.where(norms > 0, dot / torch.where(norms > 0, norms, 1.0), 1.0).clamp_(max=1.0)
        alignment = 1 - torch.arccos(cosine) / (math.pi / 2)
    q_strength = QABF_TG / (1 + torch.exp(QABF_KG * (ratio - QABF_DG)))
    q_orientation = QABF_TA / (1 + torch.exp(QABF_KA * (alignment - QABF_DA)))
    return q_strength * q_orientation


@register_metric(
    "Qabf",
    citation="C. S. Xydeas, V. Petrovic, Objective image fusion performance measure, Electron. Lett. 36(4), 2000",
    summary="gradient-based edge preservation Q^{AB/F}, 3x3 Sobel, weights g_A + g_B",
    reference=True,
    min_size=3,
    undefined_when="both sources are constant (no edges to preserve)",
)
def edge_transfer(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """``Qabf = sum(Q^AF g_A + Q^BF g_B) / sum(g_A + g_B)``.

    Parts: ``Qabf_A = sum(Q^AF g_A) / sum(g_A)`` (how well F keeps A's edges, weighted by
    A's edge strength), likewise ``Qabf_B``; ``Qabf`` is their average weighted by each
    source's total edge strength.
    """
    padded = [torch.nn.functional.pad(x, (1, 1) * (x.ndim - 1)) for x in (a, b, f)]
    kept_a, kept_b, total_a, total_b = (
        torch.zeros(a.shape[0], dtype=a.dtype, device=a.device) for _ in range(4)
    )
    for tile in valid_tiles(padded[0], 3):  # tiles keep the per-pixel temporaries in cache
        (strength_a, orient_a), (strength_b, orient_b), (strength_f, orient_f) = (
            _edge_strength_and_orientation(x[tile]) for x in padded
        )
        kept_a += batch_sum(_edge_preservation(strength_a, orient_a, strength_f, orient_f) * strength_a)
        kept_b += batch_sum(_edge_preservation(strength_b, orient_b, strength_f, orient_f) * strength_b)
        total_a += batch_sum(strength_a)
        total_b += batch_sum(strength_b)
    return _parts((kept_a + kept_b) / (total_a + total_b), kept_a / total_a, kept_b / total_b, "Qabf")


def mean_ssim(x: Tensor, others: list[Tensor], *, width: int = SSIM_WINDOW) -> list[Tensor]:
    """Mean local SSIM of ``x`` with each of ``others`` over every full ``width``-wide window.

    scikit-image's defaults: uniform window, sample covariances (``n / (n - 1)``),
    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``L = 255`` (Wang, Bovik, Sheikh & Simoncelli,
    IEEE Trans. Image Process. 13(4), 2004). Computed tile by tile from exact window sums.
    """
    dims = spatial_dims(x)
    count = width ** len(dims)
    cov_norm = count / (count - 1)
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    totals = [torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) for _ in others]
    for tile in valid_tiles(x, width):
        tx = x[tile]
        ux = box_mean_valid(tx, width, dims)
        vx = cov_norm * (box_mean_valid(tx * tx, width, dims) - ux * ux)
        for k, other in enumerate(others):
            ty = other[tile]
            uy = box_mean_valid(ty, width, dims)
            vy = cov_norm * (box_mean_valid(ty * ty, width, dims) - uy * uy)
            vxy = cov_norm * (box_mean_valid(tx * ty, width, dims) - ux * uy)
            ssim = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
            totals[k] += batch_sum(ssim)
    windows = math.prod(s - width + 1 for s in x.shape[1:])
    return [total / windows for total in totals]


@register_metric(
    "SSIM",
    citation="Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, Image quality assessment: from error "
    "visibility to structural similarity, IEEE Trans. Image Process. 13(4), 2004",
    summary="structural similarity, 7-wide uniform window, data range 255: SSIM(F,A) + SSIM(F,B)",
    reference=True,
    min_size=SSIM_WINDOW,
    undefined_when="never",
)
def structural_similarity(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """Mean local SSIM of F with each source (windows that fit entirely), summed as the reference does."""
    part_a, part_b = mean_ssim(f, [a, b])
    return _parts(part_a + part_b, part_a, part_b, "SSIM")


@register_metric(
    "CC",
    citation="as in J. Ma, Y. Ma, C. Li, Infrared and visible image fusion methods and applications: a survey, "
    "Inf. Fusion 45, 2019",
    summary="correlation coefficient: mean of corr(A,F) and corr(B,F)",
    reference=True,
    undefined_when="a source or F is constant",
)
def correlation_coefficient(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """Pearson correlation of F with each source; ``CC`` is their mean."""
    part_a, part_b = correlation(a, f), correlation(b, f)
    return _parts((part_a + part_b) / 2, part_a, part_b, "CC")


@register_metric(
    "PSNR",
    citation="as in J. Ma, Y. Ma, C. Li, Infrared and visible image fusion methods and applications: a survey, "
    "Inf. Fusion 45, 2019",
    summary="10 log10(max(F)^2 / mean of the two MSEs); parts use one MSE each",
    reference=True,
    min_size=1,
    undefined_when="F equals a source (that part is +inf) or F is all zeros",
)
def peak_signal_to_noise(a: Tensor, b: Tensor, f: Tensor) -> dict[str, Tensor]:
    """The peak is the fused image's own maximum, as in the reference (not 255)."""
    peak_sq = f.flatten(1).amax(dim=1) ** 2
    mse_a, mse_b = batch_mean((a - f) ** 2), batch_mean((b - f) ** 2)
    return _parts(
        10 * torch.log10(peak_sq / ((mse_a + mse_b) / 2)),
        10 * torch.log10(peak_sq / mse_a),
        10 * torch.log10(peak_sq / mse_b),
        "PSNR",
    )
