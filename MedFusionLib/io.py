"""Reading and writing images with their geometry.

:func:`read_image` turns a NIfTI, NRRD, MetaImage, PNG or JPEG file, or a directory holding a
DICOM series, into an :class:`~MedFusionLib.image.Image`; :func:`write_image` writes one back,
picking the format from the extension (a path with no suffix is a DICOM series directory).
Spacing, origin and direction travel with the voxels; NRRD and MetaImage keep them bit for
bit, NIfTI stores them as float32 and DICOM as decimal strings of at most 16 characters.

Every failure a user can cause is an :class:`~MedFusionLib.errors.InputError` whose message
is one line naming the file. Writes are atomic: the image goes to a temporary name in the
target's folder and is renamed into place, so an interrupted or failed write never leaves a
half-written output (nor removes an older file of the same name).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import math
import os
import pickle
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import SimpleITK as sitk

from .atomic import OutputError, fsync_directory, fsync_file, os_error_reason, temporary_name
from .errors import InputError, ParameterError
from .headers import (
    JPEG_MAGIC,
    PNG_SIGNATURE,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    DataLayout,
    HeaderFault,
    dicom_transfer_syntax,
    metaimage_layout,
    nifti_header,
    nrrd_layout,
    png_header,
    read_nifti,
)
from .image import MODALITIES, Image, check_geometry
from .limits import check_data, check_data_files, check_working_memory, decoded_length
from .output_guard import check_output_file, data_files, guard_outputs, name_max
from .quiet import native_output_captured
from .signals import deferred_termination, live_temporary
from .validation import check_image, check_path

SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".png",
    ".jpg",
    ".jpeg",
)
"""File extensions :func:`read_image` and :func:`write_image` accept (case-insensitive).
A directory (or, for writing, a path without any suffix) stands for a DICOM series."""

DICOM = "dicom"

_T = TypeVar("_T")

_FORMAT_OF_EXTENSION = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
}
_IMAGE_IO = {
    "nifti": "NiftiImageIO",
    "nrrd": "NrrdImageIO",
    "metaimage": "MetaImageIO",
    "png": "PNGImageIO",
    "jpeg": "JPEGImageIO",
}
# Extensions whose header and voxels live in two files (written side by side).
_TWO_FILE_EXTENSIONS = (".mhd", ".nhdr")

# DICOM Modality (0008,0060) <-> Image.modality.
_MODALITY_FROM_DICOM = {"CT": "CT", "MR": "MR", "PT": "PET", "NM": "SPECT"}


# --- formats ---------------------------------------------------------------------------
def known_extension(path: Path) -> str | None:
    """The entry of :data:`SUPPORTED_EXTENSIONS` that ``path`` ends with, if any."""
    name = path.name.lower()
    for extension in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.endswith(extension) and len(name) > len(extension):
            return extension
    return None


def _unsupported(path: Path) -> InputError:
    suffix = "".join(path.suffixes[-2:]) if path.suffix.lower() == ".gz" else path.suffix
    what = f"extension {suffix!r}" if suffix else "file without extension"
    return InputError(
        f"unsupported {what}: {path} (use {', '.join(SUPPORTED_EXTENSIONS)} or a DICOM series directory)"
    )


def image_format(path: str | os.PathLike[str]) -> str:
    """The format :func:`read_image`/:func:`write_image` use for ``path``.

    Returns ``"nifti"``, ``"nrrd"``, ``"metaimage"``, ``"png"``, ``"jpeg"`` or ``"dicom"`` (a
    path with no suffix at all, or an existing directory without a known extension). Nothing
    is read, so the command line can check an output path before doing any work; see
    :func:`check_output_path` for the other checks a write makes.

    Raises:
        InputError: the extension is not one of :data:`SUPPORTED_EXTENSIONS`.

    Example:
        >>> image_format("fused.nii.gz"), image_format("out/series")
        ('nifti', 'dicom')
    """
    path = Path(path)
    extension = known_extension(path)
    if extension is not None:
        return _FORMAT_OF_EXTENSION[extension]
    if not path.suffix or path.is_dir():
        return DICOM
    raise _unsupported(path)


def check_output_path(path: str | os.PathLike[str], *, ndim: int | None = None) -> str:
    """Check that ``path`` can receive an image before any work is done; return its format.

    Args:
        path: the output file, or a directory (no suffix) for a DICOM series.
        ndim: the image's number of spatial dimensions when known; PNG and JPEG take 2-D only.

    Raises:
        InputError: unsupported extension, missing or read-only parent folder, a name longer
            than the file system takes, a folder where a file is expected (or the reverse), a
            non-empty folder that is not a DICOM series, or a 3-D image for PNG/JPEG.
    """
    path = Path(path)
    fmt = image_format(path)
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"output folder does not exist: {parent}")
    size, limit = len(os.fsencode(path.name)), name_max(parent)
    if size > limit:
        raise InputError(
            f"output name too long ({size} bytes; the file system takes at most {limit}): "
            f"{path.name[:40]}...{path.name[-20:]} in {parent}"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: no write permission in {parent}")
    if fmt == DICOM:
        if path.exists() and not path.is_dir():
            raise InputError(f"cannot write a DICOM series to {path}: it exists and is not a directory")
        if path.is_dir() and any(not _is_dicom_leftover(entry) for entry in path.iterdir()):
            raise InputError(
                f"output directory {path} is not empty: only a folder of .dcm files (an earlier "
                "DICOM series) is replaced"
            )
    elif path.is_dir():
        raise InputError(f"cannot write {path}: it is a directory")
    if fmt in ("png", "jpeg") and ndim is not None and ndim != 2:
        raise InputError(f"cannot write a {ndim}-D image to {path}: {fmt.upper()} holds 2-D images only")
    return fmt


def _is_dicom_leftover(entry: Path) -> bool:
    return entry.is_file() and entry.suffix.lower() == ".dcm"


# --- error messages ----------------------------------------------------------------------
def short_reason(error: BaseException) -> str:
    """One short line out of a (multi-line) ITK/teem/GDCM exception message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    nrrd = [line for line in lines if line.startswith("[nrrd]")]
    if nrrd:
        text = re.sub(r"^\[nrrd\]\s*\w+:\s*", "", nrrd[-1])
    else:
        useful = [
            line
            for line in lines
            if not line.startswith("Exception thrown in SimpleITK")
            and not re.search(r"\.(cxx|h|hxx):\d+:?$", line)
        ]
        text = next((line for line in useful if "ERROR:" in line), useful[0] if useful else "")
        text = text.split("ERROR:", 1)[-1]
        text = re.sub(r"^\s*\w+\s*\(0x[0-9a-fA-F]+\):\s*", "", text)
        if text.startswith("File cannot be read"):
            text = "voxel data missing, truncated or unreadable"
        detail = next((line.split(":", 1)[1].strip() for line in useful if line.startswith("Reason:")), "")
        if detail and detail.lower() != "success":
            text = f"{text} ({detail})"
    text = " ".join(text.split()).strip(" :")
    if len(text) > 160:
        text = text[:157] + "..."
    return text or type(error).__name__


