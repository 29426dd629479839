"""DICOM in and out on a real patient (STS_007: CT, PET and MR series; issue 16).

Reading keeps the series' identity with the voxels; ``fuse ... --format dicom`` writes a derived
series in the CT's study and frame of reference on the CT's grid (checked with dciodvfy,
SimpleITK and slicer-core's reader); ``--register rigid`` adds a Spatial Registration object
that re-aligns the MR; ``send`` stores everything on a real Orthanc on loopback and C-FIND and
Orthanc's REST API give it back unchanged; failures are one line and exit 2.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import DATA

from MedFusionLib.cli import main
from MedFusionLib.dicom.derived import CT_IMAGE_STORAGE, SECONDARY_CAPTURE_IMAGE_STORAGE
from MedFusionLib.dicom.network import find, parse_peer
from MedFusionLib.dicom.registration import (
    DEFORMABLE_SPATIAL_REGISTRATION_STORAGE,
    SPATIAL_REGISTRATION_STORAGE,
    deformable_spatial_registration,
    read_registration,
)
from MedFusionLib.dicom.series import SUV, suv_factor
from MedFusionLib.errors import InputError, MedFusionError
from MedFusionLib.image import Image
from MedFusionLib.io import read_image
from MedFusionLib.job import FusionJob, run_job

pytestmark = pytest.mark.filterwarnings("ignore:The value length:UserWarning")  # STS_007 Study ID (17 > 16)

PATIENT = DATA / "sts_dicom" / "STS_007"
CT, PET, MR = PATIENT / "CT" / "image", PATIENT / "PET" / "image", PATIENT / "MR_T1" / "image"


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def _images(folder: Path) -> list[Path]:
    return sorted(folder.glob("IM_*.dcm"))


def _series_sitk(files: list[Path]) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(files[0].parent)))
    return reader.Execute()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def inputs_before() -> dict[str, dict[str, str]]:
    return {str(folder): _digest(folder) for folder in (CT, PET, MR)}


@pytest.fixture(scope="module")
def ct() -> Image:
    return read_image(CT)


@pytest.fixture(scope="module")
def ct_pet(tmp_path_factory: pytest.TempPathFactory, inputs_before: dict) -> Path:
    """``medfusion fuse CT PET -o OUT/ --format dicom`` (the recommended colour fusion)."""
    out = tmp_path_factory.mktemp("ct_pet") / "fused"
    assert main(["fuse", str(CT), str(PET), "-o", f"{out}/", "--format", "dicom"]) == 0
    return out


@pytest.fixture(scope="module")
def ct_mr(tmp_path_factory: pytest.TempPathFactory, inputs_before: dict) -> tuple[Path, object]:
    """MR registered rigidly onto the CT, fused in gray, written as DICOM (the job every front end runs)."""
    out = tmp_path_factory.mktemp("ct_mr") / "fused"
    result = run_job(
        FusionJob(fixed=str(CT), moving=str(MR), output=str(out), registration="rigid", colormap="none")
    )
    return out, result


@pytest.fixture(scope="module")
def mr_pet_gray(tmp_path_factory: pytest.TempPathFactory, inputs_before: dict) -> Path:
    """A gray fusion on an MR grid: a Secondary Capture series with rescale (not CT Image Storage)."""
    out = tmp_path_factory.mktemp("mr_pet") / "fused"
    assert main(["fuse", str(MR), str(PET), "-o", f"{out}/", "--colormap", "none"]) == 0
    return out


# --- reading ------------------------------------------------------------------------------
def test_reading_keeps_the_series_identity(ct: Image) -> None:
    first = _header(sorted(CT.glob("*.dcm"))[0])
    meta = ct.metadata
    assert meta["study_instance_uid"] == first.StudyInstanceUID
    assert meta["series_instance_uid"] == first.SeriesInstanceUID
    assert meta["frame_of_reference_uid"] == first.FrameOfReferenceUID
    assert meta["patient_id"] == "STS_007" and meta["dicom_modality"] == "CT" and meta["kvp"] == "140"
    instances = json.loads(meta["dicom_instances"])
    assert len(instances) == ct.shape[0] == 70
    assert {i for _, i in instances} == {_header(p).SOPInstanceUID for p in CT.glob("*.dcm")}
    # slice order: the instance listed k-th sits at the k-th voxel plane
    k = 17
    path = next(p for p in CT.glob("*.dcm") if _header(p).SOPInstanceUID == instances[k][1])
    z = float(_header(path).ImagePositionPatient[2])
    assert abs(z - (ct.origin[2] + k * ct.spacing[2])) < 1e-3
    # metadata travels with the voxels
    assert ct.with_array(ct.array * 0).metadata["study_instance_uid"] == meta["study_instance_uid"]


def test_pet_is_read_in_suv_and_shares_the_ct_study(ct: Image) -> None:
    pet = read_image(PET)
    assert pet.modality == "PET" and pet.metadata["units"] == "SUVbw"  # Units GML: SUVbw as stored
    assert pet.metadata["study_instance_uid"] == ct.metadata["study_instance_uid"]
    assert pet.metadata["frame_of_reference_uid"] == ct.metadata["frame_of_reference_uid"]
    assert pet.metadata["radiopharmaceutical"].startswith("FDG")
    assert 0 < float(pet.array.max()) < 100  # SUV, not Bq/ml


def test_suv_factor_from_the_tags() -> None:
    header = _header(sorted(PET.glob("*.dcm"))[0])
    assert suv_factor(header) == SUV(1.0, "SUVbw as stored (Units GML)")
    header.Units = "BQML"
    header.DecayCorrection = "START"
    drug = header.RadiopharmaceuticalInformationSequence[0]
    drug.RadiopharmaceuticalStartTime, header.SeriesTime = "102300.00", "115432.00"  # 5492 s later
    dose, half_life = float(drug.RadionuclideTotalDose), float(drug.RadionuclideHalfLife)
    expected = 82.0 * 1000 / (dose * 2 ** (-5492 / half_life))
    assert suv_factor(header).factor == pytest.approx(expected, rel=1e-12)
    header.DecayCorrection = "ADMIN"
    assert suv_factor(header).factor == pytest.approx(82.0 * 1000 / dose, rel=1e-12)
    header.DecayCorrection = "NONE"
    assert suv_factor(header) is None
    header.DecayCorrection = "START"
    del header.PatientWeight
    assert suv_factor(header) is None
    header.Units = "CNTS"
    assert suv_factor(header) is None


def test_pet_in_bq_per_ml_is_converted_to_suv(tmp_path: Path) -> None:
    """Five PET slices relabelled as Bq/ml (decay-corrected to administration): read as SUVbw."""
    files = sorted(PET.glob("*.dcm"), key=lambda p: float(_header(p).ImagePositionPatient[2]))[30:35]
    for path in files:
        ds = pydicom.dcmread(path)
        ds.Units, ds.DecayCorrection = "BQML", "ADMIN"
        ds.save_as(tmp_path / path.name)
    as_stored = read_image(tmp_path, modality=None)
    header = _header(tmp_path / files[0].name)
    factor = 82.0 * 1000 / float(header.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose)
    assert as_stored.metadata["units"] == "SUVbw" and "ADMIN" in as_stored.metadata["suv"]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path)))
    bq_per_ml = sitk.GetArrayFromImage(reader.Execute())
    assert np.allclose(as_stored.array, bq_per_ml * factor, rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder holding the CT and the PET series (links to the real files)."""
    folder = tmp_path_factory.mktemp("mixed")
    for source, prefix in ((CT, "ct"), (PET, "pt")):
        for path in source.glob("*.dcm"):
            (folder / f"{prefix}_{path.name}").symlink_to(path.resolve())
    return folder


