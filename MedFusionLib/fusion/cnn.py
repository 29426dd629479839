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

from typing import Any

import torch

from ..cnn.networks import DenseFusionNet
from ..cnn.weights import WEIGHTS_DIR, load_state_dict, read_manifest
from .registry import Parameter, register_method

SLICES_PER_BATCH = 16
_NETWORKS: dict[tuple[str, str], torch.nn.Module] = {}
_CLASSES = {"dense_fusion_net": DenseFusionNet}


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
