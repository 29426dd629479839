"""Find the pair sets of a benchmark folder laid out like ``../shared/data/harvard``.

``DATASET/<SET>/<MODALITY>/<id>.<ext>``: each set folder holds two modality folders whose
2-D slices (``.png``, ``.jpg``, ``.jpeg``: the 8-bit protocol of the field's benchmarks)
pair up by name. The anatomical modality (source A) is the one the set's name puts first
(``MRI_CT`` -> ``MRI``); failing that, an MRI/MR/CT folder; failing that, the first in
alphabetical order.

The layout is checked before any work: volumes (NIfTI, NRRD, MetaImage) in a modality
folder, or a set folder given as the dataset, are refused with the layout expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io import known_extension

ANATOMICAL = ("MRI", "MR", "T1", "T2", "CT")
SLICE_EXTENSIONS = (".png", ".jpg", ".jpeg")
"""File types a benchmark pair is made of (2-D slices with 8-bit grey levels or colour)."""
LAYOUT = "DATASET/<SET>/<MODALITY>/<id>.png: set folders, each with two modality folders of 2-D slices"


@dataclass(frozen=True)
class Pair:
    """One registered pair: its id and the two files (A anatomical, B the other modality)."""

    id: str
    path_a: Path
    path_b: Path


@dataclass(frozen=True)
class PairSet:
    """A set of pairs of two modalities (``MRI_CT``, ``MRI_PET`` ...)."""

    name: str
    modality_a: str
    modality_b: str
    pairs: tuple[Pair, ...]


def _natural_key(text: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _image_files(folder: Path) -> dict[str, Path]:
    """The slices of a modality folder by id; other image files (volumes) are refused."""
    files = {}
    for path in folder.iterdir():
        extension = known_extension(path) if path.is_file() else None
        if extension is None:
            continue
        if extension not in SLICE_EXTENSIONS:
            raise InputError(
                f"{path}: the benchmark scores 2-D slices ({', '.join(SLICE_EXTENSIONS)}), "
                f"not {extension} volumes (expected {LAYOUT})"
            )
        files[path.name[: -len(extension)]] = path
    return files


def _holds_images(folder: Path) -> bool:
    return any(p.is_file() and known_extension(p) is not None for p in folder.iterdir())


def _order_modalities(set_name: str, modalities: list[str]) -> tuple[str, str]:
    named = set_name.split("_")
    if len(named) == 2 and set(named) == set(modalities):
        return named[0], named[1]
    for anatomical in ANATOMICAL:
        if anatomical in modalities:
            other = next(m for m in modalities if m != anatomical)
            return anatomical, other
    first, second = sorted(modalities)
    return first, second


def discover_pair_sets(root: str | Path) -> list[PairSet]:
    """Every pair set under ``root``, sets and pairs in natural order.

    Raises:
        InputError: ``root`` is not a folder, holds images itself (a set given as the dataset),
            holds volumes instead of 2-D slices, holds no set, or a set has no pair.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"benchmark dataset {root} is not a folder")
    sets = []
    for set_dir in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name)):
        modality_dirs = [p for p in set_dir.iterdir() if p.is_dir() and _image_files(p)]
        if len(modality_dirs) != 2:
            continue
        name_a, name_b = _order_modalities(set_dir.name, [p.name for p in modality_dirs])
        files_a, files_b = _image_files(set_dir / name_a), _image_files(set_dir / name_b)
        ids = sorted(files_a.keys() & files_b.keys(), key=_natural_key)
        if not ids:
            raise InputError(f"{set_dir}: no file name appears in both {name_a}/ and {name_b}/")
        pairs = tuple(Pair(id=i, path_a=files_a[i], path_b=files_b[i]) for i in ids)
        sets.append(PairSet(name=set_dir.name, modality_a=name_a, modality_b=name_b, pairs=pairs))
    if not sets:
        raise _no_sets(root)
    return sets


def _no_sets(root: Path) -> InputError:
    """Why ``root`` holds no pair set, as precisely as its content allows."""
    if any(_holds_images(p) for p in root.iterdir() if p.is_dir()):
        return InputError(
            f"no pair sets found in {root}: it looks like one pair set (its folders hold images), "
            f"give the folder above it (expected {LAYOUT})"
        )
    if _holds_images(root):
        return InputError(f"no pair sets found in {root}: it holds image files itself (expected {LAYOUT})")
    return InputError(f"no pair sets found in {root} (expected {LAYOUT})")
