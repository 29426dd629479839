"""The unsupervised loss MedFusion's network is trained with: keep both sources' information.

Unsupervised fusion networks are trained on what a fused image should keep of its sources,
for want of a ground truth: SSIM to both sources (DenseFuse, Li & Wu 2019; U2Fusion, Xu et
al. 2022), intensity and gradient terms (SDNet, Zhang & Ma, IJCV 129, 2021). MedFusion's loss
uses the field's own measure of kept information instead of SSIM: visual information fidelity
(Sheikh & Bovik 2006), the metric the field scores fusion by (Han et al. 2013), written here
in differentiable form with the reference conventions, for each source, plus a term for the
worse-kept source (so that copying one source, which tops VIF's sum, is not learnt) and
SDNet's gradient term towards the stronger source edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 (torch's convention)

from ..metrics.filters import gaussian_window_1d
from ..metrics.reference import VIF_NOISE_VARIANCE, VIF_SCALES

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical Sobel derivatives of ``(N, 1, H, W)`` (replicate borders)."""
    kx = _SOBEL_X.to(x)[None, None]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(2, 3))


def _gaussian_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of ``(N, 1, H, W)`` by the 1-D ``window``."""
    width = window.numel()
    return F.conv2d(F.conv2d(x, window.view(1, 1, 1, width)), window.view(1, 1, width, 1))


def visual_information_fidelity(
    references: list[torch.Tensor], distorted: torch.Tensor
) -> list[torch.Tensor]:
    """Differentiable pixel-domain VIF of ``distorted`` against each reference, per image."""
    sums = _vif_sums(references, distorted)
    return [numerator / (denominator + 1e-6) for numerator, denominator in sums]


def _vif_sums(
    references: list[torch.Tensor], distorted: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image and reference, the numerator and denominator sums of pixel-domain VIF.

    The field's fusion metric (Sheikh & Bovik, "Image information and visual quality", IEEE
    TIP 15(2), 2006; used for fusion by Han et al., Information Fusion 14(2), 2013) with the
    conventions of :mod:`MedFusionLib.metrics.reference` (four scales, Gaussian windows of
    width ``2^(5-s)+1`` and sigma ``width/5``, decimation by two, noise variance 2 on the
    0-255 scale, negative gains treated as loss of information), written with smooth torch
    operations so that a network can be trained to keep each source's information. Inputs
    are ``(N, 1, H, W)`` in ``[0, 1]``; they are scaled to grey levels here.
    """
    references = [r * 255.0 for r in references]
    distorted = distorted * 255.0
    numerators = [distorted.new_zeros(distorted.shape[0]) for _ in references]
    denominators = [distorted.new_zeros(distorted.shape[0]) for _ in references]
    for scale in range(1, VIF_SCALES + 1):
        width = 2 ** (VIF_SCALES - scale + 1) + 1
        window = distorted.new_tensor(gaussian_window_1d(width, width / 5.0))
        if scale > 1:
            references = [_gaussian_valid(r, window)[..., ::2, ::2] for r in references]
            distorted = _gaussian_valid(distorted, window)[..., ::2, ::2]
        mu_d = _gaussian_valid(distorted, window)
        var_d = (_gaussian_valid(distorted * distorted, window) - mu_d * mu_d).clamp(min=0)
        for k, reference in enumerate(references):
            mu_r = _gaussian_valid(reference, window)
            var_r = (_gaussian_valid(reference * reference, window) - mu_r * mu_r).clamp(min=0)
            covariance = _gaussian_valid(reference * distorted, window) - mu_r * mu_d
            gain = covariance / (var_r + 1e-10)
            noise = torch.where(gain < 0, var_d, var_d - gain * covariance).clamp(min=1e-10)
            gain = gain.clamp(min=0)
            kept = torch.log10(1 + gain * gain * var_r / (noise + VIF_NOISE_VARIANCE))
            numerators[k] = numerators[k] + kept.flatten(1).sum(1)
            denominators[k] = denominators[k] + torch.log10(1 + var_r / VIF_NOISE_VARIANCE).flatten(1).sum(1)
    return [(numerators[k], denominators[k]) for k in range(len(references))]


@dataclass(frozen=True)
class InformationWeights:
    """Weights of :func:`information_loss` (the defaults are the shipped recipe's)."""

    information: float = 1.0
    balance: float = 3.0
    gradient: float = 5.0


def information_loss(
    fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor, weights: InformationWeights = InformationWeights()
) -> tuple[torch.Tensor, dict[str, float]]:
    """Keep each source's visual information, the poorer-kept one most, and the stronger edges.

    ``- information (VIF_A + VIF_B) - balance min(VIF_A, VIF_B) + gradient L1(grad F, stronger source gradient)``.
    VIF is :func:`visual_information_fidelity` pooled over the batch (the sums of its
    numerators over the sums of its denominators, which stays finite when one crop of a
    source is flat); the minimum is the term that stops a network from copying one source,
    which scores well on VIF's sum (see the peers' VIF parts in Docs/benchmarks/harvard.md);
    the gradient term is SDNet's texture term towards the stronger source edge. ``fused`` is
    clamped to ``[0, 1]`` for VIF, as the output is.
    """
    pooled = [
        numerator.sum() / (denominator.sum() + 1e-6)
        for numerator, denominator in _vif_sums([a, b], fused.clamp(0.0, 1.0))
    ]
    vif_a, vif_b = pooled
    fx, fy = sobel(fused)
    ax, ay = sobel(a)
    bx, by = sobel(b)
    tx = torch.where(ax.abs() >= bx.abs(), ax, bx)
    ty = torch.where(ay.abs() >= by.abs(), ay, by)
    gradient = F.l1_loss(fx, tx) + F.l1_loss(fy, ty)
    total = (
        -weights.information * (vif_a + vif_b)
        - weights.balance * torch.minimum(vif_a, vif_b)
        + weights.gradient * gradient
    )
    return total, {
        "VIF_A": float(vif_a.detach()),
        "VIF_B": float(vif_b.detach()),
        "gradient": float(gradient.detach()),
        "total": float(total.detach()),
    }
