"""Find the pair sets of a benchmark folder laid out like ``../shared/data/harvard``.

``DATASET/<SET>/<MODALITY>/<id>.<ext>``: each set folder holds two modality folders whose
files pair up by name. The anatomical modality (source A) is the one the set's name puts
first (``MRI_CT`` -> ``MRI``); failing that, an MRI/MR/CT folder; failing that, the first
in alphabetical order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io import known_extension

ANATOMICAL = ("MRI", "MR", "T1", "T2", "CT")


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
    files = {}
    for path in folder.iterdir():
        extension = known_extension(path) if path.is_file() else None
        if extension is not None:
            files[path.name[: -len(extension)]] = path
    return files


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
        InputError: ``root`` is not a folder, holds no set, or a set has no pair.
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
        raise InputError(
            f"no pair sets found in {root} (expected {root}/<SET>/<MODALITY>/<id>.png with two modality folders)"
        )
    return sets
