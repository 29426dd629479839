"""``medfusion benchmark DIR --pairs ...``: the 3-D clinical benchmark on real patients (issue 13).

Two small patients of ``../shared/data/sts`` (CC BY 3.0; Vallières et al. 2015, TCIA,
doi 10.7937/K9/TCIA.2015.7GO2GSKS; Vallières et al. 2015, Phys. Med. Biol. 60(14):5471,
doi 10.1088/0031-9155/60/14/5471; Clark et al. 2013, J. Digit. Imaging 26(6):1045-1057,
doi 10.1007/s10278-013-9622-7), three cheap rows, two 3-D metrics: about 15 s on 2 cores.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA

from MedFusionLib.benchmark.clinical import (
    CITATIONS,
    discover_patients,
    is_patient_dataset,
    parse_metrics,
    parse_pairs,
    parse_row,
    recommended_table,
)
from MedFusionLib.cli import main
from MedFusionLib.errors import InputError, ParameterError

PATIENTS = ("STS_019", "STS_025")  # the two smallest volumes of the set
ROWS = "recommended,average,slicer_overlay_40"


def _run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder named ``sts`` holding links to two patients."""
    root = tmp_path_factory.mktemp("data") / "sts"
    root.mkdir()
    for patient in PATIENTS:
        (root / patient).symlink_to(DATA / "sts" / patient, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def benchmark(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    """The JSON printed by one run, its report folder and its stderr."""
    out = tmp_path_factory.mktemp("report") / "bench"
    code, stdout, stderr = _run(
        "benchmark",
        str(dataset),
        "--pairs",
        "CT_PET,MR_PET",
        "--methods",
        ROWS,
        "--metrics",
        "MI,CC",
        "--out",
        str(out),
        "--threads",
        "2",
        "--json",
    )
    assert code == 0, stderr
    return json.loads(stdout), out, stderr


def test_json_is_pair_method_metric_with_per_patient_values(
    benchmark: tuple[dict[str, Any], Path, str],
) -> None:
    results, _, stderr = benchmark
    assert stderr == ""  # --json: no progress chatter
    assert list(results) == ["CT_PET", "MR_PET"]
    for rows in results.values():
        assert list(rows) == ROWS.split(",")
        for row in rows.values():
            assert set(row["per_patient"]) == set(PATIENTS)
            assert row["patients"] == 2 and row["failed"] == {}
            for key in ("conspicuity_kept", "anatomy_kept", "delta_E_F", "delta_E_P", "MI", "MI_A", "MI_B"):
                values = [v[key] for v in row["per_patient"].values()]
                assert row[key] == pytest.approx(sum(values) / len(values)), key
            for values in row["per_patient"].values():
                assert 0.0 < values["conspicuity_kept"] < 3.0
                assert -1.0 <= values["anatomy_kept"] <= 1.0
                assert values["delta_E_P"] > 0.0 and values["delta_E_F"] >= 0.0
                assert -1.0 <= values["CC_A"] <= 1.0 and -1.0 <= values["CC_B"] <= 1.0
                assert values["MI"] == pytest.approx(values["MI_A"] + values["MI_B"])
                assert 0.0 < values["seconds_fusion"] <= values["seconds_total"]
                assert values["peak_MB"] is None or values["peak_MB"] >= 0.0
            worst = row["worst_patient"]
            assert row["worst_conspicuity_kept"] == min(
                v["conspicuity_kept"] for v in row["per_patient"].values()
            )
            assert row["per_patient"][worst]["conspicuity_kept"] == row["worst_conspicuity_kept"]


def test_recommended_colour_row_keeps_more_of_the_tumour_than_gray_average(
    benchmark: tuple[dict[str, Any], Path, str],
) -> None:
    results, _, _ = benchmark
    for pair, rows in results.items():
        assert rows["recommended"]["conspicuity_kept"] > rows["average"]["conspicuity_kept"], pair
        assert recommended_table(pair) in rows["recommended"]["fusion"]
        # a gray row's P is shown in gray, a colour row's through its table: Delta E of P differs
        assert rows["recommended"]["delta_E_P"] != pytest.approx(rows["average"]["delta_E_P"])


def test_report_files_are_written_with_the_licence_and_citations(
    benchmark: tuple[dict[str, Any], Path, str],
) -> None:
    results, out, _ = benchmark
    assert sorted(p.name for p in out.iterdir()) == ["sts.csv", "sts.json", "sts.md", "sts_tumour_slices.png"]
    assert json.loads((out / "sts.json").read_text(encoding="utf-8")) == results
    markdown = (out / "sts.md").read_text(encoding="utf-8")
    assert "CC BY 3.0" in markdown and "sts_tumour_slices.png" in markdown
    for doi in ("10.7937/K9/TCIA.2015.7GO2GSKS", "10.1088/0031-9155/60/14/5471", "10.1007/s10278-013-9622-7"):
        assert doi in markdown
        assert any(doi in citation for citation in CITATIONS)
    assert "## CT_PET" in markdown and "## MR_PET" in markdown and "`recommended`" in markdown
    with open(out / "sts.csv", encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2 * 3 * (1 + len(PATIENTS))  # pairs x rows x (mean + patients)
    mean = next(
        r for r in rows if r["pair"] == "CT_PET" and r["method"] == "average" and r["patient"] == "mean"
    )
    assert float(mean["conspicuity_kept"]) == pytest.approx(results["CT_PET"]["average"]["conspicuity_kept"])
    assert (out / "sts_tumour_slices.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.parent.rglob(".*") if p.is_file()]  # no temporaries left


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--pairs", "CT_SPECT"], "CT_SPECT"),
        (["--pairs", ""], "--pairs"),
        (["--methods", "no_such_method"], "no_such_method"),
        (["--methods", "average+no_such_table"], "no_such_table"),
        (["--methods", "slicer_overlay_400"], "slicer_overlay_400"),
        (["--metrics", "conspicuity_kept"], "conspicuity_kept"),
        (["--patients", "STS_999"], "STS_999"),
        (["--threads", "0"], "--threads"),
        (["--peers", "x.json"], "--peers"),
        (["--figure", "fig.jpg"], "--figure"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    dataset: Path, tmp_path: Path, args: list[str], culprit: str
) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = _run("benchmark", str(dataset), "--out", str(out), *args)
    assert code == 2
    assert stdout == ""
    assert stderr.startswith("medfusion: error: ") and stderr.count("\n") == 1 and culprit in stderr
    assert not out.exists()


def test_a_folder_that_is_not_a_patient_dataset_exits_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing", DATA / "harvard"):
        code, _, stderr = _run("benchmark", str(folder), "--pairs", "CT_PET", "--out", str(tmp_path / "out"))
        assert code == 2 and stderr.count("\n") == 1, stderr
        assert str(folder) in stderr
    assert not (tmp_path / "out").exists()


def test_a_patient_missing_a_file_is_named(tmp_path: Path) -> None:
    patient = tmp_path / "sts" / "STS_001"
    patient.mkdir(parents=True)
    for name in ("CT_image.nii.gz", "CT_mask.nii.gz"):
        (patient / name).symlink_to(DATA / "sts" / "STS_019" / name)
    code, _, stderr = _run("benchmark", str(tmp_path / "sts"), "--out", str(tmp_path / "out"))
    assert code == 2 and stderr.count("\n") == 1
    assert "PET_image.nii.gz" in stderr and "STS_001" in stderr
    with pytest.raises(InputError, match="MR_T1_image"):
        discover_patients(tmp_path / "sts", ["CT_PET", "MR_PET"])


def test_rows_pairs_and_metrics_parse() -> None:
    assert parse_row("laplacian_pyramid").kind == "gray"
    colour = parse_row("laplacian_pyramid+bmy")
    assert (colour.kind, colour.method, colour.colormap) == ("colour", "laplacian_pyramid", "bmy")
    overlay = parse_row("slicer_overlay_50")
    assert overlay.kind == "overlay" and math.isclose(overlay.opacity or 0, 0.5)
    assert parse_row("recommended").kind == "recommended"
    assert parse_pairs(None) == ["CT_PET", "MR_PET"] and parse_pairs("MR_PET") == ["MR_PET"]
    assert parse_metrics("none") == [] and "VIF" in parse_metrics("all")
    with pytest.raises(ParameterError, match="twice"):
        parse_pairs("CT_PET,CT_PET")
    with pytest.raises(ParameterError, match="colour table"):
        parse_row("average+")
    assert is_patient_dataset(DATA / "sts") and not is_patient_dataset(DATA / "harvard")
