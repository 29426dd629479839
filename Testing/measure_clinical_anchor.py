"""Measure the clinical metrics of issue 13 on a few shared patients (a measurement, not a test).

For each patient and each pair (CT+PET, MR+PET) it computes ``conspicuity_kept`` and
``anatomy_kept`` for the engine's gray fusion methods (``MedFusionLib.pipeline.fuse_images``)
and for "Slicer's overlay": ``A`` shown alone in gray under ``P`` shown through Slicer's
PET-Heat table at 40 % opacity, blended as Slicer's slice compositing does
(``0.6 * background + 0.4 * foreground`` on the displayed sRGB values). The issue's anchors
were measured on 17 other patients of the collection, so similar magnitudes are expected,
not equal numbers.

Run from the project root (a few seconds for the three default patients on one CPU thread)::

    .venv/bin/python Testing/measure_clinical_anchor.py [--patients STS_003 STS_019 STS_025]
        [--methods ...] [--gradient 3d|in_plane] [--json]

Data: ``../shared/data/sts`` (Vallieres et al. 2015, TCIA, doi 10.7937/K9/TCIA.2015.7GO2GSKS;
Vallieres et al. 2015, Phys. Med. Biol. 60(14):5471; Clark et al. 2013, J. Digit. Imaging
26(6):1045-1057; CC BY 3.0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from MedFusionLib.colormaps import apply_colormap  # noqa: E402
from MedFusionLib.io import read_image  # noqa: E402
from MedFusionLib.metrics.clinical import (  # noqa: E402
    compute_clinical_metrics,
    display_anatomical,
    normalise_functional,
)
from MedFusionLib.pipeline import fuse_images  # noqa: E402
from MedFusionLib.preprocess import resample_to  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sts"
PAIRS = {"CT_PET": ("CT", "CT"), "MR_PET": ("MR", "MR_T1")}
METHODS = ("laplacian_pyramid", "average", "maximum")
SLICER_OPACITY = 0.4
ANCHORS = {  # issue 13, means over 17 other patients: (conspicuity kept, anatomy kept)
    "CT_PET": {
        "laplacian_pyramid": (0.65, 0.95),
        "average": (0.49, 0.98),
        "maximum": (0.40, 0.97),
        "slicer_overlay_40": (0.50, 0.94),
    },
    "MR_PET": {
        "laplacian_pyramid": (0.39, 0.96),
        "average": (0.22, 0.98),
        "maximum": (0.29, 0.98),
        "slicer_overlay_40": (0.35, 0.94),
    },
}


def slicer_overlay(
    a: np.ndarray, modality: str, p: np.ndarray, *, opacity: float = SLICER_OPACITY
) -> np.ndarray:
    """Gray ``A`` under ``P`` through PET-Heat at ``opacity``, as Slicer composites two layers."""
    background = display_anatomical(a, modality)[..., None]
    foreground = apply_colormap(normalise_functional(p), "pet_heat")
    return (1.0 - opacity) * background + opacity * foreground


def measure_patient(
    patient: str, pair: str, methods: tuple[str, ...], *, gradient: str = "3d"
) -> dict[str, dict[str, float]]:
    modality, stem = PAIRS[pair]
    folder = DATA / patient
    a = read_image(folder / f"{stem}_image.nii.gz", modality=modality)
    pet = read_image(folder / "PET_image.nii.gz", modality="PET")
    mask = read_image(folder / f"{stem}_mask.nii.gz").array
    p = resample_to(pet, a).array
    rows: dict[str, dict[str, float]] = {}
    for method in methods:
        start = time.perf_counter()
        fused = fuse_images(a, pet, method=method, device="cpu").image.array
        seconds = time.perf_counter() - start
        report = compute_clinical_metrics(a, p, fused, mask=mask, gradient=gradient)
        rows[method] = {**report.values, "fuse_s": seconds, "metrics_s": report.seconds}
    overlay = slicer_overlay(a.array, modality, p)
    report = compute_clinical_metrics(a, p, overlay, mask=mask, colormap="pet_heat", gradient=gradient)
    rows["slicer_overlay_40"] = {**report.values, "metrics_s": report.seconds}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", nargs="+", default=["STS_003", "STS_019", "STS_025"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument(
        "--gradient", choices=("3d", "in_plane"), default="3d", help="anatomy_kept's gradient"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("MEDFUSION_THREADS", "1")))

    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for pair in PAIRS:
        results[pair] = {}
        for patient in args.patients:
            results[pair][patient] = measure_patient(
                patient, pair, tuple(args.methods), gradient=args.gradient
            )
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for pair, patients in results.items():
        print(f"\n{pair}: conspicuity kept / anatomy kept  (delta E F / delta E P)")
        rows = [*args.methods, "slicer_overlay_40"]
        print(
            f"{'method':20s}"
            + "".join(f"{patient:>26s}" for patient in patients)
            + f"{'mean':>14s}{'anchor':>14s}"
        )
        for row in rows:
            cells, kept, anatomy = "", [], []
            for values in patients.values():
                v = values[row]
                kept.append(v["conspicuity_kept"])
                anatomy.append(v["anatomy_kept"])
                cells += f"{v['conspicuity_kept']:6.2f}/{v['anatomy_kept']:4.2f} ({v['delta_E_F']:4.1f}/{v['delta_E_P']:4.1f})"
            anchor = ANCHORS[pair].get(row)
            anchor_text = f"{anchor[0]:.2f}/{anchor[1]:.2f}" if anchor else "-"
            print(f"{row:20s}{cells}{np.mean(kept):8.2f}/{np.mean(anatomy):4.2f}{anchor_text:>14s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
