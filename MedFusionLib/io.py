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

import gzip
import os
import re
import shutil
import struct
import tempfile
import uuid
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError, ParameterError
from .image import MODALITIES, Image

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
_DICOM_FROM_MODALITY = {value: key for key, value in _MODALITY_FROM_DICOM.items()}
# SOP classes written per modality. GDCM reads no geometry back from NM Image Storage (it
# expects the NM detector sequences), so SPECT and unknown modalities use Secondary Capture,
# which keeps Image Position/Orientation (Patient) and the rescale.
_SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "PT": "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


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
        InputError: unsupported extension, missing parent folder, a folder where a file is
            expected (or the reverse), a non-empty folder that is not a DICOM series, or a
            3-D image for PNG/JPEG.
    """
    path = Path(path)
    fmt = image_format(path)
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"output folder does not exist: {parent}")
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
def read_image(path: str | os.PathLike[str], *, modality: str | None = None) -> Image:
    """Read an image file or a DICOM series directory.

    Args:
        path: a ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, ``.png``,
            ``.jpg``/``.jpeg`` file, or a directory holding a DICOM series (with several
            series, the one with the most files is read).
        modality: ``"CT"``, ``"MR"``, ``"PET"`` or ``"SPECT"``; when ``None`` it is taken from
            a DICOM series' Modality tag (CT, MR, PT -> PET, NM -> SPECT) and left unknown
            for the other formats.

    Returns:
        The image; its voxels keep the file's data type (rescaled DICOM becomes float32). PNG
        and JPEG stay 2-D, RGB files stay RGB (trailing axis of 3), gray files stay gray. A
        4-D file whose fourth axis has one sample is read as 3-D. ``metadata`` holds the
        source path and format.

    Raises:
        InputError: missing path, unsupported extension, unreadable, truncated or corrupt
            file, directory without DICOM, 1-D or 4-D images, pixels with other than 1 or 3
            components.
        ParameterError: ``modality`` is not one of the known modalities.

    Example:
        >>> ct = read_image("chest.nrrd", modality="CT")  # doctest: +SKIP
    """
    path = Path(path)
    if modality is not None and modality not in MODALITIES:
        raise ParameterError(f"unknown modality {modality!r} for {path}; use one of {', '.join(MODALITIES)}")
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        return _read_dicom_series(path, modality)
    extension = known_extension(path)
    if extension is None:
        raise _unsupported(path)
    fmt = _FORMAT_OF_EXTENSION[extension]

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(_IMAGE_IO[fmt])
    try:
        if fmt in ("png", "jpeg"):
            _check_with_pillow(path, fmt)
        reader.ReadImageInformation()
        _check_shape(path, reader)
        if fmt == "nifti":
            _check_nifti_complete(path)
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"cannot read {path}: {short_reason(error)}") from None
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or short_reason(error)}") from None
    return _to_image(image, modality, {"source": str(path), "format": fmt})


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


def _check_with_pillow(path: Path, fmt: str) -> None:
    """Decode a PNG/JPEG fully with Pillow, which, unlike ITK, refuses truncated files."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    expected = fmt.upper()
    try:
        with PILImage.open(path) as picture:
            actual = picture.format
            picture.load()
    except UnidentifiedImageError:
        raise InputError(f"cannot read {path}: not a {expected} image") from None
    except (OSError, SyntaxError, ValueError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise InputError(f"cannot read {path}: {reason}") from None
    if actual != expected:
        raise InputError(f"cannot read {path}: the file holds a {actual} image, not {expected}")


def _check_nifti_complete(path: Path) -> None:
    """Make sure a NIfTI file holds all its voxels (ITK silently reads truncated ones)."""
    compressed = path.name.lower().endswith(".gz")
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as stream:
            header = stream.read(540)
            needed = _nifti_bytes_needed(header)
            if compressed:
                total = len(header)
                while chunk := stream.read(1 << 22):
                    total += len(chunk)
            else:
                total = path.stat().st_size
    except (EOFError, zlib.error, gzip.BadGzipFile):
        raise InputError(f"cannot read {path}: truncated or corrupt compressed data") from None
    if needed is not None and total < needed:
        raise InputError(f"cannot read {path}: truncated file ({total} of {needed} bytes)")


def _nifti_bytes_needed(header: bytes) -> int | None:
    """Header plus voxel bytes a NIfTI-1/2 single file must hold (``None`` if unknown)."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = struct.unpack(order + "f", header[108:112])[0]
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            dims = struct.unpack(order + "8q", header[16:80])
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    count = dims[0]
    if not 1 <= count <= 7 or bitpix <= 0:
        return None
    voxels = int(np.prod([max(1, int(d)) for d in dims[1 : count + 1]], dtype=np.int64))
    return int(max(offset, 348)) + voxels * int(bitpix) // 8


def _read_dicom_series(directory: Path, modality: str | None) -> Image:
    """Read the largest DICOM series of ``directory``."""
    if not any(entry.is_file() for entry in directory.iterdir()):
        raise InputError(f"no DICOM series found in directory {directory}: it holds no files")
    reader = sitk.ImageSeriesReader()
    try:
        series = reader.GetGDCMSeriesIDs(str(directory))
        files = max(
            (reader.GetGDCMSeriesFileNames(str(directory), series_id) for series_id in series),
            key=len,
            default=(),
        )
    except RuntimeError as error:
        raise InputError(f"cannot read DICOM directory {directory}: {short_reason(error)}") from None
    if not files:
        raise InputError(f"no DICOM series found in directory {directory}")
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"cannot read DICOM series in {directory}: {short_reason(error)}") from None
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
        "source": str(directory),
        "format": DICOM,
        "dicom_modality": dicom_modality,
        "series_instance_uid": tag("0020|000e"),
        "files": str(len(files)),
    }
    if image.GetPixelID() in (sitk.sitkFloat64, sitk.sitkVectorFloat64):
        image = sitk.Cast(
            image, sitk.sitkVectorFloat32 if image.GetNumberOfComponentsPerPixel() > 1 else sitk.sitkFloat32
        )
    if image.GetDimension() == 3 and image.GetSize()[2] == 1 and _is_plain_slice(image):
        image = image[:, :, 0]  # a single axial slice at z = 0 (what write_image makes of 2-D)
    return _to_image(image, modality, metadata)


def _is_plain_slice(image: sitk.Image) -> bool:
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return image.GetOrigin()[2] == 0.0 and np.array_equal(np.abs(direction[2]), [0.0, 0.0, 1.0])


def _to_image(image: sitk.Image, modality: str | None, metadata: dict[str, str]) -> Image:
    try:
        return Image.from_sitk(image, modality=modality, metadata=metadata)
    except InputError as error:  # e.g. zero spacing in the header: name the file
        raise InputError(f"cannot use {metadata['source']}: {error}") from None


# --- writing -----------------------------------------------------------------------------
def write_image(image: Image, path: str | os.PathLike[str], *, compress: bool = True) -> Path:
    """Write ``image`` to ``path`` atomically; the format follows the extension.

    Args:
        image: the image to write (left unmodified).
        path: a file with one of :data:`SUPPORTED_EXTENSIONS`, or a path without suffix for a
            DICOM series directory (one file per slice). An existing file is replaced; an
            existing directory is replaced only if it holds nothing but ``.dcm`` files.
        compress: compress NRRD and MetaImage voxels (``.nii.gz`` is always compressed,
            ``.nii``, PNG and DICOM never are, JPEG is always lossy).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    PNG and JPEG take 2-D images: uint8 (and, PNG only, uint16) voxels are written as they
    are, integer voxels within 0..255 as uint8, float voxels as ``round(clip(x, 0, 1) * 255)``
    (NaN as 0); RGB stays RGB. DICOM stores integer voxels that fit int16/uint16 (uint8 as
    8-bit) unchanged and float voxels as int16 with Rescale Slope/Intercept (error at most
    half a slope, the range over 65534); RGB needs uint8. DICOM cannot describe a left-handed
    grid, so such a volume is written with its slice order reversed: reading it back gives
    the same voxels at the same world positions, with the third axis flipped.

    Raises:
        InputError: see :func:`check_output_path`; voxels the format cannot hold; a failed
            write (nothing is left behind).
    """
    path = Path(path)
    fmt = check_output_path(path, ndim=image.ndim)
    try:
        if fmt == DICOM:
            _write_dicom_atomically(image, path)
        else:
            sitk_image = _png_jpeg_image(image, path, fmt) if fmt in ("png", "jpeg") else _plain_image(image)
            if known_extension(path) in _TWO_FILE_EXTENSIONS:
                _write_two_files_atomically(sitk_image, path, fmt, compress)
            else:
                _write_one_file_atomically(sitk_image, path, fmt, compress)
    except RuntimeError as error:
        raise InputError(f"cannot write {path}: {short_reason(error)}") from None
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or short_reason(error)}") from None
    return path


def _writer(filename: Path, fmt: str, compress: bool) -> sitk.ImageFileWriter:
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(filename))
    writer.SetImageIO(_IMAGE_IO[fmt])
    name = filename.name.lower()
    writer.SetUseCompression(name.endswith(".nii.gz") or (compress and fmt in ("nrrd", "metaimage")))
    return writer


def _temporary_name(path: Path) -> Path:
    extension = known_extension(path) or ""
    stem = path.name[: len(path.name) - len(extension)]
    return path.with_name(f".{stem}.{uuid.uuid4().hex[:12]}.tmp{extension}")


def _write_one_file_atomically(image: sitk.Image, path: Path, fmt: str, compress: bool) -> None:
    temporary = _temporary_name(path)
    try:
        _writer(temporary, fmt, compress).Execute(image)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_two_files_atomically(image: sitk.Image, path: Path, fmt: str, compress: bool) -> None:
    """Header plus data file: both go to a temporary folder, then data first, header last."""
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        _writer(folder / path.name, fmt, compress).Execute(image)
        written = [entry for entry in folder.iterdir() if entry.name != path.name]
        for data_file in written:
            os.replace(data_file, path.parent / data_file.name)
        os.replace(folder / path.name, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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


# --- DICOM -------------------------------------------------------------------------------
def _write_dicom_atomically(image: Image, directory: Path) -> None:
    """Write the series into a temporary folder beside ``directory``, then rename it."""
    voxels, slope, intercept = _dicom_voxels(image, directory)  # refuse bad data before any I/O
    grid = _dicom_grid(image, voxels, directory)
    folder = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    backup: Path | None = None
    try:
        _write_dicom_series(image, folder, grid, slope, intercept)
        if directory.is_dir():
            backup = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:12]}.old")
            os.rename(directory, backup)
        try:
            os.rename(folder, directory)
        except OSError:
            if backup is not None:
                os.rename(backup, directory)
                backup = None
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)


def _decimal_string(value: float) -> str:
    """A DICOM DS value: the most precise decimal that fits in 16 characters."""
    value = float(value)
    if value == 0.0:
        return "0"
    for digits in range(16, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.6e}"  # unreachable for finite values


def _dicom_voxels(image: Image, directory: Path) -> tuple[np.ndarray, float | None, float | None]:
    """The voxels to store and the rescale slope/intercept (``None`` when stored as is)."""
    array = image.array
    if image.is_rgb:
        if array.dtype != np.uint8:
            raise InputError(
                f"cannot write {array.dtype} RGB voxels to DICOM {directory}: RGB DICOM takes uint8"
            )
        return array, None, None
    if array.dtype == np.bool_:
        return array.astype(np.uint8), None, None
    if array.dtype.kind in "iu" and array.size:
        low, high = int(array.min()), int(array.max())
        if array.dtype in (np.uint8, np.int16, np.uint16):
            return array, None, None
        if -32768 <= low and high <= 32767:
            return array.astype(np.int16), None, None
        if 0 <= low and high <= 65535:
            return array.astype(np.uint16), None, None
    if array.dtype.kind not in "iuf":
        raise InputError(f"cannot write {array.dtype} voxels to DICOM {directory}")
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(f"cannot write {bad} NaN/infinite voxels to DICOM {directory}")
    low, high = float(array.min()), float(array.max())
    if high == low:
        return array, 1.0, float(_decimal_string(low))
    # q = round((x - intercept) / slope) in -32767..32767; DS strings are parsed back so the
    # quantisation uses exactly the slope and intercept the files state.
    slope = float(_decimal_string((high - low) / 65534.0))
    intercept = float(_decimal_string((high + low) / 2.0))
    return array, slope, intercept


def _dicom_grid(
    image: Image, voxels: np.ndarray, directory: Path
) -> tuple[np.ndarray, list[float], np.ndarray, np.ndarray]:
    """Voxels as slices plus 3-D spacing, origin and direction, right-handed as DICOM needs."""
    spacing = list(image.spacing)
    origin = np.asarray(image.origin, dtype=np.float64)
    direction = image.direction_matrix.astype(np.float64)
    if image.ndim == 2:
        voxels = voxels[np.newaxis]
        spacing.append(1.0)
        origin = np.append(origin, 0.0)
        embedded = np.eye(3)
        embedded[:2, :2] = direction
        return voxels, spacing, origin, embedded
    normal = np.cross(direction[:, 0], direction[:, 1])
    cosine = float(normal @ direction[:, 2]) / (np.linalg.norm(normal) * np.linalg.norm(direction[:, 2]))
    if abs(cosine) < 1.0 - 1e-6:
        raise InputError(f"cannot write {directory}: DICOM cannot describe a sheared (non-orthogonal) grid")
    if cosine < 0.0:  # left-handed: store the slices in the order of the DICOM normal
        voxels = voxels[::-1]
        origin = origin + (voxels.shape[0] - 1) * spacing[2] * direction[:, 2]
        direction = direction.copy()
        direction[:, 2] = -direction[:, 2]
    return voxels, spacing, origin, direction


def _write_dicom_series(
    image: Image,
    folder: Path,
    grid: tuple[np.ndarray, list[float], np.ndarray, np.ndarray],
    slope: float | None,
    intercept: float | None,
) -> None:
    """One file per slice with the tags a series reader needs to rebuild the grid."""
    voxels, spacing, origin, direction = grid
    dicom_modality = _DICOM_FROM_MODALITY.get(image.modality or "", "OT")
    orientation = "\\".join(_decimal_string(v) for v in (*direction[:, 0], *direction[:, 1]))
    series_tags = {
        "0008|0008": "DERIVED\\SECONDARY",
        "0008|0016": _SOP_CLASS.get(dicom_modality, _SECONDARY_CAPTURE),
        "0008|0060": dicom_modality,
        "0008|0064": "WSD",
        "0008|103e": "MedFusion",
        "0018|0050": _decimal_string(spacing[2]),
        "0018|0088": _decimal_string(spacing[2]),
        "0020|000d": _new_uid(),
        "0020|000e": _new_uid(),
        "0020|0011": "1",
        "0020|0052": _new_uid(),
        "0020|0037": orientation,
        "0028|0030": f"{_decimal_string(spacing[1])}\\{_decimal_string(spacing[0])}",
    }
    if slope is not None and intercept is not None:
        series_tags.update(
            {
                "0028|1052": _decimal_string(intercept),
                "0028|1053": _decimal_string(slope),
                "0028|0100": "16",
                "0028|0101": "16",
                "0028|0102": "15",
                "0028|0103": "1",
            }
        )
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    digits = max(4, len(str(voxels.shape[0])))
    for k in range(voxels.shape[0]):
        plane = voxels[k : k + 1]
        if slope is not None and intercept is not None:
            # Hand GDCM the already quantised values; it divides them back to exact integers.
            plane = intercept + slope * np.clip(
                np.rint((plane.astype(np.float64) - intercept) / slope), -32767, 32767
            )
        position = origin + k * spacing[2] * direction[:, 2]
        slice_image = sitk.GetImageFromArray(np.ascontiguousarray(plane), isVector=image.is_rgb)
        slice_image.SetSpacing(spacing)
        slice_image.SetOrigin(tuple(position))
        slice_image.SetDirection(tuple(direction.ravel()))
        for key, value in series_tags.items():
            slice_image.SetMetaData(key, value)
        slice_image.SetMetaData("0008|0018", _new_uid())
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0020|0032", "\\".join(_decimal_string(v) for v in position))
        writer.SetFileName(str(folder / f"slice_{k + 1:0{digits}d}.dcm"))
        writer.Execute(slice_image)


def _new_uid() -> str:
    """A globally unique DICOM UID derived from a random UUID (PS3.5 B.2: root 2.25)."""
    return f"2.25.{uuid.uuid4().int}"
