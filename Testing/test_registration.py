"""Registration core: a known rigid transform recovered on a real volume, clear failures."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DATA
from helpers import harvard_path, mni_path

from MedFusionLib.colour import luminance
from MedFusionLib.errors import GeometryError, ParameterError, RegistrationError
from MedFusionLib.image import Image
from MedFusionLib.io import read_image
from MedFusionLib.registration import register

TRUTH = sitk.Euler3DTransform((0, -18, 18), np.deg2rad(8), np.deg2rad(-5), np.deg2rad(6), (7, -10, 5))


def moved(image: Image, transform: sitk.Transform) -> Image:
    """``image`` resampled so that ``transform`` maps its original points onto the new image's."""
    itk = image.to_sitk()
    background = float(image.array.min())  # air: 0 for MR/PET, -1024 HU for CT
    return Image.from_sitk(sitk.Resample(itk, itk, transform.GetInverse(), sitk.sitkLinear, background))


def mean_tre(estimate: sitk.Transform, truth: sitk.Transform, reference: Image) -> float:
    """Mean distance (mm) between the two transforms' images of head voxels of ``reference``."""
    itk = reference.to_sitk()
    array = reference.array.astype(np.float64)
    low = array.min()
    points = np.argwhere(array - low > 0.2 * (array.max() - low))[::40]
    distances = []
    for index in points:
        p = itk.TransformIndexToPhysicalPoint(tuple(int(i) for i in index[::-1]))
        distances.append(np.linalg.norm(np.subtract(estimate.TransformPoint(p), truth.TransformPoint(p))))
    return float(np.mean(distances))


def test_rigid_recovers_a_known_transform_of_a_real_t1() -> None:
    t1 = read_image(mni_path("spm_T1"))
    result = register(t1, moved(t1, TRUTH), type="rigid")
    assert mean_tre(result.transform, TRUTH, t1) < 0.5
    assert result.metric_final < result.metric_initial
    assert len(result.iterations_per_level) == 3 and result.overlap > 0.8
    again = register(t1, moved(t1, TRUTH), type="rigid")
    assert np.allclose(again.transform.GetParameters(), result.transform.GetParameters(), atol=1e-6)


def test_non_overlapping_images_and_bad_options_are_refused() -> None:
    t1 = read_image(mni_path("spm_T1"))
    far = t1.to_sitk()
    far.SetOrigin((5000.0, 0.0, 0.0))
    with pytest.raises(GeometryError, match="do not overlap"):
        register(t1, Image.from_sitk(far), name_moving="far.nii.gz")
    with pytest.raises(ParameterError, match="unknown registration type"):
        register(t1, t1, type="elastic")
    with pytest.raises(ParameterError, match="sampling_fraction"):
        register(t1, t1, sampling_fraction=0)
    with pytest.raises(ParameterError, match="max_samples"):
        register(t1, t1, max_samples=10)


