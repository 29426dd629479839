"""MR-to-CT rigid registration on the shared real patients; writes ``Docs/benchmarks/sts/registration_mr_ct.json``.

Not a test: run it by hand on a quiet machine (issue 13, "Registration on real patients")::

    .venv/bin/python Testing/benchmark_registration_sts.py [--patients STS_001,STS_003]
        [--trials 3] [--seed 1] [--threads 2] [--out Docs/benchmarks/sts/registration_mr_ct.json]

For every patient of ``../shared/data/sts`` the T1 MR (moving) is registered rigidly to the CT
(fixed) with :func:`MedFusionLib.registration.register` (Mattes MI, its defaults otherwise):

- **default**: exactly what ``medfusion register CT MR`` does: the whole CT, no masks, the
  geometry-centred start (the two images' box centres put on top of each other).
- **benchmark** (the reported registration): the CT cropped to the MR's box (the MR covers
  10-90 % of the CT's box; below 25 % ``register`` refuses), the MR's exact-zero voxels (the
  padding left by the earlier resampling of the MR into the CT's space) masked out of the
  metric, and the start at the identity (the given alignment), so that "before" is the
  given alignment.

Per patient: Mattes MI before (identity) and after, seconds, the correction (how far the given
MR was off: displacement of the CT's body points and of the tumour centroid, rotation angle),
and two checks that do not use MI: the distance between the CT's and the MR's body outlines
(CT > -400 HU; smoothed MR > 120, the MR being normalised to subcutaneous fat) and the Dice of
the given tumour masks (which turn out to be drawn in the CT's frame; see the doc).

Known-transform TRE: ``--trials`` random rigid transforms T per patient (rotations up to 5
degrees about each axis around the tumour centroid, translations up to 10 mm, seeded by
``--seed`` and the patient number) are applied to the MR exactly, by changing its origin and
direction (no resampling); the moved MR is registered like the benchmark run, and the result is
compared with T composed with the benchmark registration R of the unmoved pair (the known
displacement undone; identity where R failed). TRE is measured at every CT body voxel (> -400
HU) of the cropped CT inside the MR's field of view (at most about 4000, evenly strided) and at
the tumour centroid. Success: mean TRE under 2 mm (the CT voxel diagonal is 3.55 mm).

QA pictures (:func:`MedFusionLib.registration_qa.save_registration_qa`, the CT shown through a
-250..400 HU window) for the ``--qa`` patients with the largest correction, given and
registered, under ``Docs/images/registration_sts_<ID>[_given].png``.

Data: ``../shared/data/sts`` (Vallieres et al. 2015, TCIA, doi 10.7937/K9/TCIA.2015.7GO2GSKS;
Vallieres et al. 2015, Phys. Med. Biol. 60(14):5471, doi 10.1088/0031-9155/60/14/5471; Clark et
al. 2013, J. Digit. Imaging 26(6):1045-1057, doi 10.1007/s10278-013-9622-7; CC BY 3.0).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from MedFusionLib.errors import MedFusionError  # noqa: E402
from MedFusionLib.image import Image  # noqa: E402
from MedFusionLib.io import read_image  # noqa: E402
from MedFusionLib.registration import register  # noqa: E402
from MedFusionLib.registration_qa import save_registration_qa  # noqa: E402

CT_BODY_HU = -400.0
MR_BODY = 120.0  # T1 normalised to subcutaneous fat: air about 3-110, tissue above
CORTEX_HU = 600.0
MIN_CORTEX_VOXELS = 200
SUCCESS_MM = 2.0
MAX_POINTS = 4000
MAX_ANGLE_DEG = 5.0
MAX_SHIFT_MM = 10.0


# --- geometry helpers -------------------------------------------------------------------------
def affine_of(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with ``transform(p) = A p + b`` for a rigid/affine SimpleITK transform."""
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    centre = np.array(transform.GetCenter())
    return matrix, centre + np.array(transform.GetTranslation()) - matrix @ centre


