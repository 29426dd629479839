"""Tests of MedFusionLib.colour: full-range BT.601 YCbCr and luminance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from MedFusionLib.colour import luminance, rgb_to_ycbcr, ycbcr_to_rgb
from MedFusionLib.errors import InputError
from MedFusionLib.image import Image
from MedFusionLib.io import read_image


def test_round_trip_is_exact() -> None:
    rgb = np.random.default_rng(0).random((16, 17, 3))
    y, cb, cr = rgb_to_ycbcr(rgb)
    assert y.dtype == np.float64 and y.shape == (16, 17)
    np.testing.assert_allclose(ycbcr_to_rgb(y, cb, cr), rgb, atol=1e-12)
    rgb32 = rgb.astype(np.float32)
    back = ycbcr_to_rgb(*rgb_to_ycbcr(rgb32))
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, rgb32, atol=1e-6)


def test_known_colours() -> None:
    colours = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]], np.float64)
    y, cb, cr = rgb_to_ycbcr(colours)
    np.testing.assert_allclose(y, [0, 1, 0.299, 0.587, 0.114, 0.5], atol=1e-12)
    np.testing.assert_allclose(cb[[0, 1, 5]], 0.5, atol=1e-12)  # grays have neutral chroma
    np.testing.assert_allclose(cr[[0, 1, 5]], 0.5, atol=1e-12)
    assert cb[4] == pytest.approx(1.0) and cr[2] == pytest.approx(1.0)  # chroma spans [0, 1]
    assert cb[3] == pytest.approx(0.5 - 0.587 / 1.772) and cr[3] == pytest.approx(0.5 - 0.587 / 1.402)


def test_agrees_with_jpeg_convention_of_pillow() -> None:
    """Pillow's RGB -> YCbCr is the JPEG (JFIF) full-range BT.601 one, in 8-bit integers."""
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    reference = np.asarray(PILImage.fromarray(rgb, "RGB").convert("YCbCr"), dtype=np.float64) / 255
    ours = np.stack(rgb_to_ycbcr(rgb), axis=-1)
    assert np.abs(ours - reference).max() <= 1.01 / 255


def test_output_is_clipped_and_checked() -> None:
    y = np.array([0.0, 1.0, 0.5], np.float32)
    rgb = ycbcr_to_rgb(y, np.array([0.0, 1.0, 0.5], np.float32), np.array([1.0, 0.0, 0.5], np.float32))
    assert rgb.dtype == np.float32 and rgb.min() >= 0.0 and rgb.max() <= 1.0
    with pytest.raises(InputError, match="one shape"):
        ycbcr_to_rgb(y, y[:2], y)
    with pytest.raises(InputError, match="trailing axis of 3"):
        rgb_to_ycbcr(np.zeros((4, 4)))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        rgb_to_ycbcr(np.full((2, 3), 255.0))
    with pytest.raises(InputError, match="int16"):
        rgb_to_ycbcr(np.zeros((2, 3), np.int16))


def test_harvard_pet_luminance(data_dir: Path) -> None:
    pet = read_image(data_dir / "harvard/MRI_PET/PET/11.png", modality="PET")
    before = pet.array.copy()
    lum = luminance(pet)
    rgb = pet.array.astype(np.float64) / 255
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert lum.array.dtype == np.float32 and lum.array.shape == (256, 256) and not lum.is_rgb
    np.testing.assert_allclose(lum.array, expected, atol=1e-6)
    np.testing.assert_allclose(rgb_to_ycbcr(pet.array)[0], expected, atol=1e-6)
    assert lum.same_grid(pet) and lum.modality == "PET"
    assert np.array_equal(pet.array, before)


def test_gray_stored_as_rgb_is_exact(data_dir: Path) -> None:
    mri = read_image(data_dir / "harvard/MRI_PET/MRI/11.png")
    assert not mri.is_pseudo_colour
    lum = luminance(mri)
    assert np.array_equal(lum.array, mri.array[..., 0].astype(np.float32) / np.float32(255))
    assert lum.array.max() <= 1.0


def test_luminance_of_gray_and_floats() -> None:
    gray8 = Image.from_array(np.array([[0, 255], [51, 102]], np.uint8))
    np.testing.assert_array_equal(luminance(gray8).array, np.array([[0.0, 1.0], [0.2, 0.4]], np.float32))
    gray16 = Image.from_array(np.array([[0, 65535]], np.uint16).repeat(2, 0))
    np.testing.assert_array_equal(luminance(gray16).array, [[0.0, 1.0], [0.0, 1.0]])
    rgb = Image.from_array(np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]).repeat(2, 0), rgb=True)
    out = luminance(rgb)
    assert out.array.dtype == np.float32
    np.testing.assert_allclose(out.array, [[0.299, 0.114], [0.299, 0.114]], rtol=1e-6)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        luminance(Image.from_array(np.array([[-1000.0, 50.0]]).repeat(2, 0)))
    with pytest.raises(InputError, match="int16"):
        luminance(Image.from_array(np.zeros((2, 2), np.int16)))
