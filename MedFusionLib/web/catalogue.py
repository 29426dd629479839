"""What the browser app may open: the volumes of one data folder, offered by key.

``medfusion serve DIR`` shows the images under ``DIR`` in the browser. This module is the
boundary between the two: the browser only ever sends back a *key* from
:meth:`Catalogue.scan`'s list, never a path, and :meth:`Catalogue.entry` turns a key into a
path only when that path still lies inside ``DIR``.

What is listed, reading headers only (never voxels):

- image files by extension (:data:`MedFusionLib.io.SUPPORTED_EXTENSIONS`), their dimensions
  from the header (SimpleITK ``ReadImageInformation``); a file whose header cannot be read is
  left out and named in :attr:`Catalogue.skipped` with the reason;
- DICOM series: a folder holding files with the ``DICM`` preamble gives one entry per series
  (:func:`MedFusionLib.dicom.series.describe_series`); series that are not images (RTSTRUCT,
  SR, ...) are left out;
- lesion masks: a file whose stem ends with ``_mask``, ``_seg``, ``_label``, ``_lesion`` or
  ``_gtv`` is offered as the lesion of the volume of the same stem without that suffix in the
  same folder (``CT_mask.nii.gz`` also goes with ``CT_image.nii.gz``).

What is never listed or opened: hidden names (starting with ``.``), anything a symbolic link
reaches outside ``DIR`` (files, folders, the detached voxel files of ``.mhd``/``.nhdr``
headers, links inside a DICOM folder), FIFOs, devices and sockets (checked with ``stat``
before anything opens them: opening a FIFO would block the server). Symbolic link loops end
the walk of that branch.
"""

from __future__ import annotations

import collections
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InputError, ParameterError
from ..headers import JPEG_MAGIC, PNG_SIGNATURE, HeaderFault, metaimage_layout, nrrd_layout
from ..io import file_kind, header_information, image_format, known_extension, short_reason

MASK_SUFFIXES = ("_mask", "_seg", "_label", "_lesion", "_gtv")
"""Stem endings (case-insensitive) that make a file a lesion mask."""

IMAGE_SUFFIXES = ("_image", "_img")
"""Stem endings of a volume that its mask leaves out (``CT_image`` goes with ``CT_mask``)."""

_MODALITY_TOKENS = {
    "CT": ("ct",),
    "MR": ("mr", "mri", "t1", "t2", "flair", "t1w", "t2w", "pd", "epi", "dwi", "adc"),
    "PET": ("pet", "pt", "fdg", "suv"),
    "SPECT": ("spect", "nm"),
}
_MODALITY_OF_TOKEN = {token: modality for modality, tokens in _MODALITY_TOKENS.items() for token in tokens}
_MODALITY_FROM_DICOM = {"CT": "CT", "MR": "MR", "PT": "PET", "NM": "SPECT"}
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"
_STUDY_TAGS = [
    "Modality",
    "StudyInstanceUID",
    "PatientID",
    "StudyDate",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
]
_TIMES = "\u00d7"  # the multiplication sign between dimensions
_DOT = " \u00b7 "  # the middle dot between the parts of a label
_SHOWN_KEY_LENGTH = 120


@dataclass(frozen=True)
class VolumeEntry:
    """One volume (or lesion mask) the browser may open.

    Attributes:
        key: the stable id sent to the browser: the POSIX path relative to the root
            (``"sts019_CT.nii.gz"``, ``"pat1/ct"``), plus ``"#<SeriesInstanceUID>"`` for a DICOM
            series of a folder.
        label: what the browser's select shows (``"sts019_CT.nii.gz · CT · 136×134×47"``).
        path: the resolved absolute path (the file, or the DICOM folder).
        series: the Series Instance UID of a DICOM series, else ``None``.
        modality: ``"CT"``, ``"MR"``, ``"PET"``, ``"SPECT"`` or ``None`` when unknown.
        study: the StudyInstanceUID of a DICOM series; for files the folder's path relative to
            the root (``"."`` for the root).
        study_label: the study's label (DICOM: patient id, study date and description; files:
            the folder's relative path, the root shown by its name).
        dimensions: the size from the header in ITK's order (columns, rows[, slices]).
        lesion: the key of this volume's lesion mask, or ``None``.
        is_mask: whether this is a lesion mask (offered as a lesion, not as a volume).
    """

    key: str
    label: str
    path: Path
    series: str | None
    modality: str | None
    study: str
    study_label: str
    dimensions: tuple[int, ...]
    lesion: str | None = None
    is_mask: bool = False


