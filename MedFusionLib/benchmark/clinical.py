"""The 3-D clinical benchmark: every method on real patients' PET with their CT and MR (issue 13).

``medfusion benchmark DATASET --pairs CT_PET,MR_PET`` on a folder of patients laid out like
``../shared/data/sts``::

    DATASET/STS_NNN/{CT,MR_T1,PET}_image.nii.gz   the volumes (CT in HU, MR, PET in SUV)
    DATASET/STS_NNN/{CT,MR_T1}_mask.nii.gz       the tumour on the anatomical grids

For each pair (``CT_PET``: A = CT; ``MR_PET``: A = the T1 MR), each patient and each *row*, the
PET is resampled onto A's grid (linear, in world coordinates: :func:`~MedFusionLib.preprocess.
resample_to`), A and P are fused with :func:`~MedFusionLib.pipeline.fuse_images` exactly as
``medfusion fuse`` does, and the result is scored:

* the clinical measures of :mod:`MedFusionLib.metrics.clinical` (conspicuity kept, anatomy kept,
  Delta E of F and of P between lesion and shell) on raw A, raw P and F with the row's colour
  table;
* the grey-level 3-D metrics of :func:`~MedFusionLib.metrics.compute.compute_metrics` in
  ``"volume"`` mode with their per-source parts (``_A``: against A, ``_B``: against P). The
  grey levels are those ``medfusion metrics A P F`` uses (:mod:`MedFusionLib.metrics.inputs`):
  A and P as the gray pipeline normalises them (CT through the soft-tissue preset, MR its 0.5-99.5
  percentiles, PET its 0-99.9 percentiles) times 255; a gray F times 255; an RGB F by its BT.601
  luminance (``0.299 R + 0.587 G + 0.114 B``) times 255. No rounding to 8 bits;
* seconds: ``seconds_fusion`` is the :func:`fuse_images` call alone (display or normalisation,
  fusion, colour; P already on A's grid); ``seconds_total`` adds the patient's reading of A, P
  and the mask and the resampling of P (what ``medfusion fuse`` costs before writing);
* memory: ``peak_MB`` is the process's resident-set high-water mark (``VmHWM``) during the
  :func:`fuse_images` call minus its resident set just before the call. The high-water mark is
  reset before each call by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0), which
  counts what torch, ITK and NumPy really touch (``tracemalloc`` sees only Python's allocator).
  Before the call, garbage is collected and glibc's ``malloc_trim(0)`` hands the heap's free
  memory back to the system, so that memory kept from earlier calls is not silently reused
  (which would read as no extra memory). ``peak_rss_MB`` is the absolute peak. Where
  ``clear_refs`` cannot be written both are NaN.

Rows (``--methods`` takes any of these names, comma-separated):

* ``METHOD``: a registered method in gray (``colormap="none"``);
* ``METHOD+TABLE``: colour fusion, ``METHOD`` fusing the lightnesses, P through colour table
  ``TABLE`` (:func:`~MedFusionLib.functional_fusion.fuse_functional`, the recommended gamut
  handling, the method's own default parameters);
* ``recommended``: ``fuse_images`` without a method: the pair's recommended method, table and
  parameters (:func:`MedFusionLib.recommended.recommended`);
* ``slicer_overlay_NN``: what Slicer shows, the reference: A through its display (CT soft-tissue
  window level 40 / width 400 HU, MR 0.5-99.5 percentiles) under P (0.5-99.5 percentiles over A's
  grid) through Slicer's PET-Heat table at ``NN`` % opacity.

Default rows: ``recommended``; ``average``, ``maximum`` and ``laplacian_pyramid`` with the pair's
recommended table; ``slicer_overlay_40``; then every registered method in gray except the CNN
family (:data:`SLOW_FAMILIES`: on 3-D patients they run slice by slice through a network and take
5-50 s per patient on 2 CPU threads; name them with ``--methods`` to include them).
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import functools
import gc
import hashlib
import io
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..atomic import StagedOutputs, making_folder
from ..colormaps import apply_colormap, colormap_table
from ..errors import InputError, MedFusionError, ParameterError
from ..fusion import get_method, list_methods
from ..image import Image
from ..io import read_image
from ..metrics.clinical import compute_clinical_metrics, display_anatomical, normalise_functional
from ..metrics.compute import compute_metrics
from ..metrics.inputs import grey_levels_from_image
from ..metrics.registry import get_metric, list_metrics
from ..output_guard import check_output_file, check_output_folder, guard_outputs
from ..pipeline import check_colormap, fuse_images
from ..preprocess import resample_to
from ..recommended import recommended
from ..validation import check_device, check_threads

PAIRS: dict[str, tuple[str, str]] = {"CT_PET": ("CT", "CT"), "MR_PET": ("MR", "MR_T1")}
"""Pair name: (modality of A, file stem of A and its mask). B is always ``PET_image.nii.gz``."""

FUNCTIONAL_STEM = "PET"
PATIENT_PREFIX = "STS_"
EXTENSION = ".nii.gz"
LAYOUT = "DATASET/STS_NNN/{CT,MR_T1,PET}_image.nii.gz with {CT,MR_T1}_mask.nii.gz"

RECOMMENDED_ROW = "recommended"
OVERLAY_PREFIX = "slicer_overlay_"
OVERLAY_TABLE = "pet_heat"
"""Slicer's own PET-Heat colour table (its ``PET-Heat`` colour node)."""

COLOUR_VARIANTS = ("average", "maximum", "laplacian_pyramid")
"""Classical methods also run as colour fusion (with the pair's recommended table) by default."""

SLOW_FAMILIES = ("cnn",)
"""Method families left out of the default rows (slow on 3-D patients; see the module docstring)."""

