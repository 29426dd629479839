"""The reliability catalogue (issue 12): every bad input and fault that ``test_reliability.py`` tries.

Each :class:`Case` states what is tried, what must happen, how its inputs are built (in a fresh
folder, from small arrays or small crops of ``../shared/data``) and how it runs:

- ``cli``: ``MedFusionLib.cli.main(argv)`` in the test process (fd-level output captured);
- ``proc``: the ``medfusion`` command in a subprocess (memory limits, blocking files, crashes,
  dropped privileges);
- ``api``: a call of the public Python API in the test process;
- ``api-proc``: an API call in a subprocess (it could block);
- ``signal``: a subprocess that receives a signal while it writes its output;
- ``race``: two subprocesses writing the same output at once.

The catalogue doubles as documentation: ``Testing/reliability_table.py`` prints it as the
Markdown table of ``Docs/reliability.md``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import shutil
import signal
import socket
import struct
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from conftest import DATA

Mode = Literal["cli", "proc", "api", "api-proc", "signal", "race"]

# Bounds of the memory cases: the address-space limit the subprocess runs under and the
# peak resident set it may reach (a Python process with torch and SimpleITK imported holds
# about 0.3 GB).
MEMORY_LIMIT = 3 << 30
MAX_RSS = 1 << 30


# --- the data model ------------------------------------------------------------------------------
@dataclass
class Ctx:
    """Where a case builds its inputs.

    Args:
        work: the case's folder and working directory; every file in it is an input whose
            SHA-256 must not change, and its listing must be the same after the run.
        aside: a private folder that is not checked (reference results, logs).
        cache: a folder shared by all cases of a session, for the few larger inputs.
        mount: ``mount(size, read_only=False)`` mounts a fresh tmpfs and returns its path
            (the test skips the case with the reason where that is impossible).
    """

    work: Path
    aside: Path
    cache: Path
    mount: Callable[..., Path]


@dataclass
class Outcome:
    """What a run did."""

    code: int | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    timed_out: bool = False
    max_rss_kb: int | None = None
    error: BaseException | None = None  # api: the exception raised
    error_type: str | None = None  # api-proc: its class name
    error_is_medfusion: bool = False  # api-proc
    value: Any = None  # api: what the call returned


@dataclass
class Setup:
    """The concrete run of a case, made by its ``build`` in a fresh folder.

    Args:
        argv: the command line after ``medfusion`` (str or bytes items).
        call: the API call (``api``).
        script: Python statements run in a subprocess (``api-proc``).
        inputs: input files or folders outside ``work`` to hash before and after.
        watch: other folders whose listing must not change (a tmpfs).
        culprit: overrides :attr:`Case.culprit` (names known only once built).
        state: a fingerprint of in-memory inputs (arrays, scene nodes) compared before/after.
        check: further checks after the run; returns the problems found.
        output: the output being written (``signal`` and ``race``).
        ready: ``signal``: the signal is sent once this returns True for the output folder's
            new entries (default: as soon as any new entry appears).
        drop_dac: run the subprocess without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so that
            file permissions bind even though the tests run as root.
        cleanup: called after the case (e.g. clearing an MRML scene).
    """

    argv: Sequence[str | bytes] = ()
    call: Callable[[], Any] | None = None
    script: str | None = None
    inputs: Sequence[Path] = ()
    watch: Sequence[Path] = ()
    culprit: Sequence[str] | None = None
    state: Callable[[], Any] | None = None
    check: Callable[[Outcome], list[str]] | None = None
    output: Path | None = None
    ready: Callable[[list[Path]], bool] | None = None
    drop_dac: bool = False
    cleanup: Callable[[], None] | None = None


@dataclass(frozen=True)
class Case:
    """One kind of bad input or fault.

    Args:
        id: short unique name (the pytest id).
        area: ``input``, ``output``, ``memory``, ``parameter``, ``api``, ``signal`` or ``race``.
        command: the command or API function tried.
        tried: what is tried, in a few words (the catalogue's second column).
        build: makes the inputs in ``ctx.work`` and returns the :class:`Setup`.
        culprit: the error must name one of these (case-insensitive substrings).
        reason: where a wrong explanation is the known failure, the error must also say one of
            these (case-insensitive substrings).
        mode: how it runs (see the module docstring).
        exit: accepted exit statuses (``cli``/``proc``); ``(0,)`` for a case that must work.
        timeout: seconds before the run counts as blocked.
        memory: run under an address-space limit of :data:`MEMORY_LIMIT` and require a peak
            RSS below :data:`MAX_RSS`.
        signal: the signal a ``signal`` case sends.
        expect: what must happen (default: derived from the fields above).
    """

    id: str
    area: str
    command: str
    tried: str
    build: Callable[[Ctx], Setup]
    culprit: tuple[str, ...] = ()
    reason: tuple[str, ...] = ()
    mode: Mode = "cli"
    exit: tuple[int, ...] = (2,)
    timeout: float = 60.0
    memory: bool = False
    signal: int | None = None
    expect: str = ""

    def expectation(self) -> str:
        """What must happen, for the catalogue table."""
        if self.expect:
            return self.expect
        names = " or ".join(f"`{c}`" for c in self.culprit) or "the culprit"
        if self.mode in ("api", "api-proc"):
            text = f"a `MedFusionError` whose one-line message names {names}"
        elif self.exit == (0,):
            text = "works (exit 0)"
        else:
            text = f"exit 2, one line naming {names}"
        if self.reason:
            text += " and saying " + " or ".join(f"`{r}`" for r in self.reason)
        if self.memory:
            text += f"; peak RSS < {MAX_RSS >> 20} MB under a {MEMORY_LIMIT >> 30} GB limit"
        if self.timeout < 60:
            text += f"; within {self.timeout:g} s"
        return text


# --- small real images -----------------------------------------------------------------------------
@functools.cache
def mni_crop(name: str) -> np.ndarray:
    """A 20 x 20 x 10 (x, y, z) float32 crop of the middle of an SPM template (2 mm voxels)."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "mni" / f"spm_{name}.nii.gz"), sitk.sitkFloat32))
    return np.ascontiguousarray(array[40:50, 44:64, 35:55])


@functools.cache
def mni_4mm(name: str) -> Any:
    """An SPM template averaged to 4 mm (45 x 54 x 45), as a SimpleITK image (for registration)."""
    import SimpleITK as sitk

    return sitk.BinShrink(
        sitk.ReadImage(str(DATA / "mni" / f"spm_{name}.nii.gz"), sitk.sitkFloat32), (2, 2, 2)
    )


@functools.cache
def harvard_crop(modality: str) -> np.ndarray:
    """A 64 x 64 crop of Harvard MRI/PET pair 11: uint8 gray for MRI, RGB for PET."""
    from PIL import Image as PILImage

    with PILImage.open(DATA / "harvard" / "MRI_PET" / modality / "11.png") as picture:
        array = np.asarray(picture.convert("RGB"))[96:160, 96:160]
    return np.ascontiguousarray(array[..., 0] if modality == "MRI" else array)


def noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Uniform float32 noise in [0, 1) (incompressible: fills a small disk)."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def save(
    path: Path,
    array: np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
    compress: bool = False,
    vector: bool = False,
) -> Path:
    """Write ``array`` ((z,) y, x) with SimpleITK (not with the engine under test)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array, isVector=vector)
    dim = image.GetDimension()
    image.SetSpacing(tuple(spacing or (2.0,) * dim))
    if origin is not None:
        image.SetOrigin(tuple(origin))
    if direction is not None:
        image.SetDirection(tuple(direction))
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


def save_png(path: Path, array: np.ndarray, fmt: str = "PNG") -> Path:
    from PIL import Image as PILImage

    PILImage.fromarray(array).save(path, format=fmt)
    return path


def t1(path: Path) -> Path:
    return save(path, mni_crop("T1"))


def pet(path: Path) -> Path:
    return save(path, mni_crop("PET"))


def mri2d(path: Path) -> Path:
    return save_png(path, harvard_crop("MRI"))


def pet2d(path: Path) -> Path:
    return save_png(path, harvard_crop("PET"))


def cut(path: Path, fraction: float) -> Path:
    """Keep the first ``fraction`` of the file."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- hand-made files -------------------------------------------------------------------------------
def nifti_header(
    dims: Sequence[int], *, datatype: int = 16, bitpix: int = 32, pixdim: Sequence[float] | None = None
) -> bytes:
    """A NIfTI-1 single-file header (352 bytes, no qform/sform), little-endian."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, len(dims), *dims, *([1] * (7 - len(dims))))
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    spacing = list(pixdim or [1.0] * len(dims))
    struct.pack_into("<8f", header, 76, 1.0, *spacing, *([1.0] * (7 - len(spacing))))
    struct.pack_into("<f", header, 108, 352.0)
    header[344:348] = b"n+1\0"
    return bytes(header) + b"\0\0\0\0"


def patch_nifti(path: Path, offset: int, fmt: str, *values: float) -> Path:
    """Overwrite header fields of an uncompressed ``.nii`` in place."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<" + fmt, data, offset, *values)
    path.write_bytes(bytes(data))
    return path


NIFTI_DIM, NIFTI_PIXDIM = 40, 76


def nrrd(
    path: Path,
    array: np.ndarray | None = None,
    *,
    sizes: Sequence[int] | None = None,
    directions: str = "(2,0,0) (0,2,0) (0,0,2)",
    type: str = "float",
    encoding: str = "raw",
    data: bytes | None = None,
    extra: Sequence[str] = (),
) -> Path:
    """A NRRD file written by hand: attached data unless ``extra`` names a ``data file``."""
    if array is not None:
        sizes = sizes or tuple(reversed(array.shape))
        data = array.astype("<f4").tobytes() if data is None else data
    lines = ["NRRD0004", f"type: {type}", f"dimension: {len(sizes)}", f"sizes: {' '.join(map(str, sizes))}"]
    if directions and len(sizes) == 3:
        lines += [
            "space: left-posterior-superior",
            f"space directions: {directions}",
            "space origin: (0,0,0)",
        ]
    lines += ["endian: little", f"encoding: {encoding}", *extra]
    path.write_bytes(("\n".join(lines) + "\n\n").encode() + (data or b""))
    return path


def mha(path: Path, fields: Sequence[str], data: bytes) -> Path:
    """A MetaImage written by hand (``ElementDataFile = LOCAL`` last)."""
    text = "ObjectType = Image\n" + "".join(f"{line}\n" for line in fields) + "ElementDataFile = LOCAL\n"
    path.write_bytes(text.encode() + data)
    return path


def png_chunks(width: int, height: int, idat: bytes, colour_type: int = 0) -> bytes:
    """A PNG from its IHDR fields and IDAT payload."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def dicom_series(folder: Path, array: np.ndarray, *, spacing: float = 2.0) -> Path:
    """One CT slice per file with the tags a series reader needs (SimpleITK/GDCM writer)."""
    import SimpleITK as sitk

    folder.mkdir()
    series, study = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        plane = sitk.GetImageFromArray(array[k : k + 1].astype(np.int16))
        plane.SetSpacing((spacing, spacing, spacing))
        plane.SetOrigin((0.0, 0.0, k * spacing))
        for key, value in {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"2.25.{uuid.uuid4().int}",
            "0008|0060": "CT",
            "0020|000d": study,
            "0020|000e": series,
            "0020|0013": str(k + 1),
            "0020|0032": f"0\\0\\{k * spacing:g}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
        }.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{k + 1:03d}.dcm"))
        writer.Execute(plane)
    return folder


def fill_disk(folder: Path) -> Path:
    """Fill a (small) file system completely with one file."""
    filler = folder / "filler.bin"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        block = bytes(4096)
        while True:
            try:
                if os.write(descriptor, block) <= 0:
                    break
            except OSError:
                break
    finally:
        os.close(descriptor)
    return filler


# --- larger inputs, made once per session ------------------------------------------------------------
def cached(ctx: Ctx, name: str, make: Callable[[Path], Any]) -> Path:
    """``ctx.cache / name``, made by ``make(path)`` the first time."""
    path = ctx.cache / name
    if not path.exists():
        partial = path.with_name(f".partial-{name}")  # keeps the extension
        make(partial)
        partial.rename(path)
    return path


def gzip_bomb_nifti(path: Path) -> None:
    """1000^3 uint8 zeros as one gzip stream (about 1 MB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as stream:
        stream.write(compressor.compress(nifti_header((1000, 1000, 1000), datatype=2, bitpix=8)))
        block = bytes(1 << 24)
        left = 1000**3
        while left:
            stream.write(compressor.compress(block[: min(left, len(block))]))
            left -= min(left, len(block))
        stream.write(compressor.flush())


def zero_png(path: Path) -> None:
    """A 12000 x 12000 8-bit gray PNG of zeros (about 140 KB)."""
    row = bytes(12001)  # filter byte + pixels
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(12000)) + compressor.flush()
    path.write_bytes(png_chunks(12000, 12000, idat))


