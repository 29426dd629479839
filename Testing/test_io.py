"""Tests of MedFusionLib.io: formats, geometry round trips, DICOM series, errors, atomic writes."""

from __future__ import annotations

import bz2
import gzip
import math
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedFusionLib import headers, limits
from MedFusionLib import io as mio
from MedFusionLib.errors import InputError, ParameterError
from MedFusionLib.image import Image
from MedFusionLib.io import SUPPORTED_EXTENSIONS, check_output_path, image_format, read_image, write_image

# Every reference volume but the 35 M-voxel colin27 0.5 mm (kept for benchmarks).
VOLUMES = [
    "mni/spm_T1.nii.gz",
    "mni/spm_T2.nii.gz",
    "mni/spm_PD.nii.gz",
    "mni/spm_EPI.nii.gz",
    "mni/spm_PET.nii.gz",
    "mni/spm_SPECT.nii.gz",
    "mni/spm_Transm.nii.gz",
    "mni/spm_single_subj_T1.nii.gz",
    "mni/colin27_ch2_1mm.nii.gz",
    "ct/chest_ct_lung1.nrrd",
    "ct/brain_mr_brain1.nrrd",
]
LOSSLESS = (".nii.gz", ".nrrd", ".mha", ".mhd")


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message and message.strip() == message and message
    return message


def assert_same_geometry(a: Image, b: Image, *, exact: bool) -> None:
    if exact:
        assert (a.spacing, a.origin, a.direction) == (b.spacing, b.origin, b.direction)
    else:
        for name in ("spacing", "origin", "direction"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.fixture(scope="module")
def volumes(data_dir: Path) -> dict[str, Image]:
    return {name: read_image(data_dir / name) for name in VOLUMES}


# --- formats -------------------------------------------------------------------------------
def test_image_format_and_extensions(tmp_path: Path) -> None:
    assert ".nii.gz" in SUPPORTED_EXTENSIONS and ".jpeg" in SUPPORTED_EXTENSIONS
    assert image_format("a/b.NII.GZ") == "nifti"
    assert image_format("b.nii") == "nifti"
    assert image_format("b.nhdr") == image_format("b.nrrd") == "nrrd"
    assert image_format("b.mhd") == image_format("b.mha") == "metaimage"
    assert image_format("b.JPG") == image_format("b.jpeg") == "jpeg"
    assert image_format("b.png") == "png"
    assert image_format("out/series") == "dicom"
    assert image_format(tmp_path) == "dicom"  # an existing folder, whatever its name
    for bad in ("b.gz", "b.tiff", "b.dcm", "results.v2"):
        with pytest.raises(InputError) as error:
            image_format(bad)
        assert bad in one_line(error) and "unsupported" in str(error.value)


def test_check_output_path(tmp_path: Path) -> None:
    assert check_output_path(tmp_path / "x.nrrd", ndim=3) == "nrrd"
    with pytest.raises(InputError, match="does not exist") as error:
        check_output_path(tmp_path / "missing" / "x.nrrd")
    assert "missing" in one_line(error)
    with pytest.raises(InputError, match="2-D"):
        check_output_path(tmp_path / "x.png", ndim=3)
    (tmp_path / "folder.nrrd").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        check_output_path(tmp_path / "folder.nrrd")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        check_output_path(tmp_path / "afile")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        check_output_path(tmp_path / "busy")


# --- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", VOLUMES)
def test_volume_round_trips(volumes: dict[str, Image], name: str, tmp_path: Path) -> None:
    original = volumes[name]
    before = original.array.copy()
    if original.array.size > 5_000_000:
        # chest CT (12.6 M voxels) and colin27 1 mm (7 M): round-trip their first 8 slices,
        # which keep the full geometry (same origin, spacing, direction), to stay fast.
        original = original.with_array(original.array[:8].copy())
    for extension in LOSSLESS:
        path = write_image(original, tmp_path / f"out{extension}")
        back = read_image(path)
        assert back.array.dtype == original.array.dtype, extension
        assert np.array_equal(back.array, original.array), extension
        # NIfTI stores spacing, origin and direction (qform/sform) as float32: compare to that
        # precision. NRRD and MetaImage print them with full double precision: exact.
        assert_same_geometry(back, original, exact=extension != ".nii.gz")
        assert back.metadata["format"] == image_format(path)
    assert np.array_equal(volumes[name].array, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.nii.gz", "out.nrrd", "out.mha", "out.mhd", "out.zraw"]
    )  # no temporaries left behind


def test_spect_keeps_its_flipped_x_axis(volumes: dict[str, Image], tmp_path: Path) -> None:
    spect = volumes["mni/spm_SPECT.nii.gz"]
    t1 = volumes["mni/spm_T1.nii.gz"]
    assert spect.direction[0] == -1.0 and t1.direction[0] == 1.0
    for extension in (*LOSSLESS, ".nhdr", ".nii"):
        back = read_image(write_image(spect, tmp_path / f"spect{extension}"))
        assert back.direction[0] == -1.0 and back.origin[0] == 90.0, extension


def test_uncompressed_writes(volumes: dict[str, Image], tmp_path: Path) -> None:
    t1 = volumes["mni/spm_T1.nii.gz"]
    for extension in (".nrrd", ".mha", ".nhdr", ".mhd"):
        path = write_image(t1, tmp_path / f"plain{extension}", compress=False)
        back = read_image(path)
        assert np.array_equal(back.array, t1.array)
        assert_same_geometry(back, t1, exact=True)
    assert (tmp_path / "plain.raw").is_file()
    assert (tmp_path / "plain.nrrd").stat().st_size > t1.array.nbytes


def test_dicom_round_trip_right_handed_integer(volumes: dict[str, Image], tmp_path: Path) -> None:
    spect = volumes["mni/spm_SPECT.nii.gz"].with_array(
        volumes["mni/spm_SPECT.nii.gz"].array, modality="SPECT"
    )
    folder = write_image(spect, tmp_path / "spect")
    files = sorted(folder.iterdir())
    assert len(files) == spect.shape[0] and all(f.suffix == ".dcm" for f in files)
    back = read_image(folder)
    assert back.modality == "SPECT" and back.metadata["dicom_modality"] == "NM"
    assert back.array.dtype == np.int16
    assert np.array_equal(back.array, spect.array)
    assert_same_geometry(back, spect, exact=False)

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(files[1]))
    reader.ReadImageInformation()
    tag = reader.GetMetaData
    assert [float(v) for v in tag("0020|0032").split("\\")] == [90.0, 126.0, -70.0]
    assert [float(v) for v in tag("0020|0037").split("\\")] == [-1, 0, 0, 0, -1, 0]
    assert [float(v) for v in tag("0028|0030").split("\\")] == [2.0, 2.0]
    assert float(tag("0018|0050")) == 2.0
    assert tag("0008|0060").strip() == "NM"
    assert tag("0020|000e").startswith("2.25.") and tag("0020|000d").startswith("2.25.")


