"""Tests of the benchmark figures (examples grid and score chart) drawn with Pillow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from MedFusionLib.benchmark.figures import (
    MAX_CHART_WIDTH,
    QUOTED_LEGEND,
    method_colours,
    save_examples_figure,
    save_score_chart,
)

LONG_LABEL = "nsst_pcnn_rolling_guidance_filter_with_a_really_long_descriptive_name"


def _gray(seed: int, shape: tuple[int, int] = (40, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _rgb(seed: int, shape: tuple[int, int] = (32, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


def _check_png(path: Path) -> Image.Image:
    """The PNG at ``path`` opened, checked to be non-empty and not of a single colour, alone in its folder."""
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        picture = image.convert("RGB")
    assert picture.width > 0 and picture.height > 0
    assert picture.getcolors(maxcolors=2) is None, "figure is a single colour"
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert leftovers == [], f"temporary files left behind: {leftovers}"
    return picture


def _scores(
    sets: int, methods: int, metrics: list[str], seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    rng = np.random.default_rng(seed)
    return {
        f"SET_{s}": {f"method_{m}": {k: float(rng.uniform(0.1, 10)) for k in metrics} for m in range(methods)}
        for s in range(sets)
    }


# ---------------------------------------------------------------------------------------------
# examples figure
# ---------------------------------------------------------------------------------------------


def test_examples_figure_gray_rgb_and_long_labels(tmp_path: Path) -> None:
    examples = {
        "MRI_PET 11": [("MRI", _gray(1)), ("PET", _rgb(2)), ("average", _gray(3)), (LONG_LABEL, _rgb(4))],
        f"{LONG_LABEL} row": [("MRI", _gray(5, (64, 64))), ("CT", _gray(6)), ("average", _rgb(7))],
    }
    path = tmp_path / "examples.png"
    returned = save_examples_figure(examples, path, title="Examples", tile=48)
    assert returned == path
    picture = _check_png(path)
    # the source images are shown
    assert picture.height > 2 * 48


def test_examples_figure_aligns_method_columns_by_label(tmp_path: Path) -> None:
    image = _gray(0)
    ragged = {
        "A": [("MRI", image), ("CT", image), ("m1", image), ("m2", image)],
        "B": [("MRI", image), ("PET", image), ("m2", image), ("m3", image)],
    }
    single = {"A": [("MRI", image), ("CT", image), ("m1", image), ("m2", image), ("m3", image)]}
    ragged_png = _check_png(save_examples_figure(ragged, tmp_path / "a" / "ragged.png", tile=40))
    single_png = _check_png(save_examples_figure(single, tmp_path / "b" / "single.png", tile=40))
    # two sources plus the union of methods (m1, m2, m3): as wide as one row with all five columns
    assert ragged_png.width == single_png.width
    assert ragged_png.height > single_png.height


def test_examples_figure_accepts_other_dtypes_and_channel_layouts(tmp_path: Path) -> None:
    floats = np.linspace(0.0, 1.0, 30 * 20).reshape(30, 20)
    floats[0, 0] = math.nan
    examples = {
        "odd": [
            ("float", floats),
            ("int16", (np.nan_to_num(floats) * 1000).astype(np.int16)),
            ("bool", floats > 0.5),
            ("single channel", _gray(1)[..., None]),
            ("rgba", np.dstack([_rgb(2, (20, 20)), np.full((20, 20), 255, np.uint8)])),
        ]
    }
    _check_png(save_examples_figure(examples, tmp_path / "odd.png", tile=32))


def test_examples_figure_creates_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "examples.png"
    save_examples_figure({"MRI_CT": [("MRI", _gray(1)), ("CT", _gray(2))]}, path, tile=32)
    _check_png(path)


def test_examples_figure_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no examples"):
        save_examples_figure({}, tmp_path / "empty.png")
    with pytest.raises(ValueError, match="shape"):
        save_examples_figure({"x": [("bad", np.zeros((2, 3, 4, 5), np.uint8))]}, tmp_path / "bad.png")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "taken.png"
    target.mkdir()  # os.replace cannot put a file over a folder
    with pytest.raises(OSError):
        save_examples_figure({"MRI_CT": [("MRI", _gray(1))]}, target, tile=32)
    assert [p.name for p in tmp_path.iterdir()] == ["taken.png"]
    assert target.is_dir() and list(target.iterdir()) == []


def test_existing_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "examples.png"
    path.write_bytes(b"not a png")
    save_examples_figure({"MRI_CT": [("MRI", _gray(1)), ("CT", _rgb(2))]}, path, tile=32)
    _check_png(path)


# ---------------------------------------------------------------------------------------------
# score chart
# ---------------------------------------------------------------------------------------------

METRICS = ["EN", "MI", "SSIM", "Q_AB/F", "VIF", "SD", "SF", "AG"]


def test_score_chart_full_size_stays_within_width(tmp_path: Path) -> None:
    scores = _scores(3, 16, METRICS)
    quoted = {"SET_0": {"U2Fusion (paper)": {"EN": 5.0, "SSIM": 0.7}}, "SET_2": {"peer": {"MI": 2.0}}}
    path = save_score_chart(scores, tmp_path / "chart.png", metrics=METRICS, quoted=quoted, title="Scores")
    picture = _check_png(path)
    assert picture.width <= MAX_CHART_WIDTH
    assert picture.height < 2000


def test_score_chart_uses_one_colour_per_method(tmp_path: Path) -> None:
    scores = _scores(2, 4, ["EN", "MI"])
    picture = _check_png(save_score_chart(scores, tmp_path / "chart.png", metrics=["EN", "MI"]))
    colours = method_colours([f"method_{m}" for m in range(4)])
    assert len(set(colours.values())) == 4
    present = {colour for _, colour in picture.getcolors(maxcolors=1 << 20)}
    assert set(colours.values()) <= present


def test_method_colours_are_distinct_beyond_the_palette() -> None:
    colours = method_colours([f"m{i}" for i in range(40)])
    assert len(set(colours.values())) == 40


def test_score_chart_skips_nan_inf_missing_and_negative(tmp_path: Path) -> None:
    scores = {
        "MRI_CT": {
            "average": {"EN": math.nan, "MI": -0.5, "SSIM": 0.8},
            LONG_LABEL: {"EN": math.inf, "MI": 1.5},  # SSIM missing
            "pca": {"EN": -math.inf, "MI": np.float32(2.0), "SSIM": "n/a"},
        },
        "MRI_PET": {"average": {"EN": math.nan, "MI": math.nan, "SSIM": math.nan}},  # nothing finite
    }
    quoted = {
        "MRI_CT": {"paper A": {"EN": 6.0}, "paper B": {}},  # quoted metrics missing
        "MRI_SPECT": {"paper C": {"SSIM": 0.5, "MI": math.nan}},  # a set only quoted
    }
    path = tmp_path / "chart.png"
    save_score_chart(scores, path, metrics=["EN", "MI", "SSIM", "unknown metric"], quoted=quoted)
    _check_png(path)


def test_score_chart_long_labels_and_single_metric(tmp_path: Path) -> None:
    scores = {LONG_LABEL: {LONG_LABEL: {LONG_LABEL: 3.0}, "short": {LONG_LABEL: 1.0}}}
    quoted = {LONG_LABEL: {f"{LONG_LABEL} (paper)": {LONG_LABEL: 2.0}}}
    path = save_score_chart(scores, tmp_path / "x" / "chart.png", metrics=[LONG_LABEL], quoted=quoted)
    _check_png(path)


def test_score_chart_many_metrics_grows_wider_but_keeps_panels_readable(tmp_path: Path) -> None:
    metrics = [f"metric_{i}" for i in range(20)]
    picture = _check_png(save_score_chart(_scores(1, 2, metrics), tmp_path / "chart.png", metrics=metrics))
    assert picture.width > MAX_CHART_WIDTH


def test_score_chart_only_quoted_and_legend_entry(tmp_path: Path) -> None:
    assert QUOTED_LEGEND
    path = save_score_chart({}, tmp_path / "chart.png", metrics=["EN"], quoted={"S": {"paper": {"EN": 1.0}}})
    _check_png(path)


def test_score_chart_rejects_empty_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no metrics"):
        save_score_chart(_scores(1, 1, ["EN"]), tmp_path / "chart.png", metrics=[])
    with pytest.raises(ValueError, match="no sets"):
        save_score_chart({}, tmp_path / "chart.png", metrics=["EN"])
    assert list(tmp_path.iterdir()) == []
