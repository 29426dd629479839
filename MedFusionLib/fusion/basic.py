"""Pixel-level fusion rules: average, weighted average, maximum and PCA weighting."""

from __future__ import annotations

import torch

from .registry import Parameter, register_method


def _pointwise(params: object) -> int:
    return 0


@register_method(
    "average",
    family="pixel",
    citation="Pixel averaging, the baseline of every fusion survey (e.g. James & Dasarathy, "
    "Information Fusion 19:4-19, 2014).",
    halo=_pointwise,
)
def average(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean of the two images, voxel by voxel."""
    return (a + b) * 0.5


@register_method(
    "weighted_average",
    family="pixel",
    citation="Weighted (alpha) blending, as in display fusion of PET over CT; "
    "James & Dasarathy, Information Fusion 19:4-19, 2014.",
    parameters=(
        Parameter("weight", "float", 0.5, min=0.0, max=1.0, help="weight of image A; B gets 1 - weight"),
    ),
    halo=_pointwise,
)
def weighted_average(a: torch.Tensor, b: torch.Tensor, *, weight: float) -> torch.Tensor:
    """``weight * A + (1 - weight) * B``, voxel by voxel."""
    return a * weight + b * (1.0 - weight)


@register_method(
    "maximum",
    family="pixel",
    citation="Pixel maximum selection (James & Dasarathy, Information Fusion 19:4-19, 2014).",
    halo=_pointwise,
)
def maximum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The brighter of the two images, voxel by voxel."""
    return torch.maximum(a, b)


_CHUNK = 1 << 22


def pca_weights(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Weights from the principal eigenvector of the 2x2 covariance of ``(A, B)``.

    Naidu & Raol, "Pixel-level image fusion using wavelets and principal component
    analysis", Defence Science Journal 58(3):338-352, 2008, section 3.
    """
    x, y = a.reshape(-1), b.reshape(-1)
    n = x.numel()
    mean_x, mean_y = float(x.mean(dtype=torch.float64)), float(y.mean(dtype=torch.float64))
    sxx = sxy = syy = 0.0
    for start in range(0, n, _CHUNK):  # chunks keep float64 temporaries small on big volumes
        cx = x[start : start + _CHUNK].double() - mean_x
        cy = y[start : start + _CHUNK].double() - mean_y
        sxx, sxy, syy = sxx + float(cx.dot(cx)), sxy + float(cx.dot(cy)), syy + float(cy.dot(cy))
    cov = torch.tensor([[sxx, sxy], [sxy, syy]], dtype=torch.float64) / max(1, n - 1)
    _, vectors = torch.linalg.eigh(cov)
    principal = vectors[:, -1].abs()
    total = float(principal.sum())
    if total <= 0.0 or not torch.isfinite(principal).all():
        return 0.5, 0.5
    return float(principal[0]) / total, float(principal[1]) / total


@register_method(
    "pca",
    family="pixel",
    citation="V. P. S. Naidu, J. R. Raol, Pixel-level image fusion using wavelets and principal "
    "component analysis, Defence Science Journal 58(3):338-352, 2008.",
)
def pca(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Weighted average whose weights are the normalised principal component of (A, B)."""
    wa, wb = pca_weights(a, b)
    return a * wa + b * wb