def apply(affine: tuple[np.ndarray, np.ndarray], points: np.ndarray) -> np.ndarray:
    return points @ affine[0].T + affine[1]


def compose(outer: tuple[np.ndarray, np.ndarray], inner: tuple[np.ndarray, np.ndarray]):
    """``outer(inner(p))``."""
    return outer[0] @ inner[0], outer[0] @ inner[1] + outer[1]


def rotation_deg(matrix: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(matrix) - 1.0) / 2.0, -1.0, 1.0))))


def identity_at(centre: np.ndarray) -> sitk.Euler3DTransform:
    return sitk.Euler3DTransform(tuple(float(c) for c in centre), 0.0, 0.0, 0.0, (0.0, 0.0, 0.0))


def centre_of(image: sitk.Image) -> np.ndarray:
    return np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))


def crop_to_box(fixed: sitk.Image, moving: sitk.Image) -> sitk.Image:
    """``fixed`` cropped to the voxels inside ``moving``'s box (world coordinates)."""
    size = moving.GetSize()
    corners = [
        fixed.TransformPhysicalPointToContinuousIndex(
            moving.TransformContinuousIndexToPhysicalPoint(
                [(-0.5 if c == 0 else n - 0.5) for c, n in zip(corner, size, strict=True)]
            )
        )
        for corner in np.ndindex(2, 2, 2)
    ]
    corners = np.array(corners)
    low = np.clip(np.ceil(corners.min(axis=0) - 0.5).astype(int), 0, None)
    high = np.minimum(np.floor(corners.max(axis=0) + 0.5).astype(int), np.array(fixed.GetSize()))
    return sitk.RegionOfInterest(fixed, [int(v) for v in high - low], [int(v) for v in low])


def moved_header(image: sitk.Image, truth: tuple[np.ndarray, np.ndarray]) -> sitk.Image:
    """``image`` moved by ``truth`` exactly: voxel i now sits at ``truth(old position of i)``."""
    out = sitk.Image(image)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    out.SetDirection(tuple((truth[0] @ direction).ravel().tolist()))
    out.SetOrigin(tuple(apply(truth, np.array([image.GetOrigin()]))[0].tolist()))
    return out


def physical_points(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """World positions (x, y, z) of the voxels where ``mask`` ((z, y, x) array) is set."""
    index = np.argwhere(mask)[:, ::-1].astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return (index * np.array(image.GetSpacing())) @ direction.T + np.array(image.GetOrigin())


def random_truth(rng: np.random.Generator, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    angles = np.deg2rad(rng.uniform(-MAX_ANGLE_DEG, MAX_ANGLE_DEG, 3))
    shift = rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 3)
    return affine_of(sitk.Euler3DTransform(tuple(centre.tolist()), *angles.tolist(), tuple(shift.tolist())))


# --- checks that do not use MI ----------------------------------------------------------------
def _fill_slices(mask: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.binary_fill_holes(plane) for plane in mask])


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3), bool))


def _distance_to_surface(mask: np.ndarray, reference: sitk.Image) -> np.ndarray:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    distance = sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    return np.abs(sitk.GetArrayFromImage(distance))


