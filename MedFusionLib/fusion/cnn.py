"""CNN fusion (family ``cnn``): MedFusion's own trained network, ``gain_fusion_net``.

The method is registered once its weights ship in ``MedFusionLib/cnn/weights`` (one file per
modality pair, listed in the manifest with its SHA-256; :mod:`MedFusionLib.cnn.weights`). The
weights are read and checked at first use, so a missing or altered file is a one-line error,
not a silent fallback. The network is 2-D: a volume is fused slice by slice along ``axis`` in
batches of slices. The reason is the data: the network learns from 2-D slices, and clinical
volumes are often strongly anisotropic (3-5 mm CT, MR or PET slices), where in-plane
processing respects the resolution the scanner had; slices are independent, so a volume
along the first axis also fuses in slabs with no halo and bounded memory.
"""

from __future__ import annotations

from typing import Any

import torch

from ..cnn.data import MODALITY_PAIRS
from ..cnn.networks import GainFusionNet
from ..cnn.weights import WEIGHTS_DIR, load_state_dict, read_manifest
from .registry import Parameter, register_method

SLICES_PER_BATCH = 16
_NETWORKS: dict[tuple[str, str], torch.nn.Module] = {}


def network(name: str, device: torch.device) -> torch.nn.Module:
    """The shipped weights ``name`` (``gain_fusion_net_<PAIR>``) on ``device``, checked once."""
    key = (name, str(device))
    if key not in _NETWORKS:
        record = read_manifest()[name]
        state = load_state_dict(WEIGHTS_DIR / record["file"], sha256=record["sha256"])
        net = GainFusionNet(**record["config"])
        net.load_state_dict(state)
        _NETWORKS[key] = net.eval().to(device)
    return _NETWORKS[key]


@torch.no_grad()
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


if all(f"gain_fusion_net_{pair}" in read_manifest() for pair in MODALITY_PAIRS):

    @register_method(
        "gain_fusion_net",
        family="cnn",
        citation="MedFusion's own network (Docs/models.md): a dense encoder after H. Li, X.-J. Wu, DenseFuse, "
        "IEEE TIP 28(5):2614-2623, 2019 with per-pixel source gains, trained to keep both sources' visual "
        "information fidelity (H. R. Sheikh, A. C. Bovik, IEEE TIP 15(2):430-444, 2006; Y. Han et al., "
        "Information Fusion 14(2):127-135, 2013).",
        parameters=(
            Parameter(
                "pair",
                "str",
                "MRI_PET",
                choices=MODALITY_PAIRS,
                help="which weights: the modality pair they were trained and chosen for (A is the MR or CT; "
                "set from the images' modalities when known)",
            ),
            Parameter(
                "axis",
                "int",
                0,
                min=0,
                max=2,
                help="volumes: the array axis the 2-D network slices along (0 = first)",
            ),
        ),
        halo=_slices_halo,
    )
    def gain_fusion_net(a: torch.Tensor, b: torch.Tensor, *, pair: str, axis: int) -> torch.Tensor:
        """Fusion network with per-pixel source gains, one set of weights per modality pair.

        ``max(g_A A, g_B B) + d`` with gains and detail predicted per pixel; trained on the SPM/MNI
        templates and the shared patients to keep the visual information of both sources, the
        less-kept one most. A is the anatomical image, B the CT, PET or SPECT.
        """
        return fuse_slices(network(f"gain_fusion_net_{pair}", a.device), a, b, axis=axis)
