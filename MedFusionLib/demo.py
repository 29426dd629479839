"""``medfusion demo``: fuse the shipped SPM templates with several methods and draw a montage.

The sample data (``MedFusionLib/sample_data``, GPL-2 SPM templates) are a T1 MRI, a PET and
a SPECT volume in MNI space; the SPECT stores its x axis flipped, so the demo also shows
that fusion resamples in world coordinates rather than by array index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .image import Image
from .io import read_image, write_image
from .montage import save_montage
from .pipeline import fuse_images

SAMPLE_DATA = Path(__file__).resolve().parent / "sample_data"
DEMO_PAIRS = (
    ("spm_T1.nii.gz", "MR", "spm_PET.nii.gz", "PET"),
    ("spm_T1.nii.gz", "MR", "spm_SPECT.nii.gz", "SPECT"),
)
DEMO_METHODS = ("average", "laplacian_pyramid", "dwt", "gff", "pa_pcnn")


def run_demo(
    out_dir: str | Path,
    *,
    methods: Sequence[str] = DEMO_METHODS,
    device: str = "auto",
    report: Callable[[str], None] = print,
) -> list[Path]:
    """Fuse each demo pair with each method; write the volumes and one montage per pair.

    Returns the written paths (fused volumes, then montages).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    montages: list[Path] = []
    for file_a, modality_a, file_b, modality_b in DEMO_PAIRS:
        a = read_image(SAMPLE_DATA / file_a, modality=modality_a)
        b = read_image(SAMPLE_DATA / file_b, modality=modality_b)
        pair = f"{modality_a}_{modality_b}"
        rows: list[tuple[str, Image]] = [(f"{modality_a}: {file_a}", a), (f"{modality_b}: {file_b}", b)]
        for method in methods:
            result = fuse_images(a, b, method=method, device=device, name_a=file_a, name_b=file_b)
            path = write_image(result.image, out / f"{pair}_{method}.nii.gz")
            written.append(path)
            rows.append((f"{method} ({result.seconds:.1f} s)", result.image))
            report(f"{pair:10s} {method:20s} {result.seconds:7.2f} s  -> {path}")
        montages.append(
            save_montage(
                rows,
                out / f"demo_{pair}.png",
                title=f"MedFusion demo: {modality_a} + {modality_b}, fused in 3-D (axial, coronal, sagittal mid-slices)",
            )
        )
    for path in montages:
        report(f"montage: {path}")
    return written + montages