def big_pair(ctx: Ctx) -> tuple[Path, Path]:
    """Two 256 x 256 x 120 float32 noise volumes (.nii, 31 MB each): writes that take a while."""
    first = cached(ctx, "big_1.nii", lambda p: save(p, noise((120, 256, 256), 1)))
    return first, cached(ctx, "big_2.nii", lambda p: save(p, noise((120, 256, 256), 2)))


def medium_pair(ctx: Ctx) -> tuple[Path, Path]:
    """Two 128 x 128 x 64 float32 noise volumes (.nii, 4 MB each)."""
    first = cached(ctx, "medium_1.nii", lambda p: save(p, noise((64, 128, 128), 3)))
    return first, cached(ctx, "medium_2.nii", lambda p: save(p, noise((64, 128, 128), 4)))


# --- command lines -----------------------------------------------------------------------------------
FAST = ("--method", "average", "--device", "cpu")


def fuse_argv(a: str | Path, b: str | Path, out: str | Path = "fused.nii.gz", *extra: str) -> list[str]:
    """``medfusion fuse A B -o OUT`` with the quickest method on the CPU."""
    return ["fuse", str(a), str(b), "-o", str(out), *FAST, *extra]


Maker = Callable[[Path], Any]
"""``make(path)`` creates a (bad) input at ``path``."""


def made(files: dict[str, Maker], argv: Sequence[str | bytes], **options: Any) -> Callable[[Ctx], Setup]:
    """A build that makes each input (``name: make``) in the work folder, then runs ``argv``."""

    def build(ctx: Ctx) -> Setup:
        for name, make in files.items():
            make(ctx.work / name)
        return Setup(argv=list(argv), **options)

    return build


def with_bad(
    name: str,
    make: Maker,
    *,
    command: str = "fuse",
    extra: Sequence[str] = (),
    two_d: bool = False,
    **options: Any,
) -> Callable[[Ctx], Setup]:
    """A run of ``command`` whose input ``name`` is made by ``make``; the other inputs are good.

    ``fuse``: the bad file is A, a real PET crop is B. ``register``: FIXED is a real PET crop,
    the bad file is MOVING. ``metrics``: A (T1) and B (PET) are real crops, the bad file is FUSED.
    """
    suffix = ".png" if two_d else ".nii.gz"
    real_a, real_b = (mri2d, mri2d) if two_d else (t1, pet)
    if command == "fuse":
        files, argv = {"good" + suffix: real_b}, fuse_argv(name, "good" + suffix, "fused" + suffix, *extra)
    elif command == "register":
        files, argv = {"good" + suffix: real_b}, ["register", "good" + suffix, name, "-o", "t.tfm", *extra]
    elif command == "metrics":
        files = {"a" + suffix: real_a, "b" + suffix: real_b}
        argv = ["metrics", "a" + suffix, "b" + suffix, name, *extra]
    else:
        raise ValueError(command)
    return made({name: make, **files}, argv, **options)


def empty(path: Path) -> None:
    path.write_bytes(b"")


def truncated(fraction: float, *, compress: bool = False, two_d: str = "") -> Maker:
    def make(path: Path) -> None:
        if two_d:
            save_png(path, harvard_crop("MRI"), fmt=two_d)
        else:
            save(path, mni_crop("T1"), compress=compress)
        cut(path, fraction)

    return make


def corrupt_gzip(path: Path) -> None:
    save(path, mni_crop("T1"))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def garbage(size: int) -> Maker:
    return lambda path: path.write_bytes(np.random.default_rng(size).bytes(size))


def text(content: str) -> Maker:
    return lambda path: path.write_text(content)


def two_file(data_action: str) -> Maker:
    """``.mhd``/``.nhdr`` whose data file is deleted (``missing``) or cut in half (``short``)."""

    def make(path: Path) -> None:
        before = set(path.parent.iterdir())
        save(path, mni_crop("T1"))
        (data_file,) = set(path.parent.iterdir()) - before - {path}
        if data_action == "missing":
            data_file.unlink()
        else:
            cut(data_file, 0.5)

    return make


def nifti_patched(offset: int, fmt: str, *values: float) -> Maker:
    def make(path: Path) -> None:
        save(path, mni_crop("T1"))
        patch_nifti(path, offset, fmt, *values)

    return make


def directions(text_: str, template: str = "T1") -> Maker:
    """A NRRD of a real crop with the given ``space directions``."""
    return lambda path: nrrd(path, mni_crop(template), directions=text_)


def array_file(array: Callable[[], np.ndarray], **options: Any) -> Maker:
    return lambda path: save(path, array(), **options)


def dicom_folder(action: str) -> Maker:
    """A DICOM series folder: ``none`` (no DICOM files), ``empty``, ``truncated`` (one slice
    cut short) or ``garbage`` (``.dcm`` files holding no DICOM)."""

    def make(path: Path) -> None:
        if action == "truncated":
            dicom_series(path, (mni_crop("T1") * 1000).astype(np.int16))
            cut(path / "slice_004.dcm", 0.5)
            return
        path.mkdir()
        if action == "none":
            (path / "notes.txt").write_text("no images here\n")
            save_png(path / "picture.png", harvard_crop("MRI"))
        elif action == "garbage":
            for k in range(3):
                (path / f"slice_{k}.dcm").write_bytes(np.random.default_rng(k).bytes(4000))

    return make


def without_extension(path: Path) -> None:
    t1(path.with_name(path.name + ".nii")).rename(path)


def fifo(path: Path) -> None:
    os.mkfifo(path)


def unix_socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()


def symlink(target: str) -> Maker:
    return lambda path: os.symlink(target, path)


def symlink_loop(path: Path) -> None:
    os.symlink("loop_2.nii.gz", path)
    os.symlink(path.name, path.parent / "loop_2.nii.gz")


def unreadable(path: Path) -> None:
    t1(path)
    path.chmod(0)


def two_component(path: Path) -> None:
    crop = mni_crop("T1")
    save(path, np.stack([crop, crop * 2], axis=-1), vector=True)


def png_mode(mode: str) -> Maker:
    def make(path: Path) -> None:
        from PIL import Image as PILImage

        PILImage.fromarray(harvard_crop("MRI")).convert(mode).save(path)

    return make


def complex_nifti(path: Path) -> None:
    crop = mni_crop("T1")
    save(path, (crop + 1j * crop[::-1]).astype(np.complex64))


def full(value: float) -> Callable[[], np.ndarray]:
    return lambda: np.full((10, 20, 20), value, np.float32)


def one_d(path: Path) -> None:
    nrrd(path, sizes=(200,), data=np.linspace(0, 1, 200, dtype="<f4").tobytes(), directions="")


def four_d(path: Path) -> None:
    crop = mni_crop("T1")
    save(path, np.stack([crop, crop * 2, crop * 3]))


def mha_sheared(path: Path) -> None:
    crop = mni_crop("T1")
    mha(
        path,
        [
            "NDims = 3",
            "BinaryData = True",
            "BinaryDataByteOrderMSB = False",
            "TransformMatrix = 1 0 0 0.3 0.954 0 0 0 1",
            "Offset = 0 0 0",
            "ElementSpacing = 2 2 2",
            "DimSize = 20 20 10",
            "ElementType = MET_FLOAT",
        ],
        crop.astype("<f4").tobytes(),
    )


NON_UTF8 = b"caf\xe9-scan.nii.gz"  # Latin-1, not UTF-8
LONG_NAME = "long" + "x" * 290 + ".nii.gz"  # 301 characters: over NAME_MAX (255)


# --- inputs ------------------------------------------------------------------------------------------
def input_case(
    id: str,
    tried: str,
    name: str,
    make: Maker,
    *,
    command: str = "fuse",
    two_d: bool = False,
    culprit: tuple[str, ...] | None = None,
    **options: Any,
) -> Case:
    return Case(
        id,
        "input",
        command,
        tried,
        with_bad(name, make, command=command, two_d=two_d),
        culprit=culprit or (name,),
        **options,
    )


