"""Refuse an output that would overwrite an input, before any work is done.

A writer cannot know which files the run read, so the commands (and any pipeline built on the
API) call :func:`guard_outputs` with both lists first. Two paths are the same file when they
resolve to the same place (``sub/../a.nii.gz``, a symbolic link, a different letter case on a
case-insensitive disk) or share an inode (a hard link). Folders count as well: an output folder
(a DICOM series, a report folder) must not be or hold an input, and no output may be written
inside an input folder (a DICOM series being read, a dataset). MetaImage and NRRD headers
written as ``x.mhd``/``x.nhdr`` bring their data file (``x.raw``, ``x.zraw``, ``x.raw.gz``)
along, so those names are checked too.

:func:`check_output_folder` and :func:`check_output_file` check, also before any work, that a
folder or a non-image file (transform, weights, report) can be created where asked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import InputError

PathLike = str | os.PathLike[str]

_DATA_FILES = {".mhd": (".raw", ".zraw"), ".nhdr": (".raw", ".raw.gz")}


def guard_outputs(*, inputs: Iterable[PathLike | None], outputs: Iterable[PathLike | None]) -> None:
    """Raise :class:`~MedFusionLib.errors.InputError` if an output would overwrite or sit in an input.

    Args:
        inputs: the files and folders the run reads (``None`` entries are skipped).
        outputs: the files and folders it writes (``None`` entries are skipped); two outputs
            must not be the same file either.

    Raises:
        InputError: one line naming the output and the input (or the two outputs).

    Example:
        >>> guard_outputs(inputs=["a.nii.gz", "b.nii.gz"], outputs=["sub/../a.nii.gz"])  # doctest: +SKIP
        Traceback (most recent call last):
        InputError: output sub/../a.nii.gz is the input a.nii.gz: ...
    """
    sources = [(Path(p), _Where(p)) for p in inputs if p is not None and str(p)]
    targets = [(Path(p), _Where(p)) for p in outputs if p is not None and str(p)]
    for index, (output, where) in enumerate(targets):
        for other, other_where in targets[:index]:
            if where.same_as(other_where):
                raise InputError(f"outputs {other} and {output} are the same file: give each its own name")
        for name in [output, *data_files(output)]:
            spot = where if name == output else _Where(name)
            for source, source_where in sources:
                problem = _conflict(spot, source_where)
                if problem:
                    raise InputError(problem.format(output=name, input=source))


def check_output_folder(path: PathLike, *, option: str = "output folder") -> Path:
    """Check that ``path`` is a folder or can be made one (its nearest existing parent is a writable folder).

    Nothing is created: a run that fails later leaves no empty folder behind.

    Raises:
        InputError: ``path`` is a file, or cannot be created or written.
    """
    path = Path(path)
    _check_name_lengths(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} exists and is not a folder")
    existing = path
    while not existing.exists():
        if existing.is_symlink():
            raise InputError(f"{option} {path}: {existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option} {path} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path} cannot be written: no write permission in {existing}")
    return path


def check_output_file(path: PathLike, *, what: str = "output") -> Path:
    """Check that file ``path`` can be written: its folder exists and is writable, and it is not a folder.

    Raises:
        InputError: missing or read-only folder, a folder at ``path``, a name too long.
    """
    path = Path(path)
    _check_name_lengths(path)
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{what} folder does not exist: {parent} (for {path})")
    if path.is_dir():
        raise InputError(f"cannot write {what} {path}: it is a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {path}: no write permission in {parent}")
    return path


def name_max(folder: PathLike) -> int:
    """The longest file name (in bytes) the file system of ``folder`` takes (255 where unknown)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _check_name_lengths(path: Path) -> None:
    existing = path.parent
    while not existing.is_dir() and existing != existing.parent:
        existing = existing.parent
    limit = name_max(existing)
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise InputError(
                f"output name too long ({size} bytes; the file system takes at most {limit}): "
                f"{part[:40]}...{part[-20:]} in {path.parent}"
            )


class _Where:
    """Where a path really is: resolved, case-normalised, and its inode if it exists."""

    def __init__(self, path: PathLike) -> None:
        self.real = Path(os.path.normcase(os.path.realpath(os.fspath(path))))
        try:
            info = os.stat(path)
        except (OSError, ValueError):
            self.inode = None
            self.is_dir = False
        else:
            self.inode = (info.st_dev, info.st_ino)
            self.is_dir = os.path.isdir(path)

    def same_as(self, other: _Where) -> bool:
        return self.real == other.real or (self.inode is not None and self.inode == other.inode)

    def inside(self, folder: _Where) -> bool:
        return self.real != folder.real and self.real.is_relative_to(folder.real)


def _conflict(output: _Where, source: _Where) -> str | None:
    """The message (with ``{output}``/``{input}`` fields) when ``output`` would touch ``source``."""
    if output.real == source.real:
        return "output {output} is the input {input}: choose another output (inputs are never overwritten)"
    if output.inode is not None and output.inode == source.inode:
        return "output {output} is the same file as input {input} (a link): choose another output"
    if source.inside(output):
        return "output {output} holds the input {input}: choose another output"
    if source.is_dir and output.inside(source):
        return "output {output} is inside the input folder {input}: choose an output outside it"
    return None


def data_files(path: Path) -> list[Path]:
    """The data files a two-file (header + data) output ``x.mhd``/``x.nhdr`` may write beside it."""
    lower = path.name.lower()
    for extension, data_extensions in _DATA_FILES.items():
        if lower.endswith(extension) and len(lower) > len(extension):
            stem = path.name[: -len(extension)]
            return [path.with_name(stem + data) for data in data_extensions]
    return []