# --- reading -----------------------------------------------------------------------------
def read_image(
    path: str | os.PathLike[str], *, modality: str | None = None, series: str | None = None
) -> Image:
    """Read an image file or a DICOM series directory.

    Args:
        path: a ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, ``.png``,
            ``.jpg``/``.jpeg`` file, or a directory holding a DICOM series (with several
            series, the one with the most files is read).
        modality: ``"CT"``, ``"MR"``, ``"PET"`` or ``"SPECT"``; when ``None`` it is taken from
            a DICOM series' Modality tag (CT, MR, PT -> PET, NM -> SPECT) or from a header
            field that states it (an NRRD or MetaImage key ``modality``, ``MedFusion.Modality``,
            ``DICOM.Modality`` or ``0008|0060`` whose value is a modality, a NIfTI ``descrip``
            of exactly ``modality=PET``; ``metadata["modality_from"]`` names the field), and
            left unknown otherwise (file names are never guessed from).
        series: for a DICOM folder holding several series, the one to read: its Series Instance
            UID or a modality (``CT``, ``MR``, ``PT``/``PET``, ``NM``/``SPECT``); an error lists
            the series found when none (or several of that modality) match. ``None`` reads the
            series with the most files. Ignored for files.

    Returns:
        The image; its voxels keep the file's data type (rescaled DICOM becomes float32). PNG
        and JPEG stay 2-D, RGB files stay RGB (trailing axis of 3), gray files stay gray. A
        4-D file whose fourth axis has one sample is read as 3-D. ``metadata`` holds the
        source path and format; for DICOM also the series' identity (patient, study, series and
        frame-of-reference UIDs, modality, acquisition details, the first header: see
        :data:`MedFusionLib.dicom.IDENTITY_KEYS`), and PET voxels are body-weight SUV where the
        tags allow it (``metadata["units"] == "SUVbw"``, :func:`MedFusionLib.dicom.series.suv_factor`).

    Before any voxel is allocated the header is checked against the file (see
    :mod:`MedFusionLib.limits`): an uncompressed file must hold the bytes it claims, a
    compressed one cannot claim more than deflate can expand, the working memory the image
    leads to must stay under the ceiling (``MEDFUSION_MEMORY_LIMIT``, by default half the
    available memory), and a large file compressed beyond what real images reach is refused
    when all its voxels are the same (a decompression bomb). The geometry must be usable:
    finite positive spacing, no axis longer than 10 m (formats with a physical spacing), an
    orthonormal direction; NIfTI header faults that ITK would silently repair are refused.
    ``X.nii.gz`` is read from ``X.nii.gz`` alone, whatever lies beside it. FIFOs, devices and
    sockets are refused without being opened; a DICOM directory's special files are skipped.
    The libraries' own console output is captured.

    Raises:
        InputError: missing path, special file, unsupported extension, unreadable,
            truncated or corrupt file, a header claiming more than the file or the memory
            ceiling holds, unusable geometry, complex voxels, directory without DICOM, 1-D
            or 4-D images, pixels with other than 1 or 3 components.
        ParameterError: ``modality`` is not one of the known modalities; a malformed
            ``MEDFUSION_MEMORY_LIMIT``.

    Example:
        >>> ct = read_image("chest.nrrd", modality="CT")  # doctest: +SKIP
    """
    path = check_path(path, name="path")
    if modality is not None and modality not in MODALITIES:
        raise ParameterError(f"unknown modality {modality!r} for {path}; use one of {', '.join(MODALITIES)}")
    if _is_directory_input(path):
        return _read_dicom_series(path, modality, series)
    extension = known_extension(path)
    if extension is None:
        raise _unsupported(path)
    fmt = _FORMAT_OF_EXTENSION[extension]
    try:
        layout = _data_layout(path, fmt)
        if layout is not None:
            check_data_files(path, layout)
        with _private_name(path, fmt) as name:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(name))
            reader.SetImageIO(_IMAGE_IO[fmt])
            _quietly(reader.ReadImageInformation, failure=f"cannot read {path}", names={name: path})
            _check_pixel_type(path, reader)
            _check_shape(path, reader)
            _check_header_geometry(path, reader, fmt)
            samples, voxel_bytes, period = _claims(reader)
            if layout is None:
                check_working_memory(path, samples)
            else:
                check_data(path, layout, voxel_bytes=voxel_bytes, samples=samples, period=period)
            if fmt in ("png", "jpeg"):
                _check_with_pillow(path, fmt)
            if layout is not None and fmt == "nifti":
                _check_nifti_complete(path, layout)
            image = _quietly(reader.Execute, failure=f"cannot read {path}", names={name: path})
    except HeaderFault as fault:
        raise InputError(f"cannot read {path}: {fault}") from None
    except OSError as error:
        raise InputError(f"cannot read {path}: {_os_reason(error)}") from None
    metadata = {"source": str(path), "format": fmt}
    if modality is None:
        modality, key = _modality_from_metadata(image)
        if modality is not None:
            metadata["modality_from"] = key
    return _to_image(image, modality, metadata)


# Header keys that state a modality (NRRD ``key:=value`` fields, MetaImage fields, NIfTI
# ``descrip``), matched case-insensitively, and the values they may take.
_MODALITY_KEYS = ("modality", "medfusion.modality", "dicom.modality", "0008|0060")
_MODALITY_VALUES = {**_MODALITY_FROM_DICOM, "PET": "PET", "SPECT": "SPECT"}