class _Skip(Exception):
    """A candidate left out of the catalogue; the message is the reason (one line)."""


@dataclass
class _Folder:
    """One folder of the walk: its key prefix, resolved path and regular files (name, resolved)."""

    rel: str
    path: Path
    files: list[tuple[str, Path]] = field(default_factory=list)


def guess_modality(name: str) -> str | None:
    """The modality a file or folder name suggests, from its tokens (case-insensitive).

    The name is split on everything but letters and digits (underscores split too); the first
    token that names a modality decides: ``CT``; ``MR``, ``MRI``, ``T1``, ``T2``, ``FLAIR``,
    ``T1W``, ``T2W``, ``PD``, ``EPI``, ``DWI``, ``ADC`` (MR); ``PET``, ``PT``, ``FDG``, ``SUV``
    (PET); ``SPECT``, ``NM`` (SPECT).

    Example:
        >>> guess_modality("sts019_MR_T1.nii.gz"), guess_modality("spm_SPECT"), guess_modality("x.png")
        ('MR', 'SPECT', None)
    """
    for token in re.split(r"[^0-9a-z]+", name.lower()):
        if token in _MODALITY_OF_TOKEN:
            return _MODALITY_OF_TOKEN[token]
    return None


def inside(root: Path, candidate: Path) -> Path:
    """``candidate`` resolved (links followed, it must exist), if it lies inside ``root``.

    Raises:
        InputError: the candidate does not exist, cannot be resolved (a link loop, a NUL byte)
            or resolves outside ``root``; the message names the candidate relative to ``root``
            (never where a link points).
    """
    base = Path(root).resolve(strict=True)
    shown = _shown(_relative_name(base, Path(candidate)))
    try:
        resolved = Path(candidate).resolve(strict=True)
    except FileNotFoundError:
        raise InputError(f"{shown} does not exist in {base}") from None
    except (OSError, RuntimeError, ValueError):
        raise InputError(f"{shown} cannot be resolved in {base} (a broken link or a link loop)") from None
    if not resolved.is_relative_to(base):
        raise InputError(f"{shown} lies outside {base}")
    return resolved


