"""CNN fusion methods (family ``cnn``): the project's own trained networks.

A network is registered here once its weights ship in ``MedFusionLib/cnn/weights`` (listed
in the manifest with their SHA-256; :mod:`MedFusionLib.cnn.weights`). The weights are read
and checked at first use, so a missing or altered file is a one-line error, not a silent
fallback. Networks are 2-D: a volume is fused slice by slice along ``axis`` in batches of
slices. The reason is the data: the networks learn from 2-D slices, and clinical volumes are
often strongly anisotropic (5 mm CT or MR slices), where in-plane processing respects the
resolution the scanner had; slices are independent, so a volume along the first axis also
fuses in slabs with no halo and bounded memory.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's convention)

from ..cnn.networks import DenseFusionNet, SiameseFocusNet
from ..cnn.weights import WEIGHTS_DIR, load_state_dict, read_manifest
from ..errors import InputError
from .ops import window_sum
from .pyramid import gaussian_pyramid, laplacian_decompose, laplacian_reconstruct
from .registry import Parameter, register_method

SLICES_PER_BATCH = 16
_NETWORKS: dict[tuple[str, str], torch.nn.Module] = {}
_CLASSES = {"dense_fusion_net": DenseFusionNet, "liu_cnn": SiameseFocusNet}


def network(name: str, device: torch.device) -> torch.nn.Module:
    """The shipped network ``name`` on ``device`` (weights checked against the manifest once)."""
    key = (name, str(device))
    if key not in _NETWORKS:
        record = read_manifest()[name]
        state = load_state_dict(WEIGHTS_DIR / record["file"], sha256=record["sha256"])
        net = _CLASSES[name](**record["config"])
        net.load_state_dict(state)
        _NETWORKS[key] = net.eval().to(device)
    return _NETWORKS[key]


def fuse_slices(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, *, axis: int = 0) -> torch.Tensor:
    """Run a 2-D network on a 2-D pair, or on every slice of a 3-D pair along ``axis``."""
    if a.ndim == 2:
        return net(a[None, None], b[None, None])[0, 0]
    a_slices, b_slices = a.movedim(axis, 0), b.movedim(axis, 0)
    out = torch.empty_like(a_slices)
    for start in range(0, a_slices.shape[0], SLICES_PER_BATCH):
        stop = start + SLICES_PER_BATCH
        out[start:stop] = net(a_slices[start:stop, None], b_slices[start:stop, None])[:, 0]
    return out.movedim(0, axis)


def _slices_halo(params: dict[str, Any]) -> int | None:
    # slices along the slab axis (0) are independent; along another axis a slab would cut them
    return 0 if params.get("axis", 0) == 0 else None


_AXIS = Parameter(
    "axis", "int", 0, min=0, max=2, help="volumes: the array axis the 2-D network slices along (0 = first)"
)

if "dense_fusion_net" in read_manifest():

    @register_method(
        "dense_fusion_net",
        family="cnn",
        citation="MedFusion's own network (Docs/models.md), in the family of H. Li, X.-J. Wu, DenseFuse, "
        "IEEE TIP 28(5):2614-2623, 2019 and Y. Zhang et al., IFCNN, Information Fusion 54:99-118, 2020; "
        "losses after H. Xu et al., U2Fusion, IEEE TPAMI 44(1):502-518, 2022 and H. Zhang, J. Ma, SDNet, "
        "IJCV 129:2761-2785, 2021.",
        parameters=(_AXIS,),
        halo=_slices_halo,
    )
    def dense_fusion_net(a: torch.Tensor, b: torch.Tensor, *, axis: int) -> torch.Tensor:
        """End-to-end unsupervised fusion network trained by MedFusion on MNI templates.

        A shared dense encoder, a learned per-pixel fusion rule and a decoder that blends the
        two inputs and adds detail; trained with structure, intensity and gradient losses.
        """
        return fuse_slices(network("dense_fusion_net", a.device), a, b, axis=axis)


@torch.no_grad()
def focus_weight_map(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Liu et al.'s weight map: how likely each pixel's 16x16 windows are clearer in A than in B.

    The Siamese net scores every 16x16 window at stride 2; each pixel averages the scores of
    the windows that contain it (Liu et al., Information Fusion 36, 2017, section 3.2).
    """
    patch = SiameseFocusNet.patch
    if min(a.shape) < patch:
        raise InputError(f"liu_cnn needs images of at least {patch}x{patch} pixels, got {tuple(a.shape)}")
    logits = net(a[None, None], b[None, None])
    score = torch.softmax(logits, 1)[:, 1:]
    window = torch.ones(1, 1, patch, patch, dtype=a.dtype, device=a.device)
    total = F.conv_transpose2d(score, window, stride=2)
    count = F.conv_transpose2d(torch.ones_like(score), window, stride=2)
    weights = (total / count)[0, 0]
    # odd sizes leave the last row or column uncovered: repeat the covered edge
    return F.pad(
        weights[None, None],
        (0, a.shape[1] - weights.shape[1], 0, a.shape[0] - weights.shape[0]),
        mode="replicate",
    )[0, 0]