DEFAULT_METRICS = ("MI", "SCD", "Qabf", "SSIM", "CC")
"""Grey-level 3-D metrics computed by default (each with ``_A``/``_B`` parts). ``--metrics all``
adds the rest; VIF alone costs about as much as these five together on a patient volume."""

CONSPICUITY_FLOOR = 0.75
"""Issue 13's floor: no patient below this conspicuity kept (the tables count those below)."""

OUTLIER_RATIO = 2.0
"""Conspicuity ratios above this are listed under each table (P alone barely shows the lesion)."""

CLINICAL_KEYS = ("conspicuity_kept", "anatomy_kept", "delta_E_F", "delta_E_P")

FIGURE_ROWS = (
    RECOMMENDED_ROW,
    "laplacian_pyramid+{table}",
    "maximum+{table}",
    "slicer_overlay_40",
    "laplacian_pyramid",
    "average",
    "maximum",
    "ratio_pyramid",
)
"""Rows shown in the figure, in this order, when the run has them (at most :data:`FIGURE_MAX_ROWS`)."""

FIGURE_MAX_ROWS = 8
FIGURE_PATIENTS = ("STS_007", "STS_035")
"""Patients always shown in the figure when present (else the first two); the worst patient of
the ``recommended`` row (lowest conspicuity kept) of each pair is added."""

OUTLINE = (0, 255, 255)

LICENCE_NOTICE = (
    "The patient data are the IBSI validation set (GitHub `theibsi/data_sets`, `ibsi_validation/`) from "
    "The Cancer Imaging Archive's Soft-tissue-Sarcoma collection, used under the Creative Commons "
    "Attribution 3.0 licence (CC BY 3.0, https://creativecommons.org/licenses/by/3.0/; "
    "`sts/LICENSE-CC-BY-3.0.md`). The figure shows slices of these data; they were resampled and fused, "
    "nothing else was changed."
)
CITATIONS = (
    "Vallières M, Freeman CR, Skamene SR, El Naqa I. A radiomics model from joint FDG-PET and MRI texture "
    "features for the prediction of lung metastases in soft-tissue sarcomas of the extremities. The Cancer "
    "Imaging Archive, 2015. doi:10.7937/K9/TCIA.2015.7GO2GSKS",
    "Vallières M, Freeman CR, Skamene SR, El Naqa I. A radiomics model from joint FDG-PET and MRI texture "
    "features for the prediction of lung metastases in soft-tissue sarcomas of the extremities. Phys. Med. "
    "Biol. 60(14):5471-5496, 2015. doi:10.1088/0031-9155/60/14/5471",
    "Clark K, Vendt B, Smith K, et al. The Cancer Imaging Archive (TCIA): maintaining and operating a public "
    "information repository. J. Digit. Imaging 26(6):1045-1057, 2013. doi:10.1007/s10278-013-9622-7",
)

Progress = Callable[[str], None]