def test_dicom_round_trip_float_left_handed(volumes: dict[str, Image], tmp_path: Path) -> None:
    """spm_T1 (float32, direction diag(1, -1, 1), a left-handed grid DICOM cannot state)."""
    t1 = volumes["mni/spm_T1.nii.gz"].with_array(volumes["mni/spm_T1.nii.gz"].array, modality="MR")
    before = t1.array.copy()
    back = read_image(write_image(t1, tmp_path / "t1"))
    assert np.array_equal(t1.array, before)
    assert back.modality == "MR" and back.array.dtype == np.float32
    # Same voxels at the same world positions, slices stored in the opposite order.
    n = t1.shape[0]
    assert back.direction == (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0)
    np.testing.assert_allclose(back.index_to_world() @ [3, 4, n - 1, 1], t1.index_to_world() @ [3, 4, 0, 1])
    np.testing.assert_allclose(back.spacing, t1.spacing)
    step = float(np.ptp(t1.array)) / 65534
    error = np.abs(back.array[::-1].astype(np.float64) - t1.array)
    assert error.max() <= step / 2 * 1.01 + 1e-7


def test_dicom_2d_rgb_and_overwrite(data_dir: Path, tmp_path: Path) -> None:
    pet = read_image(data_dir / "harvard/MRI_PET/PET/11.png")
    folder = tmp_path / "pet"
    write_image(pet, folder)
    back = read_image(folder)
    assert back.is_rgb and back.ndim == 2 and np.array_equal(back.array, pet.array)
    assert_same_geometry(back, pet, exact=True)
    # Writing again replaces the old series (a folder of .dcm files only).
    write_image(pet.with_array(255 - pet.array), folder)
    assert np.array_equal(read_image(folder).array, 255 - pet.array)
    assert [p.name for p in tmp_path.iterdir()] == ["pet"]


def test_dicom_several_series_reads_the_largest(tmp_path: Path) -> None:
    small = Image.from_array(np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4), modality="CT")
    big = Image.from_array(np.ones((5, 3, 4), np.int16), modality="PET")
    write_image(small, tmp_path / "a")
    write_image(big, tmp_path / "b")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for folder, prefix in ((tmp_path / "a", "a"), (tmp_path / "b", "b")):
        for file in folder.iterdir():
            shutil.copy(file, mixed / f"{prefix}_{file.name}")
    back = read_image(mixed)
    assert back.modality == "PET" and back.shape == (5, 3, 4)
    assert read_image(mixed, modality="SPECT").modality == "SPECT"


def test_harvard_pngs(data_dir: Path, tmp_path: Path) -> None:
    pet = read_image(data_dir / "harvard/MRI_PET/PET/11.png")
    mri = read_image(data_dir / "harvard/MRI_PET/MRI/11.png")
    assert pet.array.shape == (256, 256, 3) and pet.array.dtype == np.uint8 and pet.ndim == 2
    assert pet.is_pseudo_colour and pet.modality is None
    assert mri.is_rgb and not mri.is_pseudo_colour  # gray stored as RGB stays as stored
    back = read_image(write_image(pet, tmp_path / "pet.png"))
    assert back.is_pseudo_colour and np.array_equal(back.array, pet.array)
    gray = mri.with_array(mri.array[..., 0].copy())
    back = read_image(write_image(gray, tmp_path / "gray.png"))
    assert back.array.shape == (256, 256) and np.array_equal(back.array, gray.array)


def test_jpeg_round_trip_is_close(data_dir: Path, tmp_path: Path) -> None:
    for sub in ("MRI_PET/PET/11.png", "MRI_CT/CT/11.png"):
        image = read_image(data_dir / "harvard" / sub)
        back = read_image(write_image(image, tmp_path / "x.jpg"))
        assert back.array.shape == image.array.shape
        difference = np.abs(back.array.astype(int) - image.array)
        assert difference.mean() < 2.0, sub
    gray = Image.from_array(np.tile(np.linspace(0, 255, 64).astype(np.uint8), (32, 1)))
    back = read_image(write_image(gray, tmp_path / "g.jpeg"))
    assert back.array.shape == (32, 64) and np.abs(back.array.astype(int) - gray.array).max() <= 4


def test_png_conversions(tmp_path: Path) -> None:
    values = np.array([[-0.1, 0.0, 0.2], [0.5, 1.0, 1.7]], np.float32)
    image = Image.from_array(values.copy())
    back = read_image(write_image(image, tmp_path / "f.png"))
    assert back.array.dtype == np.uint8
    assert back.array.tolist() == [[0, 0, 51], [128, 255, 255]]
    assert np.array_equal(image.array, values)
    labels = Image.from_array(np.array([[0, 7], [200, 255]], np.int16))
    assert read_image(write_image(labels, tmp_path / "l.png")).array.tolist() == [[0, 7], [200, 255]]
    wide = Image.from_array(np.array([[0, 4000], [65535, 9]], np.uint16))
    assert np.array_equal(read_image(write_image(wide, tmp_path / "w.png")).array, wide.array)
    with pytest.raises(InputError, match="int16 voxels") as error:
        write_image(Image.from_array(np.array([[-1000, 3000]], np.int16).repeat(2, 0)), tmp_path / "hu.png")
    assert "hu.png" in one_line(error)
    with pytest.raises(InputError, match="JPEG"):
        write_image(wide, tmp_path / "w.jpg")
    with pytest.raises(InputError, match="3-D") as error:
        write_image(Image.from_array(np.zeros((2, 3, 4), np.uint8)), tmp_path / "v.png")
    assert "v.png" in one_line(error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "l.png", "w.png"]


