"""Small loaders shared by the tests (real images from ``../shared/data``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from conftest import DATA


@cache
def harvard_gray(pair_set: str, modality: str, index: int = 11) -> np.ndarray:
    """BT.601 luminance of a Harvard PNG as float32 in [0, 1]."""
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "harvard" / pair_set / modality / f"{index}.png")))
    gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return (gray / 255.0).astype(np.float32)


@cache
def mni_volume(name: str) -> np.ndarray:
    """An SPM/MNI volume divided by its maximum, float32 (z, y, x)."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "mni" / f"{name}.nii.gz"))).astype(np.float32)
    return array / array.max()


def mni_path(name: str) -> Path:
    return DATA / "mni" / f"{name}.nii.gz"


def harvard_path(pair_set: str, modality: str, index: int = 11) -> Path:
    return DATA / "harvard" / pair_set / modality / f"{index}.png"