def test_a_series_is_picked_by_uid_or_modality(mixed: Path, ct: Image) -> None:
    assert read_image(mixed, series="PT").modality == "PET"
    assert read_image(mixed, series="PET").metadata["dicom_modality"] == "PT"
    by_uid = read_image(mixed, series=ct.metadata["series_instance_uid"])
    assert by_uid.same_grid(ct) and np.array_equal(by_uid.array, ct.array)
    with pytest.raises(InputError) as error:
        read_image(mixed, series="MR")
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"no series 'MR' in {mixed}")
    assert ct.metadata["series_instance_uid"] in message and "(PT, 70 files" in message


def test_cli_series_choice_and_bad_choice(
    mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "fuse", mixed, mixed, "-o", tmp_path / "x.nii.gz", "--series-a", "MR")
    assert code == 2 and err.count("\n") == 1 and "series found:" in err and "(CT, 70 files" in err
    assert not list(tmp_path.iterdir())


# --- the derived series --------------------------------------------------------------------
def _errors(dciodvfy: str, path: Path) -> list[str]:
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_derived_series_passes_dciodvfy(ct_pet: Path, ct_mr: tuple, mr_pet_gray: Path, dciodvfy: str) -> None:
    files = sorted(ct_pet.iterdir()) + sorted(ct_mr[0].iterdir()) + sorted(mr_pet_gray.iterdir())
    assert len(files) == 70 + 71 + 69
    failures = {f"{p.parent.name}/{p.name}": _errors(dciodvfy, p) for p in files}
    assert not {k: v for k, v in failures.items() if v}