INPUT_CASES = [
    input_case("missing-file", "A does not exist", "ghost.nii.gz", lambda path: None),
    input_case("empty-nii", "A is a 0-byte .nii", "empty.nii", empty),
    input_case("empty-nii-gz", "A is a 0-byte .nii.gz", "empty.nii.gz", empty),
    input_case("empty-nrrd", "A is a 0-byte .nrrd", "empty.nrrd", empty),
    input_case("empty-mha", "A is a 0-byte .mha", "empty.mha", empty),
    input_case("empty-png", "A is a 0-byte .png", "empty.png", empty, two_d=True),
    input_case("truncated-nii", "A is a .nii cut at 60 %", "cut.nii", truncated(0.6)),
    input_case(
        "truncated-nii-gz", "A is a .nii.gz whose gzip stream is cut at 50 %", "cut.nii.gz", truncated(0.5)
    ),
    input_case(
        "corrupt-nii-gz", "A is a .nii.gz with 64 flipped bytes mid-stream", "flipped.nii.gz", corrupt_gzip
    ),
    input_case("garbage-nii", "A is 2000 random bytes named .nii (bad header)", "noise.nii", garbage(2000)),
    input_case(
        "nii-bad-sizeof-hdr",
        "A is a .nii whose sizeof_hdr is 999",
        "badhdr.nii",
        nifti_patched(0, "i", 999),
    ),
    input_case("truncated-nrrd", "A is a raw .nrrd cut at 60 %", "cut.nrrd", truncated(0.6)),
    input_case(
        "truncated-nrrd-gz",
        "A is a gzip-encoded .nrrd cut at 60 %",
        "cutgz.nrrd",
        truncated(0.6, compress=True),
    ),
    input_case("garbage-nrrd", "A is a text file named .nrrd", "notnrrd.nrrd", text("hello\nworld\n")),
    input_case(
        "nhdr-missing-data", ".nhdr whose detached data file is missing", "detached.nhdr", two_file("missing")
    ),
    input_case(
        "nhdr-short-data", ".nhdr whose data file holds half the voxels", "halfdata.nhdr", two_file("short")
    ),
    input_case("truncated-mha", "A is a raw .mha cut at 60 %", "cut.mha", truncated(0.6)),
    input_case(
        "truncated-mha-gz", "A is a compressed .mha cut at 60 %", "cutz.mha", truncated(0.6, compress=True)
    ),
    input_case("mhd-missing-raw", ".mhd whose .raw is missing", "noraw.mhd", two_file("missing")),
    input_case("mhd-short-raw", ".mhd whose .raw holds half the voxels", "shortraw.mhd", two_file("short")),
    input_case(
        "truncated-png", "A is a .png cut at 50 %", "cut.png", truncated(0.5, two_d="PNG"), two_d=True
    ),
    input_case(
        "truncated-jpg", "A is a .jpg cut at 50 %", "cut.jpg", truncated(0.5, two_d="JPEG"), two_d=True
    ),
    input_case("text-as-png", "A is a text file named .png", "words.png", text("not an image\n"), two_d=True),
    input_case(
        "dicom-dir-no-dicom", "A is a folder holding a .txt and a .png", "nodicom", dicom_folder("none")
    ),
    input_case("dicom-dir-empty", "A is an empty folder", "emptydir", dicom_folder("empty")),
    input_case(
        "dicom-dir-truncated-file",
        "A is a DICOM series folder with one slice file cut in half",
        "cutseries",
        dicom_folder("truncated"),
    ),
    input_case(
        "dicom-dir-garbage-dcm",
        "A is a folder of .dcm files holding random bytes",
        "fakedcm",
        dicom_folder("garbage"),
    ),
    input_case("unsupported-extension", "A is named .bmp", "scan.bmp", garbage(3000)),
    input_case("no-extension", "A is a NIfTI file without extension", "noext_scan", without_extension),
    input_case(
        "directory-named-nii", "A is a folder named folder.nii.gz", "folder.nii.gz", dicom_folder("none")
    ),
    input_case(
        "path-through-file",
        "A's path goes through a file (good.nii.gz/x.nii.gz)",
        "t1.nii/x.nii.gz",
        lambda path: t1(path.parent),
        culprit=("x.nii.gz",),
    ),
    input_case("one-d", "A is a 1-D NRRD (200 samples)", "line.nrrd", one_d),
    input_case("four-d", "A is a 4-D NIfTI with 3 time points", "series4d.nii", four_d),
    input_case("two-component", "A is a .mha with 2 components per voxel", "vector2.mha", two_component),
    input_case("png-gray-alpha", "A is a gray+alpha (LA) PNG", "alpha.png", png_mode("LA"), two_d=True),
    input_case("png-rgba", "A is an RGBA PNG (4 components)", "rgba.png", png_mode("RGBA"), two_d=True),
    Case(
        "2d-with-3d",
        "input",
        "fuse",
        "A is a 2-D PNG, B a 3-D volume",
        made({"slice.png": mri2d, "volume.nii.gz": pet}, fuse_argv("slice.png", "volume.nii.gz")),
        culprit=("slice.png", "volume.nii.gz"),
    ),
    input_case("nan-only-a", "A holds only NaN", "nans.nii.gz", array_file(full(np.nan))),
    input_case("inf-only-a", "A holds only +inf", "infs.nii.gz", array_file(full(np.inf))),
    input_case("constant-a", "A is constant (all 7.0)", "flat.nii.gz", array_file(full(7.0))),
    Case(
        "constant-b",
        "input",
        "fuse",
        "B is constant (all 0)",
        made(
            {"good.nii.gz": t1, "flat_b.nii.gz": array_file(full(0.0))},
            fuse_argv("good.nii.gz", "flat_b.nii.gz"),
        ),
        culprit=("flat_b.nii.gz",),
    ),
    Case(
        "nan-only-b",
        "input",
        "fuse",
        "B holds only NaN",
        made(
            {"good.nii.gz": t1, "nan_b.nii.gz": array_file(full(np.nan))},
            fuse_argv("good.nii.gz", "nan_b.nii.gz"),
        ),
        culprit=("nan_b.nii.gz",),
    ),
    input_case(
        "zero-size-nrrd",
        "A is a NRRD with sizes 20 0 10",
        "nothing.nrrd",
        lambda path: nrrd(path, sizes=(20, 0, 10), data=b""),
    ),
    input_case(
        "nifti-dim-zero", "A is a .nii with dim[2] = 0", "dim0.nii", nifti_patched(NIFTI_DIM + 4, "h", 0)
    ),
    input_case(
        "nifti-negative-dim",
        "A is a .nii with dim[2] = -5",
        "dimneg.nii",
        nifti_patched(NIFTI_DIM + 4, "h", -5),
    ),
    input_case(
        "nifti-pixdim-zero",
        "A is a .nii with pixdim[1] = 0",
        "pixdim0.nii",
        nifti_patched(NIFTI_PIXDIM + 4, "f", 0.0),
    ),
    input_case(
        "nifti-pixdim-nan",
        "A is a .nii with pixdim[1] = NaN",
        "pixdimnan.nii",
        nifti_patched(NIFTI_PIXDIM + 4, "f", float("nan")),
    ),
    input_case(
        "nifti-pixdim-inf",
        "A is a .nii with pixdim[2] = inf",
        "pixdiminf.nii",
        nifti_patched(NIFTI_PIXDIM + 8, "f", float("inf")),
    ),
    input_case(
        "nrrd-sheared-direction",
        "A's NRRD space directions are sheared ((2,0,0) (0.5,2,0) (0,0,2))",
        "sheared.nrrd",
        directions("(2,0,0) (0.5,2,0) (0,0,2)"),
    ),
    input_case(
        "nrrd-singular-direction",
        "A's NRRD space directions are singular (two equal axes)",
        "singular.nrrd",
        directions("(2,0,0) (2,0,0) (0,0,2)"),
    ),
    input_case(
        "nrrd-zero-spacing",
        "A's first NRRD space direction is (0,0,0)",
        "zerospacing.nrrd",
        directions("(0,0,0) (0,2,0) (0,0,2)"),
    ),
    input_case(
        "nrrd-nan-spacing",
        "A's first NRRD space direction is (nan,0,0)",
        "nanspacing.nrrd",
        directions("(nan,0,0) (0,2,0) (0,0,2)"),
    ),
    Case(
        "huge-spacing-b",
        "input",
        "fuse",
        "B has 1e9 mm voxels (it overlaps A; resampled it would look constant)",
        made(
            {"good.nii.gz": t1, "huge.nrrd": directions("(1e9,0,0) (0,1e9,0) (0,0,1e9)", "PET")},
            fuse_argv("good.nii.gz", "huge.nrrd"),
        ),
        culprit=("huge.nrrd",),
    ),
    input_case(
        "mha-sheared-direction", "A's MetaImage TransformMatrix is sheared", "sheared.mha", mha_sheared
    ),
    input_case("complex-voxels", "A is a complex64 NIfTI", "complex.nii", complex_nifti),
    Case(
        "no-overlap",
        "input",
        "fuse",
        "B lies 10 m away from A (the volumes do not overlap)",
        made(
            {"here.nii.gz": t1, "far.nii.gz": array_file(lambda: mni_crop("PET"), origin=(1e4, 1e4, 1e4))},
            fuse_argv("here.nii.gz", "far.nii.gz"),
        ),
        culprit=("far.nii.gz", "here.nii.gz"),
    ),
    Case(
        "fifo",
        "input",
        "fuse",
        "A is a named pipe (FIFO) nobody writes to",
        with_bad("pipe.nii.gz", fifo),
        culprit=("pipe.nii.gz",),
        mode="proc",
        timeout=20,
    ),
    Case(
        "dev-zero",
        "input",
        "fuse",
        "A is /dev/zero",
        made({"good.nii.gz": pet}, fuse_argv("/dev/zero", "good.nii.gz")),
        culprit=("/dev/zero",),
        mode="proc",
        timeout=20,
        memory=True,
    ),
    input_case(
        "symlink-to-dev-zero",
        "A is zero.nii, a symbolic link to /dev/zero",
        "zero.nii",
        symlink("/dev/zero"),
        mode="proc",
        timeout=20,
        memory=True,
    ),
    input_case(
        "socket", "A is a Unix socket named .nii.gz", "sock.nii.gz", unix_socket, mode="proc", timeout=20
    ),
    input_case("symlink-loop", "A is a symbolic link loop", "loop.nii.gz", symlink_loop),
    input_case(
        "dangling-symlink",
        "A is a symbolic link to a missing file",
        "dangling.nii.gz",
        symlink("gone.nii.gz"),
    ),
    Case(
        "permission-denied",
        "input",
        "fuse",
        "A has mode 000 (run without CAP_DAC_OVERRIDE so that it binds for root)",
        with_bad("locked.nii.gz", unreadable, drop_dac=True),
        culprit=("locked.nii.gz",),
        mode="proc",
    ),
    input_case(
        "name-300-chars",
        "A's file name has 301 characters",
        LONG_NAME,
        lambda path: None,
        culprit=(LONG_NAME[:40],),
    ),
    Case(
        "non-utf8-name-corrupt",
        "input",
        "fuse",
        "A is a corrupt file whose name is not UTF-8 (b'caf\\xe9-scan.nii.gz')",
        made(
            {os.fsdecode(NON_UTF8): garbage(400), "good.nii.gz": pet},
            ["fuse", NON_UTF8, b"good.nii.gz", b"-o", b"fused.nii.gz", *map(str.encode, FAST)],
        ),
        culprit=("-scan.nii.gz",),
        mode="proc",
    ),
    Case(
        "register-missing-moving",
        "input",
        "register",
        "MOVING does not exist",
        with_bad("ghost.nii.gz", lambda path: None, command="register"),
        culprit=("ghost.nii.gz",),
    ),
    Case(
        "register-constant-moving",
        "input",
        "register",
        "MOVING is constant",
        with_bad("flat.nii.gz", array_file(full(3.0)), command="register"),
        culprit=("flat.nii.gz",),
    ),
    Case(
        "register-2d-with-3d",
        "input",
        "register",
        "FIXED is 3-D, MOVING a 2-D PNG",
        with_bad("slice.png", mri2d, command="register"),
        culprit=("slice.png", "good.nii.gz"),
    ),
    Case(
        "register-nan-moving",
        "input",
        "register",
        "MOVING holds only NaN",
        with_bad("nans.nii.gz", array_file(full(np.nan)), command="register"),
        culprit=("nans.nii.gz",),
    ),
    Case(
        "metrics-missing-fused",
        "input",
        "metrics",
        "FUSED does not exist",
        with_bad("ghost.nii.gz", lambda path: None, command="metrics"),
        culprit=("ghost.nii.gz",),
    ),
    Case(
        "metrics-truncated-fused",
        "input",
        "metrics",
        "FUSED is a .nii.gz cut at 50 %",
        with_bad("cut.nii.gz", truncated(0.5), command="metrics"),
        culprit=("cut.nii.gz",),
    ),
    Case(
        "metrics-fused-other-grid",
        "input",
        "metrics",
        "FUSED has another shape than A",
        with_bad("small.nii.gz", array_file(lambda: mni_crop("T1")[:5, :10, :10].copy()), command="metrics"),
        culprit=("small.nii.gz",),
    ),
    Case(
        "metrics-nan-fused",
        "input",
        "metrics",
        "FUSED holds only NaN",
        # NRRD keeps NaN voxels (ITK's NIfTI writer stores them as 0, a legitimate black image)
        with_bad("nans.nrrd", array_file(full(np.nan)), command="metrics"),
        culprit=("nans.nrrd",),
    ),
    Case(
        "metrics-2d-with-3d",
        "input",
        "metrics",
        "A and B are 3-D, FUSED a 2-D PNG",
        with_bad("slice.png", mri2d, command="metrics"),
        culprit=("slice.png",),
    ),
]


# --- outputs -----------------------------------------------------------------------------------------
PAIR = {"scan_a.nii.gz": t1, "scan_b.nii.gz": pet}
PAIR_2D = {"mri.png": mri2d, "pet.png": pet2d}


def mkdir(path: Path) -> None:
    path.mkdir()


def copy_of(source: Path) -> Maker:
    return lambda path: shutil.copyfile(source, path)


def hard_link(target: str) -> Maker:
    return lambda path: os.link(path.parent / target, path)


def locked_folder(path: Path) -> None:
    path.mkdir()
    path.chmod(0o555)