class Catalogue:
    """The volumes under one data folder, listed by key.

    Args:
        root: the data folder; it must exist and be a folder (it is resolved once, here).
        max_entries: the walk stops after this many entries (:attr:`skipped` says so).

    Attributes:
        root: the resolved data folder.
        skipped: ``(relative name, reason)`` of what the last scan left out (unreadable headers,
            links leaving the root, special files, non-image DICOM series, the entry limit).

    Raises:
        InputError: ``root`` is missing or not a folder.
        ParameterError: ``max_entries`` is not a positive integer.
    """

    def __init__(self, root: str | os.PathLike[str], *, max_entries: int = 2000) -> None:
        try:
            resolved = Path(root).resolve(strict=True)
            is_folder = resolved.is_dir()
        except (OSError, RuntimeError, ValueError):
            is_folder = False
        if not is_folder:
            raise InputError(f"data folder does not exist or is not a folder: {_shown(os.fspath(root))}")
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ParameterError(f"max_entries must be a positive integer, not {max_entries!r}")
        self.root: Path = resolved
        self.max_entries = max_entries
        self.skipped: list[tuple[str, str]] = []
        self._entries: dict[str, VolumeEntry] | None = None

    # --- the listing --------------------------------------------------------------------------
    def scan(self) -> list[VolumeEntry]:
        """Walk the root again and list its volumes and masks, sorted by (study, key)."""
        skipped: list[tuple[str, str]] = []
        found: list[VolumeEntry] = []
        for folder in self._walk(skipped):
            room = self.max_entries - len(found)
            entries = self._folder_entries(folder, skipped, room)
            found.extend(entries[:room])
            if len(entries) > room:
                skipped.append((folder.rel, f"stopped after {self.max_entries} entries (max_entries)"))
                break
        found = _with_study_labels(found)
        ordered = sorted(found, key=lambda entry: (entry.study, entry.key))
        self._entries = {entry.key: entry for entry in ordered}  # one assignment: entry() may run meanwhile
        self.skipped = skipped
        return ordered

    def studies(self) -> list[tuple[str, str]]:
        """``(study, study_label)`` of the volumes of the last scan (scanning if never), sorted."""
        return sorted({(entry.study, entry.study_label) for entry in self.volumes()})

    def volumes(self, study: str | None = None) -> list[VolumeEntry]:
        """The volumes (not the masks) of the last scan (scanning if never), of one study if given."""
        return [
            entry
            for entry in self._current().values()
            if not entry.is_mask and (study is None or entry.study == study)
        ]

    def entry(self, key: object) -> VolumeEntry:
        """The entry of ``key`` from the last scan (scanning if never), checked again now.

        Raises:
            InputError: ``key`` is not a key of the last scan (a path, ``../x``, a NUL byte, not
                a string), or its path no longer resolves inside the root to the same regular
                file or folder (a link swapped, a file replaced or removed since the scan).
        """
        entries = self._current()
        if not isinstance(key, str) or key not in entries:
            raise InputError(f"unknown volume {_shown(key)} (not in {self.root})")
        entry = entries[key]
        try:
            self._check_still_there(entry, key.partition("#")[0] if entry.series else key)
        except InputError as error:
            raise InputError(f"volume {_shown(key)} cannot be opened: {error}") from None
        return entry

    def _current(self) -> dict[str, VolumeEntry]:
        if self._entries is None:
            self.scan()
        assert self._entries is not None
        return self._entries

    def _check_still_there(self, entry: VolumeEntry, location: str) -> None:
        """Raise InputError unless ``location`` still resolves to ``entry.path``, of the same kind."""
        resolved = inside(self.root, self.root / location)
        if resolved != entry.path:
            raise InputError(f"{_shown(location)} changed since the last scan: scan again")
        try:
            mode = os.stat(resolved).st_mode
        except OSError as error:
            raise InputError(f"{_shown(location)}: {error.strerror or error}") from None
        if entry.series is not None:
            if not stat.S_ISDIR(mode):
                raise InputError(f"{_shown(location)} is no longer a folder")
            if self._leaves_root(resolved):
                raise InputError(f"{_shown(location)} now holds links that leave {self.root}")
            return
        if not stat.S_ISREG(mode):
            raise InputError(f"{_shown(location)} is no longer a regular file ({file_kind(mode)})")
        try:
            self._check_data_files(resolved, image_format(resolved))
        except _Skip as reason:
            raise InputError(f"{_shown(location)}: {reason}") from None

    # --- the walk -------------------------------------------------------------------------------
    def _walk(self, skipped: list[tuple[str, str]]) -> Iterator[_Folder]:
        """The folders under the root, each once, sorted; real folders before linked ones.

        A linked folder whose target was listed already (by its real path or by another link,
        a loop included) is left out, so that the walk ends and nothing is listed twice.
        """
        pending: list[tuple[str, Path]] = [(".", self.root)]
        linked: collections.deque[tuple[str, Path]] = collections.deque()
        visited: set[tuple[int, int]] = set()
        while pending or linked:
            from_link = not pending
            rel, directory = linked.popleft() if from_link else pending.pop()
            try:
                info = os.stat(directory)
            except OSError as error:
                skipped.append((rel, _one_line(error.strerror or str(error))))
                continue
            if (info.st_dev, info.st_ino) in visited:
                if from_link:
                    skipped.append((rel, "a link to a folder listed already (or a link loop)"))
                continue
            visited.add((info.st_dev, info.st_ino))
            folder = _Folder(rel, directory)
            subfolders: list[tuple[str, Path]] = []
            try:
                with os.scandir(directory) as listing:
                    items = sorted(listing, key=lambda item: item.name)
            except OSError as error:
                skipped.append((rel, _one_line(error.strerror or str(error))))
                continue
            for item in items:
                if item.name.startswith("."):
                    continue
                name = item.name if rel == "." else f"{rel}/{item.name}"
                resolved, mode = self._resolve(Path(item.path), name, skipped)
                if resolved is None:
                    continue
                if stat.S_ISDIR(mode):
                    (linked.append if item.is_symlink() else subfolders.append)((name, resolved))
                elif stat.S_ISREG(mode):
                    folder.files.append((item.name, resolved))
                else:
                    skipped.append((name, f"a {file_kind(mode)}, not a regular file"))
            yield folder
            pending.extend(reversed(subfolders))

    def _resolve(self, path: Path, name: str, skipped: list[tuple[str, str]]) -> tuple[Path | None, int]:
        """``path`` resolved and its ``stat`` mode, or ``(None, 0)`` (noted) outside the root."""
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            skipped.append((name, "a broken link or a link loop"))
            return None, 0
        if not resolved.is_relative_to(self.root):
            skipped.append((name, "a link that leaves the data folder"))
            return None, 0
        try:
            return resolved, os.stat(resolved).st_mode
        except OSError as error:
            skipped.append((name, _one_line(error.strerror or str(error))))
            return None, 0

    def _leaves_root(self, directory: Path) -> bool:
        """Whether any link directly in ``directory`` (hidden ones too) is broken or leaves the root.

        A DICOM series is read from all the regular files of its folder, links followed.
        """
        try:
            with os.scandir(directory) as listing:
                links = [Path(item.path) for item in listing if item.is_symlink()]
        except OSError:
            return True
        for link in links:
            try:
                if not link.resolve(strict=True).is_relative_to(self.root):
                    return True
            except (OSError, RuntimeError, ValueError):
                return True
        return False

    # --- one folder -----------------------------------------------------------------------------
    def _folder_entries(
        self, folder: _Folder, skipped: list[tuple[str, str]], room: int
    ) -> list[VolumeEntry]:
        """The entries of one folder's files (at most ``room + 1``: one more says the limit was hit)."""
        entries: list[VolumeEntry] = []
        dicom_files: list[Path] = []
        for name, resolved in folder.files:
            if len(entries) > room:
                return entries
            key = name if folder.rel == "." else f"{folder.rel}/{name}"
            if known_extension(Path(name)) is None:
                if _has_dicom_preamble(resolved):
                    dicom_files.append(resolved)
                continue
            try:
                entries.append(self._file_entry(folder, key, name, resolved))
            except _Skip as reason:
                skipped.append((key, _one_line(str(reason))))
        if dicom_files and len(entries) <= room:
            entries.extend(self._dicom_entries(folder, dicom_files, skipped))
        return _with_lesions(entries)

    def _file_entry(self, folder: _Folder, key: str, name: str, resolved: Path) -> VolumeEntry:
        """The entry of an image file, from its header alone (raises _Skip)."""
        if known_extension(resolved) is None:
            raise _Skip("a link to a file without an image extension")
        fmt = image_format(resolved)
        self._check_data_files(resolved, fmt)
        start = _read_bytes(resolved, 0, len(PNG_SIGNATURE))  # again a regular file, just before ITK
        if start is None:
            raise _Skip("not a readable regular file")
        magic = {"png": PNG_SIGNATURE, "jpeg": JPEG_MAGIC}.get(fmt)
        if magic is not None and not start.startswith(magic):  # ITK reads any bytes as a 0x0 image
            raise _Skip(f"not a {fmt.upper()} file")
        try:
            reader = header_information(resolved, fmt)
        except RuntimeError as error:
            raise _Skip(f"cannot read its header: {short_reason(error)}") from None
        dimensions = tuple(int(size) for size in reader.GetSize())
        if len(dimensions) not in (2, 3):
            raise _Skip(f"a {len(dimensions)}-D image (2-D and 3-D images only)")
        if 0 in dimensions:
            raise _Skip(f"an empty image ({_TIMES.join(map(str, dimensions))})")
        modality = guess_modality(name)
        if modality is None and folder.rel != ".":  # harvard/MRI_CT/CT/11.png: the folder tells
            modality = guess_modality(folder.rel.rsplit("/", 1)[-1])
        study = folder.rel
        study_label = (self.root.name or str(self.root)) if folder.rel == "." else folder.rel
        return VolumeEntry(
            key=key,
            label=_label(name, modality, dimensions),
            path=resolved,
            series=None,
            modality=modality,
            study=study,
            study_label=study_label,
            dimensions=dimensions,
            is_mask=_mask_base(_stem(name)) is not None,
        )

    def _check_data_files(self, path: Path, fmt: str) -> None:
        """Raise _Skip unless a NRRD/MetaImage header's voxel files are regular files inside the root.

        ITK opens a detached data file already when it reads the header: this runs first.
        """
        if fmt not in ("nrrd", "metaimage"):
            return
        try:
            layout = nrrd_layout(path) if fmt == "nrrd" else metaimage_layout(path)
        except HeaderFault as fault:
            raise _Skip(f"cannot read its header: {fault}") from None
        except OSError as error:
            raise _Skip(f"cannot read its header: {error.strerror or error}") from None
        if layout is None:
            raise _Skip("its header does not say where its voxels are in a way MedFusion reads")
        for data_file in layout.files:
            if data_file == path:
                continue
            try:
                inside(self.root, data_file)
            except InputError:
                raise _Skip(
                    f"its data file {_shown(data_file.name)} is missing or outside the data folder"
                ) from None
            if not _is_regular_file(data_file):
                raise _Skip(f"its data file {_shown(data_file.name)} is not a regular file")

    def _dicom_entries(
        self, folder: _Folder, files: list[Path], skipped: list[tuple[str, str]]
    ) -> list[VolumeEntry]:
        """One entry per image series of a DICOM folder (headers only)."""
        from ..dicom.series import describe_series

        if self._leaves_root(folder.path):
            skipped.append((folder.rel, "a DICOM folder holding links that leave the data folder"))
            return []
        entries = []
        for series in describe_series([str(path) for path in files]):
            key = f"{folder.rel}#{series.uid}"
            try:
                entries.append(self._series_entry(folder, key, series.uid, series.files))
            except _Skip as reason:
                skipped.append((key, _one_line(str(reason))))
        return entries

    def _series_entry(self, folder: _Folder, key: str, uid: str, files: tuple[str, ...]) -> VolumeEntry:
        """The entry of one DICOM series, from the header of its first file (raises _Skip)."""
        import pydicom

        from ..dicom.series import quiet_pydicom

        if not uid:
            raise _Skip("a DICOM series without a Series Instance UID")
        first = sorted(files)[0]
        try:
            with quiet_pydicom():
                header = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=_STUDY_TAGS)
        except Exception as error:  # pydicom raises many kinds on a damaged header
            raise _Skip(
                f"cannot read the DICOM header of {Path(first).name}: {short_reason(error)}"
            ) from None

        def text(keyword: str) -> str:
            return _one_line(str(header.get(keyword, "") or "").replace("\0", ""))

        dicom_modality = text("Modality").upper()
        rows, columns = header.get("Rows"), header.get("Columns")
        if not rows or not columns:
            raise _Skip(f"a {dicom_modality or 'DICOM'} series, not an image")
        try:
            frames = int(header.get("NumberOfFrames", 1) or 1)
        except (TypeError, ValueError):
            frames = 1
        depth = len(files) if len(files) > 1 else frames
        dimensions = (int(columns), int(rows)) + ((depth,) if depth > 1 else ())
        modality = _MODALITY_FROM_DICOM.get(dicom_modality)
        if modality is None and not dicom_modality:
            modality = guess_modality(folder.path.name)
        described = text("SeriesDescription") or (
            f"series {text('SeriesNumber')}" if text("SeriesNumber") else ""
        )
        date = text("StudyDate")
        if re.fullmatch(r"\d{8}", date):
            date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
        return VolumeEntry(
            key=key,
            label=_label(
                folder.rel if folder.rel != "." else (self.root.name or str(self.root)),
                modality or dicom_modality or None,
                dimensions,
                described,
            ),
            path=folder.path,
            series=uid,
            modality=modality,
            study=text("StudyInstanceUID") or folder.rel,
            # provisional: _with_study_labels keeps the description only where a study's series agree
            study_label="\0".join((text("PatientID"), date, text("StudyDescription"))),
            dimensions=dimensions,
        )