def test_dciodvfy_finds_errors(dciodvfy: str, ct_pet: Path, tmp_path: Path) -> None:
    """The validator can fail: an instance without its Frame of Reference UID is refused."""
    broken = pydicom.dcmread(_images(ct_pet)[0])
    del broken.SOPClassUID
    broken.save_as(tmp_path / "broken.dcm")
    assert _errors(dciodvfy, tmp_path / "broken.dcm")


def test_derived_series_sits_on_the_ct_grid_in_its_study(
    ct_pet: Path, ct_mr: tuple, mr_pet_gray: Path, ct: Image
) -> None:
    reference = _series_sitk(sorted(CT.glob("*.dcm")))
    first_ct = _header(sorted(CT.glob("*.dcm"))[0])
    for folder, sop_class, components in (
        (ct_pet, SECONDARY_CAPTURE_IMAGE_STORAGE, 3),
        (ct_mr[0], CT_IMAGE_STORAGE, 1),
    ):
        written = _series_sitk(_images(folder))
        assert written.GetSize() == reference.GetSize()
        assert written.GetNumberOfComponentsPerPixel() == components
        assert np.abs(np.subtract(written.GetOrigin(), reference.GetOrigin())).max() < 1e-3
        assert np.abs(np.subtract(written.GetSpacing(), reference.GetSpacing())).max() < 1e-3
        assert np.abs(np.subtract(written.GetDirection(), reference.GetDirection())).max() < 1e-6
        headers = [_header(p) for p in _images(folder)]
        assert {h.StudyInstanceUID for h in headers} == {first_ct.StudyInstanceUID}
        assert {h.FrameOfReferenceUID for h in headers} == {first_ct.FrameOfReferenceUID}
        assert {h.PatientID for h in headers} == {"STS_007"}
        series = {h.SeriesInstanceUID for h in headers}
        assert len(series) == 1 and first_ct.SeriesInstanceUID not in series
        assert len({h.SOPInstanceUID for h in headers}) == 70
        assert {h.SOPClassUID for h in headers} == {sop_class}
        assert all(list(h.ImageType[:2]) == ["DERIVED", "SECONDARY"] for h in headers)
        assert "MedFusion fusion: method" in headers[0].DerivationDescription
        # every derived slice names the CT slice at its position as its source
        ct_at = {
            round(float(_header(p).ImagePositionPatient[2]), 2): _header(p).SOPInstanceUID
            for p in CT.glob("*.dcm")
        }
        for header in headers:
            sources = {item.ReferencedSOPInstanceUID for item in header.SourceImageSequence}
            assert ct_at[round(float(header.ImagePositionPatient[2]), 2)] in sources
        referenced = {item.SeriesInstanceUID for item in headers[0].ReferencedSeriesSequence}
        assert first_ct.SeriesInstanceUID in referenced and len(referenced) == 2
    assert "registered to fixed: rigid" in _header(_images(ct_mr[0])[0]).DerivationDescription
    # gray on a non-CT grid: Secondary Capture with rescale, on the MR's grid, in the MR's frame
    mr_first = _header(sorted(MR.glob("*.dcm"))[0])
    gray = _header(_images(mr_pet_gray)[0])
    assert (
        gray.SOPClassUID == SECONDARY_CAPTURE_IMAGE_STORAGE
        and gray.PhotometricInterpretation == "MONOCHROME2"
    )
    assert gray.FrameOfReferenceUID == mr_first.FrameOfReferenceUID and gray.RescaleType == "US"
    written, mr_grid = _series_sitk(_images(mr_pet_gray)), _series_sitk(sorted(MR.glob("*.dcm")))
    assert written.GetSize() == mr_grid.GetSize()
    assert np.abs(np.subtract(written.GetOrigin(), mr_grid.GetOrigin())).max() < 1e-3
    # the MR slice nearest to each derived slice (after the registration) is its second source
    mr_uids = {_header(p).SOPInstanceUID for p in MR.glob("*.dcm")}
    middle = _header(_images(ct_mr[0])[35])
    assert (
        len(middle.SourceImageSequence) == 2
        and middle.SourceImageSequence[1].ReferencedSOPInstanceUID in mr_uids
    )


