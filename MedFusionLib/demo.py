"""``medfusion demo``: fuse the shipped SPM templates with several methods and draw a montage.

The sample data (``MedFusionLib/sample_data``, GPL-2 SPM templates) are a T1 MRI, a PET and
a SPECT volume in MNI space; the SPECT stores its x axis flipped, so the demo also shows
that fusion resamples in world coordinates rather than by array index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .atomic import making_folder, save_png_atomically
from .fusion import get_method
from .fusion.ops import resolve_device
from .image import Image
from .io import read_image, remove_output, write_image
from .montage import save_montage
from .output_guard import check_output_folder, guard_outputs
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

    Returns the written paths (fused volumes, then montages). The output folder, the device
    and the methods are checked before any work; if the demo fails or is stopped, the files
    and folders it made are removed again.

    Raises:
        InputError: ``out_dir`` is a file or cannot be created; a write failed.
        ParameterError: an unknown method or an unavailable device.
    """
    out = check_output_folder(out_dir, option="demo output folder")
    guard_outputs(inputs=[SAMPLE_DATA / name for pair in DEMO_PAIRS for name in pair[::2]], outputs=[out])
    resolve_device(device)
    for method in methods:
        get_method(method)
    volumes: list[Path] = []
    montages: list[Path] = []
    with making_folder(out):
        try:
            for pair in DEMO_PAIRS:
                montages.append(
                    _demo_pair(pair, out, methods=methods, device=device, report=report, volumes=volumes)
                )
        except BaseException:
            for path in [*volumes, *montages]:
                remove_output(path)
            raise
    for path in montages:
        report(f"montage: {path}")
    return volumes + montages


def _demo_pair(
    pair: tuple[str, str, str, str],
    out: Path,
    *,
    methods: Sequence[str],
    device: str,
    report: Callable[[str], None],
    volumes: list[Path],
) -> Path:
    """Fuse one pair with every method (each volume written is appended to ``volumes``); return its montage."""
    file_a, modality_a, file_b, modality_b = pair
    a = read_image(SAMPLE_DATA / file_a, modality=modality_a)
    b = read_image(SAMPLE_DATA / file_b, modality=modality_b)
    name = f"{modality_a}_{modality_b}"
    rows: list[tuple[str, Image]] = [(f"{modality_a}: {file_a}", a), (f"{modality_b}: {file_b}", b)]
    for method in methods:
        result = fuse_images(a, b, method=method, device=device, name_a=file_a, name_b=file_b)
        path = write_image(result.image, out / f"{name}_{method}.nii.gz")
        volumes.append(path)
        rows.append((f"{method} ({result.seconds:.1f} s)", result.image))
        report(f"{name:10s} {method:20s} {result.seconds:7.2f} s  -> {path}")
    title = f"MedFusion demo: {modality_a} + {modality_b}, fused in 3-D (axial, coronal, sagittal mid-slices)"
    return save_png_atomically(
        lambda temporary: save_montage(rows, temporary, title=title), out / f"demo_{name}.png"
    )
