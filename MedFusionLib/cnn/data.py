"""Training pairs from images the project may use (never the Harvard pairs, neither set).

Two sources, mixed in each batch (:mod:`MedFusionLib.cnn.train`):

- the SPM/MNI templates in ``DATA/mni`` (GPL-2; co-registered in MNI space): an anatomical
  volume (the Colin27 T1 at 1 mm, the SPM T1, T2 and PD templates) with a second one (the
  PET, SPECT or transmission template; transmission is attenuation, the closest thing to CT
  there), all resampled in world coordinates onto the 1 mm Colin27 grid; random 2-D crops of
  axial, coronal and sagittal slices, never from the axial slab :data:`VALIDATION_SLICES`
  (kept out since the first network; the validation pairs are now ``harvard_val``);
- the shared patients in ``DATA/sts`` (CC BY 3.0): CT, PET and T1 MR of the same person on the
  CT's grid, axial crops (:class:`PatientSlices`), six patients held out.

Crops get flips, 90-degree turns and gamma changes; :func:`contrast_window` and
:func:`pseudo_colour` make them look like what the network meets: display-windowed CT with
flat, saturated tissue, and PET or SPECT stored as pseudo-colour and read as luminance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..image import Image
from ..io import read_image
from ..preprocess import resample_to

REFERENCE = "colin27_ch2_1mm"
ANATOMICAL = ("colin27_ch2_1mm", "spm_T1", "spm_T2", "spm_PD")
SECOND = ("spm_PET", "spm_SPECT", "spm_Transm")
# Axial slab (first array axis of the Colin27 grid, MNI z = +15..+33 mm, the level of the
# lateral ventricles) kept out of training for validation, with a gap of 4-5 slices on either side.
VALIDATION_SLICES = range(86, 106, 2)
TRAINING_PARTS = ((27, 82), (110, 154))  # axial index ranges training crops are drawn from


def _unit_range(array: np.ndarray) -> np.ndarray:
    low, high = np.percentile(array, [0.5, 99.5])
    return np.clip((array - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


@dataclass
class TrainingVolumes:
    """Co-registered volumes on one grid, each scaled to ``[0, 1]``, and the pairs to draw."""

    volumes: dict[str, np.ndarray]
    pairs: list[tuple[str, str]]
    parts: tuple[tuple[int, int], ...] | None = None  # index ranges along axis 0; None: all
    ordered: bool = False  # True: the pair's first volume is always source A (no random order)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike[str]) -> TrainingVolumes:
        """Load the recipe's volumes from ``directory`` (a folder holding the ``mni`` files)."""
        directory = Path(directory)
        folder = directory / "mni" if (directory / "mni").is_dir() else directory
        names = sorted(set(ANATOMICAL) | set(SECOND))
        missing = [n for n in names if not (folder / f"{n}.nii.gz").is_file()]
        if missing:
            raise InputError(
                f"training data folder {folder} lacks {missing[0]}.nii.gz (the SPM/MNI templates)"
            )
        reference: Image = read_image(folder / f"{REFERENCE}.nii.gz")
        volumes = {}
        for name in names:
            image = read_image(folder / f"{name}.nii.gz")
            on_grid = image if name == REFERENCE else resample_to(image, reference, name=name)
            volumes[name] = _unit_range(on_grid.array.astype(np.float32))
        pairs = [(a, b) for a in ANATOMICAL for b in SECOND] + [("colin27_ch2_1mm", "spm_T2")]
        return cls(volumes=volumes, pairs=pairs, parts=TRAINING_PARTS)

    def batch(self, rng: np.random.Generator, *, size: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` random ``size`` x ``size`` crops of slice pairs, as two ``(N, 1, H, W)`` tensors."""
        first, second = [], []
        while len(first) < count:
            name_a, name_b = self.pairs[rng.integers(len(self.pairs))]
            a, b = self.volumes[name_a], self.volumes[name_b]
            # a part of the volume (below or above the validation slab), in proportion to its height
            parts = self.parts or ((0, a.shape[0]),)
            heights = np.array([high - low for low, high in parts], dtype=np.float64)
            low, high = parts[int(rng.choice(len(parts), p=heights / heights.sum()))]
            a, b = self._crop(rng, a[low:high], b[low:high], size)
            if max(a.mean(), b.mean()) < 0.05:  # mostly air: draw again
                continue
            if rng.random() < 0.5 and not self.ordered:
                a, b = b, a
            first.append(a)
            second.append(b)
        return torch.from_numpy(np.stack(first)[:, None]), torch.from_numpy(np.stack(second)[:, None])

    @staticmethod
    def _crop(
        rng: np.random.Generator, a: np.ndarray, b: np.ndarray, size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        axis = int(rng.integers(3))
        depth = a.shape[axis]
        index = int(rng.integers(int(0.15 * depth), int(0.85 * depth))) if axis else int(rng.integers(depth))
        return _augmented_crop(rng, np.take(a, index, axis=axis), np.take(b, index, axis=axis), size)


def _augmented_crop(
    rng: np.random.Generator, a: np.ndarray, b: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The same random ``size`` x ``size`` crop of two slices (zero-padded when smaller), the
    same random 90-degree turn and flip, and an independent random gamma (0.7-1.4) for each."""
    pad = [(0, max(0, size - n)) for n in a.shape]
    a, b = np.pad(a, pad), np.pad(b, pad)
    y = int(rng.integers(a.shape[0] - size + 1))
    x = int(rng.integers(a.shape[1] - size + 1))
    a, b = a[y : y + size, x : x + size], b[y : y + size, x : x + size]
    turns, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
    out = []
    for s in (a, b):
        s = np.rot90(s, turns)
        s = s[:, ::-1] if flip else s
        out.append(np.ascontiguousarray(s ** rng.uniform(0.7, 1.4), dtype=np.float32))
    return out[0], out[1]


# The shared patients (DATA/sts, CC BY 3.0): PET, CT and T1 MR of the same person. Six are
# never trained on, so that the clinical measures can also be reported on unseen patients
# (STS_019 is the demo patient, STS_007 the one the DICOM tests use, STS_015 and STS_023 the
# hardest cases of the clinical benchmark).
HELD_OUT_PATIENTS = ("STS_007", "STS_015", "STS_019", "STS_023", "STS_031", "STS_043")
PATIENT_PAIRS = {
    "MRI_CT": (("MR_T1", "CT"),),
    "MRI_PET": (("MR_T1", "PET"), ("CT", "PET")),
    "MRI_SPECT": (("MR_T1", "PET"),),  # no SPECT here: PET is the functional image
}
"""(anatomical, second) volume pairs of a patient drawn for a network of each modality pair."""
MODALITY_PAIRS = tuple(PATIENT_PAIRS)
"""The modality pairs ``gain_fusion_net`` keeps one set of weights for (source A is the MR)."""
TEMPLATE_SECOND = {"MRI_CT": "spm_Transm", "MRI_PET": "spm_PET", "MRI_SPECT": "spm_SPECT"}
"""The template each pair's anatomical templates are paired with (transmission stands for CT)."""


def pair_templates(volumes: TrainingVolumes, modality_pair: str) -> TrainingVolumes:
    """``volumes`` restricted to ``modality_pair``'s template pairs, the anatomical one always source A."""
    second = TEMPLATE_SECOND[modality_pair]
    pairs = [(a, b) for a, b in volumes.pairs if b == second]
    return TrainingVolumes(volumes=volumes.volumes, pairs=pairs, parts=volumes.parts, ordered=True)


def _patient_volumes(folder: Path) -> dict[str, np.ndarray]:
    """CT, PET and MR of one patient on the CT's grid, each scaled to ``[0, 1]``.

    CT and MR by their 0.5-99.5 percentiles; PET from 0 to its 99.9th percentile (uptake
    stays proportional, the hottest voxels saturate, as a PET display does).
    """
    ct = read_image(folder / "CT_image.nii.gz")
    pet = resample_to(read_image(folder / "PET_image.nii.gz"), ct, name="PET").array.astype(np.float32)
    mr = resample_to(read_image(folder / "MR_T1_image.nii.gz"), ct, name="MR").array.astype(np.float32)
    top = max(float(np.percentile(pet, 99.9)), 1e-6)
    return {
        "CT": _unit_range(ct.array.astype(np.float32)),
        "PET": np.clip(pet / top, 0.0, 1.0).astype(np.float32),
        "MR_T1": _unit_range(mr),
    }


@dataclass
class PatientSlices:
    """Axial slices of the shared patients' co-registered CT, PET and MR (``DATA/sts``).

    Axial only: the volumes have 3.27 mm slices and about 1 mm pixels, so other planes would
    be stretched. Crops, turns, flips and gamma as :class:`TrainingVolumes`; the anatomical
    volume of a pair is always source A.
    """

    patients: dict[str, dict[str, np.ndarray]]
    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def from_directory(
        cls,
        directory: str | os.PathLike[str],
        *,
        modality_pair: str,
        held_out: tuple[str, ...] = HELD_OUT_PATIENTS,
    ) -> PatientSlices:
        """Load every patient of ``directory/sts`` but ``held_out``, for a network of ``modality_pair``."""
        folder = Path(directory) / "sts"
        names = sorted(p.name for p in folder.glob("STS_*") if p.is_dir() and p.name not in held_out)
        if not names:
            raise InputError(f"training data folder {Path(directory)} lacks sts/STS_*/ (the shared patients)")
        return cls(
            patients={name: _patient_volumes(folder / name) for name in names},
            pairs=PATIENT_PAIRS[modality_pair],
        )

    def batch(self, rng: np.random.Generator, *, size: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` random ``size`` x ``size`` crops of axial slice pairs, as two ``(N, 1, H, W)`` tensors."""
        names = sorted(self.patients)
        first, second = [], []
        while len(first) < count:
            volumes = self.patients[names[int(rng.integers(len(names)))]]
            name_a, name_b = self.pairs[int(rng.integers(len(self.pairs)))]
            index = int(rng.integers(volumes[name_a].shape[0]))
            a, b = _augmented_crop(rng, volumes[name_a][index], volumes[name_b][index], size)
            if max(a.mean(), b.mean()) < 0.05:  # mostly air: draw again
                continue
            first.append(a)
            second.append(b)
        return torch.from_numpy(np.stack(first)[:, None]), torch.from_numpy(np.stack(second)[:, None])


# Colour tables whose BT.601 luminance turns a gray functional crop into what a pseudo-colour
# PET or SPECT file gives once read as gray (the field's benchmarks store them in colour and
# score their luminance); "rainbow" is the classic jet-like table, built here from its formula.
PSEUDO_COLOUR_TABLES = ("hot", "pet_heat", "inferno", "rainbow")


def _rainbow(t: np.ndarray) -> np.ndarray:
    """The jet-like rainbow table: piecewise-linear blue-cyan-yellow-red ramps."""
    return np.stack([np.clip(1.5 - np.abs(4 * t - k), 0.0, 1.0) for k in (3, 2, 1)], axis=1)


def pseudo_colour_luminances() -> list[torch.Tensor]:
    """Per table of :data:`PSEUDO_COLOUR_TABLES`, 256 luminances in ``[0, 1]`` (8-bit RGB, BT.601)."""
    from ..colormaps import colormap_table

    levels = np.linspace(0.0, 1.0, 256)
    weights = np.array([0.299, 0.587, 0.114])
    tables = [_rainbow(levels) if n == "rainbow" else colormap_table(n) for n in PSEUDO_COLOUR_TABLES]
    return [torch.from_numpy((np.round(255 * t) @ weights / 255.0).astype(np.float32)) for t in tables]


def contrast_window(rng: np.random.Generator, x: torch.Tensor, probability: float) -> torch.Tensor:
    """With ``probability`` per image, a random display window: ``clip((x - low) / (high - low))``,
    low in ``[0, 0.25]``, high in ``[0.55, 1]``: saturated, flat regions as a brain-window CT has."""
    n = x.shape[0]
    low = torch.from_numpy(rng.uniform(0.0, 0.25, n).astype(np.float32)).view(n, 1, 1, 1)
    high = torch.from_numpy(rng.uniform(0.55, 1.0, n).astype(np.float32)).view(n, 1, 1, 1)
    chosen = torch.from_numpy(rng.random(n) < probability).view(n, 1, 1, 1)
    return torch.where(chosen, ((x - low) / (high - low)).clamp(0.0, 1.0), x)


def pseudo_colour(
    rng: np.random.Generator, x: torch.Tensor, probability: float, luminances: list[torch.Tensor]
) -> torch.Tensor:
    """With ``probability`` per image, ``x`` through a random pseudo-colour table's luminance."""
    out = x.clone()
    for i in range(x.shape[0]):
        if rng.random() < probability:
            table = luminances[int(rng.integers(len(luminances)))]
            out[i] = table[(x[i] * 255).round().long().clamp(0, 255)]
    return out
