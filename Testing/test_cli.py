"""The ``medfusion`` command: registry listing, fusion in 2-D and 3-D, and clean errors."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import harvard_path, mni_path
from test_methods import REQUIRED

from MedFusionLib.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_methods_json_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "methods", "--json")
    assert code == 0
    methods = json.loads(out)
    assert {m["name"] for m in methods} >= set(REQUIRED)
    for m in methods:
        assert {"name", "family", "citation", "dims", "parameters"} <= set(m)
        assert m["dims"] == [2, 3]
        for p in m["parameters"]:
            assert {"name", "type", "default"} <= set(p)
            assert ("min" in p and "max" in p) or "choices" in p or p["type"] == "bool"


def test_methods_plain_text_names_each_method(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "methods")
    assert code == 0
    for name in REQUIRED:
        assert name in out


def test_fuse_pseudo_colour_2d_pair_gives_rgb_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fused.png"
    code, stdout, err = run(
        capsys,
        "fuse",
        harvard_path("MRI_PET", "MRI"),
        harvard_path("MRI_PET", "PET"),
        "-o",
        out,
        "--method",
        "laplacian_pyramid",
        "--set",
        "levels=3",
        "--device",
        "cpu",
        "--json",
    )
    assert code == 0, err
    record = json.loads(stdout)
    assert record["method"] == "laplacian_pyramid" and record["parameters"]["levels"] == 3
    assert record["device"] == "cpu" and record["seconds"] > 0
    fused = sitk.ReadImage(str(out))
    assert fused.GetSize() == (256, 256) and fused.GetNumberOfComponentsPerPixel() == 3
    rgb = sitk.GetArrayFromImage(fused)
    assert not np.array_equal(rgb[..., 0], rgb[..., 1])  # the PET's chroma is back


def test_fuse_3d_volume_keeps_reference_geometry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fused.nrrd"
    code, _, err = run(
        capsys, "fuse", mni_path("spm_T1"), mni_path("spm_SPECT"), "-o", out, "--method", "average"
    )
    assert code == 0, err
    fused, ref = sitk.ReadImage(str(out)), sitk.ReadImage(str(mni_path("spm_T1")))
    assert fused.GetSize() == ref.GetSize()
    assert fused.GetSpacing() == ref.GetSpacing() and fused.GetOrigin() == ref.GetOrigin()
    assert fused.GetDirection() == ref.GetDirection()


def _write(path: Path, array: np.ndarray, origin: tuple[float, ...] | None = None) -> Path:
    image = sitk.GetImageFromArray(array)
    if origin is not None:
        image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture()
def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    t1 = mni_path("spm_T1")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(t1.read_bytes()[:20000])
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"not an image at all" * 10))
    nan = np.full((20, 20, 20), np.nan, np.float32)
    return {
        "t1": t1,
        "png": harvard_path("MRI_CT", "CT"),
        "truncated": truncated,
        "garbage": garbage,
        "nan": _write(tmp_path / "nan.nrrd", nan),
        "constant": _write(tmp_path / "constant.nrrd", np.full((20, 20, 20), 7.0, np.float32)),
        "far": _write(
            tmp_path / "far.nrrd",
            np.random.default_rng(0).random((20, 20, 20), np.float32),
            origin=(5000.0, 5000.0, 5000.0),
        ),
    }


ERROR_CASES = {
    "missing file": (["{t1}", "{tmp}/nope.nii.gz"], "nope.nii.gz"),
    "truncated file": (["{t1}", "{truncated}"], "truncated.nii.gz"),
    "corrupt file": (["{garbage}", "{t1}"], "garbage.nii.gz"),
    "2-D with 3-D": (["{t1}", "{png}"], "2-D"),
    "unknown method": (["{t1}", "{t1}", "--method", "magic"], "magic"),
    "unknown parameter": (["{t1}", "{t1}", "--method", "dwt", "--set", "colour=red"], "colour"),
    "value out of range": (["{t1}", "{t1}", "--method", "laplacian_pyramid", "--set", "levels=99"], "levels"),
    "malformed value": (["{t1}", "{t1}", "--method", "laplacian_pyramid", "--set", "levels=many"], "levels"),
    "NaN-only image": (["{t1}", "{nan}"], "nan.nrrd"),
    "constant image": (["{constant}", "{t1}"], "constant.nrrd"),
    "non-overlapping volumes": (["{t1}", "{far}"], "overlap"),
    "unknown device": (["{t1}", "{t1}", "--device", "tpu9"], "tpu9"),
}


@pytest.mark.parametrize("case", ERROR_CASES, ids=list(ERROR_CASES))
def test_bad_input_exits_2_with_one_line_and_no_output(
    case: str, bad_inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template, culprit = ERROR_CASES[case]
    args = [a.format(tmp=tmp_path, **bad_inputs) for a in template]
    out = tmp_path / "out" / "fused.nii.gz"
    out.parent.mkdir()
    before = {p: p.stat().st_mtime_ns for p in bad_inputs.values()}
    code, _, err = run(capsys, "fuse", *args, "-o", out)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("medfusion: error:"), err
    assert culprit in err, err
    assert list(out.parent.iterdir()) == []  # nothing written, not even a temporary
    assert {p: p.stat().st_mtime_ns for p in bad_inputs.values()} == before


def test_unknown_output_format_is_refused_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "fuse", mni_path("spm_T1"), mni_path("spm_PET"), "-o", tmp_path / "x.docx")
    assert code == 2 and "x.docx" in err and err.count("\n") == 1


def test_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fuse", "only_one_input"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_console_script_exits_2_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "MedFusionLib.cli",
            "fuse",
            str(tmp_path / "a.nii"),
            str(tmp_path / "b.nii"),
            "-o",
            str(tmp_path / "f.nii"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "a.nii" in proc.stderr