def registration_fixed(path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(mni_4mm("T1"), str(path))


def registration_moving(path: Path) -> None:
    """The T2 template at 4 mm, moved by (4, -6, 3) mm: a pair that registers in about 0.5 s."""
    import SimpleITK as sitk

    moving = sitk.Image(mni_4mm("T2"))
    moving.SetOrigin(tuple(o + d for o, d in zip(moving.GetOrigin(), (4.0, -6.0, 3.0), strict=True)))
    sitk.WriteImage(moving, str(path))


REGISTRATION_PAIR = {"fixed.nii.gz": registration_fixed, "moving.nii.gz": registration_moving}
REGISTER = ["register", "fixed.nii.gz", "moving.nii.gz"]


def absolute_output(ctx: Ctx) -> Setup:
    for name, make in PAIR.items():
        make(ctx.work / name)
    return Setup(argv=fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", ctx.work.resolve() / "scan_a.nii.gz"))


def full_disk(ext: str, *, two_d: bool = False) -> Callable[[Ctx], Setup]:
    """``fuse`` noise images (256 KB of incompressible output) into a 64 KB tmpfs."""

    def build(ctx: Ctx) -> Setup:
        disk = ctx.mount("64k")
        shape = (512, 512) if two_d else (16, 64, 64)
        save(ctx.work / "noise_a.nrrd", noise(shape, 5))
        save(ctx.work / "noise_b.nrrd", noise(shape, 6))
        return Setup(argv=fuse_argv("noise_a.nrrd", "noise_b.nrrd", disk / f"full_out{ext}"), watch=[disk])

    return build


def full_disk_transform(ext: str) -> Callable[[Ctx], Setup]:
    """``register`` into a tmpfs filled to the last block."""

    def build(ctx: Ctx) -> Setup:
        disk = ctx.mount("64k")
        for name, make in REGISTRATION_PAIR.items():
            make(ctx.work / name)
        fill_disk(disk)
        return Setup(argv=[*REGISTER, "-o", str(disk / f"full_out{ext}")], watch=[disk])

    return build


def read_only_fs(ctx: Ctx) -> Setup:
    disk = ctx.mount("64k", read_only=True)
    for name, make in PAIR.items():
        make(ctx.work / name)
    return Setup(argv=fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", disk / "ro_out.nii.gz"), watch=[disk])


def output_case(
    id: str, tried: str, build: Callable[[Ctx], Setup], culprit: tuple[str, ...], **options: Any
) -> Case:
    return Case(id, "output", options.pop("command", "fuse"), tried, build, culprit=culprit, **options)


OUTPUT_CASES = [
    output_case(
        "out-is-input-a",
        "-o names input A (same path)",
        made(PAIR, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "scan_a.nii.gz")),
        ("scan_a.nii.gz",),
    ),
    output_case(
        "out-is-input-b",
        "-o names input B (same path)",
        made(PAIR, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "scan_b.nii.gz")),
        ("scan_b.nii.gz",),
    ),
    output_case(
        "out-is-input-dotdot",
        "-o sub/../scan_a.nii.gz (input A after normalisation)",
        made({**PAIR, "sub": mkdir}, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "sub/../scan_a.nii.gz")),
        ("scan_a.nii.gz",),
    ),
    output_case(
        "out-is-input-absolute",
        "A given relative, -o the same file as an absolute path",
        absolute_output,
        ("scan_a.nii.gz",),
    ),
    output_case(
        "out-is-symlink-to-input",
        "-o link.nii.gz, a symbolic link to input A",
        made(
            {**PAIR, "link.nii.gz": symlink("scan_a.nii.gz")},
            fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "link.nii.gz"),
        ),
        ("link.nii.gz", "scan_a.nii.gz"),
    ),
    output_case(
        "out-is-hardlink-to-input",
        "-o hard.nii.gz, a hard link to input A (same inode)",
        made(
            {**PAIR, "hard.nii.gz": hard_link("scan_a.nii.gz")},
            fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "hard.nii.gz"),
        ),
        ("hard.nii.gz", "scan_a.nii.gz"),
    ),
    output_case(
        "out-is-input-b-png",
        "2-D: -o pet.png where pet.png is input B",
        made(PAIR_2D, fuse_argv("mri.png", "pet.png", "pet.png")),
        ("pet.png",),
    ),
    output_case(
        "register-resampled-is-fixed",
        "register --resampled names FIXED",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.tfm", "--resampled", "fixed.nii.gz"]),
        ("fixed.nii.gz",),
        command="register",
    ),
    output_case(
        "register-qa-is-fixed-png",
        "2-D register --qa names the FIXED PNG",
        made(
            {
                "mri.png": copy_of(DATA / "harvard" / "MRI_PET" / "MRI" / "11.png"),
                "pet.png": copy_of(DATA / "harvard" / "MRI_PET" / "PET" / "11.png"),
            },
            ["register", "mri.png", "pet.png", "-o", "t.tfm", "--qa", "mri.png"],
        ),
        ("mri.png",),
        command="register",
    ),
    output_case(
        "out-folder-missing",
        "-o nowhere/fused.nii.gz",
        made(PAIR, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "nowhere/fused.nii.gz")),
        ("nowhere",),
    ),
    output_case(
        "out-parent-is-file",
        "-o scan_b.nii.gz/fused.nii.gz (the parent is a file)",
        made(PAIR, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "scan_b.nii.gz/fused.nii.gz")),
        ("scan_b.nii.gz",),
    ),
    output_case(
        "out-is-directory",
        "-o outdir.nii.gz, an existing folder",
        made({**PAIR, "outdir.nii.gz": mkdir}, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "outdir.nii.gz")),
        ("outdir.nii.gz",),
    ),
    output_case(
        "dicom-out-non-dicom-folder",
        "-o series, a folder holding notes.txt (DICOM output)",
        made({**PAIR, "series": dicom_folder("none")}, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "series")),
        ("series",),
    ),
    output_case(
        "dicom-out-is-file",
        "-o series where series is an existing file (no suffix: DICOM output)",
        made({**PAIR, "series": text("a note\n")}, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "series")),
        ("series",),
    ),
    output_case(
        "out-unsupported-extension",
        "-o fused.bmp",
        made(PAIR, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "fused.bmp")),
        ("fused.bmp",),
    ),
    output_case(
        "out-3d-to-png",
        "3-D inputs, -o fused.png",
        made(PAIR, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "fused.png")),
        ("fused.png",),
    ),
    output_case(
        "out-3d-to-jpg",
        "3-D inputs, -o fused.jpg",
        made(PAIR, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "fused.jpg")),
        ("fused.jpg",),
    ),
    output_case(
        "out-name-300-chars",
        "-o a 301-character file name",
        made(PAIR, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", LONG_NAME)),
        (LONG_NAME[:40],),
    ),
    output_case(
        "out-folder-read-only",
        "-o into a folder of mode 555 (without CAP_DAC_OVERRIDE)",
        made(
            {**PAIR, "locked": locked_folder},
            fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "locked/fused.nii.gz"),
            drop_dac=True,
        ),
        ("locked",),
        mode="proc",
    ),
    output_case("out-read-only-fs", "-o into a read-only tmpfs", read_only_fs, ("ro_out.nii.gz",)),
    output_case(
        "full-disk-nii",
        "-o .nii into a 64 KB tmpfs (256 KB output)",
        full_disk(".nii"),
        ("full_out.nii",),
        mode="proc",
    ),
    output_case(
        "full-disk-nii-gz",
        "-o .nii.gz into a 64 KB tmpfs (256 KB output)",
        full_disk(".nii.gz"),
        ("full_out.nii.gz",),
        mode="proc",
    ),
    output_case(
        "full-disk-nrrd", "-o .nrrd into a 64 KB tmpfs", full_disk(".nrrd"), ("full_out.nrrd",), mode="proc"
    ),
    output_case(
        "full-disk-mha", "-o .mha into a 64 KB tmpfs", full_disk(".mha"), ("full_out.mha",), mode="proc"
    ),
    output_case(
        "full-disk-mhd",
        "-o .mhd (+ .raw) into a 64 KB tmpfs",
        full_disk(".mhd"),
        ("full_out.mhd",),
        mode="proc",
    ),
    output_case(
        "full-disk-png",
        "2-D: -o .png into a 64 KB tmpfs",
        full_disk(".png", two_d=True),
        ("full_out.png",),
        mode="proc",
    ),
    output_case(
        "full-disk-jpg",
        "2-D: -o .jpg into a 64 KB tmpfs",
        full_disk(".jpg", two_d=True),
        ("full_out.jpg",),
        mode="proc",
    ),
    output_case(
        "full-disk-dicom",
        "-o a DICOM series folder in a 64 KB tmpfs",
        full_disk(""),
        ("full_out",),
        mode="proc",
    ),
    output_case(
        "full-disk-tfm",
        "register -o t.tfm into a full tmpfs",
        full_disk_transform(".tfm"),
        ("full_out.tfm",),
        command="register",
        mode="proc",
    ),
    output_case(
        "full-disk-h5",
        "register -o t.h5 into a full tmpfs (HDF5)",
        full_disk_transform(".h5"),
        ("full_out.h5",),
        command="register",
        mode="proc",
    ),
    output_case(
        "register-qa-missing-folder",
        "register --qa missing_dir/qa.png (no t.tfm may be left)",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.tfm", "--qa", "missing_dir/qa.png"]),
        ("missing_dir",),
        command="register",
    ),
    output_case(
        "register-out-missing-folder",
        "register -o missing_dir/t.tfm",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "missing_dir/t.tfm"]),
        ("missing_dir",),
        command="register",
    ),
    output_case(
        "register-resampled-missing-folder",
        "register --resampled missing_dir/r.nii.gz",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.tfm", "--resampled", "missing_dir/r.nii.gz"]),
        ("missing_dir",),
        command="register",
    ),
    output_case(
        "register-resampled-3d-png",
        "register 3-D images with --resampled r.png",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.tfm", "--resampled", "r.png"]),
        ("r.png",),
        command="register",
    ),
    output_case(
        "register-out-bad-extension",
        "register -o t.nii.gz (not a transform file)",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.nii.gz"]),
        ("t.nii.gz",),
        command="register",
    ),
    output_case(
        "register-qa-jpg",
        "register --qa qa.jpg (QA is PNG only)",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.tfm", "--qa", "qa.jpg"]),
        ("qa.jpg",),
        command="register",
    ),
    output_case(
        "demo-out-is-file",
        "demo --out names an existing file",
        made({"existing.txt": text("keep me\n")}, ["demo", "--out", "existing.txt", "--device", "cpu"]),
        ("existing.txt",),
        command="demo",
        mode="proc",
        timeout=30,
    ),
    output_case(
        "demo-device-nonsense",
        "demo --device nonsense (no empty folder may be left)",
        made({}, ["demo", "--out", "demo_out", "--device", "nonsense"]),
        ("nonsense",),
        command="demo",
        mode="proc",
        timeout=30,
    ),
    output_case(
        "train-out-not-safetensors",
        "train --out net.pt",
        made({}, ["train", "gain_fusion_net", "--pair", "MRI_PET", "--data", str(DATA), "--out", "net.pt"]),
        ("net.pt",),
        command="train",
        mode="proc",
        timeout=30,
    ),
]


# --- writes interrupted by a signal, and two writers at once ------------------------------------------
def dicom_half_written(entries: list[Path]) -> bool:
    """A temporary series folder already holding 10 slices."""
    return any(entry.is_dir() and sum(1 for _ in entry.iterdir()) >= 10 for entry in entries)


def interrupted(sig: signal.Signals, fmt: str) -> Case:
    out = "fused.nii.gz" if fmt == "nifti" else "series"
    what = "a 256x256x120 .nii.gz" if fmt == "nifti" else "a 120-slice DICOM series"

    def build(ctx: Ctx) -> Setup:
        a, b = big_pair(ctx)
        return Setup(
            argv=fuse_argv(a, b, out),
            inputs=[a, b],
            output=ctx.work / out,
            ready=dicom_half_written if fmt == "dicom" else None,
        )

    return Case(
        f"{sig.name.lower()}-during-{fmt}-write",
        "signal",
        "fuse",
        f"{sig.name} while writing {what}",
        build,
        mode="signal",
        signal=int(sig),
        exit=(),
        timeout=60,
        expect="exit status non-zero, no traceback; no temporary and no partial output left",
    )


def complete_nifti(path: Path, shape: tuple[int, ...]) -> list[str]:
    """``path`` is a complete uncompressed float32 NIfTI of ``shape`` (z, y, x)."""
    import SimpleITK as sitk

    if not path.is_file():
        return [f"{path.name} was not written"]
    expected = 352 + int(np.prod(shape)) * 4
    if path.stat().st_size != expected:
        return [f"{path.name} has {path.stat().st_size} bytes, a complete one {expected}"]
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if array.shape != shape or not np.isfinite(array).all():
        return [f"{path.name} reads back as {array.shape}, not a complete {shape} image"]
    return []


def complete_series(folder: Path, shape: tuple[int, ...]) -> list[str]:
    """``folder`` holds exactly one complete DICOM series of ``shape`` (z, y, x), nothing else."""
    import SimpleITK as sitk

    if not folder.is_dir():
        return [f"{folder.name} was not written"]
    files = sorted(folder.iterdir())
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if len(files) != shape[0] or len(series) != 1:
        return [
            f"{folder.name} holds {len(files)} files in {len(series)} series, not one series of {shape[0]}"
        ]
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    size = reader.Execute().GetSize()
    if tuple(reversed(size)) != shape:
        return [f"{folder.name} reads back as {size}, not {tuple(reversed(shape))}"]
    return []


def race(fmt: str) -> Case:
    out = "race.nii" if fmt == "nifti" else "race_series"

    def build(ctx: Ctx) -> Setup:
        a, b = medium_pair(ctx)
        target = ctx.work / out
        return Setup(
            argv=fuse_argv(a, b, out),
            inputs=[a, b],
            output=target,
            check=lambda outcome: (
                complete_nifti(target, (64, 128, 128))
                if fmt == "nifti"
                else complete_series(target, (64, 128, 128))
            ),
        )

    return Case(
        f"concurrent-{fmt}-writers",
        "race",
        "fuse",
        f"two processes fuse into the same {'.nii' if fmt == 'nifti' else 'DICOM series folder'} at once",
        build,
        mode="race",
        exit=(0, 2),
        timeout=90,
        expect="each exits 0 (or 2 with one line); afterwards one complete valid image, no temporaries",
    )


SIGNAL_CASES = [
    interrupted(sig, fmt)
    for fmt in ("dicom", "nifti")
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
]
RACE_CASES = [race("nifti"), race("dicom")]


