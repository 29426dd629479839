"""Colour tables, sRGB <-> CIELAB, and the clinical metrics of issue 13 (conspicuity kept, anatomy kept)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from MedFusionLib.colormaps import (
    D65_WHITE,
    DEFAULT_FUNCTIONAL_COLORMAP,
    apply_colormap,
    colormaps_as_lists,
    delta_e_76,
    describe_colormap,
    get_colormap,
    lab_to_srgb,
    list_colormaps,
    srgb_lightness,
    srgb_to_lab,
)
from MedFusionLib.errors import InputError, ParameterError
from MedFusionLib.image import Image
from MedFusionLib.metrics import get_metric, list_metrics
from MedFusionLib.metrics.clinical import (
    ClinicalScene,
    body_mask,
    compute_clinical_metrics,
    display_anatomical,
    display_functional,
    normalise_functional,
    shell_mask,
    within_in_plane,
)
from MedFusionLib.metrics.compute import compute_metrics
from MedFusionLib.metrics.registry import metrics_markdown

# --- CIELAB -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rgb", "lab", "tolerance"),
    [
        ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0), 1e-9),  # the reference white
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 1e-12),
        ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20), 0.005),  # sRGB red, the usual reference to 2 decimals
        ((0.0, 1.0, 0.0), (87.74, -86.18, 83.19), 0.005),  # green, from the same full-precision matrix
        ((0.0, 0.0, 1.0), (32.30, 79.20, -107.86), 0.005),
    ],
)
def test_srgb_to_lab_reference_values(rgb, lab, tolerance):
    assert srgb_to_lab(np.array(rgb)) == pytest.approx(lab, abs=tolerance)


def test_lab_formulas_match_cie_15():
    # Y of sRGB red is the luminance coefficient 0.2126 (IEC 61966-2-1) to 4 decimals.
    assert D65_WHITE[1] == 1.0
    assert D65_WHITE == pytest.approx([0.9505, 1.0, 1.0891], abs=1e-4)
    # Above (6/29)^3 L* = 116 Y^(1/3) - 16; below it L* = (29/3)^3 Y (CIE 15:2004, 8.2.1).
    gray = np.array([0.5, 0.01])
    linear = np.array([((0.5 + 0.055) / 1.055) ** 2.4, 0.01 / 12.92])
    expected = [116.0 * linear[0] ** (1.0 / 3.0) - 16.0, (29.0 / 3.0) ** 3 * linear[1]]
    assert srgb_lightness(gray, rgb=False) == pytest.approx(expected, rel=1e-12)
    assert srgb_to_lab(np.repeat(gray[:, None], 3, axis=1)) == pytest.approx(
        np.stack([expected, [0, 0], [0, 0]], axis=1), abs=1e-9
    )


def test_lab_round_trip_and_lightness_shortcut():
    rgb = np.random.default_rng(0).random((500, 3))
    lab = srgb_to_lab(rgb)
    assert np.abs(lab_to_srgb(lab) - rgb).max() < 1e-12
    assert np.abs(srgb_lightness(rgb, rgb=True) - lab[:, 0]).max() < 1e-12
    assert delta_e_76(lab[0], lab[1]) == pytest.approx(np.linalg.norm(lab[0] - lab[1]))
    # Out of gamut without clipping: pure Lab green beyond sRGB.
    assert lab_to_srgb(np.array([50.0, -120.0, 0.0]), clip=False).min() < 0.0


def test_lab_agrees_with_scikit_image():
    color = pytest.importorskip("skimage.color")
    rgb = np.random.default_rng(1).random((200, 3))
    # scikit-image rounds the matrix and the white point differently: agreement to 0.02.
    assert np.abs(color.rgb2lab(rgb[None]).reshape(-1, 3) - srgb_to_lab(rgb)).max() < 0.02


def test_lab_rejects_wrong_shape():
    with pytest.raises(InputError, match="trailing axis of 3"):
        srgb_to_lab(np.zeros((4, 2)))


# --- colour tables ------------------------------------------------------------------------


def test_colour_tables_shape_range_names():
    names = list_colormaps()
    assert names[0] == DEFAULT_FUNCTIONAL_COLORMAP == "neutral_heat"
    assert set(names) >= {"neutral_heat", "inferno", "magma", "bmy", "pet_heat", "hot", "gray"}
    for name in names:
        table = get_colormap(name)
        assert table.shape == (256, 3) and table.dtype == np.float64
        assert table.min() >= 0.0 and table.max() <= 1.0
        assert describe_colormap(name).citation
    assert np.array_equal(get_colormap("PET-Heat"), get_colormap("pet_heat"))
    assert np.array_equal(get_colormap("Grey"), get_colormap("gray"))
    tables = json.loads(json.dumps(colormaps_as_lists()))
    assert set(tables) == set(names) and len(tables["hot"]) == 256 and len(tables["hot"][0]) == 3
    with pytest.raises(ParameterError, match="unknown colour table"):
        get_colormap("jet")
    table = get_colormap("gray")
    table[0] = 1.0  # a copy: the registry's table stays as it is
    assert get_colormap("gray")[0].tolist() == [0.0, 0.0, 0.0]


def test_perceptual_tables_rise_in_lightness():
    for name in ("inferno", "magma"):
        lightness = srgb_to_lab(get_colormap(name))[:, 0]
        steps = np.diff(lightness)
        assert describe_colormap(name).perceptual
        assert steps.min() > 0.0 and steps.max() < 2.0 * steps.mean()
    # neutral_heat: lightness rises at every entry, neighbours differ by nearly the same Delta E*ab,
    # gray (no chroma) below its knee, saturated warm colour at the top
    lab = srgb_to_lab(get_colormap("neutral_heat"))
    steps = delta_e_76(lab[1:], lab[:-1])
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    assert describe_colormap("neutral_heat").perceptual
    assert np.diff(lab[:, 0]).min() > 0.0 and steps.max() < 1.6 * steps.min()
    assert chroma[:28].max() < 0.5 and chroma[128:240].min() > 40.0
    assert 4.0 < lab[0, 0] < 6.0 and 94.0 < lab[-1, 0] < 96.0
    # Slicer's PET-Heat rises in lightness too, but unevenly (a knee at entry 87).
    steps = np.diff(srgb_to_lab(get_colormap("pet_heat"))[:, 0])
    assert steps.min() > 0.0 and steps.max() > 5.0 * steps.mean()


def test_pet_heat_control_points():
    table = get_colormap("pet_heat")
    points = [[0, 0, 0], [0.36, 0, 0], [0.5, 0, 0], [0.7, 0.1, 0], [0.7, 0.5, 0], [1, 1, 0], [1, 1, 1]]
    assert table[[0, 35, 38, 50, 70, 87, 255]] == pytest.approx(np.array(points, dtype=float))


def test_pet_heat_matches_slicer():
    slicer = pytest.importorskip("slicer")
    node = slicer.vtkMRMLPETProceduralColorNode()
    node.SetTypeToHeat()
    assert node.GetTypeAsString() == "PET-Heat"
    function = node.GetColorTransferFunction()
    reference = np.array([function.GetColor(index) for index in range(256)])
    assert np.abs(reference - get_colormap("pet_heat")).max() < 1e-12


def test_tables_match_matplotlib():
    matplotlib = pytest.importorskip("matplotlib")
    for name in ("inferno", "magma", "hot", "gray"):
        reference = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
        assert np.abs(reference - get_colormap(name)).max() < 1e-12, name


def test_apply_colormap():
    table = get_colormap("hot")
    values = np.array([[0.0, 1.0], [0.5, 2.0]])
    assert apply_colormap(values, "hot").shape == (2, 2, 3)
    assert apply_colormap(np.array([0.0, 1.0, 7.0, -1.0]), "hot").tolist() == [
        table[0].tolist(),
        table[255].tolist(),
        table[255].tolist(),
        table[0].tolist(),
    ]
    middle = (table[127] + table[128]) / 2.0
    assert apply_colormap(np.array(0.5), "hot") == pytest.approx(middle)
    assert apply_colormap(np.array(0.5), "hot", interpolation="nearest").tolist() == table[128].tolist()
    assert apply_colormap(np.array([0.25]), np.array([[0, 0, 0], [1, 1, 1.0]])).tolist() == [[0.25] * 3]
    with pytest.raises(InputError, match="NaN"):
        apply_colormap(np.array([np.nan]), "gray")
    with pytest.raises(ParameterError):
        apply_colormap(np.array([0.5]), "gray", interpolation="cubic")
    with pytest.raises(ParameterError, match="N x 3"):
        apply_colormap(np.array([0.5]), np.zeros((4, 4)))


def test_bids_tables_carry_their_licence():
    from MedFusionLib import colormaps

    with open(colormaps._DATA, encoding="utf-8") as handle:
        data = json.load(handle)
    assert "CC0" in data["licence"] and "van der Walt" in data["authors"]


# --- regions ------------------------------------------------------------------------------


def _brute_force_within(mask2d: np.ndarray, radius: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    ys, xs = np.nonzero(mask2d)
    grid_y, grid_x = np.indices(mask2d.shape)
    out = np.zeros(mask2d.shape, bool)
    for y, x in zip(ys, xs, strict=True):
        out |= ((grid_y - y) * spacing_yx[0]) ** 2 + ((grid_x - x) * spacing_yx[1]) ** 2 <= radius**2
    return out


def test_within_in_plane_is_exact_per_slice():
    rng = np.random.default_rng(2)
    mask = rng.random((3, 25, 30)) > 0.99
    mask[1] = False
    mask[2, 0, 0] = True  # a lesion voxel on the border
    for spacing in ((0.98, 0.98), (0.7, 1.6)):
        for radius in (3.0, 10.0, 2 * spacing[0]):  # the last one exactly on a grid distance
            result = within_in_plane(mask, radius, spacing)
            assert not result[1].any()  # a slice without lesion is never near it
            for z in (0, 2):
                assert np.array_equal(result[z], _brute_force_within(mask[z], radius, spacing))
            assert np.array_equal(within_in_plane(mask[0], radius, spacing), result[0])


def test_within_in_plane_matches_scipy_distance_transform():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(3)
    yy, xx = np.indices((80, 90))
    for _ in range(5):
        mask = (yy - rng.integers(20, 60)) ** 2 + (xx - rng.integers(20, 70)) ** 2 < rng.integers(4, 300)
        spacing = tuple(rng.uniform(0.5, 2.0, 2))
        distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
        for radius in (3.0, 10.0):
            assert np.array_equal(within_in_plane(mask, radius, spacing), distance <= radius)


def test_shell_and_body():
    ct = np.full((40, 40), -1000.0)
    ct[5:35, 5:35] = 40.0
    mask = np.zeros((40, 40), bool)
    mask[18:22, 18:22] = True
    body = body_mask(ct, "CT")
    assert body.sum() == 30 * 30
    shell = shell_mask(mask, body, (1.0, 1.0))
    assert not (shell & mask).any() and (shell <= body).all()
    # The lesion's last column is 21: columns 24 (3 mm) and 32 (11 mm) are out, 25 (4 mm) and 31 (10 mm) in.
    assert shell[20, 25] and shell[20, 31] and not shell[20, 24] and not shell[20, 32]
    mr = np.arange(100.0).reshape(10, 10)
    assert body_mask(mr, "MR").sum() == 80
    with pytest.raises(ParameterError, match="CT or MR"):
        body_mask(mr, "PET")


def test_displays():
    ct = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    assert display_anatomical(ct, "CT").tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    mr = np.linspace(0.0, 1000.0, 1001)
    shown = display_anatomical(mr, "MR")
    assert (
        shown[5] == pytest.approx(0.0)
        and shown[995] == pytest.approx(1.0)
        and shown[500] == pytest.approx(0.5)
    )
    pet = np.linspace(0.0, 10.0, 1001)
    assert normalise_functional(pet)[500] == pytest.approx(0.5)
    assert display_functional(pet, colormap="hot").shape == (1001, 3)
    assert display_functional(pet, colormap="gray").shape == (1001,)


# --- the metrics on synthetic images ------------------------------------------------------


def _phantom(ndim: int, *, lesion_in_a: float = 0.0, seed: int = 0):
    """A CT-like body with edges, a PET-avid lesion, and its mask (3-D: 8 slices)."""
    rng = np.random.default_rng(seed)
    shape = (48, 56) if ndim == 2 else (8, 48, 56)
    yy, xx = np.indices(shape[-2:])
    body = ((yy - 24) / 20.0) ** 2 + ((xx - 28) / 24.0) ** 2 < 1.0
    ct = np.where(body, 30.0, -1000.0) + np.where((xx > 35) & body, 120.0, 0.0) + rng.normal(0, 5, shape[-2:])
    lesion = (yy - 24) ** 2 + (xx - 22) ** 2 < 36
    ct = ct + lesion_in_a * lesion
    pet = np.where(body, 1.0, 0.0) + 6.0 * lesion + rng.random(shape[-2:]) * 0.2
    if ndim == 3:
        ct, pet = np.repeat(ct[None], 8, axis=0), np.repeat(pet[None], 8, axis=0)
        lesion = np.repeat(lesion[None], 8, axis=0)
        lesion[[0, -1]] = False
    spacing = (0.98, 0.98) if ndim == 2 else (0.98, 0.98, 3.27)
    return ct, pet, lesion, spacing


@pytest.mark.parametrize("ndim", [2, 3])
def test_identities(ndim):
    ct, pet, lesion, spacing = _phantom(ndim)
    shown_a = display_anatomical(ct, "CT")
    shown_p = display_functional(pet)
    report = compute_clinical_metrics(ct, pet, shown_p, mask=lesion, modality_a="CT", spacing=spacing)
    assert report.values["conspicuity_kept"] == pytest.approx(1.0, abs=1e-12)
    assert report.values["delta_E_F"] > 20.0 and report.mode == ("image" if ndim == 2 else "volume")
    report = compute_clinical_metrics(ct, pet, shown_a, mask=lesion, modality_a="CT", spacing=spacing)
    assert report.values["anatomy_kept"] == pytest.approx(1.0, abs=1e-12)
    assert report.values["conspicuity_kept"] < 0.05  # the lesion is invisible in this CT
    coloured = display_functional(pet, colormap="inferno")
    report = compute_clinical_metrics(
        ct, pet, coloured, mask=lesion, modality_a="CT", spacing=spacing, colormap="inferno"
    )
    assert report.values["conspicuity_kept"] == pytest.approx(1.0, abs=1e-12)
    assert report.notes == {}


@pytest.mark.parametrize("ndim", [2, 3])
def test_gray_average_loses_conspicuity(ndim):
    ct, pet, lesion, spacing = _phantom(ndim)
    average = (display_anatomical(ct, "CT") + normalise_functional(pet)) / 2.0
    values = compute_clinical_metrics(ct, pet, average, mask=lesion, modality_a="CT", spacing=spacing).values
    assert 0.2 < values["conspicuity_kept"] < 0.8
    assert 0.5 < values["anatomy_kept"] < 1.0
    assert set(values) == {"conspicuity_kept", "delta_E_F", "delta_E_P", "anatomy_kept"}


def test_colour_overlay_through_the_table_of_f():
    ct, pet, lesion, spacing = _phantom(3)
    overlay = 0.6 * display_anatomical(ct, "CT")[..., None] + 0.4 * display_functional(
        pet, colormap="pet_heat"
    )
    values = compute_clinical_metrics(
        ct, pet, overlay, mask=lesion, modality_a="CT", spacing=spacing, colormap="PET-Heat"
    ).values
    assert 0.2 < values["conspicuity_kept"] < 0.8 and 0.5 < values["anatomy_kept"] < 1.0
    # P alone through PET-Heat is what the lesion's contrast is measured against.
    heat = compute_clinical_metrics(
        ct,
        pet,
        display_functional(pet, colormap="pet_heat"),
        mask=lesion,
        modality_a="CT",
        spacing=spacing,
        colormap="pet_heat",
    ).values
    assert heat["delta_E_P"] == pytest.approx(values["delta_E_P"])
    assert heat["delta_E_F"] == pytest.approx(heat["delta_E_P"])


def test_gradient_is_3d_and_in_mm():
    # A has edges across slices that F lacks: the 3-D gradient sees them, weighted by the slice
    # spacing in mm; the in-plane gradient does not depend on the slice spacing at all.
    ct, pet, lesion, spacing = _phantom(3)
    layered = ct + np.arange(8)[:, None, None] * 10.0 * (ct > -400)
    shown = display_anatomical(ct, "CT")

    def kept(slice_mm: float, gradient: str) -> float:
        report = compute_clinical_metrics(
            layered,
            pet,
            shown,
            mask=lesion,
            modality_a="CT",
            spacing=(0.98, 0.98, slice_mm),
            gradient=gradient,
        )
        return report.values["anatomy_kept"]

    flat = kept(3.27, "in_plane")
    assert kept(0.5, "in_plane") == flat
    assert kept(0.5, "3d") < kept(3.27, "3d") < kept(30.0, "3d") < flat


def test_images_give_spacing_and_modality():
    ct, pet, lesion, spacing = _phantom(3)
    image = Image.from_array(ct.astype(np.float32), spacing=spacing, modality="CT")
    from_image = compute_clinical_metrics(image, pet, normalise_functional(pet), mask=lesion).values
    from_arrays = compute_clinical_metrics(
        ct, pet, normalise_functional(pet), mask=lesion, modality_a="CT", spacing=spacing
    ).values
    assert from_image == pytest.approx(from_arrays)
    uint8 = compute_clinical_metrics(
        image, pet, np.round(normalise_functional(pet) * 255).astype(np.uint8), mask=lesion
    )
    assert uint8.values["conspicuity_kept"] == pytest.approx(1.0, abs=0.01)


def test_undefined_values_have_reasons():
    ct, pet, lesion, spacing = _phantom(2)
    report = compute_clinical_metrics(
        ct, pet, normalise_functional(pet), mask=np.zeros_like(lesion), modality_a="CT", spacing=spacing
    )
    assert math.isnan(report.values["conspicuity_kept"]) and "empty" in report.notes["conspicuity_kept"]
    assert math.isnan(report.values["delta_E_P"]) and not math.isnan(report.values["anatomy_kept"])
    report = compute_clinical_metrics(
        ct, np.ones_like(pet), normalise_functional(pet), mask=lesion, modality_a="CT", spacing=spacing
    )
    assert (
        math.isnan(report.values["conspicuity_kept"])
        and "does not differ" in report.notes["conspicuity_kept"]
    )
    report = compute_clinical_metrics(
        ct, pet, np.full(ct.shape, 0.5), mask=lesion, modality_a="CT", spacing=spacing
    )
    assert math.isnan(report.values["anatomy_kept"]) and "constant" in report.notes["anatomy_kept"]
    assert report.values["conspicuity_kept"] == pytest.approx(0.0, abs=1e-9)


def test_input_errors():
    ct, pet, lesion, spacing = _phantom(2)
    gray = normalise_functional(pet)
    kwargs = {"mask": lesion, "modality_a": "CT", "spacing": spacing}
    with pytest.raises(ParameterError, match="colour table"):
        compute_clinical_metrics(ct, pet, np.repeat(gray[..., None], 3, axis=-1), **kwargs)
    with pytest.raises(ParameterError, match="unknown colour table"):
        compute_clinical_metrics(ct, pet, np.repeat(gray[..., None], 3, axis=-1), colormap="jet", **kwargs)
    with pytest.raises(InputError, match="resample"):
        compute_clinical_metrics(ct, pet[:-1], gray, **kwargs)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        compute_clinical_metrics(ct, pet, gray * 2.0, **kwargs)
    with pytest.raises(InputError, match="expected"):
        compute_clinical_metrics(ct, pet, gray[:-1], **kwargs)
    with pytest.raises(ParameterError, match="CT or MR"):
        compute_clinical_metrics(ct, pet, gray, mask=lesion, modality_a="PET", spacing=spacing)
    with pytest.raises(ParameterError, match="spacing"):
        compute_clinical_metrics(ct, pet, gray, mask=lesion, modality_a="CT")
    with pytest.raises(ParameterError, match="spacing"):
        compute_clinical_metrics(ct, pet, gray, mask=lesion, modality_a="CT", spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ParameterError, match="gradient"):
        compute_clinical_metrics(ct, pet, gray, gradient="2d", **kwargs)
    with pytest.raises(ParameterError, match="fusion metric"):
        compute_clinical_metrics(ct, pet, gray, metrics=["VIF"], **kwargs)
    with pytest.raises(ParameterError, match="unknown metric"):
        compute_clinical_metrics(ct, pet, gray, metrics=["conspicuity"], **kwargs)
    for metrics in ("anatomy_kept", []):
        with pytest.raises(ParameterError, match="list of clinical metric names"):
            compute_clinical_metrics(ct, pet, gray, metrics=metrics, **kwargs)
    with pytest.raises(ParameterError, match="spacing"):
        compute_clinical_metrics(ct, pet, gray, mask=lesion, modality_a="CT", spacing=(1.0, float("nan")))
    with pytest.raises(ParameterError, match="spacing"):
        compute_clinical_metrics(ct, pet, gray, mask=lesion, modality_a="CT", spacing="1,1")
    with pytest.raises(InputError, match="real numbers"):
        compute_clinical_metrics(ct.astype(complex), pet, gray, **kwargs)
    with pytest.raises(InputError, match="NaN"):
        compute_clinical_metrics(ct, np.where(lesion, np.nan, pet), gray, **kwargs)
    with pytest.raises(ParameterError, match="CT or MR"):
        compute_clinical_metrics(ct, pet, gray, mask=lesion, modality_a=None, spacing=spacing)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        compute_clinical_metrics(ct, pet, rgb, colormap=np.full((4, 3), 2.0), **kwargs)


# --- the registry -------------------------------------------------------------------------


def test_registry_keeps_the_clinical_family_apart():
    clinical = list_metrics(family="clinical")
    assert [metric.name for metric in clinical] == ["conspicuity_kept", "anatomy_kept"]
    assert clinical[0].keys == ("conspicuity_kept", "delta_E_F", "delta_E_P")
    assert clinical[1].keys == ("anatomy_kept",)
    assert all(metric.family == "fusion" for metric in list_metrics())
    assert {m.name for m in list_metrics(family=None)} == {m.name for m in list_metrics()} | {
        "conspicuity_kept",
        "anatomy_kept",
    }
    assert get_metric("anatomy_kept", family="clinical").summary
    assert get_metric("anatomy_kept", family=None).family == "clinical"
    with pytest.raises(ParameterError, match="compute_clinical_metrics"):
        get_metric("anatomy_kept")
    with pytest.raises(ParameterError, match="family"):
        list_metrics(family="clinic")
    with pytest.raises(ParameterError, match="string"):
        get_metric(["VIF"])
    images = np.random.default_rng(0).random((3, 16, 16)) * 255
    with pytest.raises(ParameterError, match="compute_clinical_metrics"):
        compute_metrics(*images, metrics=["anatomy_kept"])
    assert "conspicuity_kept" not in metrics_markdown()
    assert "conspicuity_kept" in metrics_markdown(family="clinical")
    only = compute_clinical_metrics(
        *_phantom(2)[:2],
        np.zeros((48, 56)),
        mask=_phantom(2)[2],
        modality_a="CT",
        spacing=(1, 1),
        metrics=["anatomy_kept"],
    )
    assert set(only.values) == {"anatomy_kept"}


def test_scene_is_computed_once():
    ct, pet, lesion, spacing = _phantom(2)
    scene = ClinicalScene(
        ct,
        pet,
        normalise_functional(pet),
        lesion=lesion,
        modality_a="CT",
        spacing_zyx=spacing[::-1],
        colormap=None,
        fused_is_rgb=False,
    )
    assert scene.shell is scene.shell and scene.body is scene.body


# --- a real patient -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sts_003(data_dir):
    from MedFusionLib.io import read_image
    from MedFusionLib.preprocess import resample_to

    folder = data_dir / "sts" / "STS_003"
    pet = read_image(folder / "PET_image.nii.gz", modality="PET")
    pairs = {}
    for modality, stem in (("CT", "CT"), ("MR", "MR_T1")):
        a = read_image(folder / f"{stem}_image.nii.gz", modality=modality)
        mask = read_image(folder / f"{stem}_mask.nii.gz").array
        pairs[modality] = (a, resample_to(pet, a).array, mask)
    return pairs


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_real_patient_identities(sts_003, modality):
    a, p, mask = sts_003[modality]
    shown_a = display_anatomical(a.array, modality)
    alone = compute_clinical_metrics(a, p, shown_a, mask=mask).values
    assert alone["anatomy_kept"] == pytest.approx(1.0, abs=1e-12)
    pet = compute_clinical_metrics(
        a, p, display_functional(p, colormap="inferno"), mask=mask, colormap="inferno"
    )
    assert pet.values["conspicuity_kept"] == pytest.approx(1.0, abs=1e-12)
    assert abs(pet.values["anatomy_kept"]) < 0.2  # the PET alone carries almost none of the anatomy's edges
    assert pet.seconds < 5.0


def test_real_patient_lesion_contrast(sts_003):
    """STS_003: the sarcoma is brighter than its shell in the CT (soft-tissue window) but darker in
    the T1 MR, and bright in the PET. So A alone already shows part of the lesion (measured 0.40
    with CT, 0.66 with MR, not near 0), and a gray average adds the PET's contrast to the CT's but
    cancels it against the MR's (measured 0.71 with CT, 0.16 with MR)."""
    kept = {}
    for modality, (a, p, mask) in sts_003.items():
        shown_a = display_anatomical(a.array, modality)
        average = (shown_a + normalise_functional(p)) / 2.0
        kept[modality] = (
            compute_clinical_metrics(a, p, shown_a, mask=mask).values["conspicuity_kept"],
            compute_clinical_metrics(a, p, average, mask=mask).values,
        )
    ct_alone, ct_average = kept["CT"]
    mr_alone, mr_average = kept["MR"]
    assert ct_alone == pytest.approx(0.40, abs=0.03) and mr_alone == pytest.approx(0.66, abs=0.03)
    assert ct_alone < ct_average["conspicuity_kept"] < 1.0
    assert mr_average["conspicuity_kept"] < 0.3 < mr_alone
    assert ct_average["anatomy_kept"] > 0.95 and mr_average["anatomy_kept"] > 0.95


def test_real_patient_slice_in_2d(sts_003):
    a, p, mask = sts_003["CT"]
    z = int(np.argmax(mask.sum(axis=(1, 2))))
    ct, pet, lesion = a.array[z], p[z], mask[z]
    shown = display_functional(pet)
    values = compute_clinical_metrics(
        ct, pet, shown, mask=lesion, modality_a="CT", spacing=a.spacing[:2]
    ).values
    assert values["conspicuity_kept"] == pytest.approx(1.0, abs=1e-12)
    shown_a = display_anatomical(ct, "CT")
    values = compute_clinical_metrics(
        ct, pet, shown_a, mask=lesion, modality_a="CT", spacing=a.spacing[:2]
    ).values
    assert values["anatomy_kept"] == pytest.approx(1.0, abs=1e-12) and 0.2 < values["conspicuity_kept"] < 0.7