def test_derived_voxels_are_the_fused_result(ct_mr: tuple) -> None:
    folder, result = ct_mr
    fused = result.fusion.image.array
    back = read_image(folder)
    assert back.same_grid(result.fusion.image, tolerance=1e-3)
    header = _header(_images(folder)[0])
    slope = float(header.RescaleSlope)
    assert np.abs(back.array - fused).max() <= slope / 2 + 1e-6  # 16-bit with rescale: half a step


def test_slicer_reader_places_the_series_on_the_ct_grid(ct_pet: Path, ct_mr: tuple) -> None:
    slicer = pytest.importorskip("slicer")
    import vtk

    scene = slicer.vtkMRMLScene()

    def ijk_to_ras(files: list[Path], vector: bool) -> tuple[np.ndarray, tuple[int, int, int]]:
        node = slicer.vtkMRMLVectorVolumeNode() if vector else slicer.vtkMRMLScalarVolumeNode()
        scene.AddNode(node)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        scene.AddNode(storage)
        storage.SetFileName(str(files[0]))
        storage.ResetFileNameList()
        for path in files:
            storage.AddFileName(str(path))
        storage.SetSingleFile(0)
        assert storage.ReadData(node) == 1
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        return np.array(
            [[matrix.GetElement(i, j) for j in range(4)] for i in range(4)]
        ), node.GetImageData().GetDimensions()

    reference, size = ijk_to_ras(sorted(CT.glob("*.dcm")), vector=False)
    for folder, vector in ((ct_pet, True), (ct_mr[0], False)):
        matrix, dims = ijk_to_ras(_images(folder), vector)
        assert dims == size and np.abs(matrix - reference).max() < 1e-3