def _modality_from_metadata(image: sitk.Image) -> tuple[str | None, str]:
    """The modality a file's header states, and the key that states it (``(None, "")`` if none).

    Conservative: a key of :data:`_MODALITY_KEYS` whose whole value is a modality (``CT``,
    ``MR``, ``PET`` or ``PT``, ``SPECT`` or ``NM``), or a NIfTI ``descrip`` that is exactly
    ``modality=X`` or ``modality: X``. Free text is never searched and file names never
    guessed from.
    """
    try:
        keys = image.GetMetaDataKeys()
    except RuntimeError:
        return None, ""
    for key in keys:
        value = image.GetMetaData(key).strip()
        if key.strip().lower() in _MODALITY_KEYS:
            found = _MODALITY_VALUES.get(value.upper())
        elif key == "descrip":
            label, sep, rest = value.replace(":", "=", 1).partition("=")
            found = (
                _MODALITY_VALUES.get(rest.strip().upper())
                if sep and label.strip().lower() == "modality"
                else None
            )
        else:
            continue
        if found is not None:
            return found, key
    return None, ""


def _is_directory_input(path: Path) -> bool:
    """Whether ``path`` is a directory (else a regular file), by ``stat`` alone: nothing is opened.

    Raises:
        InputError: missing, a FIFO, device or socket, or not reachable (permission, name too long).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except OSError as error:
        raise InputError(f"cannot read {_display_name(path, error)}: {_os_reason(error)}") from None
    if stat.S_ISDIR(info.st_mode):
        return True
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"cannot read {path}: it is a {file_kind(info.st_mode)}, not a regular file")
    return False


def file_kind(mode: int) -> str:
    """What a ``stat`` mode that is not a regular file describes, for messages."""
    kinds = (
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "folder"),
    )
    return next((name for test, name in kinds if test(mode)), "special file")


def _display_name(path: Path, error: OSError) -> str:
    """``path``, shortened when the error is that it is too long."""
    text = str(path)
    if error.errno == errno.ENAMETOOLONG and len(text) > 80:
        return f"{text[:40]}...{text[-20:]} ({len(text)} characters)"
    return text


def _os_reason(error: OSError) -> str:
    if error.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return os_error_reason(error)


def _data_layout(path: Path, fmt: str) -> DataLayout | None:
    """Parse what ITK does not tell about where the voxels are (``None`` where nothing is modelled)."""
    if fmt == "nifti":
        header, layout = read_nifti(path)
        if header.version == 2 and not _itk_reads_nifti2():
            raise HeaderFault(
                "it is a NIfTI-2 file, which the installed ITK cannot read (its NIfTI library reads "
                "NIfTI-1 only): save it as NIfTI-1"
            )
        return layout
    if fmt == "nrrd":
        return nrrd_layout(path)
    if fmt == "metaimage":
        return metaimage_layout(path)
    with open(path, "rb") as stream:
        start = stream.read(8)
    found = "PNG" if start.startswith(PNG_SIGNATURE) else "JPEG" if start.startswith(JPEG_MAGIC) else None
    if found is None:
        raise HeaderFault(f"not a {fmt.upper()} image")
    if found != fmt.upper():
        raise HeaderFault(f"the file holds a {found} image, not {fmt.upper()}")
    png = png_header(path) if fmt == "png" else None
    if png is None:
        return None
    return DataLayout(files=(path,), encoding="png", voxel_bytes=png.decoded_bytes, png=png)


@functools.cache
def _itk_reads_nifti2() -> bool:
    """Whether this ITK reads NIfTI-2 (SimpleITK 2.5's NIfTI library reads NIfTI-1 only); probed once."""
    header = bytearray(544)
    struct.pack_into("<i8sh", header, 0, 540, b"n+2\0\r\n\x1a\n", 2)
    struct.pack_into("<h4q", header, 14, 8, 1, 1, 1, 1)  # bitpix 8, one uint8 voxel
    struct.pack_into("<2d", header, 104, 1.0, 1.0)
    struct.pack_into("<q", header, 168, 544)
    with live_temporary(tempfile.mkdtemp(prefix="medfusion-probe-")) as folder:
        (folder / "probe.nii").write_bytes(bytes(header) + b"\0")
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(folder / "probe.nii"))
        reader.SetImageIO("NiftiImageIO")
        with native_output_captured():
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                return False
    return True


@contextlib.contextmanager
def _private_name(path: Path, fmt: str) -> Iterator[Path]:
    """The name ITK reads ``path`` by: for NIfTI a link alone in a fresh private folder.

    ITK's NIfTI library finds the voxels by name (``nifti_findimgname``): for ``X.nii.gz`` it
    tries ``X.nii`` first, then ``X.nii.gz``, so a neighbour ``X.nii`` would lend its voxels
    to ``X.nii.gz``'s header. A link with no neighbours leaves it one candidate. Where links
    cannot be made, the file is copied.
    """
    if fmt != "nifti":
        yield path
        return
    extension = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    with live_temporary(tempfile.mkdtemp(prefix="medfusion-read-")) as folder:
        link = folder / f"image{extension}"
        try:
            os.symlink(os.path.abspath(path), link)
        except OSError:
            shutil.copyfile(path, link)
        yield link


def _quietly(call: Callable[[], _T], *, failure: str, names: dict[Path, Path] | None = None) -> _T:
    """Run an ITK/GDCM call with the libraries' console output captured.

    Raises:
        InputError: ``failure: reason`` when the call raises, the reason taken from what the
            library printed where that says more; private link names become the user's.
    """
    error: RuntimeError | MemoryError | None = None
    with native_output_captured() as printed:
        try:
            result = call()
        except (RuntimeError, MemoryError) as raised:
            error = raised
    if error is None:
        return result
    reason = "not enough memory" if isinstance(error, MemoryError) else _read_reason(error, printed.text)
    for private, shown in (names or {}).items():
        reason = reason.replace(str(private), str(shown))
    raise InputError(f"{failure}: {reason}")


# What MetaImage, NIfTI and GDCM print, and what it means (the exception says less).
_PRINTED_REASONS = (
    ("data not read completely", "truncated voxel data"),
    ("cannot open data file", "its data file cannot be opened"),
    ("uncompress", "corrupt compressed voxel data"),
    ("inflate", "corrupt compressed voxel data"),
)


def _read_reason(error: RuntimeError, printed: str) -> str:
    """A short reason for a failed read, using the libraries' printed lines where they say more."""
    lowered = printed.lower()
    for needle, reason in _PRINTED_REASONS:
        if needle in lowered:
            return reason
    return short_reason(error).replace(" (No such file or directory)", "")