# --- helpers ------------------------------------------------------------------------------------
def _with_lesions(entries: list[VolumeEntry]) -> list[VolumeEntry]:
    """``entries`` of one folder with each volume's ``lesion`` set from the masks beside it."""
    masks: dict[str, str] = {}
    for entry in sorted(entries, key=lambda entry: entry.key):
        if entry.is_mask:
            base = _mask_base(_stem(entry.key))
            if base is not None:
                masks.setdefault(base.casefold(), entry.key)
    if not masks:
        return entries
    result = []
    for entry in entries:
        if entry.is_mask or entry.series is not None:
            result.append(entry)
            continue
        stem = _stem(entry.key).casefold()
        bases = [stem] + [stem[: -len(suffix)] for suffix in IMAGE_SUFFIXES if stem.endswith(suffix)]
        lesion = next((masks[base] for base in bases if base in masks), None)
        result.append(replace(entry, lesion=lesion) if lesion else entry)
    return result


def _with_study_labels(entries: list[VolumeEntry]) -> list[VolumeEntry]:
    """DICOM entries' study labels: patient id, study date and the description their series share."""
    parts: dict[str, list[tuple[str, ...]]] = {}
    for entry in entries:
        if entry.series is not None:
            parts.setdefault(entry.study, []).append(tuple(entry.study_label.split("\0")))
    labels = {}
    for study, found in parts.items():
        patient, date, _ = found[0]
        descriptions = {description for _, _, description in found}
        shared = descriptions.pop() if len(descriptions) == 1 else ""
        labels[study] = _DOT.join(part for part in (patient, date, shared) if part) or f"DICOM study {study}"
    return [
        replace(entry, study_label=labels[entry.study]) if entry.series is not None else entry
        for entry in entries
    ]


