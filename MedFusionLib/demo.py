"""``medfusion demo``: fuse the shipped sample data and draw one montage per pair.

The sample data (``MedFusionLib/sample_data``) are a real patient and three templates:

- patient STS_019 of TCIA's Soft-tissue-Sarcoma collection (CC BY 3.0; notice and citations in
  ``sample_data/README.md``): FDG-PET, CT and T1 MR of the same person with the tumour outlined.
  Its PET is fused with its CT and with its MR by the recommended colour fusion, beside the
  former gray default and the pixel maximum, which lose the tumour's contrast; the montage cuts
  through the tumour's centre;
- the SPM T1, PET and SPECT templates (GPL-2) in MNI space, fused with several methods; the
  SPECT stores its x axis flipped, so the demo also shows that fusion resamples in world
  coordinates rather than by array index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import making_folder, save_png_atomically
from .fusion import get_method
from .fusion.ops import resolve_device
from .image import Image
from .io import read_image, remove_output, write_image
from .metrics.clinical import display_anatomical
from .montage import save_montage
from .output_guard import check_output_folder, guard_outputs
from .pipeline import fuse_images
from .readout import lesion_centre

SAMPLE_DATA = Path(__file__).resolve().parent / "sample_data"

RECOMMENDED = "recommended"
"""A demo method entry that stands for the pair's recommended method and colour table."""

PATIENT_METHODS: tuple[tuple[str, str | None], ...] = (
    (RECOMMENDED, "auto"),
    ("laplacian_pyramid", "none"),
    ("maximum", "none"),
)
"""The patient pairs' rows: the recommended colour fusion, then two gray methods (the former
default and the Harvard metrics' winner) that lose the tumour's contrast."""

DEMO_METHODS = ("average", "laplacian_pyramid", "dwt", "gff", "pa_pcnn")
"""The template pairs' methods (each with the pair's default colour handling)."""


@dataclass(frozen=True)
class DemoPair:
    """Two sample files to fuse, with their modalities and, optionally, a lesion mask to centre on."""

    name: str
    file_a: str
    modality_a: str
    file_b: str
    modality_b: str
    lesion_mask: str | None = None

    @property
    def files(self) -> list[Path]:
        names = [self.file_a, self.file_b, *([self.lesion_mask] if self.lesion_mask else [])]
        return [SAMPLE_DATA / name for name in names]


DEMO_PAIRS = (
    DemoPair("STS019_CT_PET", "sts019_CT.nii.gz", "CT", "sts019_PET.nii.gz", "PET", "sts019_CT_mask.nii.gz"),
    DemoPair(
        "STS019_MR_PET", "sts019_MR_T1.nii.gz", "MR", "sts019_PET.nii.gz", "PET", "sts019_MR_T1_mask.nii.gz"
    ),
    DemoPair("MR_PET", "spm_T1.nii.gz", "MR", "spm_PET.nii.gz", "PET"),
    DemoPair("MR_SPECT", "spm_T1.nii.gz", "MR", "spm_SPECT.nii.gz", "SPECT"),
)


def run_demo(
    out_dir: str | Path,
    *,
    methods: Sequence[str] = DEMO_METHODS,
    device: str = "auto",
    report: Callable[[str], None] = print,
) -> list[Path]:
    """Fuse each demo pair; write the volumes and one montage per pair.

    The patient pairs use :data:`PATIENT_METHODS`, the template pairs ``methods``. Returns the
    written paths (fused volumes, then montages). The output folder, the device and the methods
    are checked before any work; if the demo fails or is stopped, the files and folders it made
    are removed again.

    Raises:
        InputError: ``out_dir`` is a file or cannot be created; a write failed.
        ParameterError: an unknown method or an unavailable device.
    """
    out = check_output_folder(out_dir, option="demo output folder")
    guard_outputs(inputs=[path for pair in DEMO_PAIRS for path in pair.files], outputs=[out])
    resolve_device(device)
    for method in methods:
        get_method(method)
    volumes: list[Path] = []
    montages: list[Path] = []
    with making_folder(out):
        try:
            for pair in DEMO_PAIRS:
                rows = PATIENT_METHODS if pair.lesion_mask else tuple((method, "auto") for method in methods)
                montages.append(
                    _demo_pair(pair, out, rows=rows, device=device, report=report, volumes=volumes)
                )
        except BaseException:
            for path in [*volumes, *montages]:
                remove_output(path)
            raise
    for path in montages:
        report(f"montage: {path}")
    return volumes + montages


def _demo_pair(
    pair: DemoPair,
    out: Path,
    *,
    rows: Sequence[tuple[str, str | None]],
    device: str,
    report: Callable[[str], None],
    volumes: list[Path],
) -> Path:
    """Fuse one pair with every row's method (each volume written is appended to ``volumes``); return its montage."""
    a = read_image(SAMPLE_DATA / pair.file_a, modality=pair.modality_a)
    b = read_image(SAMPLE_DATA / pair.file_b, modality=pair.modality_b)
    shown_a = a
    if pair.modality_a in ("CT", "MR"):  # as a reader shows it: CT soft-tissue window, MR percentiles
        shown_a = a.with_array(display_anatomical(a.array, pair.modality_a).astype(np.float32))
    columns: list[tuple[str, Image]] = [
        (f"{pair.modality_a}: {pair.file_a}", shown_a),
        (f"{pair.modality_b}: {pair.file_b}", b),
    ]
    for method, colormap in rows:
        result = fuse_images(
            a,
            b,
            method=None if method == RECOMMENDED else method,
            colormap=colormap,
            device=device,
            name_a=pair.file_a,
            name_b=pair.file_b,
        )
        table = result.summary().get("colormap")
        label = f"{result.method} + {table}" if table else f"{result.method} (gray)"
        path = write_image(result.image, out / f"{pair.name}_{method}.nii.gz")
        volumes.append(path)
        columns.append((label, result.image))
        report(f"{pair.name:14s} {label:32s} {result.seconds:7.2f} s  -> {path}")
    centre = lesion_centre(read_image(SAMPLE_DATA / pair.lesion_mask)) if pair.lesion_mask else None
    where = "through the tumour's centre" if centre is not None else "mid-slices"
    title = (
        f"MedFusion demo: {pair.modality_a} + {pair.modality_b} ({pair.name}), fused in 3-D "
        f"(axial, coronal, sagittal {where})"
    )
    return save_png_atomically(
        lambda temporary: save_montage(columns, temporary, title=title, centre=centre),
        out / f"demo_{pair.name}.png",
    )