def similarity_rule(
    ca: torch.Tensor, cb: torch.Tensor, weight: torch.Tensor, *, threshold: float
) -> torch.Tensor:
    """Liu et al. (ICIF 2017): weighted average where the bands are locally similar, else the stronger.

    Local energy and similarity over 3x3 windows: ``M = 2 sum(C_A C_B) / (E_A + E_B)``; where
    ``M >= threshold`` the weight map blends the two coefficients, elsewhere the coefficient
    with the larger local energy is kept.
    """
    energy_a, energy_b = window_sum(ca * ca, 1), window_sum(cb * cb, 1)
    similarity = 2 * window_sum(ca * cb, 1) / (energy_a + energy_b).clamp_min(1e-12)
    blended = weight * ca + (1 - weight) * cb
    selected = torch.where(energy_a >= energy_b, ca, cb)
    return torch.where(similarity >= threshold, blended, selected)


def liu_fuse_2d(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, *, threshold: float) -> torch.Tensor:
    """Weight map from the network, then Laplacian-pyramid fusion with the similarity rule."""
    weight = focus_weight_map(net, a, b)
    levels = int(math.floor(math.log2(min(a.shape))))
    bands_a, top_a = laplacian_decompose(a, levels)
    bands_b, top_b = laplacian_decompose(b, levels)
    weights = gaussian_pyramid(weight, len(bands_a))
    bands = [
        similarity_rule(x, y, w, threshold=threshold)
        for x, y, w in zip(bands_a, bands_b, weights, strict=False)
    ]
    top = similarity_rule(top_a, top_b, weights[len(bands_a)], threshold=threshold)
    return laplacian_reconstruct(bands, top)


if "liu_cnn" in read_manifest():

    @register_method(
        "liu_cnn",
        family="cnn",
        citation="Y. Liu, X. Chen, J. Cheng, H. Peng, A medical image fusion method based on convolutional "
        "neural networks, 20th International Conference on Information Fusion (ICIF), 2017; the Siamese "
        "network of Y. Liu, X. Chen, H. Peng, Z. Wang, Multi-focus image fusion with a deep convolutional "
        "neural network, Information Fusion 36:191-207, 2017 (channels reduced, Docs/models.md).",
        parameters=(
            Parameter(
                "threshold",
                "float",
                0.6,
                min=0.0,
                max=1.0,
                help="local similarity above which bands are blended",
            ),
            _AXIS,
        ),
        halo=_slices_halo,
    )
    def liu_cnn(a: torch.Tensor, b: torch.Tensor, *, threshold: float, axis: int) -> torch.Tensor:
        """CNN weight map with a Laplacian pyramid and a local-similarity rule (Liu et al. 2017).

        A Siamese network trained on multi-focus patches scores which source is locally
        clearer; its weight map drives a Laplacian-pyramid fusion that blends similar bands and
        keeps the stronger coefficient elsewhere. Volumes are fused slice by slice.
        """
        net = network("liu_cnn", a.device)
        if a.ndim == 2:
            return liu_fuse_2d(net, a, b, threshold=threshold)
        a_slices, b_slices = a.movedim(axis, 0), b.movedim(axis, 0)
        out = torch.stack(
            [liu_fuse_2d(net, x, y, threshold=threshold) for x, y in zip(a_slices, b_slices, strict=True)]
        )
        return out.movedim(0, axis)
