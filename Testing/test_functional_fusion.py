"""Colour fusion of a functional image with an anatomical one (MedFusionLib.functional_fusion, fusion/functional.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from MedFusionLib.colormaps import srgb_lightness, srgb_to_lab
from MedFusionLib.errors import InputError, ParameterError
from MedFusionLib.functional_fusion import (
    DEFAULT_COLORMAP,
    DEFAULT_METHOD,
    RECOMMENDED,
    fuse_functional,
    gray_lightness,
    lab_to_rgb_tensor,
)
from MedFusionLib.fusion import get_method, list_methods

STS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sts"
FUNCTIONAL_RULES = ("uptake_lift", "uptake_base", "uptake_exchange", "uptake_average")


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    anatomy = rng.uniform(0.2, 0.8, size=shape).astype(np.float32)
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    functional = np.clip(1.2 - 2.0 * radius, 0.0, 1.0).astype(np.float32)  # a blob on a zero background
    functional += 0.1 * rng.uniform(size=shape).astype(np.float32) * (functional == 0)
    return anatomy, functional


@pytest.mark.parametrize("shape", [(24, 28), (6, 20, 22)])
@pytest.mark.parametrize("colormap", ["neutral_heat", "bmy", "inferno", "pet_heat"])
def test_output_is_rgb_in_unit_range_with_a_shape(shape, colormap):
    anatomy, functional = _pair(shape)
    fused = fuse_functional(anatomy, functional, colormap=colormap)
    assert fused.shape == shape + (3,) and fused.dtype == np.float32
    assert fused.min() >= 0.0 and fused.max() <= 1.0 and np.isfinite(fused).all()


@pytest.mark.parametrize("shape", [(24, 28), (6, 20, 22)])
def test_pure_ihs_keeps_the_anatomy_lightness(shape):
    anatomy, functional = _pair(shape)
    fused = fuse_functional(anatomy, functional, parameters={"weight": 0.0})
    lightness_f = srgb_lightness(fused, rgb=True)
    lightness_a = srgb_lightness(anatomy, rgb=False)
    assert np.abs(lightness_f - lightness_a).max() < 0.5  # only gamut round-off moves L*


def test_below_background_the_anatomy_is_only_scaled_and_offset():
    anatomy, functional = _pair((8, 24, 24), seed=1)
    weight = 0.65
    fused = fuse_functional(anatomy, functional, parameters={"weight": weight, "guide_radius": 0})
    lightness_f = srgb_lightness(fused, rgb=True)
    lightness_a = srgb_lightness(anatomy, rgb=False)
    table_lightness = srgb_to_lab(_table(DEFAULT_COLORMAP))[:, 0]
    lightness_p = np.interp(functional, np.linspace(0.0, 1.0, 256), table_lightness)
    background = np.quantile(lightness_p / 100.0, 0.5)
    below = lightness_p / 100.0 < background - 1e-3
    expected = (1.0 - weight) * lightness_a + weight * 100.0 * background
    assert below.sum() > 100
    assert np.abs(lightness_f[below] - expected[below]).max() < 0.5


def test_default_table_keeps_the_anatomy_gray_at_the_functional_background():
    # neutral_heat has no chroma below its knee (entry 28 of 255): where the functional image is at
    # its background (here below 0.1) the fused voxel is gray, the uptake (the blob) is coloured
    anatomy, functional = _pair((6, 24, 24), seed=4)
    fused = fuse_functional(anatomy, functional, **RECOMMENDED["CT_PET"])
    lab = srgb_to_lab(fused)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    assert DEFAULT_COLORMAP == RECOMMENDED["CT_PET"]["colormap"] == RECOMMENDED["MR_PET"]["colormap"]
    assert chroma[functional < 0.1].max() < 1.0
    assert chroma[functional > 0.5].mean() > 30.0


def _table(name: str) -> np.ndarray:
    from MedFusionLib.colormaps import get_colormap

    return get_colormap(name)


def test_uptake_lift_leaves_the_anatomy_where_the_function_is_at_background():
    anatomy, functional = (torch.from_numpy(x) for x in _pair((6, 16, 16), seed=2))
    fused = get_method("uptake_lift").function(anatomy, functional, gain=2.0, background_percentile=60.0)
    background = torch.quantile(functional.reshape(-1), 0.6)
    below = functional <= background
    assert torch.equal(fused[below], anatomy[below])
    assert (fused[~below] >= anatomy[~below]).all()


@pytest.mark.parametrize("name", FUNCTIONAL_RULES)
@pytest.mark.parametrize("shape", [(20, 22), (5, 18, 20)])
def test_rules_2d_3d_in_range(name, shape):
    anatomy, functional = (torch.from_numpy(x) for x in _pair(shape, seed=3))
    method = get_method(name)
    assert method.family == "functional" and method.dims == (2, 3) and method.citation
    fused = method.function(anatomy, functional, **method.resolve_parameters())
    assert fused.shape == anatomy.shape and float(fused.min()) >= 0.0 and float(fused.max()) <= 1.0


@pytest.mark.parametrize("name", FUNCTIONAL_RULES)
def test_rules_parameter_ranges(name):
    method = get_method(name)
    assert name in [m.name for m in list_methods()]
    for parameter in method.parameters:
        assert parameter.help
        if parameter.max is not None:
            bad = parameter.max + 1
            with pytest.raises(ParameterError, match="out of range"):
                method.resolve_parameters({parameter.name: bad if parameter.type == "float" else int(bad)})
        if parameter.min is not None:
            bad = parameter.min - 1
            with pytest.raises(ParameterError, match="out of range"):
                method.resolve_parameters({parameter.name: bad if parameter.type == "float" else int(bad)})


def test_fuse_functional_refuses_bad_input():
    anatomy, functional = _pair((10, 12))
    with pytest.raises(InputError):
        fuse_functional(anatomy, functional[:9])
    with pytest.raises(InputError):
        fuse_functional(anatomy * 2.0, functional)
    with pytest.raises(InputError):
        fuse_functional(anatomy[0], functional[0])
    with pytest.raises(ParameterError):
        fuse_functional(anatomy, functional, gamut="clip")
    with pytest.raises(ParameterError):
        fuse_functional(anatomy, functional, room=1.5)
    with pytest.raises(ParameterError):
        fuse_functional(anatomy, functional, colormap="jet")
    with pytest.raises(ParameterError):
        fuse_functional(anatomy, functional, method="no_such_method")
    with pytest.raises(ParameterError):
        fuse_functional(anatomy, functional, parameters={"weight": 2.0})


def test_gray_methods_and_gamut_modes_work_as_luminance_rules():
    anatomy, functional = _pair((4, 16, 16))
    for method in ("laplacian_pyramid", "maximum", DEFAULT_METHOD):
        for gamut, room in (("compress", 0.0), ("compress", 1.0), ("reduce_chroma", 0.0)):
            fused = fuse_functional(anatomy, functional, method=method, gamut=gamut, room=room)
            assert fused.shape == anatomy.shape + (3,)


def test_torch_colour_conversions_match_numpy():
    gray = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    expected = srgb_lightness(gray.numpy(), rgb=False)
    assert np.abs(gray_lightness(gray).numpy() - expected).max() < 1e-9
    rgb = np.random.default_rng(0).uniform(size=(200, 3))
    lab = torch.from_numpy(srgb_to_lab(rgb))
    back = lab_to_rgb_tensor(lab[:, 0], lab[:, 1], lab[:, 2]).numpy()
    assert np.abs(back - rgb).max() < 1e-9


@pytest.mark.skipif(not (STS / "STS_003").is_dir(), reason="needs ../shared/data/sts")
@pytest.mark.parametrize(("stem", "modality"), [("CT", "CT"), ("MR_T1", "MR")])
def test_real_patient_crop_keeps_tumour_and_anatomy(stem, modality):
    from MedFusionLib.io import read_image
    from MedFusionLib.metrics.clinical import (
        compute_clinical_metrics,
        display_anatomical,
        normalise_functional,
    )
    from MedFusionLib.preprocess import resample_to

    folder = STS / "STS_003"
    a = read_image(folder / f"{stem}_image.nii.gz", modality=modality)
    pet = read_image(folder / "PET_image.nii.gz", modality="PET")
    mask = read_image(folder / f"{stem}_mask.nii.gz").array != 0
    p = resample_to(pet, a).array.astype(np.float32)
    z = np.flatnonzero(mask.any(axis=(1, 2)))
    middle = int(z[len(z) // 2])
    crop = np.s_[max(middle - 6, 0) : middle + 6]  # 12 slices around the tumour's middle
    a_array, p_array, lesion = a.array[crop], p[crop], mask[crop]
    fused = fuse_functional(
        display_anatomical(a_array, modality).astype(np.float32),
        normalise_functional(p_array).astype(np.float32),
        **RECOMMENDED["CT_PET" if modality == "CT" else "MR_PET"],
    )
    report = compute_clinical_metrics(
        a_array,
        p_array,
        fused,
        mask=lesion,
        modality_a=modality,
        colormap=DEFAULT_COLORMAP,
        spacing=a.spacing,
    )
    assert report.values["conspicuity_kept"] >= THRESHOLDS[modality][0]
    assert report.values["anatomy_kept"] >= THRESHOLDS[modality][1]


# measured on this crop (STS_003, 12 slices) with the recommended defaults (neutral_heat +
# uptake_average): CT 0.972 / 0.972, MR 0.866 / 0.938 (conspicuity kept / anatomy kept); the
# thresholds leave a small margin
THRESHOLDS = {"CT": (0.93, 0.94), "MR": (0.85, 0.90)}
