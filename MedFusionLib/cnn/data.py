"""Training pairs from images the project may use (never the Harvard evaluation slices).

The recipe's data are the SPM/MNI templates in ``DATA/mni`` (GPL-2; co-registered in MNI
space): an anatomical volume (the Colin27 T1 at 1 mm, the SPM T1, T2 and PD templates) with a
second one (the PET, SPECT and transmission templates; transmission is attenuation, the
closest thing to CT there), all resampled in world coordinates onto the 1 mm Colin27 grid.
Batches are random 2-D crops of axial, coronal and sagittal slices with flips, 90-degree
turns, gamma changes and random source order, so that either input slot takes either kind.
They never come from the axial slab that :func:`write_validation_set` turns into the
validation split (with five slices of the clinical MR in ``DATA/ct``, never trained on), on
which the recipe was chosen.
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
VALIDATION_SETS = {"MRI_CT": "spm_Transm", "MRI_PET": "spm_PET", "MRI_SPECT": "spm_SPECT"}
# A real single-subject clinical MR (DATA/ct, 25 axial slices of 256x256 at 0.78 mm) with the
# fine texture and noise that averaged templates lack; never drawn in training. It has no
# second modality, so validation pairs five of its slices with template slices (unaligned).
CLINICAL = "brain_mr_brain1"
CLINICAL_VALIDATION = range(10, 15)


def _unit_range(array: np.ndarray) -> np.ndarray:
    low, high = np.percentile(array, [0.5, 99.5])
    return np.clip((array - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


@dataclass
class TrainingVolumes:
    """Co-registered volumes on one grid, each scaled to ``[0, 1]``, and the pairs to draw."""

    volumes: dict[str, np.ndarray]
    pairs: list[tuple[str, str]]
    parts: tuple[tuple[int, int], ...] | None = None  # index ranges along axis 0; None: all

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
            if rng.random() < 0.5:
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
        sa, sb = np.take(a, index, axis=axis), np.take(b, index, axis=axis)
        pad = [(0, max(0, size - n)) for n in sa.shape]
        sa, sb = np.pad(sa, pad), np.pad(sb, pad)
        y = int(rng.integers(sa.shape[0] - size + 1))
        x = int(rng.integers(sa.shape[1] - size + 1))
        sa, sb = sa[y : y + size, x : x + size], sb[y : y + size, x : x + size]
        turns, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        out = []
        for s in (sa, sb):
            s = np.rot90(s, turns)
            s = s[:, ::-1] if flip else s
            out.append(np.ascontiguousarray(s ** rng.uniform(0.7, 1.4), dtype=np.float32))
        return out[0], out[1]


def _clinical_volume(directory: Path) -> np.ndarray:
    path = directory / "ct" / f"{CLINICAL}.nrrd"
    if not path.is_file():
        raise InputError(f"data folder {directory} lacks ct/{CLINICAL}.nrrd (the clinical MR)")
    return _unit_range(read_image(path).array.astype(np.float32))


def _on_canvas(slice_: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``slice_`` centred on a zero canvas of ``shape`` (cropped where it is larger)."""
    canvas = np.zeros(shape, slice_.dtype)
    y, x = (shape[0] - slice_.shape[0]) // 2, (shape[1] - slice_.shape[1]) // 2
    source = slice_[max(0, -y) : max(0, -y) + shape[0], max(0, -x) : max(0, -x) + shape[1]]
    canvas[max(0, y) : max(0, y) + source.shape[0], max(0, x) : max(0, x) + source.shape[1]] = source
    return canvas