# --- the registration object ------------------------------------------------------------------
def test_spatial_registration_realigns_the_mr(ct_mr: tuple, ct: Image) -> None:
    folder, result = ct_mr
    reg = pydicom.dcmread(folder / "REG_0001.dcm")
    assert reg.SOPClassUID == SPATIAL_REGISTRATION_STORAGE and reg.Modality == "REG"
    assert reg.StudyInstanceUID == ct.metadata["study_instance_uid"]
    assert reg.FrameOfReferenceUID == ct.metadata["frame_of_reference_uid"]
    moving_item = reg.RegistrationSequence[1]
    mr = read_image(MR)
    assert {i.ReferencedSOPInstanceUID for i in moving_item.ReferencedImageSequence} == {
        i for _, i in json.loads(mr.metadata["dicom_instances"])
    }
    transform = read_registration(folder / "REG_0001.dcm")
    job = result.registration.transform
    points = np.random.default_rng(0).uniform(*ct.world_bounds(), size=(50, 3))
    for point in points:
        assert np.allclose(
            transform.TransformPoint(tuple(point)), job.TransformPoint(tuple(point)), atol=1e-4
        )
    from_file = sitk.Resample(mr.to_sitk(), ct.to_sitk(), transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    from_job = sitk.Resample(mr.to_sitk(), ct.to_sitk(), job, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    difference = np.abs(sitk.GetArrayFromImage(from_file) - sitk.GetArrayFromImage(from_job))
    assert float(np.percentile(difference, 99.9)) < 1.0  # MR values up to ~1000; sub-micrometre shifts
    assert not np.allclose(np.asarray(job.GetParameters()), 0)  # a real correction, not the identity


def test_deformable_registration_round_trip(ct: Image, dciodvfy: str, tmp_path: Path) -> None:
    mr = read_image(MR)
    reference = ct.to_sitk()
    bspline = sitk.BSplineTransformInitializer(reference, [3, 3, 3], 3)
    params = np.asarray(bspline.GetParameters())
    bspline.SetParameters(tuple(np.random.default_rng(1).normal(0, 2.0, params.size)))  # ~2 mm bends
    ds = deformable_spatial_registration(ct, mr, bspline)
    ds.save_as(tmp_path / "dreg.dcm", enforce_file_format=True)
    assert ds.SOPClassUID == DEFORMABLE_SPATIAL_REGISTRATION_STORAGE
    assert not _errors(dciodvfy, tmp_path / "dreg.dcm")
    back = read_registration(tmp_path / "dreg.dcm")
    points = np.random.default_rng(2).uniform(*[b * 0.9 for b in ct.world_bounds()], size=(50, 3))
    gaps = [
        np.linalg.norm(np.subtract(back.TransformPoint(tuple(p)), bspline.TransformPoint(tuple(p))))
        for p in points
    ]
    assert max(gaps) < 0.5  # a grid of at most 8 mm interpolates 2 mm bends within half a millimetre


# --- errors and atomic output --------------------------------------------------------------------
def test_dicom_output_options_fail_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["-o", tmp_path / "out.nii.gz", "--format", "dicom"], "--format dicom writes a folder"),
        (["-o", tmp_path / "out.nii.gz", "--send", "PACS@127.0.0.1:104"], "--send needs a DICOM output"),
        (["-o", tmp_path / "out", "--send", "PACS127.0.0.1:104"], "--send must be AE@HOST:PORT"),
        (["-o", tmp_path / "out", "--send", "PACS@127.0.0.1:0"], "port '0'"),
        (["-o", tmp_path / "out", "--format", "png"], "--format must be dicom"),
    ]
    for options, expected in cases:
        code, _, err = run(capsys, "fuse", tmp_path / "missing_a", tmp_path / "missing_b", *options)
        assert code == 2 and err.count("\n") == 1 and expected in err, (options, err)
    assert not list(tmp_path.iterdir())