# --- memory ------------------------------------------------------------------------------------------
def nrrd_gzip_bomb(side: int) -> Maker:
    """A gzip-encoded NRRD of a few hundred bytes whose header claims ``side``^3 uint8."""
    return lambda path: nrrd(
        path, sizes=(side,) * 3, type="unsigned char", encoding="gzip", data=gzip.compress(bytes(4000))
    )


def huge_jpeg(path: Path) -> None:
    """A 16 x 16 JPEG whose frame header (SOF0) is patched to claim 65000 x 65000."""
    buffer = io.BytesIO()
    from PIL import Image as PILImage

    PILImage.fromarray(harvard_crop("MRI")[:16, :16]).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 65000, 65000)
    path.write_bytes(bytes(data))


def detached_huge(path: Path) -> None:
    (path.parent / "hugedata.raw").write_bytes(bytes(1024))
    nrrd(path, sizes=(1000, 1000, 1000), extra=["data file: hugedata.raw"])


def memory_case(
    id: str,
    tried: str,
    name: str,
    make: Maker | None = None,
    *,
    cache: Callable[[Path], Any] | None = None,
    two_d: bool = False,
) -> Case:
    def build(ctx: Ctx) -> Setup:
        maker = copy_of(cached(ctx, name, cache)) if cache is not None else make
        return with_bad(name, maker, two_d=two_d)(ctx)

    return Case(id, "memory", "fuse", tried, build, culprit=(name,), mode="proc", memory=True, timeout=60)


MEMORY_CASES = [
    memory_case(
        "nrrd-gzip-bomb",
        "a 0.3 KB gzip NRRD whose header claims 1600^3 uint8 (4 GB)",
        "bomb.nrrd",
        nrrd_gzip_bomb(1600),
    ),
    memory_case(
        "nrrd-gzip-bomb-1200",
        "a 0.3 KB gzip NRRD claiming 1200^3 uint8 (1.7 GB: fits under the limit)",
        "bomb1200.nrrd",
        nrrd_gzip_bomb(1200),
    ),
    memory_case(
        "nifti-gzip-bomb",
        "a 1 MB .nii.gz of 1000^3 zeros (1 GB of uint8)",
        "bomb.nii.gz",
        cache=gzip_bomb_nifti,
    ),
    memory_case(
        "png-zeros-12k", "a 140 KB PNG of 12000 x 12000 zeros", "zeros12k.png", cache=zero_png, two_d=True
    ),
    memory_case(
        "png-header-60000",
        "a PNG whose header claims 60000 x 60000 (1 KB file)",
        "huge.png",
        lambda path: path.write_bytes(png_chunks(60000, 60000, zlib.compress(bytes(60001)))),
        two_d=True,
    ),
    memory_case(
        "jpeg-header-65000",
        "a JPEG whose frame header claims 65000 x 65000",
        "huge.jpg",
        huge_jpeg,
        two_d=True,
    ),
    memory_case(
        "nrrd-raw-claims-more",
        "a raw NRRD claiming 1000^3 float32 holding 1 KB",
        "claims.nrrd",
        lambda path: nrrd(path, sizes=(1000, 1000, 1000), data=bytes(1024)),
    ),
    memory_case(
        "nhdr-claims-more",
        "a .nhdr claiming 1000^3 float32 whose data file has 1 KB",
        "claims.nhdr",
        detached_huge,
    ),
    memory_case(
        "mha-claims-more",
        "a raw MHA claiming 2000^3 float32 holding 1 KB",
        "claims.mha",
        lambda path: mha(
            path,
            ["NDims = 3", "DimSize = 2000 2000 2000", "ElementType = MET_FLOAT", "ElementSpacing = 1 1 1"],
            bytes(1024),
        ),
    ),
    memory_case(
        "nifti-claims-more",
        "a .nii whose header claims 4000^3 float32 in a 1 KB file",
        "claims.nii",
        lambda path: path.write_bytes(nifti_header((4000, 4000, 4000)) + bytes(1024)),
    ),
]


# --- command-line parameters ---------------------------------------------------------------------------
METRICS_FILES = {"a.nii.gz": t1, "b.nii.gz": pet, "fused.nii.gz": t1}
METRICS = ["metrics", "a.nii.gz", "b.nii.gz", "fused.nii.gz"]


def fuse_with(*extra: str) -> Callable[[Ctx], Setup]:
    return made(PAIR, fuse_argv("scan_a.nii.gz", "scan_b.nii.gz", "fused.nii.gz", *extra))


def parameter_case(
    id: str, tried: str, build: Callable[[Ctx], Setup], culprit: tuple[str, ...], **options: Any
) -> Case:
    return Case(id, "parameter", options.pop("command", "fuse"), tried, build, culprit=culprit, **options)


def harvard_subset(path: Path) -> None:
    """DATASET/SET/MODALITY/id.png with two pairs per Harvard set."""
    for pair_set in ("MRI_CT", "MRI_PET", "MRI_SPECT"):
        for modality in pair_set.split("_"):
            folder = path / pair_set / modality
            folder.mkdir(parents=True)
            for index in (11, 12):
                shutil.copyfile(
                    DATA / "harvard" / pair_set / modality / f"{index}.png", folder / f"{index}.png"
                )


def nifti_pairs(path: Path) -> None:
    """DATASET/SET/{MR,PET}/1.nii.gz: volumes where benchmark expects PNG slices."""
    for modality, make in (("MR", t1), ("PET", pet)):
        folder = path / "SET" / modality
        folder.mkdir(parents=True)
        make(folder / "1.nii.gz")


BENCHMARK = ["benchmark", "harvard", "--methods", "average"]


def neighbour_swap(ctx: Ctx) -> Setup:
    """``scan.nii.gz`` (the T1 crop) with ``scan.nii`` (another image, same header) beside it."""
    t1(ctx.work / "scan.nii.gz")
    save(ctx.work / "scan.nii", mni_crop("PET")[::-1].copy())
    pet(ctx.work / "good.nii.gz")
    clean = ctx.aside / "scan.nii.gz"
    t1(clean)
    out = ctx.work / "fused.nii.gz"

    def check(outcome: Outcome) -> list[str]:
        import SimpleITK as sitk

        from MedFusionLib.io import read_image
        from MedFusionLib.pipeline import fuse_images

        if not out.is_file():
            return []  # the exit status check reports it
        expected = fuse_images(
            read_image(clean), read_image(ctx.work / "good.nii.gz"), method="average", device="cpu"
        )
        got = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
        if not np.allclose(got, expected.image.array, atol=1e-5):
            return ["the output is not the fusion of scan.nii.gz's voxels (scan.nii's were read instead?)"]
        return []

    return Setup(argv=fuse_argv("scan.nii.gz", "good.nii.gz"), output=out, check=check)


def non_utf8_output(ctx: Ctx) -> Setup:
    for name, make in PAIR.items():
        make(ctx.work / name)
    name = b"caf\xe9-out.nii.gz"
    return Setup(
        argv=[b"fuse", b"scan_a.nii.gz", b"scan_b.nii.gz", b"-o", name, *map(str.encode, FAST)],
        output=ctx.work / os.fsdecode(name),
        culprit=("-out.nii.gz",),
    )


