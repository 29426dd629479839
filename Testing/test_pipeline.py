"""Image-level fusion: resampling onto A's grid, colour handling, checks, and the demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import harvard_path, mni_path

from MedFusionLib.colour import rgb_to_ycbcr
from MedFusionLib.demo import SAMPLE_DATA, run_demo
from MedFusionLib.errors import GeometryError, InputError, ParameterError
from MedFusionLib.image import Image
from MedFusionLib.io import read_image
from MedFusionLib.pipeline import fuse_images


def test_output_lies_on_the_reference_grid_even_when_b_is_flipped() -> None:
    t1 = read_image(mni_path("spm_T1"), modality="MR")
    spect = read_image(mni_path("spm_SPECT"), modality="SPECT")
    assert spect.direction[0] == -t1.direction[0]  # the SPM SPECT stores x flipped
    # mark one side of the SPECT by array index; in world space it lies on the other side
    marked = spect.array.copy()
    marked[40:50, 50:60, 5:15] = marked.max()
    result = fuse_images(t1, spect.with_array(marked), method="average", device="cpu")
    unmarked = fuse_images(t1, spect, method="average", device="cpu")
    assert result.image.same_grid(t1)
    change = np.abs(result.image.array - unmarked.image.array)
    assert change[40:50, 50:60, 76:86].mean() > 0.2  # x index 90 - i on T1's grid
    assert change[40:50, 50:60, 5:15].mean() < 0.05  # only the percentile window moved a little


def test_pseudo_colour_pet_gives_rgb_with_pet_chroma() -> None:
    mri = read_image(harvard_path("MRI_PET", "MRI"))
    pet = read_image(harvard_path("MRI_PET", "PET"))
    result = fuse_images(mri, pet, method="maximum", device="cpu")
    fused = result.image.array
    assert result.image.is_rgb and fused.shape == (256, 256, 3)
    _, cb_out, cr_out = rgb_to_ycbcr(fused)
    _, cb_pet, cr_pet = rgb_to_ycbcr(pet.array.astype(np.float32) / 255)
    unclipped = (fused > 0.01).all(-1) & (fused < 0.99).all(-1)
    assert unclipped.mean() > 0.2
    np.testing.assert_allclose(cb_out[unclipped], cb_pet[unclipped], atol=2e-3)
    np.testing.assert_allclose(cr_out[unclipped], cr_pet[unclipped], atol=2e-3)


def test_gray_stored_as_rgb_stays_gray() -> None:
    mri = read_image(harvard_path("MRI_CT", "MRI"))
    ct = read_image(harvard_path("MRI_CT", "CT"))
    result = fuse_images(mri, ct, method="average", device="cpu")
    assert not result.image.is_rgb
    expected = (mri.array[..., 0].astype(np.float32) + ct.array[..., 0]) / 510
    np.testing.assert_allclose(result.image.array, expected, atol=1e-6)


def test_inputs_are_not_modified() -> None:
    t1 = read_image(mni_path("spm_T1"), modality="MR")
    pet = read_image(mni_path("spm_PET"), modality="PET")
    copies = t1.array.copy(), pet.array.copy()
    fuse_images(t1, pet, method="laplacian_pyramid", device="cpu")
    np.testing.assert_array_equal(t1.array, copies[0])
    np.testing.assert_array_equal(pet.array, copies[1])


def test_mixing_2d_and_3d_is_refused() -> None:
    with pytest.raises(InputError, match="2-D"):
        fuse_images(read_image(mni_path("spm_T1")), read_image(harvard_path("MRI_CT", "CT")))


def test_non_overlapping_images_are_refused() -> None:
    t1 = read_image(mni_path("spm_T1"))
    far = t1.with_array(t1.array.copy(), origin=(1e4, 1e4, 1e4))
    with pytest.raises(GeometryError, match="overlap"):
        fuse_images(t1, far)


def test_constant_image_is_refused() -> None:
    t1 = read_image(mni_path("spm_T1"))
    flat = t1.with_array(np.full_like(t1.array, 0.3))
    with pytest.raises(InputError, match="constant"):
        fuse_images(t1, flat, name_b="flat.nii")


def test_unknown_parameter_is_refused_before_reading_pixels() -> None:
    image = Image.from_array(np.zeros((8, 8), np.float32))
    with pytest.raises(ParameterError, match="sharpness"):
        fuse_images(image, image, method="average", parameters={"sharpness": 2})


def test_demo_writes_volumes_and_montage(tmp_path: Path) -> None:
    lines: list[str] = []
    paths = run_demo(tmp_path, methods=("average",), device="cpu", report=lines.append)
    volumes = {p.name: p for p in paths if p.name.endswith(".nii.gz")}
    montages = [p for p in paths if p.suffix == ".png"]
    # the patient's two pairs with the recommended colour fusion and two gray methods, the
    # templates' two pairs with the one method asked for
    assert len(volumes) == 2 * 3 + 2 and len(montages) == 4
    assert all(p.stat().st_size > 1000 for p in paths)
    assert any("montage" in line for line in lines)
    ct = read_image(SAMPLE_DATA / "sts019_CT.nii.gz")
    colour = read_image(volumes["STS019_CT_PET_recommended.nii.gz"])
    assert colour.is_rgb and colour.same_grid(ct)
    assert 0.0 <= colour.array.min() and colour.array.max() <= 1.0
    assert not read_image(volumes["STS019_CT_PET_maximum.nii.gz"]).is_rgb
    template = read_image(volumes["MR_PET_average.nii.gz"])
    assert template.size == (91, 109, 91) and 0.0 <= template.array.min() and template.array.max() <= 1.0
