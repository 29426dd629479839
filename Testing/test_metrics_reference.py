"""The eleven reference metrics against ``harvard_reference_metrics.json``, and the metric API."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DATA
from helpers import harvard_path, mni_volume

from MedFusionLib.errors import InputError, ParameterError
from MedFusionLib.image import Image
from MedFusionLib.metrics import get_metric, list_metrics
from MedFusionLib.metrics.compute import compute_metrics
from MedFusionLib.metrics.inputs import grey_levels_from_image

REFERENCE = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "CC", "PSNR")
OTHER_MODALITY = {"MRI_CT": "CT", "MRI_PET": "PET", "MRI_SPECT": "SPECT"}


@cache
def grey(pair_set: str, modality: str, index: int) -> np.ndarray:
    """Reference grey levels: round(0.299 R + 0.587 G + 0.114 B) in float64."""
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(harvard_path(pair_set, modality, index)))).astype(
        np.float64
    )
    return np.round(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])


def reference_entries() -> dict[str, dict[str, float]]:
    return json.loads((DATA / "harvard_reference_metrics.json").read_text(encoding="utf-8"))["pairs"]


def fused_by_rule(a: np.ndarray, b: np.ndarray, rule: str) -> np.ndarray:
    return np.round(np.clip((a + b) / 2 if rule == "average" else np.maximum(a, b), 0, 255))


@pytest.mark.parametrize("pair_set", sorted(OTHER_MODALITY))
def test_every_reference_entry_matches_to_1e6(pair_set: str) -> None:
    entries = {k: v for k, v in reference_entries().items() if k.startswith(pair_set + "/")}
    assert len(entries) == {"MRI_CT": 42, "MRI_PET": 84, "MRI_SPECT": 146}[pair_set]
    mismatches = []
    for key, expected in entries.items():
        _, png, rule = key.split("/")
        index = int(png.removesuffix(".png"))
        a, b = grey(pair_set, "MRI", index), grey(pair_set, OTHER_MODALITY[pair_set], index)
        values = compute_metrics(a, b, fused_by_rule(a, b, rule), metrics=REFERENCE).values
        for metric, value in expected.items():
            if not math.isclose(values[metric], value, rel_tol=1e-6, abs_tol=1e-12):
                mismatches.append((key, metric, values[metric], value))
    assert not mismatches, mismatches[:5]


def test_reference_file_covers_all_272_entries_and_eleven_metrics() -> None:
    entries = reference_entries()
    assert len(entries) == 272
    assert all(set(v) == set(REFERENCE) for v in entries.values())
    assert all(get_metric(name).reference for name in REFERENCE)


def test_parts_make_a_copied_source_visible() -> None:
    a, b = grey("MRI_SPECT", "MRI", 11), grey("MRI_SPECT", "SPECT", 11)
    copy = compute_metrics(a, b, a.copy()).values
    assert copy["VIF_A"] == pytest.approx(1.0)
    assert copy["VIF_B"] < 0.2
    assert copy["balance"] < 0.2
    average = compute_metrics(a, b, fused_by_rule(a, b, "average")).values
    assert average["balance"] > copy["balance"]
    for name in ("MI", "SSIM", "CC", "Qabf"):
        assert copy[f"{name}_A"] > copy[f"{name}_B"], name


@pytest.mark.filterwarnings("error")
def test_degenerate_inputs_give_nan_or_inf_with_a_reason_and_no_warning() -> None:
    a, b = grey("MRI_CT", "MRI", 11), grey("MRI_CT", "CT", 11)
    report = compute_metrics(a, b, a.copy())
    assert math.isinf(report.values["PSNR_A"]) and "PSNR_A" in report.notes
    assert math.isnan(report.values["SCD_B"]) and "SCD_B" in report.notes
    assert report.to_json()["PSNR_A"] is None
    json.dumps(report.to_json(), allow_nan=False)
    constant = np.full_like(a, 7.0)
    flat = compute_metrics(constant, constant, constant)
    assert flat.values["EN"] == 0.0 and flat.values["SD"] == 0.0
    for key in ("CC", "SCD", "VIF"):
        assert math.isnan(flat.values[key]) and flat.notes[key]
    # the reference's zero-padded Sobel sees a constant image's border as an edge; all-zero
    # images have no edge at all
    assert math.isfinite(flat.values["Qabf"])
    zeros = np.zeros_like(a)
    assert math.isnan(compute_metrics(zeros, zeros, zeros, metrics=["Qabf"]).values["Qabf"])


def test_slice_mode_of_stacked_slices_equals_the_2d_value() -> None:
    a, b = grey("MRI_PET", "MRI", 20), grey("MRI_PET", "PET", 20)
    f = fused_by_rule(a, b, "max")
    flat = compute_metrics(a, b, f).values
    stack = [np.stack([x] * 3) for x in (a, b, f)]
    sliced = compute_metrics(*stack, mode="slices", axis=0).values
    assert set(sliced) == set(flat)
    for key, value in flat.items():
        assert sliced[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key


def test_volume_mode_scores_real_3d_data() -> None:
    t1, pet = mni_volume("spm_T1") * 255, mni_volume("spm_PET") * 255
    fused = np.round((t1 + pet) / 2)
    volume = compute_metrics(t1, pet, fused)
    assert volume.mode == "volume"
    for metric in list_metrics():
        assert math.isfinite(volume.values[metric.name]), metric.name
    itself = compute_metrics(t1, pet, t1, metrics=["VIF", "SSIM", "Qabf"]).values
    assert itself["VIF_A"] == pytest.approx(1.0)
    assert itself["SSIM_A"] == pytest.approx(1.0)
    assert itself["Qabf_A"] > itself["Qabf_B"]
    sliced = compute_metrics(t1, pet, fused, mode="slices", axis=1, metrics=["SF", "VIF"])
    assert sliced.mode == "slices" and sliced.values["SF"] != volume.values["SF"]


def test_small_volume_reports_why_a_metric_is_undefined() -> None:
    rng = np.random.default_rng(0)
    a, b, f = (rng.uniform(0, 255, (12, 40, 40)) for _ in range(3))
    report = compute_metrics(a, b, f, metrics=["VIF", "EN"])
    assert math.isnan(report.values["VIF"]) and "at least" in report.notes["VIF"]
    assert math.isfinite(report.values["EN"])


def test_bad_input_is_refused_with_the_culprit_named() -> None:
    a = grey("MRI_CT", "MRI", 11)
    with pytest.raises(InputError, match="FUSED"):
        compute_metrics(a, a, a[:100], names=("A", "B", "FUSED"))
    with pytest.raises(InputError, match="NaN"):
        bad = a.copy()
        bad[3, 3] = np.nan
        compute_metrics(a, bad, a)
    with pytest.raises(InputError, match="2-D image or a 3-D volume"):
        compute_metrics(a[0], a[0], a[0])
    with pytest.raises(ParameterError, match="unknown metric"):
        compute_metrics(a, a, a, metrics=["NOPE"])
    with pytest.raises(ParameterError, match="mode"):
        compute_metrics(a, a, a, mode="planes")


def test_grey_levels_follow_the_reference_and_pipeline_scales() -> None:
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(harvard_path("MRI_PET", "PET", 11))))
    image = Image.from_array(rgb, rgb=True)
    assert np.array_equal(grey_levels_from_image(image), grey("MRI_PET", "PET", 11))
    unit = Image.from_array(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8))
    assert grey_levels_from_image(unit).max() == pytest.approx(255.0)
    ct = Image.from_array(np.linspace(-1000, 2000, 512, dtype=np.float32).reshape(8, 8, 8), modality="CT")
    levels = grey_levels_from_image(ct)
    assert levels.min() == 0.0 and levels.max() == pytest.approx(255.0)


def test_docs_list_every_metric_as_the_registry_does() -> None:
    from MedFusionLib.metrics.registry import metrics_markdown

    docs = (Path(__file__).resolve().parents[1] / "Docs" / "metrics.md").read_text(encoding="utf-8")
    assert docs.endswith(metrics_markdown())