PARAMETER_CASES = [
    parameter_case("unknown-method", "--method nonsense", fuse_with("--method", "nonsense"), ("nonsense",)),
    parameter_case("unknown-parameter", "--set bogus=1", fuse_with("--set", "bogus=1"), ("bogus",)),
    parameter_case(
        "parameter-of-other-method",
        "--method average --set levels=3",
        fuse_with("--set", "levels=3"),
        ("levels",),
    ),
    parameter_case(
        "set-without-equals",
        "--set levels (no value)",
        fuse_with("--method", "laplacian_pyramid", "--set", "levels"),
        ("levels",),
    ),
    parameter_case("set-empty-key", "--set =3", fuse_with("--set", "=3"), ("=3",)),
    parameter_case(
        "set-empty-value",
        "--set levels=",
        fuse_with("--method", "laplacian_pyramid", "--set", "levels="),
        ("levels",),
    ),
    parameter_case(
        "levels-zero",
        "laplacian_pyramid levels=0",
        fuse_with("--method", "laplacian_pyramid", "--set", "levels=0"),
        ("levels",),
    ),
    parameter_case(
        "levels-100",
        "laplacian_pyramid levels=100",
        fuse_with("--method", "laplacian_pyramid", "--set", "levels=100"),
        ("levels",),
    ),
    parameter_case(
        "weight-2",
        "weighted_average weight=2",
        fuse_with("--method", "weighted_average", "--set", "weight=2"),
        ("weight",),
    ),
    parameter_case(
        "weight-nan",
        "weighted_average weight=nan",
        fuse_with("--method", "weighted_average", "--set", "weight=nan"),
        ("weight",),
    ),
    parameter_case(
        "weight-inf",
        "weighted_average weight=inf",
        fuse_with("--method", "weighted_average", "--set", "weight=inf"),
        ("weight",),
    ),
    parameter_case("gff-r1-zero", "gff r1=0", fuse_with("--method", "gff", "--set", "r1=0"), ("r1",)),
    parameter_case(
        "pcnn-iterations-zero",
        "pa_pcnn iterations=0",
        fuse_with("--method", "pa_pcnn", "--set", "iterations=0"),
        ("iterations",),
    ),
    parameter_case(
        "ratio-offset-zero",
        "ratio_pyramid offset=0",
        fuse_with("--method", "ratio_pyramid", "--set", "offset=0"),
        ("offset",),
    ),
    parameter_case(
        "dwt-unknown-wavelet",
        "dwt wavelet=nonsense",
        fuse_with("--method", "dwt", "--set", "wavelet=nonsense"),
        ("wavelet",),
    ),
    parameter_case(
        "levels-not-a-number",
        "laplacian_pyramid levels=abc",
        fuse_with("--method", "laplacian_pyramid", "--set", "levels=abc"),
        ("levels",),
    ),
    parameter_case(
        "levels-fraction",
        "laplacian_pyramid levels=2.5",
        fuse_with("--method", "laplacian_pyramid", "--set", "levels=2.5"),
        ("levels",),
    ),
    parameter_case(
        "bool-not-a-bool",
        "gradient_pyramid exact_reconstruction=maybe",
        fuse_with("--method", "gradient_pyramid", "--set", "exact_reconstruction=maybe"),
        ("exact_reconstruction",),
    ),
    parameter_case("device-nonsense", "--device nonsense", fuse_with("--device", "nonsense"), ("nonsense",)),
    parameter_case(
        "device-cuda-99", "--device cuda:99 (no such GPU)", fuse_with("--device", "cuda:99"), ("cuda:99",)
    ),
    parameter_case("window-three-numbers", "--window-a 1,2,3", fuse_with("--window-a", "1,2,3"), ("window",)),
    parameter_case(
        "window-unknown-preset", "--window-a brainz", fuse_with("--window-a", "brainz"), ("brainz",)
    ),
    parameter_case("window-zero-width", "--window-a 40,0", fuse_with("--window-a", "40,0"), ("window",)),
    parameter_case("window-nan", "--window-b nan,40", fuse_with("--window-b", "nan,40"), ("window",)),
    parameter_case(
        "interpolation-unknown", "--interpolation cubic", fuse_with("--interpolation", "cubic"), ("cubic",)
    ),
    parameter_case("modality-unknown", "--modality-a XR", fuse_with("--modality-a", "XR"), ("XR",)),
    parameter_case(
        "register-choice-unknown", "fuse --register elastic", fuse_with("--register", "elastic"), ("elastic",)
    ),
    parameter_case(
        "fuse-without-output",
        "fuse A B without -o",
        made(PAIR, ["fuse", "scan_a.nii.gz", "scan_b.nii.gz"]),
        ("-o", "output"),
    ),
    parameter_case("no-command", "medfusion with no arguments", made({}, []), ("command",), command="-"),
    parameter_case(
        "unknown-command", "medfusion frobnicate", made({}, ["frobnicate"]), ("frobnicate",), command="-"
    ),
    parameter_case(
        "methods-unknown-flag",
        "methods --frobnicate",
        made({}, ["methods", "--frobnicate"]),
        ("--frobnicate",),
        command="methods",
    ),
    parameter_case(
        "seed-negative",
        "register --seed -1",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.tfm", "--seed", "-1"]),
        ("seed",),
        command="register",
    ),
    parameter_case(
        "seed-above-2-64",
        "register --seed 2^64+1",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.tfm", "--seed", str(2**64 + 1)]),
        ("seed",),
        command="register",
    ),
    parameter_case(
        "seed-not-a-number",
        "register --seed abc",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.tfm", "--seed", "abc"]),
        ("seed",),
        command="register",
    ),
    parameter_case(
        "sampling-zero",
        "register --sampling 0",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.tfm", "--sampling", "0"]),
        ("sampling",),
        command="register",
    ),
    parameter_case(
        "sampling-above-one",
        "register --sampling 1.5",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.tfm", "--sampling", "1.5"]),
        ("sampling",),
        command="register",
    ),
    parameter_case(
        "sampling-nan",
        "register --sampling nan",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.tfm", "--sampling", "nan"]),
        ("sampling",),
        command="register",
    ),
    parameter_case(
        "register-type-unknown",
        "register --type elastic",
        made(REGISTRATION_PAIR, [*REGISTER, "-o", "t.tfm", "--type", "elastic"]),
        ("elastic",),
        command="register",
    ),
    parameter_case(
        "metrics-unknown-metric",
        "metrics --metrics VIF,bogus",
        made(METRICS_FILES, [*METRICS, "--metrics", "VIF,bogus"]),
        ("bogus",),
        command="metrics",
    ),
    parameter_case(
        "metrics-bad-mode",
        "metrics --mode diagonal",
        made(METRICS_FILES, [*METRICS, "--mode", "diagonal"]),
        ("diagonal",),
        command="metrics",
    ),
    parameter_case(
        "metrics-axis-5",
        "metrics --mode slices --axis 5",
        made(METRICS_FILES, [*METRICS, "--mode", "slices", "--axis", "5"]),
        ("axis",),
        command="metrics",
    ),
    parameter_case(
        "metrics-axis-minus-9",
        "metrics --mode slices --axis -9",
        made(METRICS_FILES, [*METRICS, "--mode", "slices", "--axis", "-9"]),
        ("axis",),
        command="metrics",
    ),
    parameter_case(
        "metrics-device-nonsense",
        "metrics --device nonsense",
        made(METRICS_FILES, [*METRICS, "--device", "nonsense"]),
        ("nonsense",),
        command="metrics",
    ),
    parameter_case(
        "metrics-bad-window",
        "metrics --window-a 40,0",
        made(METRICS_FILES, [*METRICS, "--window-a", "40,0"]),
        ("window",),
        command="metrics",
    ),
    parameter_case(
        "train-threads-zero",
        "train --threads 0",
        made(
            {},
            [
                "train",
                "gain_fusion_net",
                "--pair",
                "MRI_PET",
                "--data",
                str(DATA),
                "--out",
                "net.safetensors",
                "--threads",
                "0",
            ],
        ),
        ("threads",),
        command="train",
        mode="proc",
        timeout=30,
    ),
    parameter_case(
        "train-on-harvard",
        "train --data ../shared/data/harvard (the evaluation pairs)",
        made(
            {},
            [
                "train",
                "gain_fusion_net",
                "--pair",
                "MRI_PET",
                "--data",
                str(DATA / "harvard"),
                "--out",
                "net.safetensors",
            ],
        ),
        ("harvard",),
        command="train",
        mode="proc",
        timeout=30,
    ),
    parameter_case(
        "train-unknown-network",
        "train unet",
        made({}, ["train", "unet", "--data", str(DATA)]),
        ("unet",),
        command="train",
        mode="proc",
        timeout=30,
    ),
    parameter_case(
        "train-steps-zero",
        "train --steps 0",
        made(
            {},
            [
                "train",
                "gain_fusion_net",
                "--pair",
                "MRI_PET",
                "--data",
                str(DATA),
                "--out",
                "net.safetensors",
                "--steps",
                "0",
            ],
        ),
        ("steps",),
        command="train",
        mode="proc",
        timeout=30,
    ),
    parameter_case(
        "train-batch-negative",
        "train --batch -4",
        made(
            {},
            [
                "train",
                "gain_fusion_net",
                "--pair",
                "MRI_PET",
                "--data",
                str(DATA),
                "--out",
                "net.safetensors",
                "--batch",
                "-4",
            ],
        ),
        ("batch",),
        command="train",
        mode="proc",
        timeout=30,
    ),
    parameter_case(
        "train-data-missing",
        "train --data nowhere",
        made(
            {},
            [
                "train",
                "gain_fusion_net",
                "--pair",
                "MRI_PET",
                "--data",
                "nowhere",
                "--out",
                "net.safetensors",
            ],
        ),
        ("nowhere",),
        command="train",
        mode="proc",
        timeout=30,
    ),
    parameter_case(
        "benchmark-out-is-file",
        "benchmark --out names an existing file (must fail before any work)",
        made(
            {"harvard": harvard_subset, "report.txt": text("keep me\n")}, [*BENCHMARK, "--out", "report.txt"]
        ),
        ("report.txt",),
        command="benchmark",
        mode="proc",
        timeout=15,
    ),
    parameter_case(
        "benchmark-nifti-pairs",
        "benchmark on a folder of .nii.gz volume pairs (no partial .md/.csv)",
        made({"volumes": nifti_pairs}, ["benchmark", "volumes", "--methods", "average", "--out", "report"]),
        ("volumes", ".nii.gz"),
        command="benchmark",
        mode="proc",
        timeout=30,
    ),
    parameter_case(
        "benchmark-missing-dataset",
        "benchmark nowhere",
        made({}, ["benchmark", "nowhere", "--out", "rep"]),
        ("nowhere",),
        command="benchmark",
    ),
    parameter_case(
        "benchmark-empty-dataset",
        "benchmark on an empty folder",
        made({"emptyset": mkdir}, ["benchmark", "emptyset", "--out", "rep"]),
        ("emptyset",),
        command="benchmark",
    ),
    parameter_case(
        "benchmark-unknown-method",
        "benchmark --methods average,nonsense",
        made(
            {"harvard": harvard_subset},
            ["benchmark", "harvard", "--methods", "average,nonsense", "--out", "rep"],
        ),
        ("nonsense",),
        command="benchmark",
    ),
    parameter_case(
        "benchmark-threads-zero",
        "benchmark --threads 0",
        made({"harvard": harvard_subset}, [*BENCHMARK, "--threads", "0", "--out", "rep"]),
        ("threads",),
        command="benchmark",
    ),
    parameter_case(
        "benchmark-peers-missing",
        "benchmark --peers missing.json",
        made({"harvard": harvard_subset}, [*BENCHMARK, "--peers", "missing.json", "--out", "rep"]),
        ("missing.json",),
        command="benchmark",
        mode="proc",
        timeout=20,
    ),
    parameter_case(
        "benchmark-peers-not-json",
        "benchmark --peers garbage.json (not JSON)",
        made(
            {"harvard": harvard_subset, "garbage.json": text("{not json")},
            [*BENCHMARK, "--peers", "garbage.json", "--out", "rep"],
        ),
        ("garbage.json",),
        command="benchmark",
        mode="proc",
        timeout=20,
    ),
]


WORKING_CASES = [
    Case(
        "nii-gz-beside-nii",
        "input",
        "fuse",
        "A is X.nii.gz with a different X.nii beside it (the output must fuse X.nii.gz's voxels)",
        neighbour_swap,
        exit=(0,),
        expect="works (exit 0) and fuses the voxels of X.nii.gz",
    ),
    Case(
        "non-utf8-output-name",
        "output",
        "fuse",
        "-o b'caf\\xe9-out.nii.gz' (a name that is not UTF-8)",
        non_utf8_output,
        mode="proc",
        exit=(0, 2),
        culprit=("-out.nii.gz",),
        expect="works (exit 0, the file is written), or exit 2 with one line naming it",
    ),
]


# --- the Python API ----------------------------------------------------------------------------------
def fingerprint(*objects: Any) -> list[Any]:
    """Hashes of arrays, tensors and images (their voxels and geometry) to compare before/after."""
    prints: list[Any] = []
    for item in objects:
        if hasattr(item, "spacing") and hasattr(item, "array"):
            prints.append((fingerprint(item.array), item.spacing, item.origin, item.direction))
        elif hasattr(item, "detach"):
            prints.append(None if item.device.type == "meta" else fingerprint(item.detach().cpu().numpy()))
        elif isinstance(item, np.ndarray):
            prints.append(
                (
                    item.dtype.str,
                    item.shape,
                    hashlib.sha256(item.tobytes()).hexdigest()
                    if item.dtype != object
                    else repr(item.tolist()),
                )
            )
        else:
            prints.append(repr(item))
    return prints


def api(make: Callable[[Ctx], tuple[Callable[[], Any], Sequence[Any]]]) -> Callable[[Ctx], Setup]:
    """``make(ctx)`` returns the call and the in-memory inputs it must leave unchanged."""

    def build(ctx: Ctx) -> Setup:
        call, inputs = make(ctx)
        return Setup(call=call, state=lambda: fingerprint(*inputs))

    return build


def image(name: str = "T1", *, array: np.ndarray | None = None, **geometry: Any) -> Any:
    """An :class:`~MedFusionLib.image.Image` of a real crop (2 mm voxels) or of ``array``."""
    from MedFusionLib.image import Image

    voxels = mni_crop(name).copy() if array is None else array
    ndim = 2 if voxels.ndim == 2 else 3
    return Image(
        array=voxels,
        spacing=geometry.get("spacing", (2.0,) * ndim),
        origin=geometry.get("origin", (0.0,) * ndim),
        direction=geometry.get("direction", tuple(np.eye(ndim).ravel())),
    )


def fuse_images_call(**options: Any) -> Callable[[Ctx], Setup]:
    """``fuse_images(a, b, **options)``; ``a``/``b`` in ``options`` are made lazily (callables)."""

    def make(ctx: Ctx) -> tuple[Callable[[], Any], Sequence[Any]]:
        from MedFusionLib.pipeline import fuse_images

        a = options.get("a", lambda: image("T1"))
        b = options.get("b", lambda: image("PET"))
        rest = {k: v for k, v in options.items() if k not in ("a", "b")}
        rest = {"method": "average", "device": "cpu", **rest}
        try:
            first, second = a(), b()
        except Exception:  # the constructor refuses: the call meets the same error
            return (lambda: fuse_images(a(), b(), **rest)), ()
        return (lambda: fuse_images(first, second, **rest)), (first, second)

    return api(make)


def tensors(kind: str = "float") -> tuple[Any, Any]:
    """Two 10 x 20 x 20 tensors made from the T1 and PET crops."""
    import torch

    first, second = torch.from_numpy(mni_crop("T1").copy()), torch.from_numpy(mni_crop("PET").copy())
    if kind == "uint8":
        return (first * 255).to(torch.uint8), (second * 255).to(torch.uint8)
    if kind == "bool":
        return first > 0.5, second > 0.5
    if kind == "complex":
        return first.to(torch.complex64), second.to(torch.complex64)
    return first, second


def fuse_tensors_call(make_inputs: Callable[[], tuple[Any, Any]], **options: Any) -> Callable[[Ctx], Setup]:
    def make(ctx: Ctx) -> tuple[Callable[[], Any], Sequence[Any]]:
        from MedFusionLib.fusion import fuse_tensors

        a, b = make_inputs()
        arguments = {"method": "average", **options}
        return (lambda: fuse_tensors(a, b, **arguments)), (a, b)

    return api(make)


def register_call(**options: Any) -> Callable[[Ctx], Setup]:
    def make(ctx: Ctx) -> tuple[Callable[[], Any], Sequence[Any]]:
        from MedFusionLib.registration import register

        fixed = options.get("fixed", lambda: image("T1"))
        moving = options.get("moving", lambda: image("T2"))
        arguments = {k: v for k, v in options.items() if k not in ("fixed", "moving")}

        def call() -> Any:
            return register(fixed(), moving(), **arguments)

        return call, ()

    return api(make)


def metrics_call(
    a: Callable[[], Any] | None = None,
    b: Callable[[], Any] | None = None,
    f: Callable[[], Any] | None = None,
    **options: Any,
) -> Callable[[Ctx], Setup]:
    def make(ctx: Ctx) -> tuple[Callable[[], Any], Sequence[Any]]:
        from MedFusionLib.metrics.compute import compute_metrics

        grey = [(mni_crop(n) * 255).astype(np.float64) for n in ("T1", "PET", "T2")]
        arrays = [(maker or (lambda g=g: g))() for maker, g in zip((a, b, f), grey, strict=True)]
        arguments = {"names": ("src_a", "src_b", "fused_f"), "metrics": ["SSIM", "MI"], **options}
        return (lambda: compute_metrics(*arrays, **arguments)), arrays

    return api(make)


