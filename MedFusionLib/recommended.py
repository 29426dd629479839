"""The fusion recommended for each modality pair: method, colour table and parameters, in one place.

``medfusion fuse`` without ``--method`` and :func:`~MedFusionLib.pipeline.fuse_images` with
``method=None`` use :func:`recommended`. The table (both orders of a pair give the same choice):

==================  ==========================================  ==================================
pair                method                                      colour table
==================  ==========================================  ==================================
CT + PET            ``RECOMMENDED["CT_PET"]`` (colour fusion)   ``RECOMMENDED["CT_PET"]``
MR + PET            ``RECOMMENDED["MR_PET"]`` (colour fusion)   ``RECOMMENDED["MR_PET"]``
CT + SPECT          the CT + PET choice                         the CT + PET choice
MR + SPECT          the MR + PET choice                         the MR + PET choice
MR + CT, MR + MR,   :data:`GRAY_METHOD` (``laplacian_pyramid``)  none (gray output)
CT + CT
anything else       :data:`GRAY_METHOD`                         none (gray output)
==================  ==========================================  ==================================

``RECOMMENDED`` is :data:`MedFusionLib.functional_fusion.RECOMMENDED`, chosen on the 24 shared
soft-tissue sarcoma patients (``Docs/benchmarks/sts/colour_fusion_exploration.md``); it is read
at each call, so refinements of that table apply here without change. SPECT takes the PET
choice: both are gray functional images shown through a heat table, and no SPECT patient with a
lesion mask was available to choose otherwise. Pairs without a known anatomical + functional
split (a modality unknown, PET + PET, ...) keep the engine's gray default, exactly as before
modality-aware defaults existed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ANATOMICAL = ("CT", "MR")
"""Modalities shown in gray under a functional image."""

FUNCTIONAL = ("PET", "SPECT")
"""Modalities shown through a colour table."""

GRAY_METHOD = "laplacian_pyramid"
"""The method for every pair that is not anatomical + functional (the engine's default)."""

DEFAULT_GAMUT = "compress"
DEFAULT_ROOM = 0.0


@dataclass(frozen=True)
class Recommendation:
    """What to fuse a modality pair with.

    Attributes:
        method: the registered fusion method (for colour fusion, the rule fusing the lightnesses).
        colormap: the colour table for the functional image, or ``None`` for gray fusion.
        parameters: overrides of the method's defaults.
        gamut, room: :func:`~MedFusionLib.functional_fusion.fuse_functional`'s gamut handling.
        pair: the key of ``functional_fusion.RECOMMENDED`` used (``"CT_PET"``, ``"MR_PET"``), or
            ``None`` for the gray default.
        note: why this choice, in a few words (for reports).
    """

    method: str
    colormap: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    gamut: str = DEFAULT_GAMUT
    room: float = DEFAULT_ROOM
    pair: str | None = None
    note: str = ""


def functional_side(modality_a: str | None, modality_b: str | None) -> str | None:
    """Which image is functional in an anatomical + functional pair: ``"a"``, ``"b"`` or ``None``.

    ``None`` unless one modality is CT or MR and the other PET or SPECT.
    """
    if modality_a in ANATOMICAL and modality_b in FUNCTIONAL:
        return "b"
    if modality_a in FUNCTIONAL and modality_b in ANATOMICAL:
        return "a"
    return None


def recommended(modality_a: str | None, modality_b: str | None) -> Recommendation:
    """The recommended method, colour table and parameters for images of these modalities.

    Args:
        modality_a, modality_b: ``"CT"``, ``"MR"``, ``"PET"``, ``"SPECT"`` or ``None`` (unknown).

    Returns:
        A :class:`Recommendation` (see the module docstring for the table).

    Example:
        >>> recommended("MR", "CT").method, recommended("MR", "CT").colormap
        ('laplacian_pyramid', None)
    """
    side = functional_side(modality_a, modality_b)
    if side is None:
        known = modality_a is not None and modality_b is not None
        note = "anatomical pair: gray fusion" if known else "modality unknown: gray fusion"
        return Recommendation(method=GRAY_METHOD, colormap=None, note=note)
    from .functional_fusion import RECOMMENDED

    anatomical, functional = (modality_a, modality_b) if side == "b" else (modality_b, modality_a)
    pair = f"{anatomical}_PET"
    entry = RECOMMENDED[pair]
    note = f"colour fusion, {pair} choice" + (
        " (SPECT takes the PET choice)" if functional == "SPECT" else ""
    )
    return Recommendation(
        method=str(entry["method"]),
        colormap=str(entry["colormap"]),
        parameters=dict(entry.get("parameters") or {}),
        gamut=str(entry.get("gamut", DEFAULT_GAMUT)),
        room=float(entry.get("room", DEFAULT_ROOM)),
        pair=pair,
        note=note,
    )