def write_validation_set(
    volumes: TrainingVolumes, data: str | os.PathLike[str], out: str | os.PathLike[str]
) -> Path:
    """Write the held-out validation pairs as a benchmark folder laid out like the Harvard sets.

    ``out/<MRI_CT|MRI_PET|MRI_SPECT>/{MRI,<other>}/<name>.png``, 8-bit 256x256 images:
    axial slices of :data:`VALIDATION_SLICES` (never drawn in training) of every anatomical
    template, paired with the transmission (as CT), PET and SPECT templates, and the held-out
    slices :data:`CLINICAL_VALIDATION` of the clinical MR in ``data/ct``, each paired with a
    template slice of the slab. ``medfusion benchmark out`` scores methods on them.
    """
    from PIL import Image as PILImage

    out, canvas = Path(out), (256, 256)
    clinical = _clinical_volume(Path(data))
    for set_name, second in VALIDATION_SETS.items():
        folders = (out / set_name / "MRI", out / set_name / set_name.split("_")[1])
        pairs = {
            f"{anatomical}_z{index}": (volumes.volumes[anatomical][index], volumes.volumes[second][index])
            for anatomical in ANATOMICAL
            for index in VALIDATION_SLICES
        }
        for k, index in zip(CLINICAL_VALIDATION, VALIDATION_SLICES[::2], strict=True):
            pairs[f"{CLINICAL}_z{k}"] = (clinical[k], volumes.volumes[second][index])
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        for name, images in pairs.items():
            for folder, image in zip(folders, images, strict=True):
                grey = np.round(255 * _on_canvas(image[::-1], canvas)).astype(np.uint8)  # anterior up
                PILImage.fromarray(grey).save(folder / f"{name}.png")
    return out


# scikit-image photographs whose docstrings state CC0, public domain or no known restrictions
NATURAL_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "grass", "gravel", "brick")
BLUR_SIGMAS = (0.8, 1.2, 1.6, 2.0, 2.4)


@dataclass
class FocusPatches:
    """Multi-focus training patches, the recipe of Liu et al. (Information Fusion 36, 2017).

    Sharp images and Gaussian-blurred copies of them (five blur levels, as the paper makes
    five); a sample is a 16x16 patch and the same patch blurred, in either order, labelled
    by which one is sharp. The images: natural photographs that scikit-image ships (the
    paper used ImageNet photographs) and axial slices of the Colin27 1 mm T1 from ``DATA/mni``.
    """

    sharp: list[np.ndarray]
    blurred: list[list[np.ndarray]]

    @classmethod
    def from_directory(cls, directory: str | os.PathLike[str]) -> FocusPatches:
        try:
            import skimage.data
        except ImportError:
            raise InputError(
                "training this network needs scikit-image's sample photographs: pip install scikit-image"
            ) from None
        import SimpleITK as sitk

        images = []
        for name in NATURAL_IMAGES:
            image = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
            if image.ndim == 3:
                image = image[..., :3] @ np.array([0.299, 0.587, 0.114])
            images.append(image / max(image.max(), 1e-6))
        volumes = TrainingVolumes.from_directory(directory).volumes
        colin = volumes[REFERENCE]
        images += [colin[k] for k in range(40, colin.shape[0] - 40, 10)]
        blurred = []
        for image in images:
            itk = sitk.GetImageFromArray(image)
            blurred.append(
                [sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(itk, s)) for s in BLUR_SIGMAS]
            )
        return cls(
            sharp=[i.astype(np.float32) for i in images],
            blurred=[[b.astype(np.float32) for b in bs] for bs in blurred],
        )

    def batch(
        self, rng: np.random.Generator, *, count: int, size: int = 16
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` patch pairs ``(N, 1, size, size)`` and labels (1: the first is the sharp one)."""
        first, second, labels = [], [], []
        while len(first) < count:
            index = int(rng.integers(len(self.sharp)))
            sharp = self.sharp[index]
            y = int(rng.integers(sharp.shape[0] - size + 1))
            x = int(rng.integers(sharp.shape[1] - size + 1))
            patch = sharp[y : y + size, x : x + size]
            if patch.std() < 0.02:  # flat: no focus to tell
                continue
            blur = self.blurred[index][int(rng.integers(len(BLUR_SIGMAS)))][y : y + size, x : x + size]
            label = int(rng.random() < 0.5)
            first.append(patch if label else blur)
            second.append(blur if label else patch)
            labels.append(label)
        return (
            torch.from_numpy(np.stack(first)[:, None].copy()),
            torch.from_numpy(np.stack(second)[:, None].copy()),
            torch.tensor(labels),
        )