def test_register_command_writes_a_transform_slicer_and_simpleitk_read(tmp_path, capsys) -> None:  # noqa: ANN001
    from MedFusionLib.cli import main

    t1 = read_image(mni_path("spm_T1"))
    moving = tmp_path / "moved.nii.gz"
    sitk.WriteImage(moved(t1, TRUTH).to_sitk(), str(moving))
    out, qa, resampled = tmp_path / "t1.tfm", tmp_path / "qa.png", tmp_path / "on_fixed.nii.gz"
    code = main(
        [
            "register",
            str(mni_path("spm_T1")),
            str(moving),
            "-o",
            str(out),
            "--qa",
            str(qa),
            "--resampled",
            str(resampled),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = __import__("json").loads(captured.out)
    assert record["type"] == "rigid" and record["metric_final"] < record["metric_initial"]
    transform = sitk.ReadTransform(str(out))
    assert transform.GetName() == "Euler3DTransform"
    assert mean_tre(transform, TRUTH, t1) < 0.5
    assert qa.stat().st_size > 10_000
    aligned = sitk.ReadImage(str(resampled))
    assert aligned.GetSize() == t1.to_sitk().GetSize()
    assert not list(tmp_path.glob(".*tmp*"))


def test_register_command_refuses_bad_input_before_work(tmp_path, capsys) -> None:  # noqa: ANN001
    from MedFusionLib.cli import main

    t1 = str(mni_path("spm_T1"))
    for args, culprit in (
        ([t1, t1, "-o", str(tmp_path / "t.mat")], "t.mat"),
        ([t1, str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "t.tfm")], "missing.nii.gz"),
        ([t1, t1, "-o", str(tmp_path / "t.tfm"), "--qa", str(tmp_path / "qa.jpg")], "qa.jpg"),
        ([t1, t1, "-o", str(tmp_path / "t.tfm"), "--type", "elastic"], "elastic"),
    ):
        try:
            code = main(["register", *args])
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code
        err = capsys.readouterr().err
        assert code == 2 and culprit in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_fuse_with_registration_aligns_a_moved_pet(tmp_path, capsys) -> None:  # noqa: ANN001
    from MedFusionLib.cli import main

    pet = read_image(mni_path("spm_PET"))
    moving = tmp_path / "pet_moved.nii.gz"
    sitk.WriteImage(moved(pet, TRUTH).to_sitk(), str(moving))
    out = tmp_path / "fused.nii.gz"
    code = main(
        [
            "fuse",
            str(mni_path("spm_T1")),
            str(moving),
            "-o",
            str(out),
            "--method",
            "average",
            "--register",
            "rigid",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = __import__("json").loads(captured.out)
    assert record["registration"]["type"] == "rigid"
    assert sitk.ReadImage(str(out)).GetSize() == read_image(mni_path("spm_T1")).to_sitk().GetSize()


def test_rigid_undoes_a_known_displacement_of_spect_stored_flipped() -> None:
    t1, spect = read_image(mni_path("spm_T1")), read_image(mni_path("spm_SPECT"))
    baseline = register(t1, spect).transform

    class Expected:
        def TransformPoint(self, point):  # noqa: ANN001, ANN202, N802 (ITK's name)
            return TRUTH.TransformPoint(baseline.TransformPoint(point))

    result = register(t1, moved(spect, TRUTH))
    assert mean_tre(result.transform, Expected(), t1) < 1.0


class Relative:
    """The known displacement after the registration of the unmoved pair: ``truth(baseline(p))``."""

    def __init__(self, truth: sitk.Transform, baseline: sitk.Transform) -> None:
        self.truth, self.baseline = truth, baseline

    def TransformPoint(self, point):  # noqa: ANN001, ANN201, N802 (ITK's name)
        return self.truth.TransformPoint(self.baseline.TransformPoint(point))


def test_affine_recovers_a_known_scaling_and_shear_of_a_real_t1() -> None:
    t1 = read_image(mni_path("spm_T1"))
    truth = sitk.AffineTransform(3)
    truth.SetCenter((0.0, -18.0, 18.0))
    matrix = np.array(TRUTH.GetMatrix()).reshape(3, 3) @ np.array(
        [[1.07, 0.03, 0], [0, 0.94, 0], [0, 0, 1.05]]
    )
    truth.SetMatrix(matrix.ravel().tolist())
    truth.SetTranslation((-6.0, 9.0, 4.0))
    result = register(t1, moved(t1, truth), type="affine")
    assert result.transform.GetName() == "AffineTransform"
    assert mean_tre(result.transform, truth, t1) < 1.0
    rigid_only = register(t1, moved(t1, truth), type="rigid")
    assert mean_tre(rigid_only.transform, truth, t1) > 2.0  # the scaling is there to be found


def test_rigid_on_the_anisotropic_chest_ct_against_itself() -> None:
    ct = read_image(DATA / "ct" / "chest_ct_lung1.nrrd")
    truth = sitk.Euler3DTransform((0, 0, -200), np.deg2rad(3), np.deg2rad(-2), np.deg2rad(9), (12, -8, 6))
    result = register(ct, moved(ct, truth), type="rigid")
    assert mean_tre(result.transform, truth, ct) < 1.5


def test_rigid_pet_at_2_mm_onto_a_t1_at_1_mm() -> None:
    colin, pet = read_image(mni_path("colin27_ch2_1mm")), read_image(mni_path("spm_PET"))
    baseline = register(colin, pet).transform
    result = register(colin, moved(pet, TRUTH))
    assert mean_tre(result.transform, Relative(TRUTH, baseline), colin) < 1.0


def test_rigid_2d_slices_with_and_without_a_fixed_mask() -> None:
    mri = luminance(read_image(harvard_path("MRI_CT", "MRI")))
    truth = sitk.Euler2DTransform((128.0, 128.0), np.deg2rad(7), (6.0, -4.0))
    shifted = moved(mri, truth)
    result = register(mri, shifted)
    assert result.transform.GetName() == "Euler2DTransform"
    assert mean_tre(result.transform, truth, mri) < 0.5
    mask = Image.from_sitk(sitk.GetImageFromArray((mri.array > 0.1 * mri.array.max()).astype(np.uint8)))
    masked = register(mri, shifted, fixed_mask=mask)
    assert mean_tre(masked.transform, truth, mri) < 0.5
    assert not np.allclose(masked.transform.GetParameters(), result.transform.GetParameters())


def test_a_moving_image_that_covers_too_little_is_a_failure_not_an_alignment() -> None:
    t1 = read_image(mni_path("spm_T1")).to_sitk()
    with pytest.raises(RegistrationError, match=r"slab.*covers too little"):
        register(Image.from_sitk(t1), Image.from_sitk(t1[:, :, 40:48]), name_moving="slab")
