"""Unsupervised fusion losses: structure (SSIM), intensity and gradient.

The combination follows the unsupervised fusion literature: an SSIM term towards both
sources (DenseFuse, Li & Wu 2019; U2Fusion, Xu et al. 2022), an intensity term towards the
brighter source (the salient-target intensity loss of SDNet, Zhang & Ma, IJCV 129, 2021) and
a gradient term towards the stronger of the two gradients (SDNet's and U2Fusion's texture
term), so that anatomical edges from MR or CT and bright uptake from PET or SPECT both
survive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 (torch's convention)

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical Sobel derivatives of ``(N, 1, H, W)`` (replicate borders)."""
    kx = _SOBEL_X.to(x)[None, None]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(2, 3))


def ssim(x: torch.Tensor, y: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al., IEEE TIP 13(4), 2004) with a Gaussian window, data range 1."""
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum())[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, g[..., None, :]), g[..., :, None])

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return value.mean()


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms (the recipe's values are the defaults).

    ``gradient_gain`` scales the gradient target: above 1 the network learns to sharpen the
    stronger source edge rather than only keep it.
    """

    structure: float = 1.0
    intensity: float = 1.0
    gradient: float = 20.0
    gradient_gain: float = 1.3


def fusion_loss(
    fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor, weights: LossWeights = LossWeights()
) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss and its terms for a batch of ``(N, 1, H, W)`` images."""
    structure = 1.0 - 0.5 * (ssim(fused, a) + ssim(fused, b))
    intensity = F.l1_loss(fused, torch.maximum(a, b))
    fx, fy = sobel(fused)
    ax, ay = sobel(a)
    bx, by = sobel(b)
    # the stronger source gradient, with its sign, per pixel and direction
    tx = torch.where(ax.abs() >= bx.abs(), ax, bx)
    ty = torch.where(ay.abs() >= by.abs(), ay, by)
    gain = weights.gradient_gain
    gradient = F.l1_loss(fx, gain * tx) + F.l1_loss(fy, gain * ty)
    total = weights.structure * structure + weights.intensity * intensity + weights.gradient * gradient
    return total, {
        "structure": float(structure.detach()),
        "intensity": float(intensity.detach()),
        "gradient": float(gradient.detach()),
        "total": float(total.detach()),
    }