def read_call(name: str, make: Maker, **options: Any) -> Callable[[Ctx], Setup]:
    def build(ctx: Ctx) -> Setup:
        from MedFusionLib.io import read_image

        make(ctx.work / name)
        return Setup(call=lambda: read_image(ctx.work / name, **options))

    return build


def write_call(make_image: Callable[[], Any], name: str, *, disk: bool = False) -> Callable[[Ctx], Setup]:
    def build(ctx: Ctx) -> Setup:
        from MedFusionLib.io import write_image

        folder = ctx.mount("64k") if disk else ctx.work
        return Setup(call=lambda: write_image(make_image(), folder / name), watch=[folder] if disk else [])

    return build


def write_to_full_disk(ctx: Ctx) -> Setup:
    disk = ctx.mount("64k")
    script = (
        "import numpy as np\n"
        "from MedFusionLib.image import Image\n"
        "from MedFusionLib.io import write_image\n"
        "noise = np.random.default_rng(7).random((16, 64, 64), dtype=np.float32)\n"
        f"write_image(Image.from_array(noise), {str(disk / 'api_full.nii')!r})"
    )
    return Setup(script=script, watch=[disk])


def read_neighbour(ctx: Ctx) -> Setup:
    """read_image("scan.nii.gz") with a different scan.nii beside it must give scan.nii.gz's voxels."""
    from MedFusionLib.io import read_image

    t1(ctx.work / "scan.nii.gz")
    save(ctx.work / "scan.nii", mni_crop("PET")[::-1].copy())

    def check(outcome: Outcome) -> list[str]:
        value = outcome.value
        if value is None:
            return []
        if not np.array_equal(value.array, mni_crop("T1")):
            return ["read_image('scan.nii.gz') returned other voxels than the file holds (scan.nii's?)"]
        return []

    return Setup(call=lambda: read_image(ctx.work / "scan.nii.gz"), check=check)


def api_case(
    id: str, command: str, tried: str, build: Callable[[Ctx], Setup], culprit: tuple[str, ...], **options: Any
) -> Case:
    return Case(id, "api", command, tried, build, culprit=culprit, mode=options.pop("mode", "api"), **options)


def object_image() -> Any:
    array = np.empty((10, 20, 20), dtype=object)
    array[...] = 1.0
    return image(array=array)


def nan_image() -> Any:
    return image(array=np.full((10, 20, 20), np.nan, np.float32))


def complex_image() -> Any:
    crop = mni_crop("T1")
    return image(array=(crop + 1j * crop[::-1]).astype(np.complex64))


SINGULAR = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)

API_CASES = [
    api_case(
        "api-read-missing",
        "io.read_image",
        "a missing file",
        read_call("ghost.nii.gz", lambda path: None),
        ("ghost.nii.gz",),
    ),
    api_case(
        "api-read-empty",
        "io.read_image",
        "a 0-byte .nii.gz",
        read_call("empty.nii.gz", empty),
        ("empty.nii.gz",),
    ),
    api_case(
        "api-read-no-dicom",
        "io.read_image",
        "a folder without DICOM files",
        read_call("nodicom", dicom_folder("none")),
        ("nodicom",),
    ),
    api_case(
        "api-read-bad-modality",
        "io.read_image",
        "modality='XR'",
        read_call("t1.nii.gz", t1, modality="XR"),
        ("XR",),
    ),
    api_case(
        "api-read-none",
        "io.read_image",
        "read_image(None)",
        api(
            lambda ctx: (lambda: __import__("MedFusionLib.io", fromlist=["read_image"]).read_image(None), ())
        ),
        ("None", "path"),
    ),
    api_case(
        "api-read-fifo",
        "io.read_image",
        "a FIFO named .nii (in a subprocess, with a timeout)",
        lambda ctx: (
            fifo(ctx.work / "pipe.nii")
            or Setup(
                script=f"from MedFusionLib.io import read_image\nread_image({str(ctx.work / 'pipe.nii')!r})"
            )
        ),
        ("pipe.nii",),
        mode="api-proc",
        timeout=20,
    ),
    api_case(
        "api-read-nii-gz-beside-nii",
        "io.read_image",
        "X.nii.gz with a different X.nii beside it",
        read_neighbour,
        (),
        exit=(0,),
        expect="returns the voxels of X.nii.gz",
    ),
    api_case(
        "api-write-numpy",
        "io.write_image",
        "a numpy array instead of an Image",
        write_call(lambda: np.zeros((8, 8), np.float32), "x.nii.gz"),
        ("ndarray", "Image"),
    ),
    api_case(
        "api-write-3d-png",
        "io.write_image",
        "a 3-D image to .png",
        write_call(image, "vol.png"),
        ("vol.png",),
    ),
    api_case(
        "api-write-missing-folder",
        "io.write_image",
        "into nowhere/x.nii.gz",
        write_call(image, "nowhere/x.nii.gz"),
        ("nowhere",),
    ),
    api_case(
        "api-write-full-disk",
        "io.write_image",
        "256 KB of noise to .nii in a 64 KB tmpfs (in a subprocess)",
        write_to_full_disk,
        ("api_full.nii",),
        mode="api-proc",
        timeout=30,
    ),
    api_case(
        "api-write-object-dtype",
        "io.write_image",
        "an object-dtype image",
        write_call(object_image, "obj.nii.gz"),
        ("object",),
    ),
    api_case(
        "api-write-complex",
        "io.write_image",
        "a complex64 image to .nrrd",
        write_call(complex_image, "complex.nrrd"),
        ("complex",),
    ),
    api_case(
        "api-fuse-numpy",
        "pipeline.fuse_images",
        "numpy arrays instead of Images",
        fuse_images_call(a=lambda: mni_crop("T1"), b=lambda: mni_crop("PET")),
        ("ndarray", "Image"),
    ),
    api_case(
        "api-fuse-parameters-list",
        "pipeline.fuse_images",
        "parameters=[1, 2]",
        fuse_images_call(method="laplacian_pyramid", parameters=[1, 2]),
        ("parameters",),
    ),
    api_case(
        "api-fuse-parameter-out-of-range",
        "pipeline.fuse_images",
        "gff with parameters={'r1': 0}",
        fuse_images_call(method="gff", parameters={"r1": 0}),
        ("r1",),
    ),
    api_case(
        "api-fuse-object-dtype",
        "pipeline.fuse_images",
        "an object-dtype image A",
        fuse_images_call(a=object_image, name_a="obj_a"),
        ("object", "obj_a"),
    ),
    api_case(
        "api-fuse-singular-direction",
        "pipeline.fuse_images",
        "A with a singular direction matrix",
        fuse_images_call(a=lambda: image(direction=SINGULAR), name_a="sing_a"),
        ("direction", "sing_a"),
    ),
    api_case(
        "api-fuse-nan-image",
        "pipeline.fuse_images",
        "A holds only NaN",
        fuse_images_call(a=nan_image, name_a="nan_a"),
        ("nan_a",),
    ),
    api_case(
        "api-fuse-complex-image",
        "pipeline.fuse_images",
        "A is complex64",
        fuse_images_call(a=complex_image, name_a="cplx_a"),
        ("complex", "cplx_a"),
    ),
    api_case(
        "api-fuse-unknown-method",
        "pipeline.fuse_images",
        "method='nonsense'",
        fuse_images_call(method="nonsense"),
        ("nonsense",),
    ),
    api_case(
        "api-fuse-unknown-device",
        "pipeline.fuse_images",
        "device='nonsense'",
        fuse_images_call(device="nonsense"),
        ("nonsense",),
    ),
    api_case(
        "api-fuse-2d-with-3d",
        "pipeline.fuse_images",
        "a 2-D A with a 3-D B",
        fuse_images_call(a=lambda: image(array=mni_crop("T1")[5].copy()), name_a="flat_a", name_b="vol_b"),
        ("flat_a", "vol_b"),
    ),
    api_case(
        "api-fuse-window-zero-width",
        "pipeline.fuse_images",
        "window_a=(40, 0)",
        fuse_images_call(window_a=(40.0, 0.0)),
        ("window",),
    ),
    api_case(
        "api-fuse-interpolation",
        "pipeline.fuse_images",
        "interpolation='cubic'",
        fuse_images_call(interpolation="cubic"),
        ("cubic",),
    ),
    api_case(
        "api-fuse-no-overlap",
        "pipeline.fuse_images",
        "B 10 m away from A",
        fuse_images_call(b=lambda: image("PET", origin=(1e4, 1e4, 1e4)), name_a="here_a", name_b="far_b"),
        ("far_b", "here_a"),
    ),
    api_case(
        "api-fuse-empty-image",
        "pipeline.fuse_images",
        "A with zero voxels (shape 0 x 20 x 20)",
        fuse_images_call(a=lambda: image(array=np.zeros((0, 20, 20), np.float32)), name_a="void_a"),
        ("void_a",),
    ),
    api_case(
        "api-fuse-none", "pipeline.fuse_images", "b=None", fuse_images_call(b=lambda: None), ("None", "Image")
    ),
    *[
        api_case(
            f"api-tensors-uint8-{method}",
            "fusion.fuse_tensors",
            f"uint8 tensors, method {method}",
            fuse_tensors_call(lambda: tensors("uint8"), method=method),
            ("uint8",),
        )
        for method in ("average", "maximum", "laplacian_pyramid", "dwt", "gff", "pa_pcnn")
    ],
    *[
        api_case(
            f"api-tensors-bool-{method}",
            "fusion.fuse_tensors",
            f"bool tensors, method {method}",
            fuse_tensors_call(lambda: tensors("bool"), method=method),
            ("bool",),
        )
        for method in ("average", "gff")
    ],
    api_case(
        "api-tensors-two-devices",
        "fusion.fuse_tensors",
        "A on the CPU, B on the 'meta' device",
        fuse_tensors_call(lambda: (tensors()[0], tensors()[1].to("meta"))),
        ("device", "meta"),
    ),
    api_case(
        "api-tensors-parameters-list",
        "fusion.fuse_tensors",
        "parameters=[1, 2]",
        fuse_tensors_call(tensors, method="laplacian_pyramid", parameters=[1, 2]),
        ("parameters",),
    ),
    api_case(
        "api-tensors-numpy",
        "fusion.fuse_tensors",
        "numpy arrays instead of tensors",
        fuse_tensors_call(lambda: (mni_crop("T1"), mni_crop("PET"))),
        ("ndarray", "tensor"),
    ),
    api_case(
        "api-tensors-nan",
        "fusion.fuse_tensors",
        "tensors full of NaN (laplacian_pyramid)",
        fuse_tensors_call(lambda: tuple(t * float("nan") for t in tensors()), method="laplacian_pyramid"),
        ("NaN",),
    ),
    api_case(
        "api-tensors-1d",
        "fusion.fuse_tensors",
        "1-D tensors (50 samples)",
        fuse_tensors_call(lambda: tuple(t.flatten()[:50] for t in tensors())),
        ("1-D",),
    ),
    api_case(
        "api-tensors-4d",
        "fusion.fuse_tensors",
        "4-D tensors (1 x 10 x 20 x 20)",
        fuse_tensors_call(lambda: tuple(t[None] for t in tensors())),
        ("4-D",),
    ),
    api_case(
        "api-tensors-shape-mismatch",
        "fusion.fuse_tensors",
        "10x20x20 with 5x20x20",
        fuse_tensors_call(lambda: (tensors()[0], tensors()[1][:5])),
        ("shape",),
    ),
    api_case(
        "api-tensors-complex",
        "fusion.fuse_tensors",
        "complex64 tensors",
        fuse_tensors_call(lambda: tensors("complex")),
        ("complex",),
    ),
    api_case(
        "api-tensors-empty",
        "fusion.fuse_tensors",
        "tensors with zero voxels (0 x 20 x 20)",
        fuse_tensors_call(lambda: (tensors()[0][:0], tensors()[1][:0])),
        ("empty", "zero", "no voxel"),
    ),
    api_case(
        "api-tensors-unknown-method",
        "fusion.fuse_tensors",
        "method='nonsense'",
        fuse_tensors_call(tensors, method="nonsense"),
        ("nonsense",),
    ),
    api_case(
        "api-register-numpy",
        "registration.register",
        "numpy arrays instead of Images",
        register_call(fixed=lambda: mni_crop("T1"), moving=lambda: mni_crop("T2")),
        ("ndarray", "Image"),
    ),
    api_case(
        "api-register-seed-negative", "registration.register", "seed=-1", register_call(seed=-1), ("seed",)
    ),
    api_case(
        "api-register-seed-huge", "registration.register", "seed=2**64", register_call(seed=2**64), ("seed",)
    ),
    api_case(
        "api-register-sampling-zero",
        "registration.register",
        "sampling_fraction=0",
        register_call(sampling_fraction=0.0),
        ("sampling_fraction",),
    ),
    api_case(
        "api-register-bins",
        "registration.register",
        "histogram_bins=2",
        register_call(histogram_bins=2),
        ("histogram_bins",),
    ),
    api_case(
        "api-register-type",
        "registration.register",
        "type='elastic'",
        register_call(type="elastic"),
        ("elastic",),
    ),
    api_case(
        "api-register-2d-with-3d",
        "registration.register",
        "a 2-D moving image, a 3-D fixed one",
        register_call(
            moving=lambda: image(array=mni_crop("T2")[5].copy()), name_fixed="vol_f", name_moving="flat_m"
        ),
        ("flat_m", "vol_f"),
    ),
    api_case(
        "api-register-constant",
        "registration.register",
        "a constant moving image",
        register_call(moving=lambda: image(array=np.ones((10, 20, 20), np.float32)), name_moving="flat_m"),
        ("flat_m",),
    ),
    api_case(
        "api-register-nan",
        "registration.register",
        "a NaN-only fixed image",
        register_call(fixed=nan_image, name_fixed="nan_f"),
        ("nan_f",),
    ),
    api_case(
        "api-register-singular-direction",
        "registration.register",
        "a moving image with a singular direction",
        register_call(moving=lambda: image("T2", direction=SINGULAR), name_moving="sing_m"),
        ("direction", "sing_m"),
    ),
    api_case(
        "api-metrics-unknown",
        "metrics.compute_metrics",
        "metrics=['bogus']",
        metrics_call(metrics=["bogus"]),
        ("bogus",),
    ),
    api_case(
        "api-metrics-mode",
        "metrics.compute_metrics",
        "mode='diagonal'",
        metrics_call(mode="diagonal"),
        ("diagonal",),
    ),
    api_case(
        "api-metrics-axis",
        "metrics.compute_metrics",
        "mode='slices', axis=5",
        metrics_call(mode="slices", axis=5),
        ("axis",),
    ),
    api_case(
        "api-metrics-shape",
        "metrics.compute_metrics",
        "F of another shape",
        metrics_call(f=lambda: np.zeros((5, 20, 20))),
        ("fused_f",),
    ),
    api_case(
        "api-metrics-nan",
        "metrics.compute_metrics",
        "F full of NaN",
        metrics_call(f=lambda: np.full((10, 20, 20), np.nan)),
        ("fused_f",),
    ),
    api_case(
        "api-metrics-1d",
        "metrics.compute_metrics",
        "1-D arrays",
        metrics_call(*(lambda: np.linspace(0, 255, 50),) * 3),
        ("src_a",),
    ),
    api_case(
        "api-metrics-complex",
        "metrics.compute_metrics",
        "a complex A",
        metrics_call(a=lambda: (mni_crop("T1") * 255).astype(np.complex128)),
        ("src_a", "complex"),
    ),
    api_case(
        "api-metrics-empty",
        "metrics.compute_metrics",
        "arrays with zero voxels",
        metrics_call(*(lambda: np.zeros((0, 20, 20)),) * 3),
        ("src_a",),
    ),
    api_case(
        "api-metrics-device",
        "metrics.compute_metrics",
        "device='nonsense'",
        metrics_call(device="nonsense"),
        ("nonsense",),
    ),
]