def _label(name: str, modality: str | None, dimensions: tuple[int, ...], described: str = "") -> str:
    parts = [name, modality or "", described, _TIMES.join(str(size) for size in dimensions)]
    return _DOT.join(part for part in parts if part)


def _stem(key: str) -> str:
    """The file name of ``key`` without its image extension."""
    name = key.rsplit("/", 1)[-1]
    return name[: -len(known_extension(Path(name)) or "")] or name


def _mask_base(stem: str) -> str | None:
    """The stem without its mask suffix, or ``None`` when it is not a mask's stem."""
    lowered = stem.lower()
    for suffix in MASK_SUFFIXES:
        if lowered.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return None


def _open_flags() -> int:
    return (
        os.O_RDONLY
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_CLOEXEC", 0)
    )


def _is_regular_file(path: Path) -> bool:
    """Whether ``path`` is a regular file, by ``stat`` alone (nothing is opened)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _read_bytes(path: Path, offset: int, count: int) -> bytes | None:
    """``count`` bytes of a regular file from ``offset``; ``None`` when it is not one or cannot be read.

    The file is opened without blocking and without following a final link, and checked to be a
    regular file (``fstat``) before a byte is read: a FIFO swapped in cannot block the walk.
    """
    try:
        descriptor = os.open(path, _open_flags())
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        os.lseek(descriptor, offset, os.SEEK_SET)
        return os.read(descriptor, count)
    except OSError:
        return None
    finally:
        os.close(descriptor)


def _has_dicom_preamble(path: Path) -> bool:
    """Whether a regular file has ``DICM`` at offset 128 (the DICOM preamble, PS3.10 7.1)."""
    return _read_bytes(path, _DICOM_MAGIC_OFFSET, len(_DICOM_MAGIC)) == _DICOM_MAGIC


def _relative_name(root: Path, candidate: Path) -> str:
    """``candidate`` relative to ``root`` as given (not resolved), for messages."""
    try:
        return os.path.relpath(os.fspath(candidate), os.fspath(root))
    except ValueError:  # a NUL byte, another drive
        return os.fspath(candidate)


def _shown(value: object) -> str:
    """A value quoted on one line, shortened (keys and names come from the browser or the disk)."""
    if not isinstance(value, str):
        return f"<{type(value).__name__}>"
    text = repr(value)
    if len(text) > _SHOWN_KEY_LENGTH:
        text = text[: _SHOWN_KEY_LENGTH - 4] + "...'"
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())