# --- rows -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One way of fusing a pair: a gray method, a colour method, the recommendation or an overlay.

    Attributes:
        name: the row's name in reports and ``--methods``.
        kind: ``"gray"``, ``"colour"``, ``"recommended"`` or ``"overlay"``.
        method: the registered method (``None`` for the recommendation and the overlay).
        colormap: the colour table (``None`` for gray rows and the recommendation, which
            takes the pair's).
        opacity: the overlay's opacity in ``[0, 1]`` (overlay rows only).
    """

    name: str
    kind: str
    method: str | None = None
    colormap: str | None = None
    opacity: float | None = None

    def describe(self, pair: str) -> str:
        """What the row does, in a few words (for reports)."""
        if self.kind == "gray":
            return f"`{self.method}`, gray (colormap none)"
        if self.kind == "colour":
            return f"colour fusion: `{self.method}` on the lightnesses, P through `{self.colormap}`"
        if self.kind == "recommended":
            choice = recommended(*_pair_modalities(pair))
            parameters = f", parameters {json.dumps(choice.parameters)}" if choice.parameters else ""
            return (
                f"the {pair} recommendation: `{choice.method}` + `{choice.colormap}`{parameters} "
                f"(gamut {choice.gamut}, room {choice.room:g}; table sha256 {_table_digest(choice.colormap)})"
            )
        return (
            f"reference: Slicer's view, A's display under P through `{OVERLAY_TABLE}` at "
            f"{round(100 * float(self.opacity or 0))} % opacity"
        )


def _table_digest(colormap: str | None) -> str:
    """The first 12 hex digits of the SHA-256 of a colour table's float64 values (to tell versions apart)."""
    return hashlib.sha256(colormap_table(str(colormap)).astype(np.float64).tobytes()).hexdigest()[:12]


def _pair_modalities(pair: str) -> tuple[str, str]:
    return PAIRS[pair][0], FUNCTIONAL_STEM


def recommended_table(pair: str) -> str:
    """The colour table recommended for ``pair`` (read at each call: the table may be refined)."""
    return str(recommended(*_pair_modalities(pair)).colormap)


def parse_pairs(text: str | Sequence[str] | None) -> list[str]:
    """Pair names from ``"CT_PET,MR_PET"`` (default: every pair of :data:`PAIRS`), checked.

    Raises:
        ParameterError: an unknown or repeated pair, or none named.
    """
    if text is None:
        return list(PAIRS)
    names = _split(text)
    if not names:
        raise ParameterError(f"--pairs names no pair: {text!r} (known: {', '.join(PAIRS)})")
    for name in names:
        if name not in PAIRS:
            raise ParameterError(f"--pairs: unknown pair {name!r} (known: {', '.join(PAIRS)})")
    if len(set(names)) != len(names):
        raise ParameterError(f"--pairs names a pair twice: {text!r}")
    return names


def _split(text: str | Sequence[str]) -> list[str]:
    parts = text.split(",") if isinstance(text, str) else list(text)
    return [str(part).strip() for part in parts if str(part).strip()]


def parse_row(name: str) -> Row:
    """The row called ``name`` (see the module docstring for the forms), checked.

    Raises:
        ParameterError: an unknown method or colour table, a bad overlay opacity.
    """
    if name == RECOMMENDED_ROW:
        return Row(name=name, kind="recommended")
    if name.startswith(OVERLAY_PREFIX):
        digits = name.removeprefix(OVERLAY_PREFIX)
        if not re.fullmatch(r"\d{1,3}", digits) or not 0 < int(digits) <= 100:
            raise ParameterError(
                f"--methods: {name!r}: the overlay's opacity is a percentage, e.g. {OVERLAY_PREFIX}40"
            )
        return Row(name=name, kind="overlay", colormap=OVERLAY_TABLE, opacity=int(digits) / 100.0)
    method, plus, table = name.partition("+")
    try:
        spec = get_method(method)
    except ParameterError as error:
        raise ParameterError(f"--methods: {error}") from None
    if not plus:
        return Row(name=name, kind="gray", method=spec.name)
    colormap = check_colormap(table, name="--methods: colour table")
    if colormap is None or colormap == "auto":
        raise ParameterError(
            f"--methods: {name!r}: name a colour table after '+' (or give {method!r} alone for gray)"
        )
    return Row(name=name, kind="colour", method=spec.name, colormap=colormap)


def default_rows(pair: str) -> list[Row]:
    """The rows run for ``pair`` when ``--methods`` is not given (see the module docstring)."""
    table = recommended_table(pair)
    names = [RECOMMENDED_ROW, *(f"{m}+{table}" for m in COLOUR_VARIANTS), f"{OVERLAY_PREFIX}40"]
    names += [spec.name for spec in list_methods() if spec.family not in SLOW_FAMILIES]
    return [parse_row(name) for name in names]


def parse_rows(text: str | Sequence[str] | None) -> list[Row] | None:
    """The rows named in ``--methods`` (``None``: the defaults of each pair), checked.

    Raises:
        ParameterError: a bad row name (see :func:`parse_row`), a repeated row, or none named.
    """
    if text is None:
        return None
    names = _split(text)
    if not names:
        raise ParameterError(f"--methods names no method: {text!r}")
    if len(set(names)) != len(names):
        raise ParameterError(f"--methods names a row twice: {text!r}")
    return [parse_row(name) for name in names]


def parse_metrics(text: str | Sequence[str] | None) -> list[str]:
    """Grey-level metric names from ``--metrics``: default :data:`DEFAULT_METRICS`, ``all``, ``none``.

    Raises:
        ParameterError: an unknown metric (or a clinical one, which is always computed).
    """
    if text is None:
        return list(DEFAULT_METRICS)
    names = _split(text)
    if names == ["all"]:
        return [metric.name for metric in list_metrics()]
    if names == ["none"]:
        return []
    if not names:
        raise ParameterError(f"--metrics names no metric: {text!r} (give 'none' for none)")
    chosen = []
    for name in names:
        try:
            chosen.append(get_metric(name).name)
        except ParameterError as error:
            raise ParameterError(f"--metrics: {error}") from None
    return chosen


# --- patients ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Patient:
    """One patient's folder."""

    id: str
    folder: Path

    def path(self, stem: str, kind: str = "image") -> Path:
        """``folder/<stem>_<kind>.nii.gz``."""
        return self.folder / f"{stem}_{kind}{EXTENSION}"


def needed_files(pairs: Sequence[str]) -> list[str]:
    """The file names each patient folder must hold for ``pairs``."""
    names = [f"{FUNCTIONAL_STEM}_image{EXTENSION}"]
    for pair in pairs:
        stem = PAIRS[pair][1]
        names += [f"{stem}_image{EXTENSION}", f"{stem}_mask{EXTENSION}"]
    return list(dict.fromkeys(names))


def is_patient_dataset(root: str | Path) -> bool:
    """Whether ``root`` is a folder holding at least one ``STS_*`` folder."""
    root = Path(root)
    try:
        return root.is_dir() and any(p.is_dir() and p.name.startswith(PATIENT_PREFIX) for p in root.iterdir())
    except OSError:
        return False


def discover_patients(
    root: str | Path, pairs: Sequence[str], *, patients: Sequence[str] | None = None
) -> list[Patient]:
    """The ``STS_*`` patient folders of ``root`` (sorted), each checked to hold the files ``pairs`` need.

    Args:
        root: the dataset folder.
        pairs: pair names (:data:`PAIRS`).
        patients: keep only these ids (all of them must exist).

    Raises:
        InputError: ``root`` is not a folder or holds no patient folder; a patient folder lacks
            a file (the file is named); an id of ``patients`` is not in the dataset.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"benchmark dataset {root} is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PATIENT_PREFIX))
    if not folders:
        raise InputError(
            f"{root} is not a patient dataset: it holds no {PATIENT_PREFIX}* folder (expected {LAYOUT})"
        )
    found = {folder.name: Patient(id=folder.name, folder=folder) for folder in folders}
    if patients is not None:
        missing = [p for p in patients if p not in found]
        if missing:
            raise InputError(
                f"--patients: {', '.join(missing)} not in {root} (it holds {', '.join(sorted(found))})"
            )
        found = {p: found[p] for p in patients}
    for patient in found.values():
        for name in needed_files(pairs):
            if not (patient.folder / name).is_file():
                raise InputError(
                    f"{patient.folder / name}: missing (each {PATIENT_PREFIX}* folder needs "
                    f"{', '.join(needed_files(pairs))} for --pairs {','.join(pairs)})"
                )
    return list(found.values())


def parse_patients(text: str | Sequence[str] | None) -> list[str] | None:
    """Patient ids from ``--patients`` (``None``: all), checked for repeats."""
    if text is None:
        return None
    names = _split(text)
    if not names:
        raise ParameterError(f"--patients names no patient: {text!r}")
    if len(set(names)) != len(names):
        raise ParameterError(f"--patients names a patient twice: {text!r}")
    return names


# --- memory -----------------------------------------------------------------------------------
def _status_kb(field_name: str) -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as stream:
            for line in stream:
                if line.startswith(field_name + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return math.nan


def _reset_high_water_mark() -> bool:
    """Reset ``VmHWM`` to the current RSS (``/proc/self/clear_refs``); whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as stream:
            stream.write("5")
        return True
    except OSError:
        return False


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (``None`` elsewhere)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Collect garbage and hand the C heap's free memory back to the system (glibc), so that the
    resident set before a measured call holds only what is in use."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class PeakMemory:
    """The process's resident-memory peak during a block (see the module docstring).

    Attributes (after the block): ``extra_mb`` (peak minus the RSS before), ``peak_mb`` (the
    absolute peak); both NaN where the high-water mark cannot be reset.
    """

    def __enter__(self) -> PeakMemory:
        self.extra_mb = self.peak_mb = math.nan
        release_free_memory()
        self._supported = _reset_high_water_mark()
        self._before = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._supported:
            peak = _status_kb("VmHWM")
            self.peak_mb = peak / 1024.0
            self.extra_mb = max(0.0, peak - self._before) / 1024.0


# --- fusion and scoring -----------------------------------------------------------------------
def slicer_overlay(
    display_a: np.ndarray, normalised_p: np.ndarray, *, opacity: float, colormap: str = OVERLAY_TABLE
) -> np.ndarray:
    """Slicer's foreground/background blend: ``(1 - opacity) * gray A + opacity * table(P)``, float32 RGB."""
    foreground = apply_colormap(normalised_p, colormap).astype(np.float32)
    return (1.0 - opacity) * display_a.astype(np.float32)[..., None] + opacity * foreground


def fuse_row(row: Row, a: Image, p_on_a: Image, *, device: str = "cpu") -> tuple[np.ndarray, str | None]:
    """Fuse one patient pair as ``row`` says; returns F (gray or RGB in ``[0, 1]``) and its colour table."""
    if row.kind == "overlay":
        display_a = display_anatomical(a.array, str(a.modality))
        fused = slicer_overlay(display_a, normalise_functional(p_on_a.array), opacity=float(row.opacity))
        return fused, OVERLAY_TABLE
    if row.kind == "recommended":
        result = fuse_images(a, p_on_a, method=None, colormap="auto", device=device)
    else:
        colormap = row.colormap if row.kind == "colour" else "none"
        result = fuse_images(a, p_on_a, method=row.method, colormap=colormap, device=device)
    return result.image.array, result.colormap


@dataclass
class PatientData:
    """One patient's pair on A's grid, read and resampled."""

    a: Image
    p_on_a: Image
    mask: np.ndarray
    modality: str
    seconds: float


def load_pair(patient: Patient, pair: str) -> PatientData:
    """Read A, its mask and the PET of ``patient`` and resample the PET onto A's grid."""
    modality, stem = PAIRS[pair]
    start = time.perf_counter()
    a = read_image(patient.path(stem), modality=modality)
    pet = read_image(patient.path(FUNCTIONAL_STEM), modality=FUNCTIONAL_STEM)
    mask = read_image(patient.path(stem, "mask")).array != 0
    p_on_a = resample_to(
        pet, a, name=str(patient.path(FUNCTIONAL_STEM)), reference_name=str(patient.path(stem))
    )
    if mask.shape != a.array.shape:
        raise InputError(
            f"{patient.path(stem, 'mask')} has shape {mask.shape} but {patient.path(stem)} has {a.array.shape}"
        )
    if not mask.any():
        raise InputError(f"{patient.path(stem, 'mask')}: the tumour mask is empty")
    return PatientData(a=a, p_on_a=p_on_a, mask=mask, modality=modality, seconds=time.perf_counter() - start)


def score_row(
    data: PatientData,
    fused: np.ndarray,
    colormap: str | None,
    *,
    metrics: Sequence[str],
    grey_a: np.ndarray | None,
    grey_p: np.ndarray | None,
) -> dict[str, float]:
    """The clinical measures and the grey-level 3-D metrics of one fused volume."""
    report = compute_clinical_metrics(
        data.a.array,
        data.p_on_a.array,
        fused,
        mask=data.mask,
        modality_a=data.modality,
        colormap=colormap,
        spacing=data.a.spacing,
    )
    values = {key: report.values[key] for key in CLINICAL_KEYS}
    if metrics:
        grey_f = grey_levels_from_image(data.a.with_array(fused, modality=None), name="F")
        values.update(compute_metrics(grey_a, grey_p, grey_f, metrics=metrics, mode="volume").values)
    return values


def _mid_slice(mask: np.ndarray) -> int:
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    return int(slices[len(slices) // 2])


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def _outlined(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``rgb`` with the mask's outline (its 4-connected border pixels) drawn in cyan."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    out = rgb.copy()
    out[mask & ~inner] = OUTLINE
    return out


# --- results ----------------------------------------------------------------------------------
@dataclass
class RowResult:
    """Per-patient values of one row on one pair."""

    row: Row
    per_patient: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def summary(self, pair: str) -> dict[str, Any]:
        """Means (over the patients where a value is finite), the worst patient, medians of cost."""
        keys = list(dict.fromkeys(k for values in self.per_patient.values() for k in values))
        summary: dict[str, Any] = {"fusion": self.row.describe(pair)}
        for key in keys:
            finite = [v[key] for v in self.per_patient.values() if math.isfinite(v.get(key, math.nan))]
            summary[key] = float(np.mean(finite)) if finite else math.nan
        for key in ("seconds_fusion", "seconds_total"):
            finite = [v[key] for v in self.per_patient.values() if math.isfinite(v.get(key, math.nan))]
            summary[f"{key}_median"] = float(statistics.median(finite)) if finite else math.nan
        peaks = [v["peak_MB"] for v in self.per_patient.values() if math.isfinite(v.get("peak_MB", math.nan))]
        summary["peak_MB_max"] = max(peaks) if peaks else math.nan
        kept = {
            p: v["conspicuity_kept"]
            for p, v in self.per_patient.items()
            if math.isfinite(v.get("conspicuity_kept", math.nan))
        }
        worst = min(kept, key=kept.get) if kept else None
        summary["worst_patient"] = worst
        summary["worst_conspicuity_kept"] = kept[worst] if worst else math.nan
        summary["conspicuity_kept_median"] = float(statistics.median(kept.values())) if kept else math.nan
        summary["patients_below_target"] = sum(value < CONSPICUITY_FLOOR for value in kept.values())
        anatomy = [
            v["anatomy_kept"]
            for v in self.per_patient.values()
            if math.isfinite(v.get("anatomy_kept", math.nan))
        ]
        summary["min_anatomy_kept"] = min(anatomy) if anatomy else math.nan
        summary["patients"] = len(self.per_patient)
        summary["failed"] = dict(self.errors)
        summary["per_patient"] = self.per_patient
        return summary


@dataclass
class FigurePanel:
    """The tumour's mid-slice of one patient pair: the sources and each figure row's F (uint8 RGB)."""

    patient: str
    slice_index: int
    sources: list[tuple[str, np.ndarray]]
    fused: dict[str, np.ndarray]


@dataclass
class PairResult:
    """Everything measured on one pair."""

    pair: str
    rows: dict[str, RowResult]
    panels: dict[str, FigurePanel] = field(default_factory=dict)
    figure_rows: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, Any]]:
        """``{ROW: {metric: mean, ..., "per_patient": {...}}}``."""
        return {name: result.summary(self.pair) for name, result in self.rows.items()}


@dataclass
class ClinicalResult:
    """The whole benchmark: one :class:`PairResult` per pair, and how it ran."""

    pairs: dict[str, PairResult]
    patients: list[str]
    metrics: list[str]
    threads: int
    device: str
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """``{PAIR: {ROW: {metric: mean, ..., "per_patient": {PATIENT: {metric: value}}}}}``; NaN -> null."""
        return _json_ready({pair: result.summary() for pair, result in self.pairs.items()})


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def _figure_rows(rows: Sequence[Row], pair: str) -> list[str]:
    table = recommended_table(pair)
    names = [row.name for row in rows]
    chosen = [n.format(table=table) for n in FIGURE_ROWS if n.format(table=table) in names]
    chosen += [r.name for r in rows if r.kind != "gray" and r.name not in chosen]
    chosen += [name for name in names if name not in chosen][: max(0, 2 - len(chosen))]
    return chosen[:FIGURE_MAX_ROWS]


def run_clinical_benchmark(
    root: str | Path,
    *,
    pairs: Sequence[str] = tuple(PAIRS),
    rows: Sequence[Row] | None = None,
    patients: Sequence[str] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    device: str = "cpu",
    threads: int = 2,
    progress: Progress | None = None,
) -> ClinicalResult:
    """Fuse and score every patient of ``root`` for every pair and row (see the module docstring).

    Args:
        root: the dataset folder (``STS_*`` patient folders).
        pairs: pair names of :data:`PAIRS`.
        rows: the rows (default: :func:`default_rows` of each pair).
        patients: patient ids to run (default: all).
        metrics: grey-level metric names (empty: only the clinical measures).
        device: torch device for the fusion calls.
        threads: ``torch.set_num_threads`` for the run (restored after).
        progress: called with a short status line before each fusion.

    Returns:
        A :class:`ClinicalResult`. A row that fails on a patient with a
        :class:`~MedFusionLib.errors.MedFusionError` is recorded as failed for that patient
        (its message kept) and the run goes on.

    Raises:
        InputError: the dataset is not a patient dataset or a patient's files are unreadable.
        ParameterError: an unknown pair, metric or device.
    """
    pairs = parse_pairs(list(pairs))
    metrics = [get_metric(m).name for m in metrics]
    device = str(check_device(device, name="device"))
    found = discover_patients(root, pairs, patients=patients)
    figure_patients = [p for p in FIGURE_PATIENTS if any(f.id == p for f in found)] or [
        f.id for f in found[:2]
    ]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    results: dict[str, PairResult] = {}
    try:
        for pair in pairs:
            pair_rows = list(rows) if rows is not None else default_rows(pair)
            pair_result = PairResult(pair=pair, rows={row.name: RowResult(row=row) for row in pair_rows})
            pair_result.figure_rows = _figure_rows(pair_rows, pair)
            table = recommended_table(pair)
            for index, patient in enumerate(found):
                data = load_pair(patient, pair)
                grey_a = grey_p = None
                if metrics:
                    grey_a = grey_levels_from_image(data.a, name=str(patient.path(PAIRS[pair][1])))
                    grey_p = grey_levels_from_image(data.p_on_a, name=str(patient.path(FUNCTIONAL_STEM)))
                z = _mid_slice(data.mask)
                mask_z = data.mask[z]
                panel = FigurePanel(
                    patient=patient.id,
                    slice_index=z,
                    sources=[
                        (
                            f"{data.modality} alone",
                            _outlined(_rgb_uint8(display_anatomical(data.a.array[z], data.modality)), mask_z),
                        ),
                        (
                            f"PET alone ({table})",
                            _outlined(
                                _rgb_uint8(apply_colormap(normalise_functional(data.p_on_a.array)[z], table)),
                                mask_z,
                            ),
                        ),
                    ],
                    fused={},
                )
                for row in pair_rows:
                    if progress:
                        progress(f"{pair} {index + 1}/{len(found)} {patient.id} {row.name}")
                    try:
                        with PeakMemory() as memory:
                            fusion_start = time.perf_counter()
                            fused, colormap = fuse_row(row, data.a, data.p_on_a, device=device)
                            seconds = time.perf_counter() - fusion_start
                        score_start = time.perf_counter()
                        values = score_row(
                            data, fused, colormap, metrics=metrics, grey_a=grey_a, grey_p=grey_p
                        )
                        scoring = time.perf_counter() - score_start
                    except MedFusionError as error:
                        pair_result.rows[row.name].errors[patient.id] = str(error)
                        continue
                    values.update(
                        seconds_fusion=seconds,
                        seconds_total=seconds + data.seconds,
                        peak_MB=memory.extra_mb,
                        peak_rss_MB=memory.peak_mb,
                        seconds_scoring=scoring,
                    )
                    pair_result.rows[row.name].per_patient[patient.id] = values
                    if row.name in pair_result.figure_rows:
                        panel.fused[row.name] = _rgb_uint8(fused[z])
                    del fused
                pair_result.panels[patient.id] = panel
            _keep_figure_panels(pair_result, figure_patients)
            results[pair] = pair_result
    finally:
        torch.set_num_threads(previous)
    return ClinicalResult(
        pairs=results,
        patients=[p.id for p in found],
        metrics=list(metrics),
        threads=threads,
        device=str(device),
        seconds=time.perf_counter() - start,
    )


def _keep_figure_panels(result: PairResult, figure_patients: Sequence[str]) -> None:
    """Keep the panels of ``figure_patients`` and of the worst patient of the first figure row."""
    keep = [p for p in figure_patients if p in result.panels]
    if result.figure_rows:
        worst = result.rows[result.figure_rows[0]].summary(result.pair)["worst_patient"]
        if worst is not None and worst not in keep:
            keep.append(worst)
    result.panels = {p: result.panels[p] for p in keep}


# --- report -----------------------------------------------------------------------------------
def _cell(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float | int) else str(value)


def _targets(pair: str, summary: Mapping[str, Any]) -> str:
    """Issue 13's targets for the recommended row, met or missed."""
    checks = [
        (
            "conspicuity kept >= 0.90",
            summary["conspicuity_kept"] >= 0.90,
            f"{summary['conspicuity_kept']:.3f}",
        ),
        ("anatomy kept >= 0.95", summary["anatomy_kept"] >= 0.95, f"{summary['anatomy_kept']:.3f}"),
        (
            "no patient below 0.75 conspicuity",
            summary["worst_conspicuity_kept"] >= 0.75,
            f"worst {summary['worst_patient']} {summary['worst_conspicuity_kept']:.3f}",
        ),
        (
            "fusion <= 2 s median",
            summary["seconds_fusion_median"] <= 2.0,
            f"{summary['seconds_fusion_median']:.2f} s",
        ),
        ("every patient fuses", not summary["failed"], f"{len(summary['failed'])} failed"),
    ]
    parts = [f"{label}: {value} ({'met' if ok else '**missed**'})" for label, ok, value in checks]
    return f"- **{pair}**, `{RECOMMENDED_ROW}`: " + "; ".join(parts) + "."


def _pair_tables(result: PairResult, metrics: Sequence[str]) -> list[str]:
    summary = result.summary()
    patients = max((s["patients"] for s in summary.values()), default=0)
    columns = [
        "conspicuity kept",
        "median",
        f"patients < {CONSPICUITY_FLOOR:g}",
        "worst patient (conspicuity)",
        "anatomy kept",
        "min anatomy",
        *metrics,
    ]
    columns += ["s / patient (fusion)", "s / patient (total)", "peak MB (max)"]
    modality = PAIRS[result.pair][0]
    lines = [
        f"## {result.pair} (A = {modality}, B = PET on A's grid; {patients} patients)",
        "",
        "Means over the patients unless marked; *median* and *patients < "
        f"{CONSPICUITY_FLOOR:g}* are of conspicuity kept; worst = lowest conspicuity kept; seconds are medians; "
        "peak MB is the largest extra resident memory of one fusion call. Bold: the best row per column (for "
        "conspicuity, by its median: a few ratios far above 1 can carry a mean, see below the table).",
        "",
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    best = {}
    for key in ("conspicuity_kept_median", "anatomy_kept", *metrics):
        finite = [s[key] for s in summary.values() if math.isfinite(s.get(key, math.nan))]
        if finite:
            best[key] = max(finite)

    def shown(row: Mapping[str, Any], key: str) -> str:
        text = _cell(row.get(key, math.nan))
        return f"**{text}**" if key in best and row.get(key) == best[key] else text

    for name, row in summary.items():
        worst = (
            f"{row['worst_patient']} ({row['worst_conspicuity_kept']:.2f})" if row["worst_patient"] else "–"
        )
        failed = f" ({len(row['failed'])} failed)" if row["failed"] else ""
        cells = [
            _cell(row["conspicuity_kept"]),
            shown(row, "conspicuity_kept_median"),
            str(row["patients_below_target"]),
            worst,
            shown(row, "anatomy_kept"),
            _cell(row["min_anatomy_kept"]),
        ]
        cells += [shown(row, m) for m in metrics]
        cells += [
            _cell(row["seconds_fusion_median"], 2),
            _cell(row["seconds_total_median"], 2),
            _cell(row["peak_MB_max"], 0),
        ]
        lines.append(f"| `{name}`{failed} | " + " | ".join(cells) + " |")
    lines += ["", *_outlier_lines(summary), ""]
    parts = [
        f"{m}_{side}"
        for m in metrics
        for side in ("A", "B")
        if any(f"{m}_{side}" in s for s in summary.values())
    ]
    if parts:
        lines += [
            "Per-source parts of the 3-D metrics (`_A`: against A, `_B`: against the PET), means:",
            "",
            "| method | " + " | ".join(parts) + " |",
            "|---|" + "---:|" * len(parts),
        ]
        lines += [
            f"| `{name}` | " + " | ".join(_cell(row.get(k, math.nan)) for k in parts) + " |"
            for name, row in summary.items()
        ]
        lines.append("")
    failures = [(name, p, message) for name, row in summary.items() for p, message in row["failed"].items()]
    if failures:
        lines += ["Failures:", ""] + [f"- `{name}` on {p}: {message}" for name, p, message in failures] + [""]
    return lines


def _outlier_lines(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Conspicuity ratios above :data:`OUTLIER_RATIO`, with P's own Delta E (the denominator)."""
    found = [
        (patient, name, values["conspicuity_kept"], values["delta_E_F"], values["delta_E_P"])
        for name, row in summary.items()
        for patient, values in row["per_patient"].items()
        if values.get("conspicuity_kept", math.nan) > OUTLIER_RATIO
    ]
    if not found:
        return [f"No patient's conspicuity kept is above {OUTLIER_RATIO:g} in any row."]
    found.sort(key=lambda item: (item[0], -item[2]))
    text = "; ".join(
        f"{patient} `{name}` {ratio:.1f} (Delta E F {f:.1f} / P {p:.1f})"
        for patient, name, ratio, f, p in found
    )
    return [
        f"Conspicuity kept above {OUTLIER_RATIO:g} (P alone shows the lesion barely against its shell, so F's "
        "lesion-shell difference, which there comes from A's own contrast, is divided by a small number): "
        + text
        + "."
    ]


def _rows_section(result: ClinicalResult) -> list[str]:
    lines = ["## Rows", ""]
    described: dict[str, str] = {}
    for pair, pair_result in result.pairs.items():
        for name, row_result in pair_result.rows.items():
            text = row_result.row.describe(pair)
            if row_result.row.kind == "recommended":
                described.setdefault(name, "")
                described[name] += f"{'; ' if described[name] else ''}{text}"
            else:
                described.setdefault(name, text)
    lines += [f"- `{name}`: {text}" for name, text in described.items()]
    run = {row_result.row.method for pr in result.pairs.values() for row_result in pr.rows.values()}
    left_out = [spec for spec in list_methods() if spec.name not in run]
    if left_out:
        lines += [
            "",
            "Registered methods not run in this report (name them in `--methods` to add them): "
            + ", ".join(f"`{spec.name}` ({spec.family})" for spec in left_out)
            + f". By default the {', '.join(SLOW_FAMILIES)} family is left out (slow on 3-D patients).",
        ]
    return [*lines, ""]


def _markdown(result: ClinicalResult, *, dataset_name: str, command: str, figure_link: str | None) -> str:
    load = _load_text()
    header = [
        f"# Clinical benchmark: {dataset_name} (3-D PET with CT and MR, issue 13)",
        "",
        f"Made with `{command}` (MedFusion {__version__}, torch {torch.__version__}, device {result.device}, "
        f"{result.threads} torch threads, {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs; "
        f"{load}). {len(result.patients)} patients: {', '.join(result.patients)}. Run time "
        f"{result.seconds / 60:.1f} min.",
        "",
        "**Data.** " + LICENCE_NOTICE + " Cite:",
        "",
        *[f"{index}. {text}" for index, text in enumerate(CITATIONS, start=1)],
        "",
        "**Protocol** (`MedFusionLib/benchmark/clinical.py`). For each patient the PET is resampled onto A's "
        "grid (linear, world coordinates) and A and P are fused with `fuse_images`, as `medfusion fuse` does. "
        "*Conspicuity kept* = Delta E*ab between the lesion's and a 3-10 mm in-plane shell's mean CIELAB colour "
        "in F, over the same in P shown alone through the row's colour table (gray for gray rows); "
        "*anatomy kept* = Pearson correlation over the body of |grad L*| of F and of A shown alone "
        "(`MedFusionLib/metrics/clinical.py`, issue 13's definitions). The 3-D metrics "
        f"({', '.join(result.metrics) or 'none'}) are computed on whole volumes (`compute_metrics`, mode volume) "
        "on grey levels 0-255: A and P as the gray pipeline normalises them (CT soft-tissue preset, MR 0.5-99.5 "
        "and PET 0-99.9 percentiles), a gray F times 255, an RGB F by its BT.601 luminance times 255. "
        "*s / patient (fusion)*: the `fuse_images` call (P already on A's grid); *(total)*: plus reading A, "
        "P and the mask and resampling P. *Peak MB*: the process's resident high-water mark (`VmHWM`, reset "
        "through `/proc/self/clear_refs` before each call) during the fusion call, minus the resident set "
        "before it. No method was tuned on these patients except the recommended default's choice of table "
        "and rule (see `sts/colour_fusion_exploration.md`).",
        "",
        "## Targets (issue 13)",
        "",
    ]
    for pair, pair_result in result.pairs.items():
        summary = pair_result.summary()
        if RECOMMENDED_ROW in summary and summary[RECOMMENDED_ROW]["worst_patient"]:
            header.append(_targets(pair, summary[RECOMMENDED_ROW]))
    header.append("")
    if figure_link:
        header += [
            f"![tumour mid-slice per method]({figure_link})",
            "",
            "Figure: the tumour's mid-slice (the middle of the slices the mask touches) per pair for "
            f"{', '.join(FIGURE_PATIENTS)} (or the first two patients) and the worst patient of the first "
            "figure row; the cyan outline (the tumour mask) is drawn on the sources only.",
            "",
        ]
    body = []
    for pair_result in result.pairs.values():
        body += _pair_tables(pair_result, result.metrics)
    return "\n".join([*header, *body, *_rows_section(result)])


def _load_text() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) when the report was written"


def _csv_text(result: ClinicalResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = list(
        dict.fromkeys(
            k
            for pr in result.pairs.values()
            for rr in pr.rows.values()
            for values in rr.per_patient.values()
            for k in values
        )
    )
    writer.writerow(["pair", "method", "patient", *keys])
    for pair, pair_result in result.pairs.items():
        for name, summary in pair_result.summary().items():
            writer.writerow([pair, name, "mean", *(_csv_value(summary.get(k)) for k in keys)])
            for patient, values in summary["per_patient"].items():
                writer.writerow([pair, name, patient, *(_csv_value(values.get(k)) for k in keys)])
    return buffer.getvalue()


def _csv_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def figure_examples(result: ClinicalResult) -> dict[str, list[tuple[str, np.ndarray]]]:
    """The figure's rows for :func:`~MedFusionLib.benchmark.figures.save_examples_figure`."""
    examples: dict[str, list[tuple[str, np.ndarray]]] = {}
    for pair, pair_result in result.pairs.items():
        first = pair_result.figure_rows[0] if pair_result.figure_rows else None
        worst = pair_result.rows[first].summary(pair)["worst_patient"] if first else None
        for patient, panel in pair_result.panels.items():
            label = f"{pair} {patient} z={panel.slice_index}"
            if patient == worst:
                label += f" (worst for {first})"
            columns = list(panel.sources)
            columns += [(name, panel.fused[name]) for name in pair_result.figure_rows if name in panel.fused]
            examples[label] = columns
    return examples


def write_clinical_report(
    result: ClinicalResult,
    out_dir: str | Path,
    *,
    dataset_name: str,
    command: str,
    figure: str | Path | None = None,
) -> list[Path]:
    """Write ``NAME.md``, ``NAME.csv``, ``NAME.json`` and the figure; all or nothing (staged).

    Args:
        result: what :func:`run_clinical_benchmark` measured.
        out_dir: the report folder (created if missing; removed again if the write fails).
        dataset_name: the files' stem (``sts``).
        command: the command line quoted in the report.
        figure: the figure's path (default ``out_dir/NAME_tumour_slices.png``); its folder must exist
            unless it is ``out_dir``.

    Returns:
        The paths written, the Markdown report first.

    Raises:
        InputError: a file cannot be written (named).
    """
    from .figures import save_examples_figure
    from .report import _write_text

    with making_folder(out_dir) as out, StagedOutputs() as staged:
        figure_path = Path(figure) if figure is not None else out / f"{dataset_name}_tumour_slices.png"
        examples = figure_examples(result)
        written = []
        link = None
        if examples:
            save_examples_figure(
                examples,
                staged.stage(figure_path, suffix=".png"),
                title="Tumour mid-slice per method. Data: TCIA Soft-tissue-Sarcoma (IBSI), CC BY 3.0",
                tile=180,
            )
            written.append(figure_path)
            link = Path(os.path.relpath(figure_path.resolve(), out.resolve())).as_posix()
        markdown = _markdown(result, dataset_name=dataset_name, command=command, figure_link=link)
        written.insert(0, _write_text(staged, out / f"{dataset_name}.md", markdown + "\n"))
        written.append(_write_text(staged, out / f"{dataset_name}.csv", _csv_text(result)))
        written.append(
            _write_text(staged, out / f"{dataset_name}.json", json.dumps(result.to_json(), indent=1) + "\n")
        )
    return written


# --- the command ------------------------------------------------------------------------------
def wants_clinical(args: argparse.Namespace) -> bool:
    """Whether ``medfusion benchmark`` runs this benchmark: a patient dataset or a patient option."""
    options = ("pairs", "patients", "metrics", "figure")
    return any(getattr(args, o, None) is not None for o in options) or is_patient_dataset(args.dataset)


def benchmark_command(args: argparse.Namespace, *, command: str) -> int:
    """``medfusion benchmark DATASET --pairs ...`` on a patient dataset (every option checked first).

    Raises:
        ParameterError, InputError: bad options, dataset or output (one line; the CLI exits 2).
    """
    pairs = parse_pairs(args.pairs)
    rows = parse_rows(args.methods)
    metrics = parse_metrics(args.metrics)
    patients = parse_patients(args.patients)
    threads = check_threads(args.threads, name="--threads")
    check_device(args.device, name="--device")
    if args.peers:
        raise ParameterError("--peers: peer rows apply to 2-D pair sets (Harvard), not to a patient dataset")
    dataset = Path(args.dataset)
    out_dir = check_output_folder(args.out, option="--out")
    name = dataset.resolve().name or "patients"
    figure = Path(args.figure) if args.figure is not None else out_dir / f"{name}_tumour_slices.png"
    if figure.suffix.lower() != ".png":
        raise ParameterError(f"--figure {figure}: the figure is a PNG (name it *.png)")
    if figure.parent.resolve() != out_dir.resolve():
        check_output_file(figure, what="--figure")
    guard_outputs(inputs=[dataset], outputs=[out_dir, figure])
    discover_patients(dataset, pairs, patients=patients)  # the layout fails before any work

    def progress(message: str) -> None:
        if not args.json:
            print(f"\r{message[:78]:78s}", end="", file=sys.stderr, flush=True)

    result = run_clinical_benchmark(
        dataset,
        pairs=pairs,
        rows=rows,
        patients=patients,
        metrics=metrics,
        device=args.device,
        threads=threads,
        progress=progress,
    )
    if not args.json:
        print(file=sys.stderr)
    written = write_clinical_report(result, out_dir, dataset_name=name, command=command, figure=figure)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(f"wrote {len(written)} files (report: {written[0]})")
    return 0
