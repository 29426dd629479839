"""Tests of MedFusionLib.preprocess: world-coordinate resampling and intensity normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedFusionLib.errors import GeometryError, InputError, ParameterError
from MedFusionLib.image import Image
from MedFusionLib.io import read_image
from MedFusionLib.preprocess import (
    CT_WINDOWS,
    DEFAULT_CT_WINDOW,
    PERCENTILE_PRESETS,
    check_finite_and_varying,
    normalize_intensity,
    resample_to,
)


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.fixture(scope="module")
def t1(data_dir: Path) -> Image:
    return read_image(data_dir / "mni/spm_T1.nii.gz", modality="MR")


@pytest.fixture(scope="module")
def spect(data_dir: Path) -> Image:
    return read_image(data_dir / "mni/spm_SPECT.nii.gz", modality="SPECT")


def world_x(image: Image) -> np.ndarray:
    """World (LPS) x of each voxel column of an axis-aligned image."""
    return image.origin[0] + np.arange(image.size[0]) * image.spacing[0] * image.direction[0]


# --- resampling ----------------------------------------------------------------------------
def test_spect_onto_t1_uses_world_coordinates(t1: Image, spect: Image) -> None:
    """spm_SPECT stores x flipped (direction -1, origin +90) relative to spm_T1."""
    before = spect.array.copy()
    on_t1 = resample_to(spect, t1)
    assert on_t1.same_grid(t1) and on_t1.modality == "SPECT" and on_t1.array.dtype == np.int16
    # The grids are mirror images of each other, so world resampling is an exact flip.
    assert np.array_equal(on_t1.array, spect.array[:, :, ::-1])
    assert np.array_equal(spect.array, before)

    # The templates are almost left-right symmetric (whole-head correlations barely differ), so
    # compare one hemisphere: SPECT's world x < 0 half against T1's head mask on that side.
    half = spect.with_array(np.where(world_x(spect) < 0, spect.array, 0).astype(np.int16))
    mask = (t1.array > 0.2 * t1.array.max()) & (world_x(t1) < 0)
    resampled = np.corrcoef(mask.ravel(), resample_to(half, t1).array.ravel())[0, 1]
    raw = np.corrcoef(mask.ravel(), half.array.ravel())[0, 1]
    assert resampled > 0.7 and raw < 0.0, (resampled, raw)


def test_own_grid_is_identity(t1: Image) -> None:
    assert resample_to(t1, t1) is t1
    same = resample_to(t1, t1, transform=sitk.TranslationTransform(3))
    assert same is not t1 and same.array.dtype == np.float32
    np.testing.assert_allclose(same.array, t1.array, atol=1e-6)


def test_known_shift_and_flip_nearest() -> None:
    array = np.arange(4 * 6, dtype=np.int16).reshape(4, 6)
    reference = Image.from_array(np.zeros((4, 6), np.int16), spacing=(2.0, 2.0))
    # one column further in +x: output column j samples input column j - 1
    shifted = Image.from_array(array, spacing=(2.0, 2.0), origin=(2.0, 0.0))
    out = resample_to(shifted, reference, interpolation="nearest", default_value=-1)
    assert out.array[:, 0].tolist() == [-1] * 4
    assert np.array_equal(out.array[:, 1:], array[:, :-1])
    # same world box stored with x flipped: the array comes back mirrored
    flipped = Image.from_array(array, spacing=(2.0, 2.0), origin=(10.0, 0.0), direction=(-1.0, 0.0, 0.0, 1.0))
    assert np.array_equal(resample_to(flipped, reference, interpolation="nearest").array, array[:, ::-1])


def test_linear_and_bspline_values() -> None:
    ramp = Image.from_array(np.tile(np.arange(4, dtype=np.float32) * 10, (3, 1)), origin=(0.0, -1.0))
    reference = Image.from_array(np.zeros((1, 3), np.float32), origin=(0.5, 0.0))
    np.testing.assert_allclose(resample_to(ramp, reference).array, [[5.0, 15.0, 25.0]], atol=1e-5)
    bspline = resample_to(ramp, reference, interpolation="bspline")
    assert bspline.array.shape == (1, 3) and bspline.array.dtype == np.float32
    # integer images keep their type and are rounded (2.7 -> 3), not truncated
    ints = ramp.with_array(np.tile(np.array([0, 3, 6, 9], np.uint8), (3, 1)))
    later = Image.from_array(np.zeros((1, 3), np.uint8), origin=(0.9, 0.0))
    out = resample_to(ints, later)
    assert out.array.dtype == np.uint8 and out.array.tolist() == [[3, 6, 9]]


def test_rgb_resampling_keeps_colour(data_dir: Path) -> None:
    pet = read_image(data_dir / "harvard/MRI_PET/PET/11.png", modality="PET")
    reference = Image.from_array(np.zeros((128, 128), np.float32), spacing=(2.0, 2.0), origin=(0.5, 0.5))
    out = resample_to(pet, reference)
    assert out.is_rgb and out.array.shape == (128, 128, 3) and out.array.dtype == np.uint8
    assert out.modality == "PET" and out.is_pseudo_colour
    # a 2x2 block average of the original (linear interpolation at the block centre)
    block = pet.array.astype(np.float64).reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    assert np.abs(out.array - block).max() <= 0.5 + 1e-6


def test_transform_is_applied() -> None:
    array = np.zeros((5, 5), np.float32)
    array[2, 3] = 1.0
    image = Image.from_array(array)
    moved = resample_to(
        image, image, transform=sitk.TranslationTransform(2, (1.0, 0.0)), interpolation="nearest"
    )
    assert moved.array[2, 2] == 1.0 and moved.array.sum() == 1.0


def test_resample_errors(t1: Image) -> None:
    flat = Image.from_array(np.zeros((4, 5), np.float32))
    with pytest.raises(InputError) as error:
        resample_to(flat, t1)
    assert "2-D" in one_line(error) and "3-D" in str(error.value)
    with pytest.raises(ParameterError, match="'cubic'") as error:
        resample_to(t1, t1, interpolation="cubic")
    one_line(error)
    far = t1.with_array(t1.array, origin=(5000.0, 126.0, -72.0))
    with pytest.raises(GeometryError) as error:
        resample_to(far, t1)
    message = one_line(error)
    assert message.startswith("images do not overlap in world space (A spans [")
    assert "B spans [4999.0, 5181.0]" in message
    with pytest.raises(GeometryError, match="pet.nii spans"):
        resample_to(far, t1, name="pet.nii", reference_name="t1.nii")
    with pytest.raises(GeometryError):  # the transform moves the sampling box away
        resample_to(t1, t1, transform=sitk.TranslationTransform(3, (1000.0, 0.0, 0.0)))


# --- presets -------------------------------------------------------------------------------
def test_presets() -> None:
    assert CT_WINDOWS["brain"] == (40.0, 80.0)
    assert CT_WINDOWS["subdural"] == (75.0, 215.0)
    assert CT_WINDOWS["bone"] == (400.0, 1800.0)
    assert CT_WINDOWS["soft_tissue"] == (50.0, 400.0)
    assert DEFAULT_CT_WINDOW == "soft_tissue"
    assert PERCENTILE_PRESETS == {"MR": (0.5, 99.5), "PET": (0.0, 99.9), "SPECT": (0.0, 99.9)}


# --- normalisation -------------------------------------------------------------------------
def gray(values: object, modality: str | None = None, dtype: type = np.float32) -> Image:
    array = np.asarray(values, dtype=dtype)
    return Image.from_array(array.reshape(1, -1) if array.ndim == 1 else array, modality=modality)


def test_windows() -> None:
    hu = gray([-1000, -10, 0, 40, 80, 90, 3000])
    np.testing.assert_allclose(normalize_intensity(hu, window="brain"), [[0, 0, 0, 0.5, 1, 1, 1]])
    np.testing.assert_allclose(
        normalize_intensity(hu, window=(0, 2000)), [[0, 0.495, 0.5, 0.52, 0.54, 0.545, 1]]
    )
    # the modality default for CT is the soft-tissue window: level 50 HU -> 0.5
    ct = gray([-150, 50, 100, 250], modality="CT", dtype=np.int16)
    np.testing.assert_array_equal(normalize_intensity(ct), [[0.0, 0.5, 0.625, 1.0]])
    # an explicit window wins over percentiles and the modality
    out = normalize_intensity(ct, window="bone", percentiles=(0, 100))
    np.testing.assert_allclose(out, [[(v + 500) / 1800 for v in (-150, 50, 100, 250)]], rtol=1e-6)


def test_percentiles() -> None:
    ramp = gray(np.arange(101))
    out = normalize_intensity(ramp, percentiles=(10, 90))
    np.testing.assert_allclose(out, np.clip((np.arange(101) - 10) / 80, 0, 1)[None], atol=1e-7)
    mr = gray(np.arange(1001), modality="MR")
    np.testing.assert_allclose(
        normalize_intensity(mr), np.clip((np.arange(1001) - 5) / 990, 0, 1)[None], atol=1e-6
    )
    pet = gray(np.arange(1001), modality="PET")
    np.testing.assert_allclose(
        normalize_intensity(pet), np.clip(np.arange(1001) / 999, 0, 1)[None], atol=1e-6
    )
    assert normalize_intensity(gray(np.arange(1001), modality="SPECT"))[0, 999] == 1.0


def test_percentile_fallback_to_min_max() -> None:
    """A PET that is 99.99 % background: the (0, 99.9) percentiles coincide."""
    values = np.zeros(10_000, np.float32)
    values[:1] = 8.0
    out = normalize_intensity(gray(values, modality="PET"))
    assert out.max() == 1.0 and out[0, 0] == 1.0 and out[0, 1] == 0.0


def test_unknown_modality_rules() -> None:
    png = gray([10, 51, 200], dtype=np.uint8)
    np.testing.assert_array_equal(
        normalize_intensity(png), np.array([[10, 51, 200]], np.float32) / np.float32(255)
    )
    floats = gray([2.0, 3.0, 6.0])
    np.testing.assert_allclose(normalize_intensity(floats), [[0.0, 0.25, 1.0]])
    ints = gray([-100, 0, 300], dtype=np.int16)
    np.testing.assert_allclose(normalize_intensity(ints), [[0.0, 0.25, 1.0]])


def test_non_finite_voxels_are_background() -> None:
    values = np.array([[np.nan, 1.0, 2.0, np.inf, 5.0, -np.inf]], np.float32)
    image = Image.from_array(values.copy())
    out = normalize_intensity(image)
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.25, 0.0, 1.0, 0.0]])
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert np.array_equal(image.array, values, equal_nan=True)
    with_percentiles = normalize_intensity(image, percentiles=(0, 100))
    np.testing.assert_allclose(with_percentiles, out)


def test_input_is_never_modified() -> None:
    for dtype in (np.float32, np.float64, np.int16, np.uint8):
        array = np.arange(12, dtype=dtype).reshape(3, 4)
        image = Image.from_array(array)
        before = array.copy()
        out = normalize_intensity(image)
        assert np.array_equal(array, before) and not np.shares_memory(out, array) and out.dtype == np.float32


def test_chest_ct_soft_tissue_window(data_dir: Path) -> None:
    ct = read_image(data_dir / "ct/chest_ct_lung1.nrrd", modality="CT")
    before = ct.array[::4].copy()
    out = normalize_intensity(ct)
    assert out.shape == ct.shape and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    at_level = ct.array == 50
    assert at_level.any() and np.all(out[at_level] == 0.5)
    assert np.array_equal(normalize_intensity(ct, window="soft_tissue"), out)
    assert np.array_equal(ct.array[::4], before)


def test_bad_images() -> None:
    with pytest.raises(InputError) as error:
        normalize_intensity(gray([np.nan, np.inf, -np.inf]), name="pet.nii")
    assert one_line(error) == "pet.nii contains no finite voxels"
    with pytest.raises(InputError) as error:
        normalize_intensity(gray([3.0, 3.0, np.nan]), name="B")
    assert one_line(error) == "B is constant (value 3): nothing to fuse"
    with pytest.raises(InputError, match="constant"):
        normalize_intensity(gray([7, 7], dtype=np.uint8), window="brain")
    rgb = Image.from_array(np.zeros((2, 2, 3), np.uint8), rgb=True)
    with pytest.raises(InputError, match="luminance") as error:
        normalize_intensity(rgb, name="pet.png")
    assert "pet.png" in one_line(error)
    assert check_finite_and_varying(np.array([np.nan, 1.0, 4.0]), name="x") == (1.0, 4.0)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"window": "liver"}, "'liver'"),
        ({"window": (40, 0)}, "width must be > 0, got 0"),
        ({"window": (40, -5)}, "got -5"),
        ({"window": (40,)}, "(level, width)"),
        ({"percentiles": (-1, 50)}, "(-1, 50)"),
        ({"percentiles": (0, 101)}, "(0, 101)"),
        ({"percentiles": (50, 50)}, "(50, 50)"),
        ({"percentiles": (60, 40)}, "(60, 40)"),
    ],
)
def test_bad_parameters(options: dict, fragment: str) -> None:
    with pytest.raises(ParameterError) as error:
        normalize_intensity(gray([0.0, 1.0]), **options)
    assert fragment in one_line(error)
