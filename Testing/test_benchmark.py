"""``medfusion benchmark``: dataset discovery, reproduction of the reference means, the report files."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import DATA
from test_metrics_reference import REFERENCE, reference_entries

from MedFusionLib.benchmark.dataset import discover_pair_sets
from MedFusionLib.cli import main
from MedFusionLib.errors import InputError


def test_discovers_the_harvard_sets_anatomical_first() -> None:
    sets = discover_pair_sets(DATA / "harvard")
    assert [(s.name, s.modality_a, s.modality_b, len(s.pairs)) for s in sets] == [
        ("MRI_CT", "MRI", "CT", 21),
        ("MRI_PET", "MRI", "PET", 42),
        ("MRI_SPECT", "MRI", "SPECT", 73),
    ]
    assert [p.id for p in sets[0].pairs][:3] == ["11", "12", "13"]


def test_discovery_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        discover_pair_sets(tmp_path / "missing")
    with pytest.raises(InputError, match="no pair sets"):
        discover_pair_sets(tmp_path)
    (tmp_path / "X_Y" / "X").mkdir(parents=True)
    (tmp_path / "X_Y" / "Y").mkdir()
    shutil.copy(DATA / "harvard/MRI_CT/MRI/11.png", tmp_path / "X_Y/X/1.png")
    shutil.copy(DATA / "harvard/MRI_CT/CT/12.png", tmp_path / "X_Y/Y/2.png")
    with pytest.raises(InputError, match="X_Y"):
        discover_pair_sets(tmp_path)


def test_benchmark_json_reproduces_the_reference_means_for_average(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["benchmark", str(DATA / "harvard"), "--methods", "average", "--out", str(tmp_path), "--json"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = json.loads(captured.out)
    entries = reference_entries()
    for pair_set, methods in results.items():
        rows = [v for k, v in entries.items() if k.startswith(pair_set + "/") and k.endswith("/average")]
        for metric in REFERENCE:
            expected = sum(r[metric] for r in rows) / len(rows)
            assert methods["average"][metric] == pytest.approx(expected, rel=1e-6), (pair_set, metric)
        assert methods["average"]["ms_per_pair"] > 0
    assert {p.name for p in tmp_path.iterdir()} >= {
        "harvard.md",
        "harvard.json",
        "harvard_examples.png",
        "harvard_scores.png",
        "harvard_MRI_CT.md",
        "harvard_MRI_CT.csv",
        "harvard_MRI_SPECT.csv",
    }


def test_benchmark_report_carries_quoted_and_peer_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "harvard"
    for pair_set, other in (("MRI_CT", "CT"), ("MRI_PET", "PET")):
        for modality in ("MRI", other):
            (dataset / pair_set / modality).mkdir(parents=True)
            for index in (11, 12):
                shutil.copy(
                    DATA / "harvard" / pair_set / modality / f"{index}.png", dataset / pair_set / modality
                )
    out = tmp_path / "report"
    code = main(
        [
            "benchmark",
            str(dataset),
            "--methods",
            "average,laplacian_pyramid",
            "--out",
            str(out),
            "--peers",
            str(DATA / "harvard_peer_results.json"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = (out / "harvard.md").read_text(encoding="utf-8")
    assert "CDDFuse* (quoted" in report and "IFCNN-MAX (peer, measured)" in report
    assert "own protocol" in report and "best MedFusion method" in report
    with open(out / "harvard_MRI_PET.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    kinds = {r["method"]: r["kind"] for r in rows}
    assert kinds["average"] == "medfusion" and kinds["laplacian_pyramid"] == "medfusion"
    assert "quoted" in kinds.values() and "peer" in kinds.values()
    medfusion = [r for r in rows if r["kind"] == "medfusion"]
    assert all(float(r["VIF_A"]) > 0 and float(r["ms_per_pair"]) > 0 for r in medfusion)
    assert not list(out.glob(".*tmp"))


@pytest.mark.parametrize("case", ["unknown_method", "missing_dataset", "bad_threads", "bad_peers"])
def test_benchmark_bad_input_exits_2_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = {
        "unknown_method": [str(DATA / "harvard"), "--methods", "average,nope"],
        "missing_dataset": [str(tmp_path / "nowhere")],
        "bad_threads": [str(DATA / "harvard"), "--threads", "0"],
        "bad_peers": [str(DATA / "harvard"), "--peers", str(tmp_path / "peers.json")],
    }[case]
    code = main(["benchmark", *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("medfusion: error:") and len(err.strip().splitlines()) == 1
    assert not out.exists()
