"""What an image file's header says about its voxels, read before any voxel is allocated.

ITK's readers report a file's size, pixel type and geometry (``ReadImageInformation``) but
not where the voxels are or how they are encoded, and ITK's NIfTI library silently repairs
some header faults (a voxel size of 0 or NaN becomes 1 mm, a negative dimension becomes 1, a
sheared sform is dropped for the qform). :mod:`MedFusionLib.io` needs both to bound a read by
what the file can honestly hold, so this module parses:

- NIfTI-1 and NIfTI-2 (both byte orders, gzipped or not): the whole header, validated
  (:func:`nifti_header`). Hand-written on purpose: the library fixes what must be refused.
- NRRD and MetaImage: only the fields ITK does not expose (encoding, data files, skips);
  ITK stays the judge of everything else (:func:`nrrd_layout`, :func:`metaimage_layout`).
- PNG: the IHDR chunk and where the IDAT chunks lie (:func:`png_header`).
- DICOM: the transfer syntax of the file meta group (:func:`dicom_transfer_syntax`).

Faults are raised as :class:`HeaderFault` whose message is the reason only; the caller adds
the file's name.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .image import DIRECTION_TOLERANCE

GZIP_MAGIC = b"\x1f\x8b"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

_MAX_HEADER_BYTES = 16 << 20  # a text header (NRRD, MetaImage) longer than this is left to ITK
_MAX_DATA_FILES = 1 << 20
_MAX_PNG_CHUNKS = 1 << 20


class HeaderFault(ValueError):
    """A header that cannot be used as it is; the message says why (without the file name)."""


@dataclass(frozen=True)
class DataLayout:
    """Where a file's voxels lie and how they are encoded.

    Attributes:
        files: the data files, in order (the header file itself for single-file formats).
        offset: bytes before the (encoded) voxels in each data file; ``-1`` for raw voxels
            that end the file (NRRD ``byte skip: -1``, MetaImage ``HeaderSize = -1``).
        encoding: ``"raw"``, ``"text"`` (decimal numbers), ``"hex"``, ``"gzip"``, ``"zlib"``
            (zlib or gzip stream) or ``"png"`` (the IDAT chunks' zlib stream).
        prefix: decoded bytes before the voxels in each file's stream (the header inside a
            ``.nii.gz``, NRRD's ``byte skip`` of compressed data).
        voxel_bytes: the bytes of voxels stored, when the header alone tells: NIfTI (from
            its datatype; ITK reports a scaled file as float32, twice an int16's bytes) and
            PNG (the decoded rows with their filter bytes). Otherwise ITK's size and pixel
            type tell.
        period: bytes per voxel in the decoded stream when the header alone tells.
        png: the PNG header, for PNG files.
    """

    files: tuple[Path, ...]
    offset: int = 0
    encoding: str = "raw"
    prefix: int = 0
    voxel_bytes: int | None = None
    period: int | None = None
    png: PngHeader | None = None

    @property
    def compressed(self) -> bool:
        """True for the deflate encodings (gzip, zlib, PNG): their decoded size is not their stored size."""
        return self.encoding in ("gzip", "zlib", "png")


# --- NIfTI -----------------------------------------------------------------------------------
# datatype code -> (bytes per voxel, name). RGBA32 is read by ITK and refused later (4 components).
_NIFTI_DATATYPES: dict[int, tuple[int, str]] = {
    2: (1, "uint8"),
    4: (2, "int16"),
    8: (4, "int32"),
    16: (4, "float32"),
    64: (8, "float64"),
    128: (3, "RGB24"),
    256: (1, "int8"),
    512: (2, "uint16"),
    768: (4, "uint32"),
    1024: (8, "int64"),
    1280: (8, "uint64"),
    2304: (4, "RGBA32"),
}
_NIFTI_REFUSED: dict[int, str] = {
    1: "1-bit (binary) voxels",
    32: "complex-valued voxels (complex64)",
    1536: "128-bit float voxels",
    1792: "complex-valued voxels (complex128)",
    2048: "complex-valued voxels (complex256)",
}


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI-1/-2 header that decide where the voxels are and where they sit."""

    version: int
    byte_order: str
    single_file: bool
    dims: tuple[int, ...]
    datatype: int
    pixdim: tuple[float, ...]
    vox_offset: float
    qform_code: int
    sform_code: int
    quatern: tuple[float, ...]
    srow: tuple[float, ...] = field(repr=False)

    @property
    def header_size(self) -> int:
        """348 (NIfTI-1) or 540 (NIfTI-2)."""
        return 348 if self.version == 1 else 540

    @property
    def bytes_per_voxel(self) -> int:
        """From the datatype code (the library ignores ``bitpix``, so does this)."""
        return _NIFTI_DATATYPES[self.datatype][0]

    @property
    def voxel_offset(self) -> int:
        """Where the voxels start in the (decompressed) file."""
        return max(int(self.vox_offset), self.header_size)

    @property
    def voxel_bytes(self) -> int:
        """Bytes of voxel data the header claims."""
        return math.prod(self.dims) * self.bytes_per_voxel


def nifti_header(data: bytes) -> NiftiHeader:
    """Parse and validate the first bytes (at least 540 when the file has them) of a NIfTI file.

    Refused, with the reason: a header size field other than 348/540 in either byte order, a
    missing magic, ``dim[0]`` outside 1..7, a dimension below 1, a voxel size (``pixdim`` of a
    spatial axis) that is not finite and positive, a datatype the engine cannot hold (complex,
    1-bit, 128-bit float, unknown), a non-finite or negative ``vox_offset``, and quaternion or
    sform values ITK would silently replace (not finite, a quaternion longer than 1, a
    sheared or singular sform).

    Raises:
        HeaderFault: what is wrong.
    """
    if len(data) < 348:
        raise HeaderFault(f"not a NIfTI file ({len(data)} bytes, shorter than a NIfTI header)")
    for order in "<>":
        (size,) = struct.unpack(order + "i", data[:4])
        if size == 348:
            return _validated(_nifti1(data, order))
        if size == 540 and len(data) >= 540:
            return _validated(_nifti2(data, order))
    raise HeaderFault("not a NIfTI file (its first 4 bytes are not a NIfTI-1/-2 header size)")


def _nifti1(data: bytes, order: str) -> NiftiHeader:
    magic = data[344:348]
    if magic not in (b"n+1\0", b"ni1\0"):
        raise HeaderFault(f"not a NIfTI-1 file (magic {magic!r}, expected 'n+1')")
    return NiftiHeader(
        version=1,
        byte_order=order,
        single_file=magic == b"n+1\0",
        dims=struct.unpack(order + "8h", data[40:56]),
        datatype=struct.unpack(order + "h", data[70:72])[0],
        pixdim=struct.unpack(order + "8f", data[76:108]),
        vox_offset=struct.unpack(order + "f", data[108:112])[0],
        qform_code=struct.unpack(order + "h", data[252:254])[0],
        sform_code=struct.unpack(order + "h", data[254:256])[0],
        quatern=struct.unpack(order + "6f", data[256:280]),
        srow=struct.unpack(order + "12f", data[280:328]),
    )


def _nifti2(data: bytes, order: str) -> NiftiHeader:
    magic = data[4:12]
    if magic[:4] not in (b"n+2\0", b"ni2\0"):
        raise HeaderFault(f"not a NIfTI-2 file (magic {magic[:4]!r}, expected 'n+2')")
    return NiftiHeader(
        version=2,
        byte_order=order,
        single_file=magic[:4] == b"n+2\0",
        dims=struct.unpack(order + "8q", data[16:80]),
        datatype=struct.unpack(order + "h", data[12:14])[0],
        pixdim=struct.unpack(order + "8d", data[104:168]),
        vox_offset=float(struct.unpack(order + "q", data[168:176])[0]),
        qform_code=struct.unpack(order + "i", data[344:348])[0],
        sform_code=struct.unpack(order + "i", data[348:352])[0],
        quatern=struct.unpack(order + "6d", data[352:400]),
        srow=struct.unpack(order + "12d", data[400:496]),
    )


def _validated(raw: NiftiHeader) -> NiftiHeader:
    ndim = raw.dims[0]
    if not 1 <= ndim <= 7:
        raise HeaderFault(f"dim[0] = {ndim} is not a number of dimensions (1..7)")
    dims = tuple(int(d) for d in raw.dims[1 : ndim + 1])
    for axis, size in enumerate(dims, start=1):
        if size < 1:
            raise HeaderFault(f"dimension {axis} is {size} (dim[{axis}] must be at least 1)")
    for axis in range(1, min(ndim, 3) + 1):
        value = raw.pixdim[axis]
        if not (math.isfinite(value) and value > 0):
            raise HeaderFault(f"voxel size pixdim[{axis}] = {value:g} is not a positive finite number")
    if raw.datatype in _NIFTI_REFUSED:
        raise HeaderFault(f"{_NIFTI_REFUSED[raw.datatype]} are not supported (NIfTI datatype {raw.datatype})")
    if raw.datatype not in _NIFTI_DATATYPES:
        raise HeaderFault(f"unknown NIfTI datatype {raw.datatype}")
    if not (math.isfinite(raw.vox_offset) and raw.vox_offset >= 0):
        raise HeaderFault(f"vox_offset = {raw.vox_offset:g} is not a byte offset")
    if not raw.single_file:
        raise HeaderFault("it is a NIfTI header whose voxels are in a separate .img file (not supported)")
    if raw.qform_code > 0:
        _check_quaternion(raw.quatern)
    if raw.sform_code > 0:
        _check_sform(raw.srow)
    return NiftiHeader(
        version=raw.version,
        byte_order=raw.byte_order,
        single_file=raw.single_file,
        dims=dims,
        datatype=raw.datatype,
        pixdim=raw.pixdim,
        vox_offset=raw.vox_offset,
        qform_code=raw.qform_code,
        sform_code=raw.sform_code,
        quatern=raw.quatern,
        srow=raw.srow,
    )


def _check_quaternion(quatern: tuple[float, ...]) -> None:
    if not all(math.isfinite(q) for q in quatern):
        raise HeaderFault(f"the qform (quatern_b/c/d, qoffset) {_floats(quatern)} is not finite")
    length = quatern[0] ** 2 + quatern[1] ** 2 + quatern[2] ** 2
    if length > 1.0 + 1e-3:
        raise HeaderFault(f"the qform quaternion {_floats(quatern[:3])} is longer than 1 (not a rotation)")


def _check_sform(srow: tuple[float, ...]) -> None:
    if not all(math.isfinite(s) for s in srow):
        raise HeaderFault(f"the sform (srow_x/y/z) {_floats(srow)} is not finite")
    matrix = np.asarray(srow, dtype=np.float64).reshape(3, 4)[:, :3]
    norms = np.linalg.norm(matrix, axis=0)
    if not (norms > 0).all():
        raise HeaderFault(f"the sform (srow_x/y/z) {_floats(srow)} is singular")
    axes = matrix / norms
    deviation = float(np.abs(axes.T @ axes - np.eye(3)).max())
    if deviation > DIRECTION_TOLERANCE:
        raise HeaderFault(
            f"the sform (srow_x/y/z) {_floats(srow)} is sheared or singular (axes not orthogonal, "
            f"|D^T D - I| = {deviation:.2g}); ITK would silently use another orientation"
        )


def _floats(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def read_nifti(path: Path) -> tuple[NiftiHeader, DataLayout]:
    """The validated header of a ``.nii``/``.nii.gz`` file and where its voxels are.

    Compression is recognised by the gzip magic, as the NIfTI library does (a ``.nii.gz``
    that is not gzipped is read as it is).

    Raises:
        HeaderFault: see :func:`nifti_header`; corrupt compressed data.
        OSError: the file cannot be opened or read.
    """
    with open(path, "rb") as stream:
        compressed = path.name.lower().endswith(".gz") and stream.read(2) == GZIP_MAGIC
        stream.seek(0)
        if compressed:
            try:
                with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
                    data = unzipped.read(540)
            except (EOFError, zlib.error, gzip.BadGzipFile):
                raise HeaderFault("truncated or corrupt compressed data") from None
        else:
            data = stream.read(540)
    header = nifti_header(data)
    if compressed:
        layout = DataLayout(
            files=(path,),
            encoding="gzip",
            prefix=header.voxel_offset,
            voxel_bytes=header.voxel_bytes,
            period=header.bytes_per_voxel,
        )
    else:
        layout = DataLayout(
            files=(path,),
            offset=header.voxel_offset,
            voxel_bytes=header.voxel_bytes,
            period=header.bytes_per_voxel,
        )
    return header, layout


# --- NRRD and MetaImage -----------------------------------------------------------------------
_NRRD_ENCODINGS = {
    "raw": "raw",
    "txt": "text",
    "text": "text",
    "ascii": "text",
    "hex": "hex",
    "gz": "gzip",
    "gzip": "gzip",
}  # bzip2 is missing on purpose: ITK's NrrdIO cannot read it (and refuses it from the header)


def _text_lines(path: Path) -> Iterator[tuple[str, int]]:
    """Each line of a header's first :data:`_MAX_HEADER_BYTES` bytes and the byte offset after it."""
    with open(path, "rb") as stream:
        while stream.tell() < _MAX_HEADER_BYTES:
            line = stream.readline(_MAX_HEADER_BYTES)
            if not line:
                return
            yield line.rstrip(b"\r\n").decode("latin-1"), stream.tell()


def _header_lines(path: Path, *, stop_at_blank: bool) -> tuple[list[str], int]:
    """The text lines of a header and the byte offset after them (after the blank line)."""
    lines: list[str] = []
    end = 0
    for text, end in _text_lines(path):  # noqa: B007 (the offset after the last line read is kept)
        if stop_at_blank and not text:
            break
        lines.append(text)
    return lines, end


def nrrd_layout(path: Path) -> DataLayout | None:
    """Where a NRRD file's voxels are (attached or in data files) and their encoding.

    ``None`` when the file is not NRRD or uses a field this module does not model: ITK then
    reads (or refuses) it on its own, still under the memory ceiling.

    Raises:
        HeaderFault: a data file list that cannot be expanded.
        OSError: the header cannot be read.
    """
    lines, end = _header_lines(path, stop_at_blank=True)
    if not lines or not lines[0].startswith("NRRD000"):
        return None
    fields: dict[str, str] = {}
    listed: list[str] | None = None
    for line in lines[1:]:
        if listed is not None:
            listed.append(line.strip())
            continue
        if line.startswith("#") or ":=" in line:
            continue
        key, separator, value = line.partition(":")
        if not separator:
            continue
        key, value = key.strip().lower().replace(" ", ""), value.strip()
        fields[key] = value
        if key == "datafile" and value.split()[:1] == ["LIST"]:
            listed = []
    encoding = _NRRD_ENCODINGS.get(fields.get("encoding", "").lower())
    if encoding is None:
        return None
    try:
        byte_skip = int(fields.get("byteskip", "0"))
        line_skip = int(fields.get("lineskip", "0"))
    except ValueError:
        return None
    if line_skip < 0 or byte_skip < -1 or (byte_skip == -1 and encoding != "raw"):
        return None
    data_file = fields.get("datafile")
    if data_file is None:
        files, start = (path,), end
    else:
        files = _data_files(path, data_file, listed)
        start = 0
    offset = _after_lines(files[0], start, line_skip) if line_skip else start
    if encoding == "raw":
        return DataLayout(files=files, offset=-1 if byte_skip == -1 else offset + byte_skip)
    return DataLayout(files=files, offset=offset, encoding=encoding, prefix=byte_skip)


def metaimage_layout(path: Path) -> DataLayout | None:
    """Where a MetaImage's voxels are (``LOCAL`` or data files) and their encoding.

    ``None`` when the header has no ``ElementDataFile`` (ITK refuses such a file).

    Raises:
        HeaderFault: a data file list that cannot be expanded.
        OSError: the header cannot be read.
    """
    fields: dict[str, str] = {}
    listed: list[str] | None = None
    end = 0
    for text, after in _text_lines(path):
        if listed is not None:
            if text.strip():
                listed.append(text.strip())
            continue
        key, separator, value = text.partition("=")
        if not separator:
            continue
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            end = after
            if value.split()[:1] != ["LIST"]:
                break
            listed = []
    data_file = fields.get("ElementDataFile")
    if data_file is None:
        return None
    compressed = fields.get("CompressedData", "False").lower() == "true"
    binary = fields.get("BinaryData", "True").lower() == "true"
    encoding = "zlib" if compressed else ("raw" if binary else "text")
    if data_file == "LOCAL":
        return DataLayout(files=(path,), offset=end, encoding=encoding)
    try:
        header_size = int(fields.get("HeaderSize", "0"))
    except ValueError:
        header_size = 0
    files = _data_files(path, data_file, listed)
    if header_size == -1 and encoding == "raw":
        return DataLayout(files=files, offset=-1)
    return DataLayout(files=files, offset=max(header_size, 0), encoding=encoding)


def _data_files(header: Path, value: str, listed: list[str] | None) -> tuple[Path, ...]:
    """The data files a header names: one name, ``LIST`` (names follow), or ``format min max step``."""
    words = value.split()
    if listed is not None:
        names = [name for name in listed if name]
    elif "%" in words[0] and len(words) >= 4:
        try:
            first, last, step = (int(word) for word in words[1:4])
        except ValueError:
            raise HeaderFault(f"cannot expand the data file pattern {value!r}") from None
        if step == 0 or (last - first) // step + 1 > _MAX_DATA_FILES:
            raise HeaderFault(f"cannot expand the data file pattern {value!r}")
        try:
            names = [words[0] % k for k in range(first, last + (1 if step > 0 else -1), step)]
        except (TypeError, ValueError):
            raise HeaderFault(f"cannot expand the data file pattern {value!r}") from None
    else:
        names = [value]
    if not names:
        raise HeaderFault("its header names no data file")
    return tuple(header.parent / name for name in names[:_MAX_DATA_FILES])


def _after_lines(path: Path, start: int, count: int) -> int:
    """The offset after ``count`` lines from ``start`` (NRRD ``line skip``)."""
    with open(path, "rb") as stream:
        stream.seek(start)
        for _ in range(count):
            if not stream.readline(_MAX_HEADER_BYTES):
                break
        return stream.tell()


# --- PNG -------------------------------------------------------------------------------------
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


@dataclass(frozen=True)
class PngHeader:
    """A PNG's IHDR and the (file offset, length) of each IDAT chunk's data."""

    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlaced: bool
    idat: tuple[tuple[int, int], ...]

    @property
    def bits_per_pixel(self) -> int:
        """Bits per pixel in the decoded rows."""
        return _PNG_CHANNELS[self.colour_type] * self.bit_depth

    @property
    def filter_unit(self) -> int:
        """The byte distance PNG's filters look back (``bpp`` in the specification)."""
        return max(1, self.bits_per_pixel // 8)

    def row_bytes(self, width: int) -> int:
        """Bytes of one decoded row of ``width`` pixels, without its filter-type byte."""
        return (width * self.bits_per_pixel + 7) // 8

    def passes(self) -> list[tuple[int, int]]:
        """``(width, height)`` of each non-empty pass: one, or Adam7's seven when interlaced."""
        if not self.interlaced:
            return [(self.width, self.height)]
        sizes = [
            (-(-(self.width - x0) // dx), -(-(self.height - y0) // dy))
            for x0, y0, dx, dy in _ADAM7
            if self.width > x0 and self.height > y0
        ]
        return [(w, h) for w, h in sizes if w > 0 and h > 0]

    @property
    def decoded_bytes(self) -> int:
        """Size of the decompressed IDAT stream: every row plus its filter-type byte."""
        return sum(h * (1 + self.row_bytes(w)) for w, h in self.passes())

    @property
    def compressed_bytes(self) -> int:
        """Bytes of IDAT data in the file."""
        return sum(length for _, length in self.idat)


def png_header(path: Path) -> PngHeader | None:
    """Parse a PNG's IHDR and find its IDAT chunks (``None`` when it has no valid IHDR).

    A file cut short keeps the IDAT bytes that are there; Pillow reports the truncation.

    Raises:
        HeaderFault: the file does not start with the PNG signature.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as stream:
        size = stream.seek(0, 2)
        stream.seek(0)
        if stream.read(8) != PNG_SIGNATURE:
            raise HeaderFault("not a PNG image")
        head = stream.read(8 + 13)
        if len(head) < 21 or head[4:8] != b"IHDR" or struct.unpack(">I", head[:4])[0] != 13:
            return None
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[8:21])
        if not (0 < width < 2**31 and 0 < height < 2**31) or depth not in _PNG_DEPTHS.get(colour, ()):
            return None
        position = 8 + 8 + 13 + 4
        idat: list[tuple[int, int]] = []
        for _ in range(_MAX_PNG_CHUNKS):
            stream.seek(position)
            chunk = stream.read(8)
            if len(chunk) < 8:
                break
            length, kind = struct.unpack(">I4s", chunk)
            if kind == b"IDAT":
                idat.append((position + 8, max(0, min(length, size - position - 8))))
            if kind == b"IEND":
                break
            position += 12 + length
    return PngHeader(width, height, depth, colour, interlace == 1, tuple(idat))


# --- DICOM -----------------------------------------------------------------------------------
UNCOMPRESSED_TRANSFER_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
)
"""Implicit VR little endian, explicit VR little endian, explicit VR big endian: the pixel
data are stored as they are, so a file must hold Rows x Columns x samples x bits / 8 bytes."""

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def dicom_transfer_syntax(path: Path) -> str | None:
    """The Transfer Syntax UID (0002,0010) of a DICOM Part 10 file, ``None`` if it has none.

    Only the file meta group is read (explicit VR little endian by definition).

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as stream:
        data = stream.read(16384)
    if data[128:132] != b"DICM":
        return None
    position = 132
    while position + 8 <= len(data):
        group, element = struct.unpack("<HH", data[position : position + 4])
        if group != 0x0002:
            return None
        vr = data[position + 4 : position + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack("<I", data[position + 8 : position + 12])
            value_start = position + 12
        else:
            (length,) = struct.unpack("<H", data[position + 6 : position + 8])
            value_start = position + 8
        if element == 0x0010:
            return data[value_start : value_start + length].rstrip(b"\0 ").decode("ascii", "replace")
        position = value_start + length
    return None
