"""Tests of MedFusionLib.io: formats, geometry round trips, DICOM series, errors, atomic writes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

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