def independent_check(
    ct: sitk.Image, mr: sitk.Image, valid: sitk.Image, ct_mask: sitk.Image, mr_mask: sitk.Image, transform
) -> dict[str, float]:
    """Body-outline distance (mm) and Dice between CT and MR, and tumour-mask Dice, on the CT grid."""
    ct_body = _fill_slices(sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(ct, 1.0)) > CT_BODY_HU)
    mr_on = sitk.Resample(sitk.SmoothingRecursiveGaussian(mr, 1.0), ct, transform, sitk.sitkLinear, 0.0)
    valid_on = sitk.GetArrayFromImage(sitk.Resample(valid, ct, transform, sitk.sitkNearestNeighbor, 0)) > 0
    interior = ndimage.binary_erosion(valid_on, structure=np.ones((3, 7, 7), bool), border_value=0)
    mr_body = np.where(valid_on, _fill_slices(sitk.GetArrayFromImage(mr_on) > MR_BODY), ct_body)
    to_ct = _distance_to_surface(ct_body, ct)[_surface(mr_body) & interior]
    to_mr = _distance_to_surface(mr_body, ct)[_surface(ct_body) & interior]
    distances = np.concatenate([to_ct, to_mr])
    a, b = ct_body[interior], mr_body[interior]
    # bone, the one rigid structure: CT cortex (> 600 HU) is a signal void in T1 MR, so the MR's
    # median there over its median in the CT's body is low when the two are aligned
    cortex = (sitk.GetArrayFromImage(ct) > CORTEX_HU) & interior
    mr_values = sitk.GetArrayFromImage(mr_on)
    cortex_ratio = (
        float(np.median(mr_values[cortex]) / max(1e-6, np.median(mr_values[ct_body & interior])))
        if cortex.sum() >= MIN_CORTEX_VOXELS
        else None
    )
    tumour_ct = sitk.GetArrayFromImage(ct_mask) > 0
    tumour_mr = (
        sitk.GetArrayFromImage(sitk.Resample(mr_mask, ct_mask, transform, sitk.sitkNearestNeighbor, 0)) > 0
    )
    return {
        "body_surface_mean_mm": float(distances.mean()) if distances.size else float("nan"),
        "body_surface_p90_mm": float(np.percentile(distances, 90)) if distances.size else float("nan"),
        "body_dice": float(2 * (a & b).sum() / max(1, a.sum() + b.sum())),
        "cortex_voxels": int(cortex.sum()),
        "cortex_mr_ratio": cortex_ratio,
        "tumour_mask_dice": float(
            2 * (tumour_ct & tumour_mr).sum() / max(1, tumour_ct.sum() + tumour_mr.sum())
        ),
    }


# --- one patient --------------------------------------------------------------------------------
def as_image(image: sitk.Image, modality: str | None = None) -> Image:
    return Image.from_sitk(image, modality=modality)


def correction(transform: sitk.Transform, points: np.ndarray, tumour: np.ndarray) -> dict[str, Any]:
    affine = affine_of(transform)
    shift = np.linalg.norm(apply(affine, points) - points, axis=1)
    euler = sitk.Euler3DTransform()
    euler.SetMatrix(transform.GetMatrix())
    return {
        "mean_displacement_mm": float(shift.mean()),
        "max_displacement_mm": float(shift.max()),
        "tumour_displacement_mm": float(np.linalg.norm(apply(affine, tumour[None])[0] - tumour)),
        "tumour_shift_xyz_mm": [round(float(v), 2) for v in apply(affine, tumour[None])[0] - tumour],
        "rotation_deg": rotation_deg(affine[0]),
        "matrix": affine[0].ravel().tolist(),
        "offset": affine[1].tolist(),
        "euler_xyz_deg": [
            round(math.degrees(a), 2) for a in (euler.GetAngleX(), euler.GetAngleY(), euler.GetAngleZ())
        ],
    }