def _check_shape(path: Path, reader: sitk.ImageFileReader) -> None:
    """Reject 1-D, 4-D and multi-component files; read ``(x, y, z, 1)`` as 3-D."""
    dimension = reader.GetDimension()
    size = tuple(reader.GetSize())
    if dimension == 4 and size[3] == 1:
        reader.SetExtractIndex((0, 0, 0, 0))
        reader.SetExtractSize(size[:3] + (0,))
        dimension = 3
    if dimension not in (2, 3):
        raise InputError(
            f"{path} is a {dimension}-D image (size {size}): only 2-D and 3-D images are supported"
        )
    components = reader.GetNumberOfComponents()
    if components not in (1, 3):
        raise InputError(
            f"{path} has {components} components per pixel: only gray (1) or RGB (3) images are supported"
        )


def _check_pixel_type(path: Path, reader: sitk.ImageFileReader) -> None:
    """Refuse complex (a NRRD ``kinds: complex`` axis, for one) or unknown voxel types."""
    pixel = reader.GetPixelID()
    if pixel in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(f"cannot read {path}: complex-valued voxels are not supported")
    if pixel == sitk.sitkUnknown:
        raise InputError(f"cannot read {path}: its voxel type is not supported")


def _check_header_geometry(path: Path, reader: sitk.ImageFileReader, fmt: str) -> None:
    """Refuse unusable geometry (see :func:`~MedFusionLib.image.check_geometry`) before reading voxels.

    PNG and JPEG state no physical size (ITK gives them 1 mm pixels unless a pHYs chunk
    says otherwise), so only their spacing, not their extent, is bounded.
    """
    dimension = reader.GetDimension()
    ndim = min(dimension, 3)
    direction = np.asarray(reader.GetDirection()).reshape(dimension, dimension)[:ndim, :ndim]
    photo = fmt in ("png", "jpeg")
    try:
        check_geometry(
            reader.GetSpacing()[:ndim],
            reader.GetOrigin()[:ndim],
            tuple(direction.ravel()),
            size=None if photo else reader.GetSize()[:ndim],
        )
    except InputError as error:
        raise InputError(f"cannot read {path}: {error}") from None


def _claims(reader: sitk.ImageFileReader | sitk.ImageSeriesReader) -> tuple[int, int, int]:
    """Voxel values (voxels x components), their bytes, and bytes per voxel, as the header states."""
    components = reader.GetNumberOfComponents()
    samples = math.prod(reader.GetSize()) * components
    try:
        component_bytes = sitk.Image([1, 1], reader.GetPixelID()).GetSizeOfPixelComponent()
    except RuntimeError:
        component_bytes = 8
    return samples, samples * component_bytes, components * component_bytes


def _check_with_pillow(path: Path, fmt: str) -> None:
    """Decode a PNG/JPEG fully with Pillow, which, unlike ITK, refuses truncated files.

    Pillow's own decompression-bomb guard stays in force (``PIL.Image.MAX_IMAGE_PIXELS``,
    an error above twice that): an image beyond it is refused in one line, and its
    warning between once and twice the limit is silenced (the memory ceiling has been
    checked already).
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    expected = fmt.upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as picture:
                actual = picture.format
                picture.load()
    except PILImage.DecompressionBombError as error:
        raise InputError(f"cannot read {path}: {' '.join(str(error).split())}") from None
    except UnidentifiedImageError:
        raise InputError(f"cannot read {path}: not a {expected} image") from None
    except (OSError, SyntaxError, ValueError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise InputError(f"cannot read {path}: {reason}") from None
    if actual != expected:
        raise InputError(f"cannot read {path}: the file holds a {actual} image, not {expected}")


def _check_nifti_complete(path: Path, layout: DataLayout) -> None:
    """Make sure a NIfTI file holds all its voxels (ITK silently reads truncated ones).

    A plain file's size was checked already (:func:`~MedFusionLib.limits.check_data`). For a
    gzipped one the gzip trailer's length (ISIZE, the decoded size modulo 2**32) is compared
    with the header's claim, which costs one read; only when they disagree (a truncated
    file, several gzip members, trailing bytes) is the stream decompressed and counted.
    """
    if layout.encoding != "gzip" or layout.voxel_bytes is None:
        return
    needed = layout.prefix + layout.voxel_bytes
    with open(path, "rb") as stream:
        if stream.seek(0, os.SEEK_END) >= 18:
            stream.seek(-4, os.SEEK_END)
            if struct.unpack("<I", stream.read(4))[0] == needed % (1 << 32):
                return
    try:
        total = decoded_length(layout, at_most=needed)
    except (EOFError, zlib.error, ValueError):
        raise InputError(f"cannot read {path}: truncated or corrupt compressed data") from None
    if total < needed:
        raise InputError(f"cannot read {path}: truncated file ({total} of {needed} bytes)")


def _nifti_bytes_needed(header: bytes) -> int | None:
    """Header plus voxel bytes a NIfTI-1/2 single file must hold (``None`` if the header is unusable)."""
    try:
        parsed = nifti_header(header)
    except HeaderFault:
        return None
    return parsed.voxel_offset + parsed.voxel_bytes


def _read_dicom_series(directory: Path, modality: str | None, series: str | None = None) -> Image:
    """Read one DICOM series of ``directory`` (its regular files only): ``series`` or the largest."""
    from .dicom.series import identity_metadata

    reader = sitk.ImageSeriesReader()
    try:
        with _regular_files_view(directory) as folder:
            files, listed = _quietly(
                lambda: _series_files(reader, folder, series, directory),
                failure=f"cannot read DICOM directory {directory}",
                names={folder: directory},
            )
            if not files:
                raise InputError(f"no DICOM series found in directory {directory}")
            _check_unlisted_dicom(directory, folder, listed)
            _check_dicom_claims(directory, files)
            reader.SetFileNames(files)
            reader.MetaDataDictionaryArrayUpdateOn()
            image = _quietly(
                reader.Execute, failure=f"cannot read DICOM series in {directory}", names={folder: directory}
            )
            count = len(files)
            try:
                identity = identity_metadata(files)
            except Exception as error:  # pydicom refuses a header GDCM read: name the folder
                raise InputError(f"cannot read DICOM series in {directory}: {short_reason(error)}") from None
    except OSError as error:
        raise InputError(f"cannot read DICOM directory {directory}: {_os_reason(error)}") from None
    try:
        check_geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection(), size=image.GetSize())
    except InputError as error:
        raise InputError(f"cannot read DICOM series in {directory}: {error}") from None
    if image.GetNumberOfComponentsPerPixel() not in (1, 3):
        raise InputError(
            f"{directory} has {image.GetNumberOfComponentsPerPixel()} components per pixel: "
            "only gray (1) or RGB (3) images are supported"
        )

    def tag(key: str) -> str:
        return reader.GetMetaData(0, key).strip() if reader.HasMetaDataKey(0, key) else ""

    dicom_modality = tag("0008|0060").upper()
    if modality is None:
        modality = _MODALITY_FROM_DICOM.get(dicom_modality)
    metadata = {
        **identity,
        "source": str(directory),
        "format": DICOM,
        "dicom_modality": dicom_modality,
        "series_instance_uid": tag("0020|000e"),
        "files": str(count),
    }
    if image.GetPixelID() in (sitk.sitkFloat64, sitk.sitkVectorFloat64):
        image = sitk.Cast(
            image, sitk.sitkVectorFloat32 if image.GetNumberOfComponentsPerPixel() > 1 else sitk.sitkFloat32
        )
    if dicom_modality == "PT" and image.GetNumberOfComponentsPerPixel() == 1:
        image = _pet_in_suv(image, metadata)
    if image.GetDimension() == 3 and image.GetSize()[2] == 1 and _is_plain_slice(image):
        image = image[:, :, 0]  # a single axial slice at z = 0 (what write_image makes of 2-D)
    return _to_image(image, modality, metadata)


def _series_files(
    reader: sitk.ImageSeriesReader, folder: Path, choice: str | None, directory: Path
) -> tuple[tuple[str, ...], set[str]]:
    """The chosen (or largest) series' files in slice order, and the names of every file GDCM put in any series."""
    from .dicom.series import SeriesSummary, choose_series, describe_series

    series = {
        uid: reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in reader.GetGDCMSeriesIDs(str(folder))
    }
    listed = {os.path.basename(name) for files in series.values() for name in files}
    if choice is None or not series:
        return max(series.values(), key=len, default=()), listed
    summaries = []
    for uid, files in series.items():
        described = describe_series(files[:1])
        modality, description = (described[0].modality, described[0].description) if described else ("", "")
        summaries.append(SeriesSummary(uid, modality, description, tuple(files)))
    summaries.sort(key=lambda s: (-len(s.files), s.uid))
    return choose_series(summaries, choice, where=directory).files, listed