def test_a_failed_dicom_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls = {"n": 0}
    real = pydicom.Dataset.save_as

    def save_then_fail(self: pydicom.Dataset, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 30:
            raise OSError(28, "No space left on device")
        real(self, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", save_then_fail)
    code, _, err = run(capsys, "fuse", CT, PET, "-o", f"{tmp_path / 'out'}/", "--colormap", "none")
    assert code == 2 and err.count("\n") == 1 and "cannot write" in err and "no space left" in err.lower()
    assert not list(tmp_path.iterdir())


# --- a real PACS ------------------------------------------------------------------------------
def test_round_trip_through_orthanc(
    orthanc: object, ct_pet: Path, ct_mr: tuple, ct: Image, capsys: pytest.CaptureFixture[str]
) -> None:
    orthanc.clear()
    sent_before = {str(f): _digest(f) for f in (ct_pet, ct_mr[0])}
    code, out, err = run(capsys, "send", ct_pet, ct_mr[0], "--to", orthanc.peer)
    assert code == 0, err
    assert out.strip() == f"sent 141 instances to {orthanc.peer}"
    assert {str(f): _digest(f) for f in (ct_pet, ct_mr[0])} == sent_before  # the files sent are unchanged
    peer = parse_peer(orthanc.peer)
    study = ct.metadata["study_instance_uid"]
    series = find(
        peer,
        level="SERIES",
        query={"StudyInstanceUID": study},
        returned=["SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances"],
    )
    by_uid = {s["SeriesInstanceUID"]: s for s in series}
    for folder, count in ((ct_pet, 70), (ct_mr[0], 70)):
        uid = _header(_images(folder)[0]).SeriesInstanceUID
        assert int(by_uid[uid]["NumberOfSeriesRelatedInstances"]) == count
    reg = _header(ct_mr[0] / "REG_0001.dcm")
    assert by_uid[reg.SeriesInstanceUID]["Modality"] == "REG"
    assert len(series) == 3  # both derived series and the registration, all in the CT's study
    # every instance is there (C-FIND at IMAGE level) and comes back from the REST API with the
    # same data set (the file meta information is the archive's own)
    for folder in (ct_pet, ct_mr[0]):
        sent = {p.name: pydicom.dcmread(p) for p in sorted(folder.iterdir())}
        for uid in {ds.SeriesInstanceUID for ds in sent.values()}:
            found = find(
                peer,
                level="IMAGE",
                query={"StudyInstanceUID": study, "SeriesInstanceUID": uid},
                returned=["SOPInstanceUID"],
            )
            expected = {ds.SOPInstanceUID for ds in sent.values() if ds.SeriesInstanceUID == uid}
            assert {f["SOPInstanceUID"] for f in found} == expected
        for name, ds in sent.items():
            ids = [i["ID"] for i in _lookup(orthanc, ds.SOPInstanceUID)]
            assert len(ids) == 1
            back = pydicom.dcmread(io.BytesIO(orthanc.rest(f"/instances/{ids[0]}/file")))
            assert [e for e in back if e.tag.group != 0x0002] == [e for e in ds if e.tag.group != 0x0002], (
                name
            )


def _lookup(orthanc: object, uid: str) -> list[dict]:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{orthanc.http_port}/tools/lookup", data=uid.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return [item for item in json.loads(answer.read()) if item["Type"] == "Instance"]


def test_fuse_and_send(orthanc: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orthanc.clear()
    out = tmp_path / "fused"
    code, printed, err = run(
        capsys, "fuse", CT, PET, "-o", f"{out}/", "--colormap", "none", "--send", orthanc.peer
    )
    assert code == 0, err
    assert f"sent 70 instances to {orthanc.peer}" in printed
    uid = _header(_images(out)[0]).SeriesInstanceUID
    assert len(orthanc.rest("/instances")) == 70
    assert orthanc.rest("/series")[0] and any(
        orthanc.rest(f"/series/{s}")["MainDicomTags"]["SeriesInstanceUID"] == uid
        for s in orthanc.rest("/series")
    )


def test_send_failures_are_one_line(
    orthanc: object, ct_pet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orthanc.clear()
    import socket

    with socket.socket() as probe:  # a port nobody listens on: the PACS is down
        probe.bind(("127.0.0.1", 0))
        down = probe.getsockname()[1]
    code, out, err = run(capsys, "send", ct_pet, "--to", f"ORTHANC@127.0.0.1:{down}", "--timeout", "5")
    assert code == 2 and err.count("\n") == 1 and "cannot reach the PACS" in err and "refused" in err
    code, out, err = run(capsys, "send", ct_pet, "--to", f"WRONG_AE@127.0.0.1:{orthanc.dicom_port}")
    assert code == 2 and err.count("\n") == 1 and "rejected the association" in err
    assert orthanc.rest("/instances") == []
    # one instance the PACS refuses: the others are stored and the refused one is named
    folder = tmp_path / "some"
    folder.mkdir()
    for path in _images(ct_pet)[:3]:
        shutil.copy(path, folder / path.name)
    refused = pydicom.dcmread(folder / "IM_0002.dcm")  # a storage class the PACS does not know
    refused.SOPClassUID = refused.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.10.1418.99.1"
    refused.save_as(folder / "IM_0002.dcm")
    before = _digest(folder)
    code, out, err = run(capsys, "send", folder, "--to", orthanc.peer)
    assert code == 2 and err.count("\n") == 1, err
    assert "1 of 3 instances were not stored" in err
    assert "IM_0002.dcm: the PACS does not accept SOP class 1.2.826.0.1.3680043.10.1418.99.1" in err
    assert len(orthanc.rest("/instances")) == 2
    assert _digest(folder) == before
    # fuse --send to a PACS that is down: one line, the complete output kept for a later send
    out_dir = tmp_path / "fused"
    code, _, err = run(
        capsys, "fuse", CT, PET, "-o", f"{out_dir}/", "--colormap", "none", "--send", f"X@127.0.0.1:{down}"
    )
    assert code == 2 and err.count("\n") == 1 and "medfusion send" in err
    assert len(_images(out_dir)) == 70


def test_inputs_are_never_modified(inputs_before: dict, ct_pet: Path, ct_mr: tuple) -> None:
    assert {str(folder): _digest(folder) for folder in (CT, PET, MR)} == inputs_before


def test_network_errors_are_medfusion_errors() -> None:
    with pytest.raises(MedFusionError, match="AE title"):
        parse_peer("A_TITLE_LONGER_THAN_16@host:104")


# --- Slicer: export into the study of a volume loaded from the DICOM database -----------------------
def test_slicer_export_writes_into_the_fixed_study(tmp_path: Path, dciodvfy: str, ct: Image) -> None:
    pytest.importorskip("slicer")
    from MedFusionLib import mrml

    copy = tmp_path / "database_ct"  # the CT as Slicer's database holds it (a copy: see the end)
    shutil.copytree(CT, copy)
    index = {}
    for folder in (copy, MR):
        for path in folder.glob("*.dcm"):
            index[_header(path).SOPInstanceUID] = str(path)

    with mrml.new_scene() as headless:
        nodes = []
        for folder, name in ((CT, "CT"), (MR, "MR")):
            files = sorted(folder.glob("*.dcm"))
            node = headless.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
            storage = headless.scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
            storage.SetFileName(str(files[0]))
            storage.ResetFileNameList()
            for path in files:
                storage.AddFileName(str(path))
            storage.SetSingleFile(0)
            assert storage.ReadData(node) == 1
            # what Slicer's DICOM plugin records on a volume it loads (order need not be the slices')
            node.SetAttribute(mrml.DICOM_INSTANCE_UIDS, " ".join(_header(p).SOPInstanceUID for p in files))
            nodes.append(node)
        fused = mrml.fuse_volume_nodes(nodes[0], nodes[1], registration="rigid", method="average")
        out = tmp_path / "export"
        files = mrml.export_fusion_to_dicom(fused, nodes[0], nodes[1], out, file_for_instance=index.get)
        before = _digest(copy)
        with pytest.raises(InputError, match="database_ct"):  # never into the database's own folder
            mrml.export_fusion_to_dicom(fused, nodes[0], nodes[1], copy, file_for_instance=index.get)
        assert _digest(copy) == before
    assert len(files) == 71 and (out / "REG_0001.dcm").is_file()
    assert not [p.name for p in files if _errors(dciodvfy, p)]
    headers = [_header(p) for p in _images(out)]
    assert {h.StudyInstanceUID for h in headers} == {ct.metadata["study_instance_uid"]}
    assert {h.FrameOfReferenceUID for h in headers} == {ct.metadata["frame_of_reference_uid"]}
    assert "method average" in headers[0].DerivationDescription
    written = _series_sitk(_images(out))
    reference = ct.to_sitk()
    assert np.abs(np.subtract(written.GetOrigin(), reference.GetOrigin())).max() < 1e-3
    assert np.abs(np.subtract(written.GetSpacing(), reference.GetSpacing())).max() < 1e-3
    # the slice the derived instance k names as its source is the CT slice at its position
    for header in headers[::10]:
        source = header.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert (
            abs(
                float(_header(Path(index[source])).ImagePositionPatient[2])
                - float(header.ImagePositionPatient[2])
            )
            < 1e-3
        )
    assert read_registration(out / "REG_0001.dcm").GetName() == "AffineTransform"


def test_a_store_failure_status_names_the_instance(ct_pet: Path, tmp_path: Path, capsys) -> None:
    """A storage SCP (pynetdicom's own, on loopback) that answers 0xA700 Out of Resources for one instance."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import SecondaryCaptureImageStorage

    def on_store(event: object) -> int:
        return 0xA700 if event.request.AffectedSOPInstanceUID == refused else 0x0000

    files = _images(ct_pet)[:3]
    refused = _header(files[1]).SOPInstanceUID
    scp = AE(ae_title="STORESCP")
    scp.add_supported_context(SecondaryCaptureImageStorage, "1.2.840.10008.1.2.1")
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        port = server.server_address[1]
        code, _, err = run(capsys, "send", *files, "--to", f"STORESCP@127.0.0.1:{port}")
    finally:
        server.shutdown()
    assert code == 2 and err.count("\n") == 1
    assert (
        f"1 of 3 instances were not stored on STORESCP@127.0.0.1:{port}: {files[1].name}: status 0xA700"
        in err
    )


def test_slicer_panel_sends_the_result_to_the_pacs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, orthanc: object, ct: Image
) -> None:
    """The panel's "Send to PACS" on real Qt widgets and a real scene (the project's Slicer stand-ins):
    the result goes to the PACS named in the settings as a derived series of the CT's study."""
    pytest.importorskip("slicer")
    import slicer_stand_ins

    reason = slicer_stand_ins.pyside6_or_reason()
    if reason is not None:
        pytest.skip(reason)
    import types

    import slicer

    from MedFusionLib import mrml

    index = {_header(p).SOPInstanceUID: str(p) for folder in (CT, MR) for p in folder.glob("*.dcm")}
    script = Path(__file__).resolve().parents[1] / "MedFusion" / "MedFusion.py"
    session = slicer_stand_ins.install(monkeypatch, tmp_path / "app", script)
    harness = next(session)
    try:
        nodes = []
        for folder in (CT, MR):
            image = read_image(folder)
            node = mrml.volume_node_from_image(image, harness.scene, folder.parent.name)
            node.SetAttribute(
                mrml.DICOM_INSTANCE_UIDS,
                " ".join(i for _, i in json.loads(image.metadata["dicom_instances"])),
            )
            nodes.append(node)
        fused = mrml.fuse_volume_nodes(nodes[0], nodes[1], registration="none", method="average")
        panel = harness.widget()
        panel._parameterNode.outputVolume = fused
        # Slicer's DICOM database (not in slicer-core) and the folder the user picks in the dialog
        monkeypatch.setattr(
            slicer, "dicomDatabase", types.SimpleNamespace(fileForInstance=index.get), raising=False
        )
        exports = tmp_path / "exports"
        exports.mkdir()
        monkeypatch.setattr(harness.qt.QFileDialog, "getExistingDirectory", lambda *a, **k: str(exports))
        settings = harness.qt.QSettings()
        settings.setValue("MedFusion/PACS", orthanc.peer)
        orthanc.clear()
        try:
            panel.sendToPacsButton.click()
        finally:
            settings.remove("MedFusion/PACS")
        assert harness.dialogs.errors == []
        (folder,) = exports.iterdir()
        assert len(_images(folder)) == 70
        assert f"70 DICOM files written to {folder}, sent to {orthanc.peer}" in panel.ui.statusLabel.text
        series = find(
            parse_peer(orthanc.peer),
            level="SERIES",
            query={"StudyInstanceUID": ct.metadata["study_instance_uid"]},
            returned=["SeriesInstanceUID"],
        )
        assert [s["SeriesInstanceUID"] for s in series] == [_header(_images(folder)[0]).SeriesInstanceUID]
        panel.cleanup()
    finally:
        session.close()
