"""Colour fusion of PET with CT and MR on the shared real patients: the exploration behind issue 13's defaults.

Not a test. For every patient of ``../shared/data/sts`` and each pair (CT+PET, MR+PET) it resamples
the PET onto the anatomical grid, fuses with each candidate (:func:`MedFusionLib.functional_fusion.
fuse_functional` with a colour table and a luminance rule), with gray methods of the engine, and
with Slicer's overlay (gray A under P through PET-Heat at 40 % opacity), and scores issue 13's two
measures (:func:`MedFusionLib.metrics.clinical.compute_clinical_metrics`). It writes a Markdown and
a JSON summary (per pair and candidate: mean conspicuity kept, mean anatomy kept, worst patient,
mean absolute Delta E of F lesion vs shell, median seconds to fuse) and a figure of the tumour's
mid-slice.

Seconds: the colour fusion of one patient pair on the anatomical grid (A's display, P's
normalisation, luminance rule, chroma, CIELAB to sRGB), after reading and resampling (reported
separately), with ``torch.set_num_threads(--threads)``.

Gray rows fuse A's display with P's normalisation (the displays of issue 13) with the registered
gray method, not the pipeline's own normalisation, so they are close to but not the same numbers
as the gray rows of ``medfusion benchmark ../shared/data/sts`` (``Docs/benchmarks/sts.md``).

Run from the project root::

    OMP_NUM_THREADS=2 .venv/bin/python Testing/benchmark_colour_fusion.py [--patients ...]
        [--candidates ...] [--register-mr] [--threads 2] [--out Docs/benchmarks/sts]

Data: ``../shared/data/sts`` (Vallieres et al. 2015, TCIA, doi 10.7937/K9/TCIA.2015.7GO2GSKS;
Vallieres et al. 2015, Phys. Med. Biol. 60(14):5471, doi 10.1088/0031-9155/60/14/5471; Clark et
al. 2013, J. Digit. Imaging 26(6):1045-1057, doi 10.1007/s10278-013-9622-7; CC BY 3.0).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from MedFusionLib.benchmark.clinical import PAIRS, discover_patients, slicer_overlay  # noqa: E402
from MedFusionLib.colormaps import apply_colormap, srgb_to_lab  # noqa: E402
from MedFusionLib.functional_fusion import RECOMMENDED, fuse_functional  # noqa: E402
from MedFusionLib.fusion.runner import fuse_tensors  # noqa: E402
from MedFusionLib.io import read_image  # noqa: E402
from MedFusionLib.metrics.clinical import (  # noqa: E402
    body_mask,
    compute_clinical_metrics,
    display_anatomical,
    normalise_functional,
)
from MedFusionLib.preprocess import resample_to  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sts"
SLICER_OPACITY = 0.4

# name: (colour table, luminance method, its parameters, gamut, room); "gray:" rows are gray fusion.
CANDIDATES: dict[str, tuple[str, str, dict[str, Any], str, float]] = {
    "neutral_heat+uptake_average": ("neutral_heat", "uptake_average", {}, "compress", 0.0),
    "neutral_heat+uptake_average(w=0.7)": (
        "neutral_heat",
        "uptake_average",
        {"weight": 0.7},
        "compress",
        0.0,
    ),
    "bmy+uptake_average": ("bmy", "uptake_average", {}, "compress", 0.0),
    "bmy+uptake_average(w=0.7)": ("bmy", "uptake_average", {"weight": 0.7}, "compress", 0.0),
    "bmy+uptake_average(w=0.55,no guide)": (
        "bmy",
        "uptake_average",
        {"weight": 0.55, "guide_radius": 0},
        "compress",
        0.0,
    ),
    "inferno+uptake_average": ("inferno", "uptake_average", {}, "compress", 0.0),
    "bmy+IHS(L*=A)": ("bmy", "uptake_average", {"weight": 0.0}, "compress", 0.0),
    "inferno+IHS(L*=A)": ("inferno", "uptake_average", {"weight": 0.0}, "compress", 0.0),
    "inferno+uptake_exchange": ("inferno", "uptake_exchange", {"cap": 0.7}, "compress", 0.0),
    "pet_heat+uptake_average": ("pet_heat", "uptake_average", {}, "compress", 0.0),
    "bmy+laplacian_pyramid": ("bmy", "laplacian_pyramid", {}, "compress", 0.0),
    "pet_heat+maximum": ("pet_heat", "maximum", {}, "compress", 0.0),
    "gray:laplacian_pyramid": ("gray", "laplacian_pyramid", {}, "", 0.0),
    "gray:maximum": ("gray", "maximum", {}, "", 0.0),
    "slicer_overlay_40": ("pet_heat", "", {}, "", 0.0),
}
DEFAULT_CANDIDATES = tuple(CANDIDATES)
FIGURE_CANDIDATES = (
    "neutral_heat+uptake_average",
    "bmy+uptake_average",
    "inferno+uptake_average",
    "bmy+IHS(L*=A)",
    "slicer_overlay_40",
)


def patients(data: Path) -> list[str]:
    return [patient.id for patient in discover_patients(data, list(PAIRS))]


def fuse_candidate(name: str, display_a: np.ndarray, normalised_p: np.ndarray) -> np.ndarray:
    """The fused image of one candidate (RGB, or gray for the ``gray:`` rows)."""
    table, method, parameters, gamut, room = CANDIDATES[name]
    if name == "slicer_overlay_40":
        return slicer_overlay(display_a, normalised_p, opacity=SLICER_OPACITY)
    if name.startswith("gray:"):
        fused = fuse_tensors(
            torch.from_numpy(display_a.astype(np.float32)),
            torch.from_numpy(normalised_p.astype(np.float32)),
            method=method,
            parameters=parameters,
        )
        return fused.numpy()
    return fuse_functional(
        display_a, normalised_p, colormap=table, method=method, parameters=parameters, gamut=gamut, room=room
    )


def tissue_chroma(fused: np.ndarray, background: np.ndarray, body: np.ndarray) -> dict[str, float]:
    """How coloured the anatomy is: CIELAB chroma C*ab of F, mean over the body voxels (lesion
    excluded) whose P is at or below the body's median P ("tissue at PET background"), and the
    90th percentile over the whole body (lesion excluded). 0 for gray output."""
    if fused.ndim == background.ndim:
        return {"chroma_background": 0.0, "chroma_body_p90": 0.0}
    chroma_bg = np.hypot(*srgb_to_lab(fused[background])[:, 1:].T)
    chroma_body = np.hypot(*srgb_to_lab(fused[body])[:, 1:].T)
    return {
        "chroma_background": float(chroma_bg.mean()) if chroma_bg.size else float("nan"),
        "chroma_body_p90": float(np.percentile(chroma_body, 90)) if chroma_body.size else float("nan"),
    }


def rigid_pet_on_mr(folder: Path, mr: Any, pet: Any) -> tuple[Any, float]:
    """PET resampled onto the MR through a rigid MR-to-CT registration (PET and CT share a frame)."""
    from MedFusionLib.registration import register

    ct = read_image(folder / "CT_image.nii.gz", modality="CT")
    start = time.perf_counter()
    result = register(mr, ct, type="rigid")
    return resample_to(pet, mr, transform=result.transform), time.perf_counter() - start


def measure(
    data: Path, patient: str, pair: str, names: list[str], *, register_mr: bool = False
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    modality, stem = PAIRS[pair]
    folder = data / patient
    a = read_image(folder / f"{stem}_image.nii.gz", modality=modality)
    pet = read_image(folder / "PET_image.nii.gz", modality="PET")
    mask = read_image(folder / f"{stem}_mask.nii.gz").array != 0
    start = time.perf_counter()
    p = resample_to(pet, a).array.astype(np.float32)
    resample_s = time.perf_counter() - start
    register_s = None
    register_note = None
    if register_mr and pair == "MR_PET":
        from MedFusionLib.errors import RegistrationError

        try:
            moved, register_s = rigid_pet_on_mr(folder, a, pet)
            p = moved.array.astype(np.float32)
        except RegistrationError as error:  # keep the given alignment and say so
            register_note = str(error)
    rows: dict[str, dict[str, float]] = {}
    fused_images: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    display_a = display_anatomical(a.array, modality).astype(np.float32)
    normalised_p = normalise_functional(p).astype(np.float32)
    display_s = time.perf_counter() - start  # counted in every row's seconds
    body = body_mask(a.array, modality) & ~mask
    background = body & (normalised_p <= np.median(normalised_p[body]))
    for name in names:
        start = time.perf_counter()
        fused = fuse_candidate(name, display_a, normalised_p)
        seconds = time.perf_counter() - start + display_s
        table = CANDIDATES[name][0]
        colormap = None if fused.ndim == a.array.ndim else table
        report = compute_clinical_metrics(
            a.array, p, fused, mask=mask, modality_a=modality, colormap=colormap, spacing=a.spacing
        )
        rows[name] = {**report.values, "seconds": seconds, **tissue_chroma(fused, background, body)}
        fused_images[name] = fused
    extra = {
        "resample_s": resample_s,
        "register_s": register_s,
        "register_failed": register_note,
        "shape": list(a.array.shape),
    }
    extra["images"] = (a.array, p, mask, modality, fused_images)
    return rows, extra


def summarise(per_patient: dict[str, dict[str, dict[str, float]]], names: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in names:
        values = {patient: rows[name] for patient, rows in per_patient.items()}
        kept = {patient: v["conspicuity_kept"] for patient, v in values.items()}
        worst = min(kept, key=kept.get)
        summary[name] = {
            "conspicuity_kept": float(np.mean(list(kept.values()))),
            "anatomy_kept": float(np.mean([v["anatomy_kept"] for v in values.values()])),
            "worst_patient": worst,
            "worst_conspicuity_kept": kept[worst],
            "min_anatomy_kept": float(min(v["anatomy_kept"] for v in values.values())),
            "delta_E_F": float(np.mean([v["delta_E_F"] for v in values.values()])),
            "delta_E_P": float(np.mean([v["delta_E_P"] for v in values.values()])),
            "chroma_background": float(np.mean([v["chroma_background"] for v in values.values()])),
            "chroma_body_p90": float(np.mean([v["chroma_body_p90"] for v in values.values()])),
            "median_seconds": float(statistics.median(v["seconds"] for v in values.values())),
            "per_patient": values,
        }
    return summary


def mid_slice_panel(images: tuple, names: list[str], table: str) -> list[tuple[str, np.ndarray]]:
    """``(label, RGB slice)`` for A, P through ``table`` and each fused image at the tumour's mid-slice."""
    a, p, mask, modality, fused = images
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    z = int(slices[len(slices) // 2])
    display_a = display_anatomical(a, modality)[z]
    panels = [(f"{modality} alone", np.repeat(display_a[..., None], 3, axis=-1))]
    panels.append((f"PET alone ({table})", apply_colormap(normalise_functional(p)[z], table)))
    panels.append(("PET alone (pet_heat)", apply_colormap(normalise_functional(p)[z], "pet_heat")))
    for name in names:
        image = fused[name][z]
        panels.append((name, image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)))
    return panels, mask[z]


def save_figure(rows: list[tuple[str, list[tuple[str, np.ndarray]], np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(rows[0][1])
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.6 * columns, 2.8 * len(rows)), squeeze=False)
    for row, (title, panels, mask) in enumerate(rows):
        for column, (label, image) in enumerate(panels):
            axis = axes[row][column]
            axis.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
            axis.contour(mask, levels=[0.5], colors="cyan", linewidths=0.5)
            axis.set_title(f"{title}\n{label}" if column == 0 else label, fontsize=7)
            axis.axis("off")
    figure.suptitle(
        "Tumour mid-slice (cyan: GTV outline). Data: TCIA Soft-tissue-Sarcoma via IBSI, CC BY 3.0", fontsize=8
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(results: dict[str, Any], command: str, threads: int) -> str:
    lines = [
        "# Colour fusion of PET with CT and MR on the 24 shared patients (issue 13)",
        "",
        f"Command: `{command}` ({threads} torch threads). Means over the patients of each pair; worst = the",
        "patient with the lowest conspicuity kept; Delta E F = mean absolute CIE 1976 colour difference of",
        "F between lesion and shell (Delta E P the same for P alone through the row's table); seconds =",
        "median time to colour-fuse one patient pair on A's grid (after reading and resampling).",
        "Anatomy tint (how far from gray the anatomy is shown): C* bg = mean CIELAB chroma C*ab of F over the",
        "body voxels (lesion excluded) whose P is at or below the body's median P (tissue at PET background),",
        "C* body p90 = its 90th percentile over the whole body (lesion excluded); patient means. Gray is 0;",
        "a C* of a few units reads as gray, 20 as a clear tint.",
        "",
        "Targets: conspicuity kept >= 0.90 and anatomy kept >= 0.95 (means), no patient below 0.75",
        "conspicuity, <= 2 s per pair.",
        "",
    ]
    for pair, rows in results["pairs"].items():
        lines += [
            f"## {pair}",
            "",
            "| candidate | conspicuity kept | anatomy kept | worst patient (conspicuity) | min anatomy "
            "| Delta E F | Delta E P | C* bg | C* body p90 | s / pair |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            lines.append(
                f"| {name} | {row['conspicuity_kept']:.3f} | {row['anatomy_kept']:.3f} | "
                f"{row['worst_patient']} ({row['worst_conspicuity_kept']:.2f}) | {row['min_anatomy_kept']:.3f} | "
                f"{row['delta_E_F']:.1f} | {row['delta_E_P']:.1f} | {row['chroma_background']:.1f} | "
                f"{row['chroma_body_p90']:.1f} | {row['median_seconds']:.2f} |"
            )
        lines.append("")
    lines += ["Candidates (table, luminance rule, parameters over the rule's defaults):", ""]
    for name in results["candidates"]:
        table, method, parameters, gamut, room = CANDIDATES[name]
        lines.append(
            f"- `{name}`: table `{table}`, rule `{method or 'Slicer overlay'}`, {json.dumps(parameters)}"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--patients", nargs="+", default=None, help="default: every STS_* folder")
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--candidates", nargs="+", default=list(DEFAULT_CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--register-mr", action="store_true", help="MR_PET: resample PET through rigid MR-CT")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "Docs" / "benchmarks" / "sts")
    parser.add_argument("--name", default="colour_fusion_exploration")
    parser.add_argument(
        "--figure", type=Path, default=ROOT / "Docs" / "images" / "colour_fusion_sts.png", help="'' for none"
    )
    parser.add_argument("--figure-patients", nargs="+", default=["STS_007", "STS_035"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list(args.candidates)
    chosen = args.patients or patients(args.data)

    results: dict[str, Any] = {
        "candidates": names,
        "patients": chosen,
        "pairs": {},
        "recommended": RECOMMENDED,
    }
    figure_rows = []
    for pair in args.pairs:
        per_patient, extras = {}, {}
        for patient in chosen:
            rows, extra = measure(args.data, patient, pair, names, register_mr=args.register_mr)
            per_patient[patient] = rows
            images = extra.pop("images")
            extras[patient] = extra
            if patient in args.figure_patients:
                figure_names = [n for n in FIGURE_CANDIDATES if n in names]
                panels, mask = mid_slice_panel(images, figure_names, CANDIDATES[figure_names[0]][0])
                figure_rows.append((f"{patient} {pair}", panels, mask))
            print(pair, patient, {n: round(r["conspicuity_kept"], 2) for n, r in rows.items()}, flush=True)
        results["pairs"][pair] = summarise(per_patient, names)
        results.setdefault("io", {})[pair] = extras
    command = "OMP_NUM_THREADS=2 .venv/bin/python Testing/benchmark_colour_fusion.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (args.out / f"{args.name}.md").write_text(
        markdown(results, command.strip(), args.threads), encoding="utf-8"
    )
    if figure_rows and str(args.figure) not in ("", "."):
        save_figure(figure_rows, args.figure)
    print(markdown(results, command.strip(), args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
