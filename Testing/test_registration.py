"""Registration core: a known rigid transform recovered on a real volume, clear failures."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import mni_path

from MedFusionLib.errors import GeometryError, ParameterError
from MedFusionLib.image import Image
from MedFusionLib.io import read_image
from MedFusionLib.registration import register

TRUTH = sitk.Euler3DTransform((0, -18, 18), np.deg2rad(8), np.deg2rad(-5), np.deg2rad(6), (7, -10, 5))


def moved(image: Image, transform: sitk.Transform) -> Image:
    """``image`` resampled so that ``transform`` maps its original points onto the new image's."""
    itk = image.to_sitk()
    return Image.from_sitk(sitk.Resample(itk, itk, transform.GetInverse(), sitk.sitkLinear, 0.0))


def mean_tre(estimate: sitk.Transform, truth: sitk.Transform, reference: Image) -> float:
    """Mean distance (mm) between the two transforms' images of head voxels of ``reference``."""
    itk = reference.to_sitk()
    array = reference.array
    points = np.argwhere(array > 0.2 * array.max())[::40]
    distances = []
    for k, j, i in points:
        p = itk.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))
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