def _pet_in_suv(image: sitk.Image, metadata: dict[str, str]) -> sitk.Image:
    """PET voxels as body-weight SUV where the header allows it (notes it in ``metadata``)."""
    from .dicom.series import header_from_metadata, suv_factor

    header = header_from_metadata(metadata)
    suv = None if header is None else suv_factor(header)
    if suv is None:
        metadata["units"] = str(getattr(header, "Units", "") or "unknown")
        return image
    metadata["units"] = "SUVbw"
    metadata["suv"] = suv.note
    if suv.factor == 1.0:
        return image
    return sitk.Cast(image, sitk.sitkFloat32) * suv.factor


def _check_unlisted_dicom(directory: Path, folder: Path, listed: set[str]) -> None:
    """Refuse a DICOM file GDCM left out of every series: it is damaged (a slice would go missing).

    GDCM silently skips a file it cannot parse, such as a slice cut short, and the series is
    then read without it (its spacing taken from the slices that are left). Only files with
    the DICOM Part 10 signature are considered, so other files (notes, DICOMDIR) may sit beside.
    """
    for entry in sorted(os.scandir(folder), key=lambda item: item.name):
        if entry.name in listed or entry.name == "DICOMDIR" or not _is_regular(entry.path):
            continue
        with open(entry.path, "rb") as stream:
            if stream.read(132)[128:] == b"DICM" and not _is_non_image_object(entry.path):
                raise InputError(
                    f"cannot read DICOM directory {directory}: {entry.name} is a damaged DICOM file "
                    "(cut short or corrupt: it belongs to no series)"
                )


def _is_non_image_object(path: str) -> bool:
    """True for a whole DICOM object without pixels (a registration, structure set, report) that
    may sit beside a series; an image (Rows stated) cut short is not one."""
    import pydicom

    from .dicom.series import quiet_pydicom

    try:
        with quiet_pydicom():
            header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return False
    return "Rows" not in header and "PixelData" not in header


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def _regular_files_view(directory: Path) -> Iterator[Path]:
    """``directory`` itself, or when it holds special files a private folder of links to its regular files.

    GDCM opens every entry of the folder it scans, and opening a FIFO blocks forever; each
    entry is looked at with ``stat`` alone (links followed) and only regular files are shown.

    Raises:
        InputError: the directory cannot be listed or holds no regular file.
    """
    try:
        entries = list(os.scandir(directory))
    except OSError as error:
        raise InputError(f"cannot read DICOM directory {directory}: {_os_reason(error)}") from None
    regular, special = [], False
    for entry in entries:
        try:
            mode = os.stat(entry.path).st_mode
        except OSError:
            special = True  # a broken link or an unreachable entry: leave it out
            continue
        if stat.S_ISREG(mode):
            regular.append(entry.name)
        elif not stat.S_ISDIR(mode):
            special = True
    if not regular:
        raise InputError(f"no DICOM series found in directory {directory}: it holds no files")
    if not special:
        yield directory
        return
    with live_temporary(tempfile.mkdtemp(prefix="medfusion-dicom-")) as folder:
        try:
            for name in regular:
                os.symlink(os.path.abspath(directory / name), folder / name)
        except OSError as error:
            raise InputError(f"cannot read DICOM directory {directory}: {_os_reason(error)}") from None
        yield folder


def _check_dicom_claims(directory: Path, files: tuple[str, ...]) -> None:
    """Bound a series by its first file's header: working memory, and each uncompressed file's size.

    Raises:
        InputError: the series would need more working memory than the ceiling, or a file
            stored uncompressed holds fewer bytes than Rows x Columns x frames x samples x
            Bits Allocated / 8.
    """
    first = sitk.ImageFileReader()
    first.SetFileName(files[0])
    first.SetImageIO("GDCMImageIO")
    _quietly(first.ReadImageInformation, failure=f"cannot read DICOM series in {directory}")
    samples, voxel_bytes, _ = _claims(first)
    check_working_memory(directory, samples * len(files))
    bits = first.GetMetaData("0028|0100").strip() if first.HasMetaDataKey("0028|0100") else ""
    per_file = (samples * int(bits) + 7) // 8 if bits.isdigit() else voxel_bytes
    for name in files:
        if dicom_transfer_syntax(Path(name)) not in UNCOMPRESSED_TRANSFER_SYNTAXES:
            continue
        size = os.stat(name).st_size
        if size < per_file:
            raise InputError(
                f"cannot read DICOM series in {directory}: {Path(name).name} holds {size:,} bytes, fewer "
                f"than the {per_file:,} bytes of pixel data its header claims (size {first.GetSize()}, "
                f"{first.GetNumberOfComponents()} samples per pixel)"
            )


