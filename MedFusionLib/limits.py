"""Bounding the memory a read may take by what the file can honestly hold.

:func:`MedFusionLib.io.read_image` calls :func:`check_data` after the header is parsed and
before any voxel is allocated:

1. An uncompressed file must hold the bytes its header claims (voxels x bytes per voxel).
2. A deflate stream (``.nii.gz``, NRRD ``gzip``, compressed MetaImage, PNG) cannot expand
   more than :data:`DEFLATE_MAX_RATIO` times.
3. The working memory the image leads to (:data:`WORKING_BYTES_PER_SAMPLE` per voxel and
   component) must stay under :func:`memory_limit`.
4. A large compressed file whose ratio is beyond what real images reach
   (:data:`STREAM_CHECK_RATIO`) is decompressed in chunks, without allocating the image,
   and refused when every voxel has the same value: the signature of a decompression bomb.

Each refusal is an :class:`~MedFusionLib.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
import re
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import InputError, ParameterError
from .headers import GZIP_MAGIC, DataLayout, PngHeader

DEFLATE_MAX_RATIO = 1100
"""The most a deflate stream can expand, rounded up. Deflate's longest match is 258 bytes,
coded in at least 2 bits (1-bit literal/length code plus a 1-bit distance code, the best a
Huffman code can do), so a stream cannot exceed 258 * 8 / 2 = 1032 decoded bytes per stored
byte (zlib's documentation: "the maximum compression ratio is 1032:1"); 1100 leaves room for
tiny files whose headers dominate. (bzip2 has no such bound, but ITK's NrrdIO does not read
NRRD's bzip2 encoding at all: such a file is refused with its header.)"""

STREAM_CHECK_RATIO = 300
"""Decoded/stored ratio above which a large compressed file is streamed for a constant check.
Real images here: CT, MR and PET 1:1 to 3:1; the sparse tumour masks of ``sts/`` up to 491:1
(measured, 1-2 MB decoded), which :data:`STREAM_CHECK_MIN_BYTES` keeps out of the check."""

STREAM_CHECK_MIN_BYTES = 32 << 20
"""Decoded bytes below which no file is streamed: small images cannot threaten memory."""

WORKING_BYTES_PER_SAMPLE = 24
"""Peak working memory of a fusion per voxel (per colour component) of the image read.
Measured with ``/usr/bin/time -v`` on ``medfusion fuse`` (laplacian_pyramid, CPU), peak RSS
minus the 318 MB of an idle process: colin27 0.5 mm (35 M uint8 voxels) with colin27 1 mm
resampled onto it took 815 MB (23 bytes per voxel), colin27 1 mm with itself (7.1 M) 260 MB
(37 per voxel, the fixed costs weigh more). The image itself, its float32 copy, the
resampled second image, the normalised pair and the fused result are each 1-4 bytes a voxel."""

DEFAULT_MEMORY_FRACTION = 0.5
"""The share of available memory a read may lead to when :data:`MEMORY_LIMIT_VARIABLE` is unset."""

MEMORY_LIMIT_VARIABLE = "MEDFUSION_MEMORY_LIMIT"
"""Environment variable overriding the ceiling: bytes, or a number with a unit (``8G``,
``512MB``, ``1.5GiB``; k/M/G/T are powers of 1000, Ki/Mi/Gi/Ti of 1024)."""

_FALLBACK_MEMORY = 4 << 30  # when the available memory cannot be known
_CHUNK = 1 << 20
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


# --- the ceiling -----------------------------------------------------------------------------
def available_memory() -> int | None:
    """Bytes of memory available to a new allocation: ``MemAvailable`` (Linux), else free pages."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def parse_size(text: str) -> int:
    """Bytes from ``"123"``, ``"8G"``, ``"512 MB"``, ``"1.5GiB"`` (case-insensitive).

    Raises:
        ValueError: not a size.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?)(i?)b?\s*", text.lower())
    if not match:
        raise ValueError(text)
    number, unit, binary = match.groups()
    if binary and not unit:
        raise ValueError(text)
    scale = 1024 ** " kmgt".index(unit) if binary else _UNITS[unit]
    return int(float(number) * scale)


def memory_limit() -> int:
    """The working memory a read may lead to, in bytes.

    :data:`MEMORY_LIMIT_VARIABLE` when set, else :data:`DEFAULT_MEMORY_FRACTION` of
    :func:`available_memory` (4 GiB times the fraction when that is unknown).

    Raises:
        ParameterError: the variable is set but is not a positive size.
    """
    text = os.environ.get(MEMORY_LIMIT_VARIABLE, "").strip()
    if text:
        try:
            limit = parse_size(text)
        except ValueError:
            limit = 0
        if limit <= 0:
            raise ParameterError(
                f"{MEMORY_LIMIT_VARIABLE}={text!r} is not a memory size: use bytes or a number with "
                "a unit such as 8G, 512MB or 1.5GiB"
            )
        return limit
    return int((available_memory() or _FALLBACK_MEMORY) * DEFAULT_MEMORY_FRACTION)


def describe_bytes(count: float) -> str:
    """``"6.2 GB"``-style text for a byte count (powers of 1000)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{int(count)} bytes"


def check_working_memory(name: str | os.PathLike[str], samples: int) -> None:
    """Refuse an image of ``samples`` voxel components whose working memory exceeds the ceiling.

    Raises:
        InputError: the estimate (samples x :data:`WORKING_BYTES_PER_SAMPLE`) is above
            :func:`memory_limit`.
        ParameterError: see :func:`memory_limit`.
    """
    needed = samples * WORKING_BYTES_PER_SAMPLE
    limit = memory_limit()
    if needed > limit:
        source = MEMORY_LIMIT_VARIABLE
        if not os.environ.get(MEMORY_LIMIT_VARIABLE, "").strip():
            source = f"{DEFAULT_MEMORY_FRACTION:g} of the available memory; set {source} to change it"
        raise InputError(
            f"cannot read {name}: its {samples:,} voxel values would need about {describe_bytes(needed)} "
            f"of working memory, more than the limit of {describe_bytes(limit)} ({source})"
        )


# --- what the file can hold ------------------------------------------------------------------
def check_data(
    path: Path, layout: DataLayout, *, voxel_bytes: int, samples: int, period: int | None = None
) -> None:
    """Refuse a file whose header claims more than it can hold, or more memory than allowed.

    Args:
        path: the file (for messages).
        layout: where the voxels are (:mod:`MedFusionLib.headers`).
        voxel_bytes: bytes of voxels the header claims (voxels x components x component size,
            from ITK), unless ``layout`` knows them.
        samples: voxels x components, for the working-memory estimate.
        period: bytes per voxel in the decoded stream (from ITK), unless ``layout`` knows it.

    Raises:
        InputError: a missing or special data file, a file shorter than its claim, a ratio
            beyond deflate's, a working memory above :func:`memory_limit`, or a constant image
            in a file compressed beyond :data:`STREAM_CHECK_RATIO`.
    """
    sizes = check_data_files(path, layout)
    if layout.voxel_bytes is not None:
        voxel_bytes = layout.voxel_bytes
    decoded = layout.prefix * len(layout.files) + voxel_bytes
    if layout.encoding == "png" and layout.png is not None:
        stored = layout.png.compressed_bytes
    else:
        stored = sum(max(0, size - max(layout.offset, 0)) for size in sizes)
    _check_stored_size(path, layout, stored, voxel_bytes, samples, decoded)
    check_working_memory(path, samples)
    if layout.compressed and decoded >= STREAM_CHECK_MIN_BYTES and decoded > STREAM_CHECK_RATIO * stored:
        if _is_constant(path, layout, decoded, layout.period or period or 1):
            raise InputError(
                f"cannot read {path}: all its {samples:,} voxel values are the same, stored "
                f"{decoded / max(stored, 1):.0f}:1 compressed (a decompression bomb, or an empty image)"
            )


def check_data_files(path: Path, layout: DataLayout) -> list[int]:
    """The sizes of the data files, each of which must exist and be a regular file.

    Called before ITK reads the header: ITK's NRRD reader opens a detached data file
    already then, and a FIFO would block it forever.

    Raises:
        InputError: a data file is missing, unreachable or not a regular file.
    """
    return [_data_file_size(path, data_file) for data_file in layout.files]


def _data_file_size(path: Path, data_file: Path) -> int:
    """The size of a data file, which must exist and be a regular file."""
    if data_file == path:
        return path.stat().st_size
    try:
        info = data_file.stat()
    except FileNotFoundError:
        raise InputError(f"cannot read {path}: its data file {data_file} is missing") from None
    except OSError as error:
        raise InputError(f"cannot read {path}: data file {data_file}: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"cannot read {path}: its data file {data_file} is not a regular file")
    return info.st_size


def _check_stored_size(
    path: Path, layout: DataLayout, stored: int, voxel_bytes: int, samples: int, decoded: int
) -> None:
    if layout.encoding == "raw":
        if stored < voxel_bytes:
            raise InputError(
                f"cannot read {path}: truncated file (it holds {stored:,} bytes of voxels, its header "
                f"claims {voxel_bytes:,})"
            )
    elif layout.encoding == "text":
        if stored < 2 * samples - 1:
            raise InputError(
                f"cannot read {path}: its {stored:,} bytes of text cannot hold the {samples:,} numbers "
                "its header claims"
            )
    elif layout.encoding == "hex":
        if stored < 2 * voxel_bytes:
            raise InputError(
                f"cannot read {path}: its {stored:,} bytes of hex cannot hold the {voxel_bytes:,} bytes "
                "its header claims"
            )
    elif layout.compressed and decoded > DEFLATE_MAX_RATIO * max(stored, 1):
        raise InputError(
            f"cannot read {path}: its header claims {describe_bytes(decoded)} of voxel data, more "
            f"than {stored:,} bytes of compressed data can hold (deflate expands at most "
            f"{DEFLATE_MAX_RATIO}:1)"
        )


# --- streaming -------------------------------------------------------------------------------
class ConstantBytes:
    """Whether a byte stream repeats one voxel's bytes throughout (fed in chunks).

    Args:
        period: bytes per voxel.
    """

    def __init__(self, period: int) -> None:
        self.period = max(1, period)
        self.seen = 0
        self._first = b""
        self._reference = b""

    def feed(self, data: bytes) -> bool:
        """Take the next bytes; ``False`` as soon as they differ from the first voxel's."""
        if len(self._first) < self.period:
            take = data[: self.period - len(self._first)]
            self._first += take
            self.seen += len(take)
            data = data[len(take) :]
            if len(self._first) < self.period:
                return True
            self._reference = self._first * (_CHUNK // self.period + 2)
        position = 0
        span = len(self._reference) - self.period
        while position < len(data):
            phase = self.seen % self.period
            count = min(len(data) - position, span)
            if data[position : position + count] != self._reference[phase : phase + count]:
                return False
            position += count
            self.seen += count
        return True


def _decoded_chunks(data_file: Path, offset: int) -> Iterator[bytes]:
    """The decompressed stream (zlib or gzip) of one data file from ``offset``, in chunks of at most 1 MiB.

    Concatenated gzip members are followed; other trailing bytes end it.

    Raises:
        zlib.error, OSError, EOFError, ValueError: corrupt data (the caller names the file).
    """
    with open(data_file, "rb") as stream:
        stream.seek(offset)
        yield from _zlib_chunks(stream)


def _zlib_chunks(stream: BinaryIO) -> Iterator[bytes]:
    decompressor = zlib.decompressobj(47)  # zlib or gzip header, detected
    pending = b""
    while True:
        if not pending:
            pending = stream.read(_CHUNK)
            if not pending:
                return
        output = decompressor.decompress(pending, _CHUNK)
        pending = decompressor.unconsumed_tail
        if output:
            yield output
        if decompressor.eof:
            pending = decompressor.unused_data + pending
            if len(pending) < 2:
                pending += stream.read(_CHUNK)
            if not pending.startswith(GZIP_MAGIC):
                return
            decompressor = zlib.decompressobj(47)  # the next gzip member


def decoded_length(layout: DataLayout, *, at_most: int) -> int:
    """How many bytes the compressed data files decode to, counting in chunks up to ``at_most``.

    Raises:
        zlib.error, OSError, EOFError, ValueError: corrupt data.
    """
    total = 0
    for data_file in layout.files:
        for chunk in _decoded_chunks(data_file, max(layout.offset, 0)):
            total += len(chunk)
            if total >= at_most:
                return total
    return total


def _is_constant(path: Path, layout: DataLayout, decoded: int, period: int) -> bool:
    """Stream the voxels without allocating them; True when every voxel is the same."""
    try:
        if layout.encoding == "png" and layout.png is not None:
            return _png_is_constant(path, layout.png)
        needed = decoded - layout.prefix * len(layout.files)
        scan = ConstantBytes(period)
        total = 0
        for data_file in layout.files:
            skip = layout.prefix
            for chunk in _decoded_chunks(data_file, max(layout.offset, 0)):
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                chunk = chunk[: needed - total]
                total += len(chunk)
                if not scan.feed(chunk):
                    return False
                if total >= needed:
                    break
    except (zlib.error, OSError, EOFError, ValueError):
        raise InputError(f"cannot read {path}: corrupt compressed data") from None
    if total < needed:
        raise InputError(
            f"cannot read {path}: truncated compressed data ({total:,} of the {needed:,} bytes of "
            "voxels its header claims)"
        )
    return True


# --- PNG rows --------------------------------------------------------------------------------
class PngConstantRows:
    """Whether a PNG's decompressed IDAT stream is a constant image, fed in chunks.

    Each row is compared with what the encoder's filter (None, Sub, Up, Average, Paeth) makes
    of a row of one repeated pixel, given the row above, so nothing is unfiltered and no
    more than a row is kept. The pixel is the first row's first pixel, which every filter
    stores unchanged.
    """

    def __init__(self, png: PngHeader) -> None:
        self.png = png
        self.passes = png.passes()
        self.pass_index = 0
        self.row_in_pass = 0
        self.pixel: np.ndarray | None = None
        self._buffer = bytearray()
        self._expected: dict[tuple[int, bool], list[bytes]] = {}

    @property
    def complete(self) -> bool:
        """True once every row has been seen (and matched)."""
        return self.pass_index >= len(self.passes)

    def feed(self, data: bytes) -> bool:
        """Take the next decompressed bytes; ``False`` as soon as a row is not the constant one."""
        self._buffer += data
        position = 0
        while not self.complete:
            width, height = self.passes[self.pass_index]
            size = 1 + self.png.row_bytes(width)
            if len(self._buffer) - position < size:
                break
            row = bytes(self._buffer[position : position + size])
            position += size
            if not self._matches(row, width, first=self.row_in_pass == 0):
                return False
            self.row_in_pass += 1
            if self.row_in_pass == height:
                self.pass_index, self.row_in_pass = self.pass_index + 1, 0
        del self._buffer[:position]
        return True

    def _matches(self, row: bytes, width: int, *, first: bool) -> bool:
        kind = row[0]
        if kind > 4:
            return False
        if self.pixel is None:
            if self.png.bits_per_pixel >= 8:
                self.pixel = np.frombuffer(row[1 : 1 + self.png.filter_unit], dtype=np.uint8).copy()
            else:
                bits = np.unpackbits(np.frombuffer(row[1:2], dtype=np.uint8))
                self.pixel = bits[: self.png.bits_per_pixel].copy()
        key = (width, first)
        if key not in self._expected:
            self._expected[key] = self._filtered_rows(width, first=first)
        return row[1:] == self._expected[key][kind]

    def _raw_row(self, width: int) -> np.ndarray:
        assert self.pixel is not None
        if self.png.bits_per_pixel >= 8:
            return np.tile(self.pixel, width)
        bits = np.tile(self.pixel, width)
        return np.packbits(bits)  # pads the last byte with zero bits, as encoders do

    def _filtered_rows(self, width: int, *, first: bool) -> list[bytes]:
        """The row of one repeated pixel under each of the five filters."""
        raw = self._raw_row(width).astype(np.int16)
        unit = self.png.filter_unit
        prior = np.zeros_like(raw) if first else raw
        left = np.concatenate([np.zeros(unit, np.int16), raw[:-unit]])[: raw.size]
        up_left = np.concatenate([np.zeros(unit, np.int16), prior[:-unit]])[: raw.size]
        estimate = left + prior - up_left
        pa, pb, pc = np.abs(estimate - left), np.abs(estimate - prior), np.abs(estimate - up_left)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prior, up_left))
        predictions = [np.zeros_like(raw), left, prior, (left + prior) // 2, paeth]
        return [((raw - p) & 0xFF).astype(np.uint8).tobytes() for p in predictions]


def _png_is_constant(path: Path, png: PngHeader) -> bool:
    rows = PngConstantRows(png)
    decompressor = zlib.decompressobj()
    with open(path, "rb") as stream:
        for offset, length in png.idat:
            stream.seek(offset)
            remaining = length
            while remaining > 0:
                pending = stream.read(min(_CHUNK, remaining))
                if not pending:
                    break
                remaining -= len(pending)
                while pending and not decompressor.eof:
                    output = decompressor.decompress(pending, _CHUNK)
                    pending = decompressor.unconsumed_tail
                    if not rows.feed(output):
                        return False
                if rows.complete:
                    return True
    return rows.complete