def run_patient(folder: Path, trials: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    pid = folder.name
    ct_full = read_image(folder / "CT_image.nii.gz", modality="CT")
    mr_image = read_image(folder / "MR_T1_image.nii.gz", modality="MR")
    ct_itk = sitk.Cast(ct_full.to_sitk(), sitk.sitkFloat32)
    mr_itk = sitk.Cast(mr_image.to_sitk(), sitk.sitkFloat32)
    ct_mask = sitk.ReadImage(str(folder / "CT_mask.nii.gz"), sitk.sitkUInt8)
    mr_mask = sitk.ReadImage(str(folder / "MR_T1_mask.nii.gz"), sitk.sitkUInt8)
    record: dict[str, Any] = {
        "ct_size": list(ct_itk.GetSize()),
        "mr_size": list(mr_itk.GetSize()),
        "mr_spacing": [round(s, 3) for s in mr_itk.GetSpacing()],
        "mr_padding_fraction": float((sitk.GetArrayViewFromImage(mr_itk) == 0).mean()),
    }

    # the CT inside the MR's box, the MR's valid voxels, the TRE points and the tumour centroid
    crop = crop_to_box(ct_itk, mr_itk)
    ct_mask_crop = crop_to_box(ct_mask, mr_itk)
    valid = sitk.BinaryErode(sitk.Cast(mr_itk != 0, sitk.sitkUInt8), [1, 1, 1])
    start = identity_at(centre_of(crop))
    crop_array = sitk.GetArrayFromImage(crop)
    inside = (
        sitk.GetArrayFromImage(sitk.Resample(valid, crop, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    )
    body = (crop_array > CT_BODY_HU) & inside
    points = physical_points(crop, body)
    points = points[:: max(1, len(points) // MAX_POINTS)]
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(ct_mask)
    tumour = np.array(statistics.GetCentroid(1))
    record["crop_size"] = list(crop.GetSize())
    record["crop_fraction_of_ct"] = float(np.prod(crop.GetSize()) / np.prod(ct_itk.GetSize()))
    record["tre_points"] = len(points)
    # 1. what the command does by default: whole CT, geometry-centred start, no masks
    try:
        result = register(ct_full, mr_image, type="rigid", name_fixed="CT", name_moving="MR")
        record["default"] = {**result.summary(), **correction(result.transform, points, tumour)}
        default_transform = result.transform
    except MedFusionError as error:
        record["default"] = {"failed": str(error)}
        default_transform = None

    # 2. the benchmark registration: CT cropped to the MR's box, MR padding masked, identity start
    fixed, moving = as_image(crop, "CT"), as_image(mr_itk, "MR")
    moving_mask = as_image(valid)
    found = None
    try:
        result = register(
            fixed,
            moving,
            type="rigid",
            initial_transform=start,
            moving_mask=moving_mask,
            name_fixed="CT",
            name_moving="MR",
        )
        found = result.transform
        record["benchmark"] = {**result.summary(), **correction(found, points, tumour)}
    except MedFusionError as error:
        record["benchmark"] = {"failed": str(error)}
    record["check_given"] = independent_check(crop, mr_itk, valid, ct_mask_crop, mr_mask, sitk.Transform())
    if found is not None:
        record["check_registered"] = independent_check(crop, mr_itk, valid, ct_mask_crop, mr_mask, found)
    if default_transform is not None:
        record["check_default"] = independent_check(
            crop, mr_itk, valid, ct_mask_crop, mr_mask, default_transform
        )

    # 3. known-transform TRE
    reference = affine_of(found) if found is not None else (np.eye(3), np.zeros(3))
    rng = np.random.default_rng([seed, int(pid.split("_")[1])])
    runs = []
    for _ in range(trials):
        truth = random_truth(rng, tumour)
        run: dict[str, Any] = {
            "truth_rotation_deg": rotation_deg(truth[0]),
            "truth_tumour_shift_mm": float(np.linalg.norm(apply(truth, tumour[None])[0] - tumour)),
        }
        try:
            result = register(
                fixed,
                as_image(moved_header(mr_itk, truth), "MR"),
                type="rigid",
                initial_transform=start,
                moving_mask=as_image(moved_header(valid, truth)),
                name_fixed="CT",
                name_moving="MR",
            )
        except MedFusionError as error:
            run["failed"] = str(error)
            runs.append(run)
            continue
        expected = compose(truth, reference)
        estimate = affine_of(result.transform)
        errors = np.linalg.norm(apply(estimate, points) - apply(expected, points), axis=1)
        run.update(
            tre_mean_mm=float(errors.mean()),
            tre_max_mm=float(errors.max()),
            tre_tumour_mm=float(
                np.linalg.norm(apply(estimate, tumour[None]) - apply(expected, tumour[None]))
            ),
            seconds=result.seconds,
            metric_final=result.metric_final,
        )
        runs.append(run)
    record["trials"] = runs
    images = {"crop": crop, "mr": mr_itk, "found": found}
    return record, images


def line(pid: str, record: dict[str, Any]) -> str:
    bench = record["benchmark"]
    if "failed" in bench:
        head = f"FAILED {bench['failed']}"
    else:
        head = (
            f"MI {-bench['metric_initial']:.4f} -> {-bench['metric_final']:.4f}  corr mean "
            f"{bench['mean_displacement_mm']:.1f} mm tumour {bench['tumour_displacement_mm']:.1f} mm "
            f"rot {bench['rotation_deg']:.2f} deg  {bench['seconds']:.1f} s"
        )
    tre = [f"{t['tre_mean_mm']:.2f}" if "tre_mean_mm" in t else "fail" for t in record["trials"]]
    default = record["default"]
    dflt = "fail" if "failed" in default else f"{-default['metric_final']:.4f}"
    given, after = record["check_given"], record.get("check_registered")
    surf = f"surf {given['body_surface_mean_mm']:.2f}" + (
        f"->{after['body_surface_mean_mm']:.2f}" if after else ""
    )

    def ratio(check: dict[str, Any]) -> str:
        return "-" if check["cortex_mr_ratio"] is None else f"{check['cortex_mr_ratio']:.2f}"

    surf += f"  cortex {ratio(given)}" + (f"->{ratio(after)}" if after else "")
    if "check_default" in record:
        check = record["check_default"]
        surf += f" (default: surf {check['body_surface_mean_mm']:.2f} cortex {ratio(check)})"
    return f"{pid} {head}  {surf}  TRE {', '.join(tre)}  default {dflt}"


def summarise(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    tres = [t for r in records.values() for t in r["trials"]]
    means = [t["tre_mean_mm"] for t in tres if "tre_mean_mm" in t]
    tumour = [t["tre_tumour_mm"] for t in tres if "tre_tumour_mm" in t]
    ok = [r["benchmark"] for r in records.values() if "failed" not in r["benchmark"]]
    before = [r["check_given"]["body_surface_mean_mm"] for r in records.values() if "check_registered" in r]
    after = [
        r["check_registered"]["body_surface_mean_mm"] for r in records.values() if "check_registered" in r
    ]
    return {
        "patients": len(records),
        "benchmark_failures": sorted(p for p, r in records.items() if "failed" in r["benchmark"]),
        "default_failures": sorted(p for p, r in records.items() if "failed" in r["default"]),
        "correction_mean_mm_median": float(np.median([b["mean_displacement_mm"] for b in ok]))
        if ok
        else None,
        "correction_tumour_mm_median": float(np.median([b["tumour_displacement_mm"] for b in ok]))
        if ok
        else None,
        "correction_tumour_mm_max": float(np.max([b["tumour_displacement_mm"] for b in ok])) if ok else None,
        "rotation_deg_median": float(np.median([b["rotation_deg"] for b in ok])) if ok else None,
        "seconds_median": float(np.median([b["seconds"] for b in ok])) if ok else None,
        "body_surface_mm_median_given": float(np.median(before)) if before else None,
        "body_surface_mm_median_registered": float(np.median(after)) if after else None,
        "tre_runs": len(tres),
        "tre_failed_runs": len(tres) - len(means),
        "tre_mean_mm_median": float(np.median(means)) if means else None,
        "tre_mean_mm_p90": float(np.percentile(means, 90)) if means else None,
        "tre_tumour_mm_median": float(np.median(tumour)) if tumour else None,
        "tre_tumour_mm_p90": float(np.percentile(tumour, 90)) if tumour else None,
        "tre_success_rate": float(
            np.mean([m < SUCCESS_MM for m in means] + [False] * (len(tres) - len(means)))
        )
        if tres
        else None,
    }


SURFACE_USABLE_DICE = 0.995  # above this the MR's view lies inside the body: too little outline
SURFACE_STEP_MM = 0.3
CORTEX_BETTER, CORTEX_WORSE = 0.03, 0.05


def verdict(record: dict[str, Any]) -> str:
    """What the two MI-free checks say about the benchmark registration (thresholds above)."""
    if "failed" in record["benchmark"]:
        return "failed"
    given, after = record["check_given"], record["check_registered"]
    better, worse = [], []
    if given["body_dice"] < SURFACE_USABLE_DICE:
        change = after["body_surface_mean_mm"] - given["body_surface_mean_mm"]
        better += ["outline"] if change <= -SURFACE_STEP_MM else []
        worse += ["outline"] if change >= SURFACE_STEP_MM else []
    if given["cortex_mr_ratio"] is not None and after["cortex_mr_ratio"] is not None:
        change = after["cortex_mr_ratio"] - given["cortex_mr_ratio"]
        better += ["bone"] if change <= -CORTEX_BETTER else []
        worse += ["bone"] if change >= CORTEX_WORSE else []
    if better and worse:
        return f"conflict ({'+'.join(better)} better, {'+'.join(worse)} worse)"
    if better:
        return f"better ({'+'.join(better)})"
    if worse:
        return f"worse ({'+'.join(worse)})"
    return "no clear change"


def markdown(output: dict[str, Any]) -> str:
    """The per-patient table and the TRE summary as Markdown."""

    def number(value: float | None, digits: int = 2) -> str:
        return "–" if value is None or value != value else f"{value:.{digits}f}"

    lines = [
        "# MR-to-CT rigid registration on the 24 shared patients",
        "",
        f"Written by `.venv/bin/{output['command']}` (see `Docs/registration.md`, section "
        "*Real patients*). MI = Mattes mutual information (positive, higher is better) on the CT "
        "cropped to the MR's box, MR padding masked; before = the given alignment. Correction = mean "
        "displacement of the CT's body points inside the MR / of the tumour centroid, and the "
        "rotation angle. Outline = mean distance between the CT's and the MR's body outlines; "
        "bone = MR median at CT cortex (> 600 HU) over MR median in the body (lower = better "
        "aligned bone). Default = `register(CT, MR)` with the command's defaults. TRE = mean over "
        "body points of each known-transform trial, mm.",
        "",
        "| patient | MI before | MI after | correction mean / tumour (mm) | rotation (deg) | s "
        "| outline given -> reg. (mm) | bone given -> reg. | checks say | default: correction (mm), bone "
        "| TRE per trial (mm) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for pid, record in output["patients"].items():
        bench, given = record["benchmark"], record["check_given"]
        after = record.get("check_registered")
        trials = ", ".join(
            number(t.get("tre_mean_mm")) if "tre_mean_mm" in t else "failed" for t in record["trials"]
        )
        default = record["default"]
        default_cell = (
            "failed (overlap)"
            if "failed" in default
            else f"{default['mean_displacement_mm']:.1f}, {number(record['check_default']['cortex_mr_ratio'])}"
        )
        outline = (
            "– (inside body)"
            if given["body_dice"] >= SURFACE_USABLE_DICE
            else f"{given['body_surface_mean_mm']:.1f} -> {number(after and after['body_surface_mean_mm'], 1)}"
        )
        bone = f"{number(given['cortex_mr_ratio'])} -> {number(after and after['cortex_mr_ratio'])}"
        if "failed" in bench:
            cells = ["–", "–", bench["failed"].split("failed: ")[-1], "–", "–"]
        else:
            cells = [
                f"{-bench['metric_initial']:.3f}",
                f"{-bench['metric_final']:.3f}",
                f"{bench['mean_displacement_mm']:.1f} / {bench['tumour_displacement_mm']:.1f}",
                f"{bench['rotation_deg']:.1f}",
                f"{bench['seconds']:.1f}",
            ]
        lines.append(
            f"| {pid} | "
            + " | ".join(cells)
            + f" | {outline} | {bone} | {verdict(record)} | {default_cell} | {trials} |"
        )
    summary = output["summary"]
    settings = output["settings"]
    lines += [
        "",
        f"Known-transform TRE ({summary['tre_runs']} runs: {settings['trials']} per patient, rotations up to "
        f"{settings['max_angle_deg']:g} degrees per axis about the tumour centroid, translations up to "
        f"{settings['max_shift_mm']:g} mm, seed {settings['seed']}): mean-over-points TRE median "
        f"{number(summary['tre_mean_mm_median'])} mm, 90th percentile {number(summary['tre_mean_mm_p90'])} mm; "
        f"at the tumour centroid median {number(summary['tre_tumour_mm_median'])} mm, 90th percentile "
        f"{number(summary['tre_tumour_mm_p90'])} mm; success (mean TRE < {settings['success_mean_tre_mm']:g} mm, "
        f"failed runs counted as failures) {summary['tre_success_rate']:.0%}; {summary['tre_failed_runs']} runs "
        "raised RegistrationError.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sts"))
    parser.add_argument("--patients", default="", help="comma-separated ids (default: every STS_* folder)")
    parser.add_argument("--trials", type=int, default=3, help="random known transforms per patient")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--qa", type=int, default=3, help="QA pictures for this many patients (largest correction)"
    )
    parser.add_argument("--images", default=str(ROOT / "Docs" / "images"))
    parser.add_argument(
        "--out", default=str(ROOT / "Docs" / "benchmarks" / "sts" / "registration_mr_ct.json")
    )
    parser.add_argument(
        "--from-json", action="store_true", help="only rewrite the Markdown table from the JSON at --out"
    )
    args = parser.parse_args()
    table = Path(args.out).with_suffix(".md")
    if args.from_json:
        table.write_text(markdown(json.loads(Path(args.out).read_text(encoding="utf-8"))), encoding="utf-8")
        print(f"wrote {table}")
        return
    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    data = Path(args.data)
    wanted = [p for p in args.patients.split(",") if p]
    folders = sorted(f for f in data.glob("STS_*") if f.is_dir() and (not wanted or f.name in wanted))
    records: dict[str, dict[str, Any]] = {}
    kept: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for folder in folders:
        record, images = run_patient(folder, args.trials, args.seed)
        records[folder.name] = record
        kept[folder.name] = images
        print(line(folder.name, record), flush=True)
    ranked = sorted(
        (p for p, r in records.items() if "failed" not in r["benchmark"]),
        key=lambda p: -records[p]["benchmark"]["mean_displacement_mm"],
    )
    pictures = {}
    for pid in ranked[: args.qa]:
        crop, mr, found = kept[pid]["crop"], kept[pid]["mr"], kept[pid]["found"]
        shown = as_image(sitk.Clamp(crop, sitk.sitkFloat32, -250.0, 400.0), "CT")
        moving = as_image(mr, "MR")
        bench = records[pid]["benchmark"]
        for suffix, transform, label in (
            ("_given", identity_at(centre_of(crop)), "as given"),
            ("", found, f"registered (correction {bench['mean_displacement_mm']:.1f} mm mean)"),
        ):
            path = Path(args.images) / f"registration_sts_{pid}{suffix}.png"
            save_registration_qa(shown, moving, transform, path, title=f"{pid}: MR T1 on CT, {label}")
            pictures.setdefault(pid, []).append(
                str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
            )
    output = {
        "command": "python Testing/benchmark_registration_sts.py " + " ".join(sys.argv[1:]),
        "settings": {
            "trials": args.trials,
            "seed": args.seed,
            "threads": args.threads,
            "max_angle_deg": MAX_ANGLE_DEG,
            "max_shift_mm": MAX_SHIFT_MM,
            "success_mean_tre_mm": SUCCESS_MM,
            "ct_body_hu": CT_BODY_HU,
            "mr_body": MR_BODY,
        },
        "summary": summarise(records),
        "qa_pictures": pictures,
        "seconds_total": time.perf_counter() - started,
        "patients": records,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(output, indent=1) + "\n", encoding="utf-8")
    table.write_text(markdown(output), encoding="utf-8")
    print(json.dumps(output["summary"], indent=1))
    print(f"wrote {args.out} and {table}")


if __name__ == "__main__":
    main()