def _is_plain_slice(image: sitk.Image) -> bool:
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return image.GetOrigin()[2] == 0.0 and np.array_equal(np.abs(direction[2]), [0.0, 0.0, 1.0])


def _to_image(image: sitk.Image, modality: str | None, metadata: dict[str, str]) -> Image:
    try:
        return Image.from_sitk(image, modality=modality, metadata=metadata)
    except InputError as error:  # e.g. zero spacing in the header: name the file
        raise InputError(f"cannot use {metadata['source']}: {error}") from None


# --- writing -----------------------------------------------------------------------------
def write_image(
    image: Image,
    path: str | os.PathLike[str],
    *,
    compress: bool = True,
    protect: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``image`` to ``path`` atomically; the format follows the extension.

    Args:
        image: the image to write (left unmodified).
        path: a file with one of :data:`SUPPORTED_EXTENSIONS`, or a path without suffix for a
            DICOM series directory (one file per slice). An existing file is replaced; an
            existing directory is replaced only if it holds nothing but ``.dcm`` files.
        compress: compress NRRD and MetaImage voxels (``.nii.gz`` is always compressed,
            ``.nii``, PNG and DICOM never are, JPEG is always lossy).
        protect: files and folders that must not be overwritten, typically the inputs the
            image was made from (see :func:`~MedFusionLib.output_guard.guard_outputs`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    The voxels go to a temporary name in the target's folder; the write is checked (the
    library's status and console output, the file's size, its header read back, and for
    NIfTI that every voxel byte is there), synced to the disk and renamed onto ``path``. On
    any failure, Ctrl-C or SIGTERM/SIGHUP (see :mod:`MedFusionLib.signals`) the temporary is
    removed and an older file of the same name is left as it was; a full disk is an error.

    PNG and JPEG take 2-D images: uint8 (and, PNG only, uint16) voxels are written as they
    are, integer voxels within 0..255 as uint8, float voxels as ``round(clip(x, 0, 1) * 255)``
    (NaN as 0); RGB stays RGB. DICOM stores integer voxels that fit int16/uint16 (uint8 as
    8-bit) unchanged and float voxels as int16 with Rescale Slope/Intercept (error at most
    half a slope, the range over 65534); RGB needs uint8. DICOM cannot describe a left-handed
    grid, so such a volume is written with its slice order reversed: reading it back gives
    the same voxels at the same world positions, with the third axis flipped.

    Raises:
        InputError: see :func:`check_output_path`; ``path`` is one of ``protect``; voxels
            the format cannot hold; a failed write such as a full disk (nothing is left
            behind).
    """
    path = check_path(path, name="path")
    check_image(image, name="image")
    guard_outputs(inputs=protect, outputs=[path])
    fmt = check_output_path(path, ndim=image.ndim)
    try:
        if fmt == DICOM:
            from .dicom.simple_writer import write_dicom_atomically

            write_dicom_atomically(image, path)
        else:
            sitk_image = _png_jpeg_image(image, path, fmt) if fmt in ("png", "jpeg") else _plain_image(image)
            if known_extension(path) in _TWO_FILE_EXTENSIONS:
                _write_two_files_atomically(sitk_image, path, fmt, compress)
            else:
                _write_one_file_atomically(sitk_image, path, fmt, compress)
    except _WriteFailed as failure:
        raise OutputError(f"cannot write {path}: {failure}") from None
    except RuntimeError as error:
        raise OutputError(f"cannot write {path}: {_failure_reason(error, path.parent)}") from None
    except OSError as error:
        raise OutputError(f"cannot write {path}: {os_error_reason(error)}") from None
    return path


def remove_output(path: str | os.PathLike[str]) -> None:
    """Remove an output this run wrote: a file (with its data file for ``.mhd``/``.nhdr``) or a DICOM folder."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return
    for entry in [path, *data_files(path)]:
        with contextlib.suppress(OSError):
            entry.unlink()


class _WriteFailed(Exception):
    """A write the library reported as done but that is incomplete (message: the reason)."""


def _writer(filename: Path, fmt: str, compress: bool) -> sitk.ImageFileWriter:
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(filename))
    writer.SetImageIO(_IMAGE_IO[fmt])
    name = filename.name.lower()
    writer.SetUseCompression(name.endswith(".nii.gz") or (compress and fmt in ("nrrd", "metaimage")))
    return writer


def _temporary_name(path: Path) -> Path:
    """A unique temporary beside ``path`` that keeps its extension (ITK picks the format from it)."""
    extension = known_extension(path) or ""
    stem = path.name[: len(path.name) - len(extension)]
    return temporary_name(path.with_name(stem), suffix=extension)


def _execute(writer: sitk.ImageFileWriter, image: sitk.Image, folder: Path) -> None:
    """Run ``writer`` with the libraries' console output captured; a printed error is a failure.

    ITK's NIfTI writer, for one, prints ``** ERROR: NWAD: wrote only ...`` on a full disk and
    returns as if it had succeeded.
    """
    with native_output_captured() as printed:
        try:
            writer.Execute(image)
        except RuntimeError as error:
            raise _WriteFailed(_failure_reason(error, folder, printed.text)) from None
    errors = [line for line in printed.lines() if "error" in line.lower()]
    if errors:
        raise _WriteFailed(_failure_reason(RuntimeError(errors[-1]), folder, printed.text))


def _save_jpeg(image: sitk.Image, temporary: Path) -> None:
    """Write JPEG with Pillow: libjpeg under ITK calls ``exit(1)`` on a full disk, Pillow raises.

    Quality 95, no chroma subsampling.
    """
    from PIL import Image as PILImage

    with PILImage.fromarray(sitk.GetArrayViewFromImage(image)) as picture:
        picture.save(temporary, format="JPEG", quality=95, subsampling=0)