def test_four_d_with_one_volume_reads_as_3d(tmp_path: Path) -> None:
    image = sitk.Image([4, 3, 2, 1], sitk.sitkInt16)
    image.SetSpacing((1.5, 2.0, 2.5, 1.0))
    sitk.WriteImage(image, str(tmp_path / "one.nii.gz"))
    back = read_image(tmp_path / "one.nii.gz")
    assert back.shape == (2, 3, 4) and back.spacing == (1.5, 2.0, 2.5)


def test_modality_argument(data_dir: Path) -> None:
    assert read_image(data_dir / "ct/chest_ct_lung1.nrrd", modality="CT").modality == "CT"
    with pytest.raises(ParameterError, match="'XR'") as error:
        read_image(data_dir / "ct/chest_ct_lung1.nrrd", modality="XR")
    one_line(error)


# --- errors --------------------------------------------------------------------------------
def test_read_errors(data_dir: Path, tmp_path: Path) -> None:
    t1 = data_dir / "mni/spm_T1.nii.gz"
    cases: dict[str, str] = {}

    cases[str(tmp_path / "missing.nii.gz")] = "file not found"
    (tmp_path / "notes.txt").write_text("hello")
    cases[str(tmp_path / "notes.txt")] = "unsupported extension '.txt'"
    (tmp_path / "noext").write_text("hello")
    cases[str(tmp_path / "noext")] = "unsupported file without extension"
    blob = t1.read_bytes()
    (tmp_path / "half.nii.gz").write_bytes(blob[: len(blob) // 2])
    cases[str(tmp_path / "half.nii.gz")] = "truncated"
    plain = tmp_path / "plain.nii"
    write_image(read_image(t1), plain)
    blob = plain.read_bytes()
    (tmp_path / "half.nii").write_bytes(blob[: len(blob) // 2])
    cases[str(tmp_path / "half.nii")] = "truncated"
    nrrd = (data_dir / "ct/brain_mr_brain1.nrrd").read_bytes()
    (tmp_path / "half.nrrd").write_bytes(nrrd[: len(nrrd) // 2])
    cases[str(tmp_path / "half.nrrd")] = "cannot read"
    png = (data_dir / "harvard/MRI_PET/PET/11.png").read_bytes()
    (tmp_path / "half.png").write_bytes(png[: len(png) // 2])
    cases[str(tmp_path / "half.png")] = "truncated"
    for extension in (".nii.gz", ".nrrd", ".mha", ".png", ".jpg"):
        garbage = tmp_path / f"garbage{extension}"
        garbage.write_bytes(b"this is not an image\n" * 10)
        cases[str(garbage)] = "cannot read"
    (tmp_path / "empty").mkdir()
    cases[str(tmp_path / "empty")] = "no DICOM series"
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.dcm").write_text("not dicom")
    cases[str(tmp_path / "junk")] = "no DICOM series"
    sitk.WriteImage(sitk.Image([3, 4, 5, 2], sitk.sitkFloat32), str(tmp_path / "four.nii.gz"))
    cases[str(tmp_path / "four.nii.gz")] = "4-D"
    sitk.WriteImage(sitk.Image([3, 4], sitk.sitkVectorFloat32, 2), str(tmp_path / "two.mha"))
    cases[str(tmp_path / "two.mha")] = "2 components"
    sitk.WriteImage(sitk.Image([3, 4], sitk.sitkVectorUInt8, 4), str(tmp_path / "rgba.png"))
    cases[str(tmp_path / "rgba.png")] = "4 components"
    (tmp_path / "line.nrrd").write_text(
        "NRRD0004\ntype: float\ndimension: 1\nsizes: 5\nencoding: ascii\n\n1 2 3 4 5\n"
    )
    cases[str(tmp_path / "line.nrrd")] = "1-D"

    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    for path, expected in cases.items():
        with pytest.raises(InputError) as error:
            read_image(path)
        message = one_line(error)
        assert expected in message, (path, message)
        assert path in message, message
        assert len(message) < 300, message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


class _FailingWriter:
    """Stands in for sitk.ImageFileWriter: writes a partial file, then fails like ITK."""

    def __init__(self) -> None:
        self.filename = ""

    def __getattr__(self, name: str):  # SetImageIO, SetUseCompression, KeepOriginalImageUIDOn...
        return lambda *args: None

    def SetFileName(self, filename: str) -> None:  # noqa: N802 (SimpleITK's name)
        self.filename = filename

    def Execute(self, image: sitk.Image) -> None:  # noqa: N802
        Path(self.filename).write_bytes(b"partial")
        raise RuntimeError(
            "Exception thrown in SimpleITK ImageFileWriter_Execute: /x/itkImageFileWriter.hxx:1:\n"
            "ITK ERROR: ImageFileWriter(0x1234): disk full\nmore detail"
        )


@pytest.mark.parametrize("name", ["out.nii.gz", "out.png", "out.mhd", "out.nhdr", "series"])
def test_failed_write_leaves_nothing(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = Image.from_array(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4))
    before = image.array.copy()
    monkeypatch.setattr(mio.sitk, "ImageFileWriter", _FailingWriter)
    with pytest.raises(InputError) as error:
        write_image(image, tmp_path / name)
    assert one_line(error) == f"cannot write {tmp_path / name}: disk full"
    assert list(tmp_path.iterdir()) == []
    assert np.array_equal(image.array, before)


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = Image.from_array(np.full((3, 4), 7, np.int16))
    path = write_image(old, tmp_path / "keep.nrrd")
    folder = write_image(old, tmp_path / "keep")
    monkeypatch.setattr(mio.sitk, "ImageFileWriter", _FailingWriter)
    new = Image.from_array(np.zeros((3, 4), np.int16))
    for target in (path, folder):
        with pytest.raises(InputError):
            write_image(new, target)
    monkeypatch.undo()
    assert np.array_equal(read_image(path).array, old.array)
    assert np.array_equal(read_image(folder).array, old.array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep", "keep.nrrd"]


def test_write_errors(tmp_path: Path) -> None:
    image = Image.from_array(np.zeros((3, 4), np.float32))
    with pytest.raises(InputError, match="unsupported extension '.tif'"):
        write_image(image, tmp_path / "x.tif")
    with pytest.raises(InputError, match="does not exist"):
        write_image(image, tmp_path / "nowhere" / "x.nrrd")
    nan = Image.from_array(np.array([[np.nan, 1.0], [2.0, 3.0]]))
    with pytest.raises(InputError, match="NaN") as error:
        write_image(nan, tmp_path / "nan")
    assert str(tmp_path / "nan") in one_line(error)
    with pytest.raises(InputError, match="RGB"):
        write_image(Image.from_array(np.zeros((3, 4, 3), np.float32), rgb=True), tmp_path / "rgb")
    assert list(tmp_path.iterdir()) == []


def test_writes_in_place_of_existing_file_and_returns_path(tmp_path: Path) -> None:
    first = Image.from_array(np.ones((3, 4), np.uint8))
    target = tmp_path / "x.mha"
    assert write_image(first, str(target)) == target
    write_image(first.with_array(first.array * 9), target)
    assert read_image(target).array.max() == 9
    assert os.listdir(tmp_path) == ["x.mha"]


# --- hostile and faulty input (issue 12, read side) ------------------------------------------
def _nifti1(
    dims: tuple[int, ...],
    *,
    datatype: int = 2,
    pixdim: tuple[float, ...] = (1.0, 1.0, 1.0),
    order: str = "<",
    qform: tuple[float, ...] | None = None,
    srow: tuple[float, ...] | None = None,
    magic: bytes = b"n+1\0",
) -> bytes:
    """A NIfTI-1 header plus its 4 extension bytes (352 bytes); voxels follow at 352."""
    header = bytearray(352)
    bitpix = {2: 8, 4: 16, 16: 32, 32: 64, 64: 64}.get(datatype, 8)
    struct.pack_into(order + "i", header, 0, 348)
    struct.pack_into(order + "8h", header, 40, len(dims), *dims, *[1] * (7 - len(dims)))
    struct.pack_into(order + "hh", header, 70, datatype, bitpix)
    struct.pack_into(order + "8f", header, 76, 1.0, *pixdim, *[1.0] * (7 - len(pixdim)))
    struct.pack_into(order + "f", header, 108, 352.0)
    if qform is not None:
        struct.pack_into(order + "h6f", header, 252, 1, *qform)
    if srow is not None:
        struct.pack_into(order + "h", header, 254, 2)
        struct.pack_into(order + "12f", header, 280, *srow)
    header[344:348] = magic
    return bytes(header)


def _nifti2(dims: tuple[int, ...], *, pixdim: tuple[float, ...], order: str) -> bytes:
    """A NIfTI-2 header (int16 voxels) plus its 4 extension bytes (544 bytes)."""
    header = bytearray(544)
    struct.pack_into(order + "i", header, 0, 540)
    header[4:12] = b"n+2\0\r\n\x1a\n"
    struct.pack_into(order + "hh", header, 12, 4, 16)
    struct.pack_into(order + "8q", header, 16, len(dims), *dims, *[1] * (7 - len(dims)))
    struct.pack_into(order + "8d", header, 104, 1.0, *pixdim, *[1.0] * (7 - len(pixdim)))
    struct.pack_into(order + "q", header, 168, 544)
    return bytes(header)


def _gzip_zeros(count: int, prefix: bytes = b"") -> bytes:
    """A valid gzip file of ``prefix`` and ``count`` zero bytes, built in about a second per GB.

    One 1 MiB block of zeros is deflated once (ending in a full flush, so it refers to nothing
    before it) and repeated.
    """
    block = 1 << 20
    zeros = bytes(block)
    start = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = start.compress(prefix) + start.flush(zlib.Z_FULL_FLUSH)
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = body.compress(zeros) + body.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(count, block)
    end = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = end.compress(bytes(rest)) + end.flush()
    crc = zlib.crc32(prefix)
    for _ in range(full):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(rest), crc)
    trailer = struct.pack("<II", crc, (len(prefix) + count) & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + first + repeated * full + last + trailer


def _png(
    width: int, height: int, idat: bytes, *, depth: int = 8, colour: int = 0, interlace: int = 0
) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _zlib_zeros(count: int) -> bytes:
    compressor = zlib.compressobj(9)
    block = bytes(1 << 22)
    parts = [compressor.compress(block) for _ in range(count // len(block))]
    return b"".join([*parts, compressor.compress(bytes(count % len(block))), compressor.flush()])


def _write_hostile(kind: str, folder: Path) -> Path:
    """The issue's hostile files, generated (no large file is committed)."""
    if kind == "nrrd_1600_cubed":  # 287 bytes
        path = folder / "bomb.nrrd"
        header = b"NRRD0004\ntype: unsigned char\ndimension: 3\nsizes: 1600 1600 1600\nencoding: gzip\n\n"
        path.write_bytes(header + gzip.compress(bytes(100_000), 9, mtime=0))
    elif kind in ("nifti_1000_cubed", "nifti_1000_cubed_no_ceiling"):  # about 1 MB
        path = folder / "bomb.nii.gz"
        path.write_bytes(_gzip_zeros(1000**3, _nifti1((1000, 1000, 1000))))
    elif kind == "png_12k_zeros":  # about 140 kB
        path = folder / "bomb.png"
        path.write_bytes(_png(12000, 12000, _zlib_zeros(12000 * 12001)))
    elif kind == "png_60k_header":
        path = folder / "huge.png"
        path.write_bytes(_png(60000, 60000, zlib.compress(bytes(60001 * 8))))
    else:
        raise ValueError(kind)
    return path


_CHILD = """
import sys
from MedFusionLib.errors import MedFusionError
from MedFusionLib.io import read_image
try:
    image = read_image(sys.argv[1])
    sys.stdout.write("READ %s\\n" % (image.shape,))
except MedFusionError as error:
    sys.stdout.write("ERROR %s\\n" % error)
# VmHWM, not ru_maxrss: Linux carries the forking process's peak over fork and exec into ru_maxrss
with open("/proc/self/status") as status:
    sys.stdout.write("PEAK_KB %s\\n" % next(l for l in status if l.startswith("VmHWM:")).split()[1])
"""


def _read_in_child(
    path: Path, *, env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[str, int, str]:
    """Read ``path`` in a fresh process: (result line, peak RSS in bytes, anything else printed).

    A 4 GiB address-space limit is the safety net should a regression allocate what a header
    claims (glibc's per-thread arenas are capped so that many cores do not reach it idle).
    """

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "MALLOC_ARENA_MAX": "2", **(env or {})},
        preexec_fn=limit,
        check=False,
    )
    lines = child.stdout.splitlines()
    peak = [int(line.split()[1]) * 1024 for line in lines if line.startswith("PEAK_KB ")]
    result = [line for line in lines if line.startswith(("READ", "ERROR"))]
    other = [line for line in lines if not line.startswith(("READ", "ERROR", "PEAK_KB"))]
    assert child.returncode == 0 and result and peak, (child.returncode, child.stdout, child.stderr[-2000:])
    return result[0], peak[0], "\n".join(other) + child.stderr


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("nrrd_1600_cubed", "deflate expands at most 1100:1"),
        ("nifti_1000_cubed", "working memory"),
        ("nifti_1000_cubed_no_ceiling", "are the same"),
        ("png_12k_zeros", "are the same"),
        ("png_60k_header", "deflate expands at most 1100:1"),
    ],
)
def test_hostile_files_are_refused_in_little_memory(kind: str, expected: str, tmp_path: Path) -> None:
    path = _write_hostile(kind, tmp_path)
    env = {"MEDFUSION_MEMORY_LIMIT": "1T"} if kind.endswith("no_ceiling") else {}
    result, peak, other = _read_in_child(path, env=env)
    assert result.startswith(f"ERROR cannot read {path}: ") and expected in result, result
    assert other == "", other  # nothing but our one line: no library chatter, no traceback
    assert peak < 400e6, f"{kind}: peak RSS {peak / 1e6:.0f} MB"


@pytest.mark.parametrize("extension", [".nii.gz", ".nrrd", ".mha"])
def test_constant_check_of_large_compressed_files(extension: str, tmp_path: Path) -> None:
    """Above STREAM_CHECK_RATIO and STREAM_CHECK_MIN_BYTES the voxels are streamed: one value is refused."""
    array = np.zeros((330, 320, 320), np.uint8)  # 33.8 MB, about 1020:1 compressed
    path = tmp_path / f"sparse{extension}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), True)
    assert array.nbytes > limits.STREAM_CHECK_RATIO * path.stat().st_size
    with pytest.raises(
        InputError, match="all its 33,792,000 voxel values are the same, stored 10[0-9][0-9]:1"
    ) as error:
        read_image(path)
    assert one_line(error).startswith(f"cannot read {path}: ")
    array[329, 319, 319] = 7  # the very last voxel differs: read as usual
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), True)
    assert np.array_equal(read_image(path).array, array)


def test_memory_ceiling(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t1 = data_dir / "mni/spm_T1.nii.gz"
    assert limits.parse_size("8G") == 8 * 10**9 and limits.parse_size("1.5GiB") == 3 << 29
    assert limits.parse_size("512 mb") == 512 * 10**6 and limits.parse_size("1234") == 1234
    for bad in ("", "lots", "G", "1Q", "-5"):
        with pytest.raises(ValueError):
            limits.parse_size(bad)
    monkeypatch.setattr(limits, "available_memory", lambda: 8 << 30)
    monkeypatch.delenv("MEDFUSION_MEMORY_LIMIT", raising=False)
    assert limits.memory_limit() == 4 << 30  # half the available memory
    monkeypatch.setenv("MEDFUSION_MEMORY_LIMIT", "10M")  # spm_T1: 902629 voxels * 24 bytes = 21.7 MB
    with pytest.raises(
        InputError, match="more than the limit of 10 MB \\(MEDFUSION_MEMORY_LIMIT\\)"
    ) as error:
        read_image(t1)
    assert str(t1) in one_line(error)
    monkeypatch.setenv("MEDFUSION_MEMORY_LIMIT", "30M")
    assert read_image(t1).shape == (91, 109, 91)
    monkeypatch.setenv("MEDFUSION_MEMORY_LIMIT", "plenty")
    with pytest.raises(ParameterError, match="MEDFUSION_MEMORY_LIMIT='plenty'") as error:
        read_image(t1)
    one_line(error)


def test_claims_beyond_the_file_are_refused(tmp_path: Path) -> None:
    cases: dict[Path, str] = {}
    raw = tmp_path / "short.nrrd"
    raw.write_bytes(
        b"NRRD0004\ntype: short\ndimension: 3\nsizes: 100 100 100\nendian: little\nencoding: raw\n\n"
        + bytes(5000)
    )
    cases[raw] = "truncated file (it holds 5,000 bytes of voxels, its header claims 2,000,000)"
    text = tmp_path / "short_text.nrrd"
    text.write_bytes(b"NRRD0004\ntype: float\ndimension: 2\nsizes: 1000 1000\nencoding: ascii\n\n1 2 3\n")
    cases[text] = "cannot hold the 1,000,000 numbers"
    hexa = tmp_path / "short_hex.nrrd"
    hexa.write_bytes(
        b"NRRD0004\ntype: short\ndimension: 2\nsizes: 100 100\nendian: little\nencoding: hex\n\n00ff\n"
    )
    cases[hexa] = "bytes of hex cannot hold"
    sitk.WriteImage(sitk.Image([30, 20, 10], sitk.sitkInt16), str(tmp_path / "cut.mhd"), False)
    data = tmp_path / "cut.raw"
    data.write_bytes(data.read_bytes()[:1000])
    cases[tmp_path / "cut.mhd"] = "truncated file (it holds 1,000 bytes"
    sitk.WriteImage(sitk.Image([30, 20, 10], sitk.sitkInt16), str(tmp_path / "gone.mhd"), False)
    (tmp_path / "gone.raw").unlink()
    cases[tmp_path / "gone.mhd"] = f"its data file {tmp_path / 'gone.raw'} is missing"
    device = tmp_path / "device.mhd"
    device.write_text(
        "ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\nElementDataFile = /dev/zero\n"
    )
    cases[device] = "its data file /dev/zero is not a regular file"
    gzipped = tmp_path / "big.nrrd"
    gzipped.write_bytes(
        b"NRRD0004\ntype: float\ndimension: 3\nsizes: 800 800 800\nendian: little\nencoding: gzip\n\n"
        + gzip.compress(bytes(1000))
    )
    cases[gzipped] = "more than 29 bytes of compressed data can hold"
    for path, expected in cases.items():
        with pytest.raises(InputError) as error:
            read_image(path)
        message = one_line(error)
        assert message.startswith(f"cannot read {path}: ") and expected in message, message


def _patched(source: bytes, **fields: tuple[int, str, tuple[float, ...]]) -> bytes:
    data = bytearray(source)
    for offset, fmt, values in fields.values():
        struct.pack_into("<" + fmt, data, offset, *values)
    return bytes(data)


def test_nifti_header_faults_that_itk_would_repair(tmp_path: Path) -> None:
    image = sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    image.SetSpacing((2.0, 3.0, 4.0))
    sitk.WriteImage(image, str(tmp_path / "good.nii"))
    good = (tmp_path / "good.nii").read_bytes()
    shear = (2.0, 0.9, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0)
    faults = {
        "pixdim_zero": ({"p": (80, "f", (0.0,))}, "pixdim[1] = 0 is not a positive finite number"),
        "pixdim_nan": ({"p": (84, "f", (math.nan,))}, "pixdim[2] = nan is not a positive finite number"),
        "pixdim_negative": ({"p": (88, "f", (-4.0,))}, "pixdim[3] = -4 is not a positive finite number"),
        "dim_negative": ({"d": (44, "h", (-3,))}, "dimension 2 is -3"),
        "dim_zero": ({"d": (46, "h", (0,))}, "dimension 3 is 0"),
        "dim0_eight": ({"d": (40, "h", (8,))}, "dim[0] = 8 is not a number of dimensions"),
        "qform_nan": ({"q": (256, "f", (math.nan,))}, "the qform (quatern_b/c/d, qoffset) (nan"),
        "quaternion_too_long": ({"q": (256, "3f", (1.0, 1.0, 0.0))}, "longer than 1 (not a rotation)"),
        "sform_sheared": ({"s": (280, "12f", shear), "c": (254, "h", (2,))}, "is sheared or singular"),
        "complex": ({"t": (70, "hh", (32, 64))}, "complex-valued voxels (complex64) are not supported"),
        "vox_offset_nan": ({"o": (108, "f", (math.nan,))}, "vox_offset = nan is not a byte offset"),
        "two_file_magic": ({"m": (344, "4s", (b"ni1\0",))}, "voxels are in a separate .img file"),
    }
    for name, (fields, expected) in faults.items():
        for suffix in (".nii", ".nii.gz"):
            path = tmp_path / f"{name}{suffix}"
            data = _patched(good, **fields)
            path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
            with pytest.raises(InputError) as error:
                read_image(path)
            message = one_line(error)
            assert message.startswith(f"cannot read {path}: ") and expected in message, message


@pytest.mark.parametrize("order", ["<", ">"])
def test_nifti2_both_byte_orders(order: str, tmp_path: Path) -> None:
    voxels = np.arange(60, dtype=order + "i2").reshape(5, 4, 3)
    path = tmp_path / "two.nii"
    path.write_bytes(_nifti2((3, 4, 5), pixdim=(1.5, 2.0, 2.5), order=order) + voxels.tobytes())
    if mio._itk_reads_nifti2():
        image = read_image(path)
        assert np.array_equal(image.array, voxels) and image.spacing == (1.5, 2.0, 2.5)
    else:  # SimpleITK 2.5: NIfTI-1 only; the header is still checked, and the refusal says why
        with pytest.raises(
            InputError, match="it is a NIfTI-2 file, which the installed ITK cannot read"
        ) as error:
            read_image(path)
        one_line(error)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(_nifti2((3, 4, 5), pixdim=(1.5, 0.0, 2.5), order=order) + voxels.tobytes()))
    with pytest.raises(InputError, match="pixdim\\[2\\] = 0 is not a positive finite number") as error:
        read_image(bad)
    one_line(error)
    big_endian_nifti1 = tmp_path / "one.nii"
    big_endian_nifti1.write_bytes(_nifti1((3, 4, 5), datatype=4, order=order) + voxels.tobytes())
    assert np.array_equal(read_image(big_endian_nifti1).array, voxels)


def test_geometry_faults_in_nrrd_and_metaimage(tmp_path: Path) -> None:
    def nrrd(name: str, geometry: str) -> Path:
        path = tmp_path / name
        path.write_bytes(
            b"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 2 2 2\n"
            + geometry.encode()
            + b"encoding: raw\nendian: little\n\n"
            + bytes(16)
        )
        return path

    cases = {
        nrrd("sheared.nrrd", "space directions: (1,0,0) (0.2246,0.9745,0) (0,0,1)\n"): "is not orthonormal",
        nrrd("far.nrrd", "space directions: (1e9,0,0) (0,1,0) (0,0,1)\n"): "axis 1 spans 2e+09 mm",
        nrrd("flat.nrrd", "space directions: (1,0,0) (1,0,0) (0,0,1)\n"): "is not orthonormal",
        nrrd("nan.nrrd", "space directions: (nan,0,0) (0,1,0) (0,0,1)\n"): "cannot read",
    }
    mha = tmp_path / "sheared.mha"
    sitk.WriteImage(sitk.Image([2, 2, 2], sitk.sitkUInt8), str(mha))
    mha.write_bytes(
        mha.read_bytes().replace(
            b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 1 0 0 0.3 1 0 0 0 1"
        )
    )
    cases[mha] = "is not orthonormal"
    complex_nrrd = tmp_path / "complex.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 3, 4), np.complex64)), str(complex_nrrd))
    cases[complex_nrrd] = "complex-valued voxels are not supported"
    for path, expected in cases.items():
        with pytest.raises(InputError) as error:
            read_image(path)
        message = one_line(error)
        assert str(path) in message and expected in message, message


def test_a_neighbour_never_lends_its_voxels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    first = Image.from_array(np.full((3, 4, 5), 1, np.int16))
    second = Image.from_array(np.full((3, 4, 5), 2, np.int16))
    write_image(first, tmp_path / "x.nii.gz")
    write_image(second, tmp_path / "x.nii")
    assert read_image(tmp_path / "x.nii.gz").array.max() == 1
    assert read_image(tmp_path / "x.nii").array.max() == 2
    # Two-file formats name their data file; a look-alike beside it is not taken either.
    write_image(first, tmp_path / "y.nhdr", compress=True)
    write_image(first, tmp_path / "z.mhd", compress=True)
    data = {path.name for path in tmp_path.iterdir()} - {"x.nii.gz", "x.nii", "y.nhdr", "z.mhd"}
    for name in ("y.raw", "y.raw.gz", "z.raw", "z.zraw"):
        if name not in data:
            (tmp_path / name).write_bytes(np.full(60, 2, np.int16).tobytes())
    assert read_image(tmp_path / "y.nhdr").array.max() == 1
    assert read_image(tmp_path / "z.mhd").array.max() == 1
    assert list(private.iterdir()) == []  # the private links are gone


def test_special_files_are_refused_unopened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.nii.gz"
    os.mkfifo(fifo)
    result, _, other = _read_in_child(fifo, timeout=60)  # a regression blocks: the timeout fails it
    assert result == f"ERROR cannot read {fifo}: it is a FIFO (named pipe), not a regular file" and not other
    os.mkfifo(tmp_path / "data.raw")  # ITK's NRRD reader would open a detached data file with the header
    detached = tmp_path / "detached.nhdr"
    detached.write_text(
        "NRRD0004\ntype: short\ndimension: 2\nsizes: 4 4\nendian: little\nencoding: raw\ndata file: data.raw\n"
    )
    result, _, other = _read_in_child(detached, timeout=60)
    assert (
        result == f"ERROR cannot read {detached}: its data file {tmp_path / 'data.raw'} is not a regular file"
    )
    assert not other
    with pytest.raises(InputError, match="it is a character device, not a regular file") as error:
        read_image("/dev/zero")
    one_line(error)
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "s.nrrd"))
        with pytest.raises(InputError, match="it is a socket, not a regular file"):
            read_image(tmp_path / "s.nrrd")
    finally:
        server.close()
    link = tmp_path / "link.nii.gz"
    write_image(Image.from_array(np.ones((2, 3, 4), np.uint8)), tmp_path / "real.nii.gz")
    link.symlink_to(tmp_path / "real.nii.gz")
    assert read_image(link).array.sum() == 24  # a link to a regular file is fine


def test_dicom_directory_skips_special_files(tmp_path: Path) -> None:
    series = tmp_path / "series"
    write_image(Image.from_array(np.arange(24, dtype=np.int16).reshape(2, 3, 4)), series)
    os.mkfifo(series / "pipe")
    (series / "broken").symlink_to(tmp_path / "nowhere")
    private = tmp_path / "tmp"
    private.mkdir()
    result, _, other = _read_in_child(series, env={"TMPDIR": str(private)}, timeout=60)
    assert result == "READ (2, 3, 4)" and not other, (result, other)
    assert list(private.iterdir()) == []  # the private folder of links is gone


def test_dicom_slices_cut_short_or_claiming_more(tmp_path: Path) -> None:
    series = tmp_path / "series"
    write_image(Image.from_array(np.arange(3 * 40 * 50, dtype=np.int16).reshape(3, 40, 50)), series)
    (series / "notes.txt").write_text("not DICOM, left alone")
    slices = sorted(series.glob("*.dcm"))
    assert read_image(series).shape == (3, 40, 50)
    # A slice cut short: GDCM would leave it out and read two slices 2 mm apart.
    whole = slices[1].read_bytes()
    slices[1].write_bytes(whole[:-2000])
    with pytest.raises(InputError) as error:
        read_image(series)
    assert one_line(error) == (
        f"cannot read DICOM directory {series}: {slices[1].name} is a damaged DICOM file (cut short or "
        "corrupt: it belongs to no series)"
    )
    slices[1].write_bytes(whole)
    # Rows (0028,0010) forged from 40 to 4000 in every slice: 400,000 bytes claimed, 4,000 stored.
    rows = struct.pack("<HHIH", 0x0028, 0x0010, 2, 40)
    for path in slices:
        data = path.read_bytes()
        assert data.count(rows) == 1
        path.write_bytes(data.replace(rows, struct.pack("<HHIH", 0x0028, 0x0010, 2, 4000)))
    with pytest.raises(InputError) as error:
        read_image(series)
    message = one_line(error)
    assert message.startswith(f"cannot read DICOM series in {series}: {slices[0].name} holds"), message
    assert "fewer than the 400,000 bytes of pixel data its header claims" in message, message


def test_os_errors_are_one_line(tmp_path: Path) -> None:
    long_name = tmp_path / ("a" * 300 + ".nii.gz")
    with pytest.raises(InputError, match="file name too long") as error:
        read_image(long_name)
    assert len(one_line(error)) < 200
    plain = tmp_path / "plain.nii"
    write_image(Image.from_array(np.ones((2, 3), np.uint8)), plain)
    with pytest.raises(InputError, match="not a directory") as error:
        read_image(plain / "x.nii")
    one_line(error)
    if os.geteuid() != 0:  # root reads anything
        plain.chmod(0)
        with pytest.raises(InputError, match="permission denied") as error:
            read_image(plain)
        one_line(error)
        plain.chmod(0o644)


def test_no_library_chatter(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 1000, (10, 20, 30)).astype(np.int16))
    sitk.WriteImage(image, str(tmp_path / "raw.mha"), False)
    sitk.WriteImage(image, str(tmp_path / "zipped.mha"), True)
    for name in ("raw.mha", "zipped.mha"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) * 2 // 3])
    sitk.WriteImage(image, str(tmp_path / "nodata.mhd"), False)
    (tmp_path / "nodata.raw").write_bytes(b"")
    sitk.WriteImage(image, str(tmp_path / "bad.nii"))
    data = bytearray((tmp_path / "bad.nii").read_bytes())
    data[0:4] = b"\x01\x02\x03\x04"
    (tmp_path / "bad.nii").write_bytes(bytes(data))
    (tmp_path / "nodicom").mkdir()
    (tmp_path / "nodicom" / "a.txt").write_text("hello")
    (tmp_path / "nodicom" / "b.dcm").write_bytes(bytes(300))
    capfd.readouterr()
    for name in ("cut_raw.mha", "cut_zipped.mha", "nodata.mhd", "bad.nii", "nodicom"):
        with pytest.raises(InputError) as error:
            read_image(tmp_path / name)
        assert str(tmp_path / name) in one_line(error)
        printed = capfd.readouterr()
        assert printed.out == "" and printed.err == "", (name, printed)


def test_png_constant_scan(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    rng = np.random.default_rng(1)
    pictures = {
        "gray": np.full((7, 37), 200, np.uint8),
        "rgb": np.broadcast_to(np.array([10, 20, 30], np.uint8), (9, 33, 3)).copy(),
        "gray16": np.full((5, 19), 40000, np.uint16),
    }
    for name, constant in pictures.items():
        varying = constant.copy()
        varying.flat[rng.integers(varying.size)] += 1
        for array, expected in ((constant, True), (varying, False)):
            path = tmp_path / f"{name}_{expected}.png"
            PILImage.fromarray(array).save(path)
            assert _png_constant(path) is expected, (name, expected)
    for mode in ("1", "P"):
        path = tmp_path / f"{mode}.png"
        PILImage.new(mode, (29, 6), 1).save(path)
        assert _png_constant(path) is True, mode
    # Adam7-interlaced, 2-bit gray, every pixel 3: each pass' rows, filter type 0.
    header = headers.PngHeader(13, 11, 2, 0, True, ())
    rows = b"".join(
        b"\0" + np.packbits(np.tile([1, 1], width), bitorder="big").tobytes()
        for width, height in header.passes()
        for _ in range(height)
    )
    path = tmp_path / "interlaced.png"
    path.write_bytes(_png(13, 11, zlib.compress(rows), depth=2, interlace=1))
    assert _png_constant(path) is True


def _png_constant(path: Path) -> bool:
    png = headers.png_header(path)
    assert png is not None
    return limits._png_is_constant(path, png)


def test_streaming_decoders_and_constant_scan(tmp_path: Path) -> None:
    voxels = struct.pack("<h", -2) * 1000
    for cut in (1, 3, 1999):  # chunk boundaries inside a voxel
        scan = limits.ConstantBytes(2)
        assert scan.feed(voxels[:cut]) and scan.feed(voxels[cut:])
    scan = limits.ConstantBytes(2)
    assert scan.feed(voxels[:1001]) and not scan.feed(b"\x01" + voxels[1002:])
    payload = bytes(range(256)) * 5000
    stored = {
        "gzip": gzip.compress(payload[:1000]) + gzip.compress(payload[1000:]),  # two members
        "zlib": zlib.compress(payload),
    }
    for encoding, data in stored.items():
        path = tmp_path / encoding
        path.write_bytes(b"HEAD" + data + b"\0\0")
        assert b"".join(limits._decoded_chunks(path, 4)) == payload, encoding
        layout = headers.DataLayout(files=(path,), offset=4, encoding=encoding)
        assert limits.decoded_length(layout, at_most=10**9) == len(payload)
        assert limits.decoded_length(layout, at_most=1000) >= 1000


def test_bzip2_nrrd_is_refused_by_its_header(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """bzip2 has no ratio bound (40 MiB of one value take 49 bytes); ITK's NrrdIO refuses it unread."""
    header = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 512 512 80\nendian: little\nencoding: bzip2\n\n"
    path = tmp_path / "bomb.nrrd"
    path.write_bytes(header + bz2.compress(bytes(512 * 512 * 80 * 2), 9))
    capfd.readouterr()
    with pytest.raises(InputError, match="bzip2 encoding not available") as error:
        read_image(path)
    assert one_line(error).startswith(f"cannot read {path}: ")
    assert capfd.readouterr() == ("", "")


def test_nifti_variants_that_must_still_read(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "plain.nii"))
    data = bytearray((tmp_path / "plain.nii").read_bytes())
    struct.pack_into("<ff", data, 112, 2.0, 1.0)  # scl_slope 2, scl_inter 1: ITK reports float32
    (tmp_path / "scaled.nii").write_bytes(bytes(data))
    np.testing.assert_array_equal(read_image(tmp_path / "scaled.nii").array, 2.0 * array + 1.0)
    # Two gzip members: the trailer's length covers the last one only, so the stream is counted.
    (tmp_path / "members.nii.gz").write_bytes(
        gzip.compress(bytes(data[:360])) + gzip.compress(bytes(data[360:]))
    )
    np.testing.assert_array_equal(read_image(tmp_path / "members.nii.gz").array, 2.0 * array + 1.0)
    (tmp_path / "cut.nii.gz").write_bytes(
        gzip.compress(bytes(data[:360])) + gzip.compress(bytes(data[360:-10]))
    )
    with pytest.raises(InputError, match="truncated file \\(390 of 400 bytes\\)"):
        read_image(tmp_path / "cut.nii.gz")


def test_dicom_series_beside_a_registration_object(tmp_path: Path) -> None:
    """A non-image object (a registration, a structure set) beside a series is not a damaged slice."""
    import pydicom
    from pydicom.dataset import FileMetaDataset

    series = tmp_path / "series"
    write_image(Image.from_array(np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)), series)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.1"  # Spatial Registration Storage
    meta.MediaStorageSOPInstanceUID = "2.25.1"
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    reg = pydicom.Dataset()
    reg.file_meta = meta
    reg.SOPClassUID, reg.SOPInstanceUID, reg.Modality = meta.MediaStorageSOPClassUID, "2.25.1", "REG"
    reg.SeriesInstanceUID = "2.25.2"
    reg.save_as(series / "REG_0001.dcm", enforce_file_format=True)
    assert read_image(series).shape == (3, 4, 5)