# --- the Slicer bridge (slicer-core) ---------------------------------------------------------------------
def volume_node(scene: Any, name: str, array: np.ndarray, spacing: Sequence[float] = (2.0, 2.0, 2.0)) -> Any:
    """A scalar (or vector, for a trailing axis) volume node, built with slicer-core only."""
    import slicer

    vector = array.ndim == 4
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode" if vector else "vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.SetSpacing(*spacing)
    return node


def node_state(scene: Any, nodes: Sequence[Any]) -> list[Any]:
    """Voxels, IJK-to-RAS and parent transform of each node, and the number of nodes in the scene."""
    import slicer
    import vtk

    state: list[Any] = [scene.GetNumberOfNodes()]
    for node in nodes:
        if node is None or not node.IsA("vtkMRMLVolumeNode"):
            continue
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        voxels = slicer.util.arrayFromVolume(node) if node.GetImageData() is not None else None
        state.append(
            (
                None
                if voxels is None
                else hashlib.sha256(np.ascontiguousarray(voxels).tobytes()).hexdigest(),
                tuple(matrix.GetElement(i, j) for i in range(4) for j in range(4)),
                node.GetTransformNodeID(),
            )
        )
    return state


def mrml_call(
    fixed: Callable[[Any], Any] | None = None, moving: Callable[[Any], Any] | None = None, **options: Any
) -> Callable[[Ctx], Setup]:
    """``mrml.fuse_volume_nodes(fixed, moving, **options)`` on a fresh scene (registration 'none'
    unless given). ``fixed``/``moving`` make the nodes from the scene; default real T1 and PET crops."""

    def build(ctx: Ctx) -> Setup:
        import slicer

        from MedFusionLib import mrml

        scene = slicer.vtkMRMLScene()
        first = (fixed or (lambda s: volume_node(s, "T1", mni_crop("T1"))))(scene)
        second = (moving or (lambda s: volume_node(s, "PET", mni_crop("PET"))))(scene)
        arguments = {"registration": "none", "method": "average", "device": "cpu", **options}
        return Setup(
            call=lambda: mrml.fuse_volume_nodes(first, second, **arguments),
            state=lambda: node_state(scene, [first, second]),
            cleanup=lambda: scene.Clear(1),
        )

    return build


def other_scene_node(scene: Any) -> Any:
    import slicer

    other = slicer.vtkMRMLScene()
    node = volume_node(other, "ElsewherePET", mni_crop("PET"))
    node._keep_scene = other  # keep the other scene alive as long as the node
    return node


def empty_node(scene: Any) -> Any:
    return scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "HollowPET")


def model_node(scene: Any) -> Any:
    return scene.AddNewNodeByClass("vtkMRMLModelNode", "SurfaceModel")


MRML_CASES = [
    api_case(
        "mrml-fixed-none",
        "mrml.fuse_volume_nodes",
        "fixed=None",
        mrml_call(fixed=lambda scene: None),
        ("fixed",),
    ),
    api_case(
        "mrml-moving-not-volume",
        "mrml.fuse_volume_nodes",
        "moving is a model node",
        mrml_call(moving=model_node),
        ("moving", "SurfaceModel"),
    ),
    api_case(
        "mrml-different-scenes",
        "mrml.fuse_volume_nodes",
        "moving lives in another scene",
        mrml_call(moving=other_scene_node),
        ("ElsewherePET",),
    ),
    api_case(
        "mrml-no-image-data",
        "mrml.fuse_volume_nodes",
        "moving has no voxels",
        mrml_call(moving=empty_node),
        ("HollowPET",),
    ),
    api_case(
        "mrml-unknown-method",
        "mrml.fuse_volume_nodes",
        "method='nonsense'",
        mrml_call(method="nonsense"),
        ("nonsense",),
    ),
    api_case(
        "mrml-unknown-registration",
        "mrml.fuse_volume_nodes",
        "registration='elastic'",
        mrml_call(registration="elastic"),
        ("elastic",),
    ),
    api_case(
        "mrml-parameters-list",
        "mrml.fuse_volume_nodes",
        "parameters=[1, 2]",
        mrml_call(method="laplacian_pyramid", parameters=[1, 2]),
        ("parameters",),
    ),
    api_case(
        "mrml-parameter-out-of-range",
        "mrml.fuse_volume_nodes",
        "laplacian_pyramid levels=0",
        mrml_call(method="laplacian_pyramid", parameters={"levels": 0}),
        ("levels",),
    ),
    api_case(
        "mrml-unknown-device",
        "mrml.fuse_volume_nodes",
        "device='nonsense'",
        mrml_call(device="nonsense"),
        ("nonsense",),
    ),
    api_case(
        "mrml-constant-moving",
        "mrml.fuse_volume_nodes",
        "a constant moving volume",
        mrml_call(moving=lambda scene: volume_node(scene, "FlatPET", np.ones((10, 20, 20), np.float32))),
        ("FlatPET",),
    ),
    api_case(
        "mrml-nan-fixed",
        "mrml.fuse_volume_nodes",
        "a NaN-only fixed volume",
        mrml_call(fixed=lambda scene: volume_node(scene, "NanT1", np.full((10, 20, 20), np.nan, np.float32))),
        ("NanT1",),
    ),
    api_case(
        "mrml-zero-spacing",
        "mrml.fuse_volume_nodes",
        "a fixed volume with spacing (0, 2, 2)",
        mrml_call(fixed=lambda scene: volume_node(scene, "ZeroT1", mni_crop("T1"), spacing=(0.0, 2.0, 2.0))),
        ("ZeroT1",),
    ),
    api_case(
        "mrml-two-components",
        "mrml.fuse_volume_nodes",
        "a moving vector volume with 2 components",
        mrml_call(
            moving=lambda scene: volume_node(scene, "PairPET", np.stack([mni_crop("PET")] * 2, axis=-1))
        ),
        ("PairPET",),
    ),
    api_case(
        "mrml-no-overlap",
        "mrml.fuse_volume_nodes",
        "volumes 10 m apart, rigid registration",
        mrml_call(
            moving=lambda scene: shifted(volume_node(scene, "FarPET", mni_crop("PET"))), registration="rigid"
        ),
        ("FarPET", "T1"),
    ),
]


def shifted(node: Any) -> Any:
    node.SetOrigin(1e4, 1e4, 1e4)
    return node


# --- the catalogue -------------------------------------------------------------------------------------
GEOMETRY = ("spacing", "pixdim", "voxel size", "direction", "orthonormal", "orthogonal", "shear", "singular")
REASONS: dict[str, tuple[str, ...]] = {
    # Cases whose known failure was a wrong explanation (1e9 mm voxels reported as "constant"),
    # or a silent fix: the line must say what is wrong, not only name the file.
    **dict.fromkeys(
        ("huge-spacing-b", "nifti-pixdim-zero", "nifti-pixdim-nan", "nifti-pixdim-inf"), GEOMETRY
    ),
    **dict.fromkeys(("nrrd-zero-spacing", "nrrd-nan-spacing", "nrrd-sheared-direction"), GEOMETRY),
    **dict.fromkeys(
        ("nrrd-singular-direction", "mha-sheared-direction", "api-fuse-singular-direction"), GEOMETRY
    ),
    **dict.fromkeys(("api-register-singular-direction", "mrml-zero-spacing"), GEOMETRY),
    **dict.fromkeys(("complex-voxels", "api-fuse-complex-image", "api-write-complex"), ("complex",)),
    **dict.fromkeys(("no-overlap", "api-fuse-no-overlap"), ("overlap",)),
    **dict.fromkeys(("nan-only-a", "nan-only-b", "api-fuse-nan-image"), ("nan", "finite")),
    "inf-only-a": ("finite", "inf"),
    **dict.fromkeys(
        ("constant-a", "constant-b", "register-constant-moving", "mrml-constant-moving"), ("constant",)
    ),
    **dict.fromkeys(
        (
            "out-is-input-a",
            "out-is-input-b",
            "out-is-input-dotdot",
            "out-is-input-absolute",
            "out-is-symlink-to-input",
            "out-is-hardlink-to-input",
            "out-is-input-b-png",
            "register-resampled-is-fixed",
            "register-qa-is-fixed-png",
        ),
        ("input", "overwrite", "same file"),
    ),
}

CASES: list[Case] = [
    *INPUT_CASES,
    *OUTPUT_CASES,
    *SIGNAL_CASES,
    *RACE_CASES,
    *MEMORY_CASES,
    *PARAMETER_CASES,
    *WORKING_CASES,
    *API_CASES,
    *MRML_CASES,
]

CASES = [replace(case, reason=REASONS[case.id]) if case.id in REASONS else case for case in CASES]
_ids = [case.id for case in CASES]
assert not set(REASONS) - set(_ids), sorted(set(REASONS) - set(_ids))
assert len(set(_ids)) == len(_ids), sorted({i for i in _ids if _ids.count(i) > 1})