def _failure_reason(error: BaseException, folder: Path, printed: str = "") -> str:
    """Why a write failed, in a few words: a full disk is named as such."""
    text = f"{error}\n{printed}"
    if "No space left on device" in text or _nearly_full(folder):
        return "no space left on device"
    if "Permission denied" in text:
        return "permission denied"
    return _TEMPORARY_PATH.sub("the temporary file", short_reason(error))


# A temporary of :func:`~MedFusionLib.atomic.temporary_name`, as library messages quote it.
_TEMPORARY_PATH = re.compile(r"\S*\.\d+\.[0-9a-f]{8}\.(?:tmp|tmpdir|old)\S*")


def _create_empty(temporary: Path) -> None:
    """Create the temporary with Python first: a folder that takes no new file fails here, with the OS's reason."""
    with open(temporary, "xb"):
        pass


def _nearly_full(folder: Path) -> bool:
    """Whether the file system of ``folder`` has (almost) no room left."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return stats.f_blocks > 0 and stats.f_bavail * stats.f_frsize < 64 * 1024  # /proc has no blocks


def header_information(path: Path, fmt: str) -> sitk.ImageFileReader:
    """A reader of ``path`` (format ``fmt``, see :func:`image_format`) that has read the header only.

    ITK's messages are caught, not printed. Raises ``RuntimeError`` when ITK cannot read it.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(_IMAGE_IO[fmt])
    with native_output_captured():
        reader.ReadImageInformation()
    return reader


def _verify_image_file(written: Path, image: sitk.Image, fmt: str, folder: Path) -> None:
    """Check a finished write: non-empty, header read back with the right size, NIfTI voxels all there."""
    for entry in [written, *_data_files_beside(written)]:
        if not entry.is_file() or entry.stat().st_size == 0:
            raise _WriteFailed(_failure_reason(RuntimeError("the writer left an empty file"), folder))
    try:
        reader = header_information(written, fmt)
    except RuntimeError as error:
        raise _WriteFailed(f"the written header cannot be read back ({short_reason(error)})") from None
    components = reader.GetNumberOfComponents()
    if reader.GetSize() != image.GetSize() or components != image.GetNumberOfComponentsPerPixel():
        raise _WriteFailed(
            f"the file read back holds {reader.GetSize()} x {components}, not {image.GetSize()} x "
            f"{image.GetNumberOfComponentsPerPixel()}"
        )
    if fmt == "nifti":
        _verify_nifti_bytes(written, folder)


def _data_files_beside(header: Path) -> list[Path]:
    """The data files a two-file write left in the header's (temporary) folder."""
    if known_extension(header) not in _TWO_FILE_EXTENSIONS:
        return []
    return [entry for entry in header.parent.iterdir() if entry != header]


def _verify_nifti_bytes(path: Path, folder: Path) -> None:
    """Every voxel byte is there: file size for ``.nii``, the gzip trailer's length for ``.nii.gz``."""
    compressed = path.name.lower().endswith(".gz")
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as stream:
            needed = _nifti_bytes_needed(stream.read(540))
        if needed is None:
            return
        if compressed:
            with open(path, "rb") as stream:
                stream.seek(-4, os.SEEK_END)
                (stored,) = struct.unpack("<I", stream.read(4))
            complete = stored == needed % (1 << 32)
        else:
            complete = path.stat().st_size >= needed
    except (OSError, EOFError, zlib.error, struct.error):
        complete = False
    if not complete:
        raise _WriteFailed(_failure_reason(RuntimeError("the file was cut short"), folder))


def _write_one_file_atomically(image: sitk.Image, path: Path, fmt: str, compress: bool) -> None:
    with live_temporary(_temporary_name(path)) as temporary:
        _create_empty(temporary)
        if fmt == "jpeg":
            _save_jpeg(image, temporary)
        else:
            _execute(_writer(temporary, fmt, compress), image, path.parent)
        _verify_image_file(temporary, image, fmt, path.parent)
        fsync_file(temporary)
        os.replace(temporary, path)
    fsync_directory(path.parent)


def _write_two_files_atomically(image: sitk.Image, path: Path, fmt: str, compress: bool) -> None:
    """Header plus data file: both go to a temporary folder, then data first, header last."""
    with live_temporary(temporary_name(path, tag="tmpdir")) as folder:
        folder.mkdir()
        _execute(_writer(folder / path.name, fmt, compress), image, path.parent)
        _verify_image_file(folder / path.name, image, fmt, path.parent)
        written = [entry for entry in folder.iterdir() if entry.name != path.name]
        for entry in [*written, folder / path.name]:
            fsync_file(entry)
        with deferred_termination():
            for data_file in written:
                os.replace(data_file, path.parent / data_file.name)
            os.replace(folder / path.name, path)
    fsync_directory(path.parent)


def _plain_image(image: Image) -> sitk.Image:
    """The image as SimpleITK wants it (bool and float16 have no ITK pixel type)."""
    array = image.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    return image.with_array(array).to_sitk() if array is not image.array else image.to_sitk()


def _png_jpeg_image(image: Image, path: Path, fmt: str) -> sitk.Image:
    """Convert a 2-D image to the 8-bit (or 16-bit PNG) voxels these formats hold."""
    array = image.array
    if array.dtype == np.uint8 or (array.dtype == np.uint16 and fmt == "png"):
        pass
    elif array.dtype.kind == "f" or array.dtype == np.bool_:
        array = np.rint(np.clip(np.nan_to_num(array.astype(np.float32), nan=0.0), 0.0, 1.0) * 255.0)
        array = array.astype(np.uint8)
    elif array.dtype.kind in "iu" and (array.size == 0 or (array.min() >= 0 and array.max() <= 255)):
        array = array.astype(np.uint8)
    else:
        low, high = (array.min(), array.max()) if array.size else (0, 0)
        raise InputError(
            f"cannot write {array.dtype} voxels ({low}..{high}) to {path}: {fmt.upper()} takes uint8"
            f"{' or uint16' if fmt == 'png' else ''} or floats in [0, 1]; normalise the image first"
        )
    result = sitk.GetImageFromArray(array, isVector=image.is_rgb)
    result.SetSpacing(image.spacing)
    return result


# --- transforms --------------------------------------------------------------------------
TRANSFORM_SUFFIXES: tuple[str, ...] = (".tfm", ".txt", ".h5")
"""Extensions :func:`write_transform` takes: ITK text (``.tfm``, ``.txt``) and HDF5 (``.h5``)."""

