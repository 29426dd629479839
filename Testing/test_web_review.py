"""The review session behind ``medfusion serve`` (MedFusionLib.web.review), without a browser.

A real slicer-core scene with slice logics (:func:`MedFusionLib.mrml.new_scene`), the shipped
real-patient sample (TCIA STS_019: CT, FDG-PET, tumour mask) and real background processes.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (the test extra has it)")

from MedFusionLib import mrml  # noqa: E402
from MedFusionLib.io import read_image  # noqa: E402
from MedFusionLib.slicer_support import bundled_sample_paths  # noqa: E402
from MedFusionLib.web.catalogue import Catalogue  # noqa: E402
from MedFusionLib.web.review import Choice, FusionReview, lesion_centre_ras  # noqa: E402

SAMPLES = Path(next(iter(bundled_sample_paths().values()))).parent


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("sts019_CT.nii.gz", "sts019_CT_mask.nii.gz", "sts019_PET.nii.gz", "spm_T1.nii.gz"):
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    return folder


@pytest.fixture
def review(data: Path, tmp_path: Path):
    headless = mrml.new_scene()
    session = FusionReview(
        Catalogue(data),
        headless.scene,
        headless.application_logic,
        save_dir=tmp_path / "results",
        device="cpu",
    )
    yield session
    session.close()
    headless.close()


def _wait(review: FusionReview, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while review.busy:  # the job, then the lesion readout
        review.poll()
        assert time.monotonic() < deadline, f"still {review.status} after {timeout} s"
        time.sleep(0.05)


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


CT_PET = Choice(fixed="sts019_CT.nii.gz", moving="sts019_PET.nii.gz", lesion="sts019_CT_mask.nii.gz")


class TestReview:
    def test_a_real_patient_pair_is_fused_shown_and_read_out(self, review: FusionReview, data: Path) -> None:
        before = _digests(data)
        review.apply(CT_PET)
        assert review.status == "running"
        _wait(review)
        assert review.status == "done", review.status
        shown = review.shown
        assert shown is not None and shown.summary["method"] == "uptake_average"
        assert shown.fused.IsA("vtkMRMLVectorVolumeNode")  # a colour fusion, shown in colour
        composite = review.scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
        assert composite.GetBackgroundVolumeID() == shown.fused.GetID()
        readout = review.readout()
        assert readout is not None and 0.5 < readout["conspicuity_kept"] <= 1.0
        # the readout computed after display equals the one medfusion fuse --lesion reports
        from MedFusionLib.job import FusionJob, run_job

        expected = run_job(
            FusionJob(
                fixed=str(data / "sts019_CT.nii.gz"),
                moving=str(data / "sts019_PET.nii.gz"),
                modality_fixed="CT",
                modality_moving="PET",
                lesion=str(data / "sts019_CT_mask.nii.gz"),
                device="cpu",
            )
        ).clinical
        for key in ("conspicuity_kept", "anatomy_kept"):
            assert readout[key] == pytest.approx(expected[key], abs=1e-6)
        # the views are centred on the tumour: every slice plane passes through its centre
        centre = np.array(shown.lesion_centre)
        for slice_node in mrml._nodes(review.scene, "vtkMRMLSliceNode"):
            matrix = mrml.slicer.util.arrayFromVTKMatrix(slice_node.GetSliceToRAS())
            assert abs(float(matrix[:3, 2] @ (centre - matrix[:3, 3]))) < 1.0
        assert _digests(data) == before

    def test_opacity_changes_the_overlay_and_is_checked(self, review: FusionReview) -> None:
        review.apply(CT_PET)
        _wait(review)
        review.set_opacity(0.6)
        composite = review.scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
        assert composite.GetForegroundOpacity() == pytest.approx(0.6)
        assert composite.GetForegroundVolumeID()  # the PET overlay
        with pytest.raises(Exception, match="opacity"):
            review.set_opacity(1.5)

    @pytest.mark.parametrize(
        ("choice", "message"),
        [
            (Choice(fixed="../../etc/passwd", moving="sts019_PET.nii.gz"), "unknown volume"),
            (Choice(fixed="/etc/passwd", moving="sts019_PET.nii.gz"), "unknown volume"),
            (Choice(fixed="sts019_CT.nii.gz", moving=None), "choose a fixed and a moving volume"),
            (Choice(fixed="sts019_CT.nii.gz", moving="sts019_CT_mask.nii.gz"), "lesion mask"),
            (Choice(fixed="sts019_CT.nii.gz", moving="sts019_PET.nii.gz", method="nope"), "nope"),
            (Choice(fixed="sts019_CT.nii.gz", moving="sts019_PET.nii.gz", colormap="nope"), "nope"),
            (Choice(fixed="sts019_CT.nii.gz", moving="sts019_PET.nii.gz", registration="x"), "registration"),
            (
                Choice(fixed="spm_T1.nii.gz", moving="sts019_PET.nii.gz", method="gff", parameters="r9=3"),
                "'r9'",
            ),
            (
                Choice(fixed="spm_T1.nii.gz", moving="sts019_PET.nii.gz", method="gff", parameters="r1=0"),
                "r1",
            ),
            (Choice(fixed="sts019_CT.nii.gz", moving="sts019_PET.nii.gz", parameters="weight=2"), "weight"),
        ],
    )
    def test_a_bad_choice_is_one_error_line_and_starts_nothing(
        self, review: FusionReview, choice: Choice, message: str
    ) -> None:
        review.apply(choice)
        assert review.status.startswith("error: ") and message in review.status
        assert "\n" not in review.status and not review.running

    def test_parameters_reach_the_method_the_recommended_one_included(self, review: FusionReview) -> None:
        review.apply(
            Choice(
                fixed="sts019_CT.nii.gz",
                moving="sts019_PET.nii.gz",
                method="laplacian_pyramid",
                colormap="none",
                parameters="levels=2, rule=local_energy",
            )
        )
        _wait(review)
        assert review.status == "done", review.status
        assert review.shown.summary["parameters"]["levels"] == 2
        assert review.shown.summary["parameters"]["rule"] == "local_energy"
        review.apply(Choice(fixed="sts019_CT.nii.gz", moving="sts019_PET.nii.gz", parameters="weight=0.3"))
        _wait(review)
        assert review.shown.summary["method"] == "uptake_average"
        assert review.shown.summary["parameters"]["weight"] == pytest.approx(0.3)

    def test_cancel_stops_the_job_and_the_session_goes_on(self, review: FusionReview) -> None:
        review.apply(Choice(fixed="spm_T1.nii.gz", moving="sts019_PET.nii.gz", registration="bspline"))
        time.sleep(0.5)
        review.cancel()
        _wait(review, timeout=20)
        assert review.status == "cancelled" and review.shown is None
        review.apply(CT_PET)
        _wait(review)
        assert review.status == "done"

    def test_save_writes_a_new_file_each_time_and_never_an_input(
        self, review: FusionReview, data: Path
    ) -> None:
        assert review.save() is None and review.status.startswith("error: nothing to save")
        review.apply(CT_PET)
        _wait(review)
        before = _digests(data)
        first, second = review.save(), review.save()
        assert first is not None and second is not None and first != second
        assert first.parent == review.save_dir and first.name.endswith(".nrrd")
        # the work folder keeps only the shown result's job and the waiting process's folder
        review.apply(CT_PET)
        _wait(review)
        jobs = sorted(p.name for p in review._work.iterdir())
        assert len(jobs) == 2 and Path(review.shown.summary["output"]).parent.name in jobs
        saved = read_image(first)
        assert saved.is_rgb and saved.array.shape[:3] == read_image(data / "sts019_CT.nii.gz").array.shape
        assert _digests(data) == before


def test_the_lesion_centre_is_the_masks_centre_in_ras() -> None:
    mask = read_image(SAMPLES / "sts019_CT_mask.nii.gz")
    centre = lesion_centre_ras(mask)
    assert centre is not None
    # the same point through SimpleITK (LPS) from the mean voxel index
    import SimpleITK as sitk

    image = sitk.ReadImage(str(SAMPLES / "sts019_CT_mask.nii.gz"))
    index = np.argwhere(sitk.GetArrayFromImage(image) != 0).mean(axis=0)[::-1]
    lps = image.TransformContinuousIndexToPhysicalPoint([float(i) for i in index])
    assert np.allclose(centre, (-lps[0], -lps[1], lps[2]), atol=1e-4)
    assert lesion_centre_ras(mask.with_array(np.zeros_like(mask.array))) is None


def test_a_dicom_study_is_fused_and_saved_as_a_derived_series_in_it(data_dir: Path, tmp_path: Path) -> None:
    """TCIA STS_007 as DICOM (CT and PET series of one study): Save writes DICOM into that study."""
    import pydicom

    study = data_dir / "sts_dicom" / "STS_007"
    if not study.is_dir():
        pytest.skip(f"{study} not found")
    folder = tmp_path / "data"
    for series in ("CT", "PET"):
        shutil.copytree(study / series, folder / "STS_007" / series)
    catalogue = Catalogue(folder)
    volumes = {entry.modality: entry for entry in catalogue.volumes()}
    assert set(volumes) == {"CT", "PET"} and volumes["CT"].series is not None
    headless = mrml.new_scene()
    review = FusionReview(catalogue, headless.scene, headless.application_logic, save_dir=tmp_path / "out")
    try:
        review.apply(Choice(fixed=volumes["CT"].key, moving=volumes["PET"].key))
        _wait(review)
        assert review.status == "done", review.status
        target = review.save()
        assert target is not None and review.saving
        _wait(review, timeout=180)
        assert review.saved == target and review.status == "done", review.status
        written = sorted(target.glob("*.dcm"))
        ct_files = sorted((folder / "STS_007" / "CT" / "image").glob("*.dcm"))
        assert (
            len(written) == len(ct_files)
            and target.name == "STS_007_CT_image_STS_007_PET_image_uptake_average"
        )
        first, ct = pydicom.dcmread(written[0]), pydicom.dcmread(ct_files[0], stop_before_pixels=True)
        assert first.StudyInstanceUID == ct.StudyInstanceUID
        assert first.FrameOfReferenceUID == ct.FrameOfReferenceUID
        assert "DERIVED" in first.ImageType and "uptake_average" in first.DerivationDescription
    finally:
        review.close()
        headless.close()
