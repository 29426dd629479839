"""The lesion readout of a fusion: conspicuity kept and anatomy kept for one fused image.

What the Slicer module shows when the user gives the lesion (a label map or a segmentation),
and what the background job computes when its job names a ``lesion`` file. The two measures
are those of :mod:`MedFusionLib.metrics.clinical` (issue 13), on the fused image's grid (the
fixed image's): ``A`` is the anatomical input (CT or MR), ``P`` the functional one (PET or
SPECT), each resampled onto that grid when it is not already there (linear interpolation, the
registration transform applied to the moving image), and the lesion is resampled with nearest
neighbour interpolation. A fixed image of modality PET or SPECT works too: the anatomical
moving image is then resampled onto the PET's grid, where the fused image lies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from .errors import InputError, ParameterError
from .image import Image
from .metrics.clinical import ANATOMICAL_MODALITIES, compute_clinical_metrics
from .preprocess import resample_to
from .recommended import FUNCTIONAL

READOUT_KEYS = ("conspicuity_kept", "anatomy_kept", "delta_E_F", "delta_E_P")
"""The values of :func:`clinical_readout` (``None`` where undefined)."""


def clinical_readout(
    fixed: Image,
    moving: Image,
    fused: Image,
    lesion: Image,
    *,
    colormap: str | None,
    transform: sitk.Transform | None = None,
    modality_fixed: str | None = None,
    modality_moving: str | None = None,
) -> dict[str, Any]:
    """Conspicuity kept and anatomy kept of ``fused`` for the lesion ``lesion``.

    Args:
        fixed: the fixed input (the fused image has its grid).
        moving: the moving input, on its own grid.
        fused: the fusion output on ``fixed``'s grid, gray or RGB, floats in ``[0, 1]`` or uint8.
        lesion: the lesion mask (nonzero inside), on any grid that overlaps ``fixed``.
        colormap: the colour table through which an RGB ``fused`` shows the functional image
            (the ``colormap`` of :class:`~MedFusionLib.pipeline.FusionResult`); ignored for
            gray output.
        transform: the registration transform (fixed points to moving points) or ``None``.
        modality_fixed, modality_moving: override the images' :attr:`~Image.modality`.

    Returns:
        ``{"conspicuity_kept", "anatomy_kept", "delta_E_F", "delta_E_P"}`` (floats, ``None``
        where undefined), ``"lesion_voxels"`` (on the fused grid), ``"colormap"``,
        ``"modalities"`` (anatomical, functional) and ``"notes"`` (why a value is ``None``).

    Raises:
        ParameterError: the pair is not one anatomical (CT, MR) and one functional (PET,
            SPECT) image by modality, or an RGB result without a colour table.
        InputError: ``fused`` is not on ``fixed``'s grid; the lesion does not overlap it.
    """
    modality_fixed = modality_fixed or fixed.modality
    modality_moving = modality_moving or moving.modality
    if modality_fixed in ANATOMICAL_MODALITIES and modality_moving in FUNCTIONAL:
        anatomical_fixed = True
    elif modality_fixed in FUNCTIONAL and modality_moving in ANATOMICAL_MODALITIES:
        anatomical_fixed = False
    else:
        raise ParameterError(
            "the lesion readout needs one CT or MR and one PET or SPECT volume; the fixed volume is "
            f"{modality_fixed or 'of unknown modality'} and the moving one "
            f"{modality_moving or 'of unknown modality'} (set their modality)"
        )
    if not fused.same_grid(fixed):
        raise InputError("the fused image is not on the fixed image's grid")
    moving_on_fixed = resample_to(
        moving, fixed, transform=transform, name="the moving volume", reference_name="the fixed volume"
    )
    mask = resample_to(
        lesion.with_array((lesion.array != 0).astype(np.uint8)),
        fixed,
        interpolation="nearest",
        name="the lesion",
        reference_name="the fixed volume",
    ).array
    anatomical, functional = (fixed, moving_on_fixed) if anatomical_fixed else (moving_on_fixed, fixed)
    modalities = (modality_fixed, modality_moving) if anatomical_fixed else (modality_moving, modality_fixed)
    if anatomical.is_rgb or functional.is_rgb:
        raise ParameterError("the lesion readout takes gray CT, MR, PET and SPECT volumes, not RGB ones")
    report = compute_clinical_metrics(
        anatomical.array.astype(np.float64),
        functional.array.astype(np.float64),
        fused.array,
        mask=mask,
        modality_a=modalities[0],
        colormap=colormap if fused.is_rgb else None,
        spacing=fixed.spacing,
    )
    values = report.to_json()
    return {
        **{key: values.get(key) for key in READOUT_KEYS},
        "lesion_voxels": int(np.count_nonzero(mask)),
        "colormap": colormap if fused.is_rgb else None,
        "modalities": list(modalities),
        "notes": dict(report.notes),
    }


def lesion_centre(mask: Image) -> tuple[float, ...] | None:
    """The physical centre (LPS, mm) of a mask's nonzero voxels; ``None`` for an empty mask.

    Where a view of the lesion is centred: the demo's montage cuts, the web app's slice views.
    """
    inside = np.argwhere(np.asarray(mask.array) != 0)
    if inside.size == 0:
        return None
    index = inside.mean(axis=0)[::-1]  # array order (z, y, x) -> ITK index order (x, y, z)
    return tuple(mask.to_sitk().TransformContinuousIndexToPhysicalPoint([float(i) for i in index]))