# Run in a child process for HDF5: on a full disk ITK's HDF5 library prints its error stack,
# and the process then hangs or crashes when the library closes at exit ("infinite loop
# closing library", a segmentation fault). os._exit skips that close in the child.
_HDF5_WRITER = """
import os, pickle, sys
import SimpleITK as sitk
def parts(t):
    t = t.Downcast() if hasattr(t, "Downcast") else t
    if isinstance(t, sitk.CompositeTransform):
        return [p for k in range(t.GetNumberOfTransforms()) for p in parts(t.GetNthTransform(k))]
    return [(t.GetParameters(), t.GetFixedParameters())]
try:
    transform = pickle.loads(sys.stdin.buffer.read())
    sitk.WriteTransform(transform, sys.argv[1])
    same = parts(sitk.ReadTransform(sys.argv[1])) == parts(transform)
    sys.stderr.write("\\nMEDFUSION-OK\\n" if same else "\\nMEDFUSION-FAIL the file read back differs\\n")
except BaseException as error:
    sys.stderr.write("\\nMEDFUSION-FAIL " + str(error).strip().replace("\\n", " | ")[-2000:] + "\\n")
sys.stderr.flush()
os._exit(0)
"""
_HDF5_TIMEOUT_S = 300.0


def check_transform_output_path(path: str | os.PathLike[str]) -> Path:
    """Check that a transform file can be written at ``path`` before any work is done.

    Raises:
        InputError: an extension other than :data:`TRANSFORM_SUFFIXES`, a missing or
            read-only folder, a folder at ``path``, a name too long.
    """
    path = Path(path)
    if path.suffix.lower() not in TRANSFORM_SUFFIXES:
        raise InputError(f"transform file {path} must end in {', '.join(TRANSFORM_SUFFIXES)}")
    return check_output_file(path, what="transform")


def write_transform(
    transform: sitk.Transform,
    path: str | os.PathLike[str],
    *,
    protect: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write an ITK transform atomically (``.tfm``/``.txt`` text or ``.h5`` HDF5) and check it.

    Like :func:`write_image`: a temporary beside ``path``, read back and compared parameter
    for parameter, synced, then renamed; nothing is left on failure and a full disk is an
    error. HDF5 files are written by a short-lived child process, because the HDF5 library
    cannot recover from a failed write inside the process that made it.

    Raises:
        InputError: see :func:`check_transform_output_path`; ``path`` is one of ``protect``;
            a failed write.
    """
    path = check_path(path, name="path")
    guard_outputs(inputs=protect, outputs=[path])
    check_transform_output_path(path)
    try:
        with live_temporary(temporary_name(path, suffix=path.suffix.lower())) as temporary:
            _create_empty(temporary)
            if path.suffix.lower() == ".h5":
                _write_hdf5_transform(transform, temporary, path.parent)
            else:
                _write_transform_here(transform, temporary, path.parent)
            fsync_file(temporary)
            os.replace(temporary, path)
        fsync_directory(path.parent)
    except _WriteFailed as failure:
        raise OutputError(f"cannot write {path}: {failure}") from None
    except OSError as error:
        raise OutputError(f"cannot write {path}: {os_error_reason(error)}") from None
    return path


def _transform_parts(transform: sitk.Transform) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """Parameters and fixed parameters of every component (composites flattened)."""
    transform = transform.Downcast() if hasattr(transform, "Downcast") else transform
    if isinstance(transform, sitk.CompositeTransform):
        return [
            part
            for k in range(transform.GetNumberOfTransforms())
            for part in _transform_parts(transform.GetNthTransform(k))
        ]
    return [(transform.GetParameters(), transform.GetFixedParameters())]


def _write_transform_here(transform: sitk.Transform, temporary: Path, folder: Path) -> None:
    """Write with ITK in this process; its text writer says nothing when the disk is full, so read back."""
    with native_output_captured() as printed:
        try:
            sitk.WriteTransform(transform, str(temporary))
            if not temporary.is_file() or temporary.stat().st_size == 0:
                raise RuntimeError("the writer left an empty file")
            same = _transform_parts(sitk.ReadTransform(str(temporary))) == _transform_parts(transform)
        except RuntimeError as error:
            raise _WriteFailed(_failure_reason(error, folder, printed.text)) from None
    if not same:
        raise _WriteFailed(_failure_reason(RuntimeError("the file read back differs"), folder))


def _write_hdf5_transform(transform: sitk.Transform, temporary: Path, folder: Path) -> None:
    """HDF5 in a child process (see :data:`_HDF5_WRITER`), or here after a free-space check.

    The child needs a plain Python interpreter; inside an application whose
    ``sys.executable`` is the application itself, the file is written in this process, and
    only when the disk has room for several times the parameters (HDF5 cannot survive a
    failed write here).
    """
    interpreter = _python_interpreter()
    if interpreter is None:
        needed = 16 * sum(len(p) + len(f) for p, f in _transform_parts(transform)) + (1 << 20)
        try:
            stats = os.statvfs(folder)
            if stats.f_bavail * stats.f_frsize < needed:
                raise _WriteFailed("no space left on device")
        except (OSError, AttributeError):
            pass
        _write_transform_here(transform, temporary, folder)  # the same calls, for HDF5 too
        return
    try:
        child = subprocess.run(
            [interpreter, "-c", _HDF5_WRITER, str(temporary)],
            input=pickle.dumps(transform),
            capture_output=True,
            timeout=_HDF5_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _WriteFailed(f"the HDF5 writer did not finish in {_HDF5_TIMEOUT_S:.0f} s") from None
    printed = (child.stdout + child.stderr).decode("utf-8", "replace")
    status = [line for line in printed.splitlines() if line.startswith("MEDFUSION-")]
    if child.returncode == 0 and status == ["MEDFUSION-OK"]:
        return
    if status and status[-1].startswith("MEDFUSION-FAIL"):
        reason = status[-1].removeprefix("MEDFUSION-FAIL").strip().replace(" | ", "\n")
    else:
        reason = f"the HDF5 writer stopped with status {child.returncode}"
    raise _WriteFailed(_failure_reason(RuntimeError(reason), folder, printed))


def _python_interpreter() -> str | None:
    """``sys.executable`` when it is a Python interpreter (not, say, an application embedding Python)."""
    executable = sys.executable
    if executable and Path(executable).name.lower().startswith("python"):
        return executable
    return None
