"""``medfusion metrics`` on real 2-D and 3-D files, and its errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import harvard_path, mni_path

from MedFusionLib.cli import main
from MedFusionLib.metrics import list_metrics


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def fused_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fused") / "fused.png"
    a, b = harvard_path("MRI_SPECT", "MRI", 30), harvard_path("MRI_SPECT", "SPECT", 30)
    assert (
        main(["fuse", str(a), str(b), "-o", str(out), "--method", "laplacian_pyramid", "--device", "cpu"])
        == 0
    )
    return out


def test_metrics_json_gives_every_metric_with_parts(
    fused_png: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = harvard_path("MRI_SPECT", "MRI", 30), harvard_path("MRI_SPECT", "SPECT", 30)
    code, out, err = run(capsys, "metrics", a, b, fused_png, "--json")
    assert code == 0, err
    values = json.loads(out)
    metrics = list_metrics()
    assert len(metrics) >= 16
    with_parts = [m for m in metrics if m.parts]
    assert len(with_parts) >= 12
    for metric in metrics:
        for key in metric.keys:
            assert isinstance(values[key], float), key
    assert 0 < values["balance"] <= 1
    # the fused RGB PNG is scored on its luminance: a gray copy of it scores the same
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(fused_png))).astype(np.float64)
    gray = np.round(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.uint8)
    gray_path = fused_png.with_name("gray.png")
    sitk.WriteImage(sitk.GetImageFromArray(gray), str(gray_path))
    code, out, _ = run(capsys, "metrics", a, b, gray_path, "--json", "--metrics", "VIF,Qabf")
    assert code == 0
    assert json.loads(out)["VIF"] == pytest.approx(values["VIF"], rel=1e-12)


def test_metrics_text_table(fused_png: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = harvard_path("MRI_SPECT", "MRI", 30), harvard_path("MRI_SPECT", "SPECT", 30)
    code, out, _ = run(capsys, "metrics", a, b, fused_png, "--metrics", "EN,VIF")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].startswith("EN") and lines[2].startswith("VIF") and len(lines[2].split()) == 4


def test_metrics_of_a_copy_note_the_undefined_parts(capsys: pytest.CaptureFixture[str]) -> None:
    a, b = harvard_path("MRI_CT", "MRI"), harvard_path("MRI_CT", "CT")
    code, out, err = run(capsys, "metrics", a, b, a, "--json", "--metrics", "PSNR,SCD")
    assert code == 0
    values = json.loads(out)
    assert values["PSNR_A"] is None and values["SCD_B"] is None and math.isfinite(values["PSNR_B"])
    assert "PSNR_A" in err and "SCD_B" in err and "Traceback" not in err


def test_metrics_on_volumes_in_both_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fused = tmp_path / "fused.nii.gz"
    assert (
        main(
            [
                "fuse",
                str(mni_path("spm_T1")),
                str(mni_path("spm_PET")),
                "-o",
                str(fused),
                "--method",
                "average",
            ]
        )
        == 0
    )
    capsys.readouterr()
    results = {}
    for mode in ("volume", "slices"):
        code, out, err = run(
            capsys,
            "metrics",
            mni_path("spm_T1"),
            mni_path("spm_PET"),
            fused,
            "--json",
            "--mode",
            mode,
            "--metrics",
            "EN,SF,VIF,SSIM,Qabf",
        )
        assert code == 0, err
        results[mode] = json.loads(out)
        assert all(results[mode][k] is not None for k in ("EN", "SF", "VIF", "SSIM", "Qabf"))
    assert results["volume"]["SF"] != results["slices"]["SF"]


@pytest.mark.parametrize(
    "case",
    ["missing", "other_grid", "unknown_metric", "bad_mode", "bad_axis"],
)
def test_metrics_bad_input_exits_2_with_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = harvard_path("MRI_CT", "MRI"), harvard_path("MRI_CT", "CT")
    small = tmp_path / "small.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((64, 64), np.uint8)), str(small))
    args = {
        "missing": [a, b, tmp_path / "nope.png"],
        "other_grid": [a, b, small],
        "unknown_metric": [a, b, a, "--metrics", "EN,NOPE"],
        "bad_mode": [a, b, a, "--mode", "planes"],
        "bad_axis": [
            mni_path("spm_T1"),
            mni_path("spm_T1"),
            mni_path("spm_T1"),
            "--mode",
            "slices",
            "--axis",
            "5",
        ],
    }[case]
    code, out, err = run(capsys, "metrics", *args)
    assert code == 2
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("medfusion: error:")
    culprit = {
        "missing": "nope.png",
        "other_grid": "small.png",
        "unknown_metric": "NOPE",
        "bad_mode": "planes",
        "bad_axis": "axis",
    }[case]
    assert culprit in err
