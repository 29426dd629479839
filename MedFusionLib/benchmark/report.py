"""Write a benchmark's results: Markdown and CSV per set, a combined Markdown report, JSON,
and the two figures (example fusions, score chart)."""

from __future__ import annotations

import csv
import io
import json
import math
import platform
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import torch

from .. import __version__
from ..atomic import StagedOutputs, making_folder
from ..metrics import list_metrics
from .figures import save_examples_figure, save_score_chart
from .published import ComparisonRow
from .run import SetResult

# The columns of CDDFuse's Table 5 (the field's medical comparison), in its order.
TABLE5_METRICS = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM")
SOURCE_PART_COLUMNS = ("VIF_A", "VIF_B", "balance")


def _write_text(staged: StagedOutputs, path: Path, text: str) -> Path:
    """Stage ``text`` for ``path`` (renamed into place with the rest of the report)."""
    with open(staged.stage(path), "x", encoding="utf-8", newline="") as stream:
        stream.write(text)
    return path


def _cell(value: float | None, *, bold: bool = False, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:.{digits}f}"
    return f"**{text}**" if bold else text


@cache
def _lower_is_better() -> frozenset[str]:
    return frozenset(m.name for m in list_metrics() if not m.higher_is_better)


def _higher_is_better(key: str) -> bool:
    name = key.removesuffix("_A").removesuffix("_B")
    return name not in _lower_is_better() and key != "ms_per_pair"


def mean_ranks(means: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> dict[str, float]:
    """Each method's mean rank (1 = best) over ``metrics``; undefined values rank last."""
    ranks = {method: 0.0 for method in means}
    for metric in metrics:
        sign = 1.0 if _higher_is_better(metric) else -1.0

        def key(method: str, metric: str = metric, sign: float = sign) -> float:
            value = means[method].get(metric, math.nan)
            return -sign * value if math.isfinite(value) else math.inf

        for rank, method in enumerate(sorted(means, key=key), start=1):
            ranks[method] += rank / len(metrics)
    return ranks


def _summary_lines(result: SetResult, comparisons: Sequence[ComparisonRow]) -> list[str]:
    """Which MedFusion method ranks best on the Table-5 metrics, and how it fares against each row."""
    means = result.means()
    ranks = mean_ranks(means, TABLE5_METRICS)
    best = min(ranks, key=ranks.get)
    order = sorted(ranks, key=ranks.get)
    lines = [
        f"- **{result.pair_set.name}** ({len(result.pair_set.pairs)} pairs): best MedFusion method by mean rank "
        f"over {', '.join(TABLE5_METRICS)} is **{best}** (mean rank {ranks[best]:.1f} of {len(ranks)}; "
        f"then {', '.join(order[1:4])}). Its VIF parts: A {means[best]['VIF_A']:.3f}, "
        f"B {means[best]['VIF_B']:.3f} (balance {means[best]['balance']:.2f})."
    ]
    for row in comparisons:
        shared = [
            m for m in TABLE5_METRICS if m in row.values and math.isfinite(means[best].get(m, math.nan))
        ]
        wins = [m for m in shared if means[best][m] > row.values[m]]
        losses = [m for m in shared if means[best][m] <= row.values[m]]
        lines.append(
            f"  - against {row.label}: {best} is higher on {len(wins)} of {len(shared)}"
            f"{' (' + ', '.join(wins) + ')' if wins else ''}; not higher on "
            f"{', '.join(losses) if losses else 'none'}."
        )
    return lines


def _markdown_table(
    rows: Sequence[tuple[str, Mapping[str, float]]], columns: Sequence[str], *, best_of: int, digits: int = 3
) -> list[str]:
    """A Markdown table; the best of the first ``best_of`` rows is bold in each column."""
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    best: dict[str, float] = {}
    for column in columns:
        values = [r[1].get(column, math.nan) for r in rows[:best_of]]
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            best[column] = max(finite) if _higher_is_better(column) else min(finite)
    for index, (label, values) in enumerate(rows):
        cells = []
        for column in columns:
            value = values.get(column, math.nan)
            bold = index < best_of and column in best and value == best[column]
            cells.append(_cell(value, bold=bold, digits=1 if column == "ms_per_pair" else digits))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _csv_text(result: SetResult, comparisons: Sequence[ComparisonRow], keys: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["set", "method", "kind", "source", "pairs", *keys])
    for method, means in result.means().items():
        row = [means.get(k, math.nan) for k in keys]
        writer.writerow([result.pair_set.name, method, "medfusion", "", len(result.pair_set.pairs), *row])
    for comparison in comparisons:
        row = [comparison.values.get(k, "") for k in keys]
        writer.writerow(
            [result.pair_set.name, comparison.label, comparison.kind, comparison.source, "", *row]
        )
    return buffer.getvalue()


def write_report(
    results: Sequence[SetResult],
    out_dir: str | Path,
    *,
    dataset_name: str,
    command: str,
    device: str,
    threads: int,
    comparisons: Mapping[str, Sequence[ComparisonRow]],
    citations: Mapping[str, str],
) -> list[Path]:
    """Write every output file into ``out_dir``; return their paths.

    All or nothing: the files are staged under temporary names and renamed into place only
    when every one of them is written, so a failure (a full disk, a figure that cannot be
    drawn) leaves no partial report, and no ``out_dir`` this call created.

    Raises:
        InputError: a file cannot be written (the reason and the file are named).
    """
    with making_folder(out_dir) as out, StagedOutputs() as staged:
        return _write_report_files(
            results,
            out,
            staged,
            dataset_name=dataset_name,
            command=command,
            device=device,
            threads=threads,
            comparisons=comparisons,
            citations=citations,
        )


def _write_report_files(
    results: Sequence[SetResult],
    out: Path,
    staged: StagedOutputs,
    *,
    dataset_name: str,
    command: str,
    device: str,
    threads: int,
    comparisons: Mapping[str, Sequence[ComparisonRow]],
    citations: Mapping[str, str],
) -> list[Path]:
    """The body of :func:`write_report`: every file is staged in ``staged``."""
    written: list[Path] = []
    metric_keys = [key for metric in list_metrics() for key in metric.keys]
    all_keys = [*metric_keys, "balance", "ms_per_pair"]
    summary_columns = [*TABLE5_METRICS, *SOURCE_PART_COLUMNS, "ms_per_pair"]
    other_columns = [m.name for m in list_metrics() if m.name not in TABLE5_METRICS]

    figure_examples = {}
    chart_scores, chart_quoted = {}, {}
    set_sections = []
    summary = []
    for result in results:
        name = result.pair_set.name
        rows = comparisons.get(name, [])
        means = result.means()
        summary += _summary_lines(result, rows)
        written.append(
            _write_text(staged, out / f"{dataset_name}_{name}.csv", _csv_text(result, rows, all_keys))
        )
        table_rows = [(method, values) for method, values in means.items()]
        table_rows += [(r.label, r.values) for r in rows]
        section = [
            f"## {name} ({len(result.pair_set.pairs)} pairs; A = {result.pair_set.modality_a}, "
            f"B = {result.pair_set.modality_b})",
            "",
            "Mean over pairs. Bold: best MedFusion method per column. Rows marked *quoted* come from the "
            "papers (their own protocol); rows marked *peer, measured* were run with the reference protocol "
            "on this kind of machine.",
            "",
            *_markdown_table(table_rows, summary_columns, best_of=len(means)),
            "",
            "Further metrics (mean over pairs; `Q_CV` is lower-better; parts in the CSV):",
            "",
            *_markdown_table(list(means.items()), other_columns, best_of=len(means)),
            "",
        ]
        set_sections += section
        written.append(
            _write_text(
                staged,
                out / f"{dataset_name}_{name}.md",
                "\n".join([f"# {dataset_name}: {name}", "", *section]),
            )
        )
        figure_examples[f"{name} {result.example_id}"] = [
            (result.pair_set.modality_a, result.example_sources[0]),
            (result.pair_set.modality_b, result.example_sources[1]),
            *[(method, scores.example) for method, scores in result.scores.items()],
        ]
        chart_scores[name] = means
        chart_quoted[name] = {r.label: r.values for r in rows}

    examples_png, scores_png = out / f"{dataset_name}_examples.png", out / f"{dataset_name}_scores.png"
    save_examples_figure(
        figure_examples,
        staged.stage(examples_png, suffix=".png"),
        title=f"{dataset_name}: first pair of each set",
    )
    save_score_chart(
        chart_scores,
        staged.stage(scores_png, suffix=".png"),
        metrics=TABLE5_METRICS,
        quoted=chart_quoted,
        title=f"{dataset_name}: mean scores",
    )
    written += [examples_png, scores_png]

    json_results = {
        r.pair_set.name: {
            m: {k: (v if math.isfinite(v) else None) for k, v in vals.items()}
            for m, vals in r.means().items()
        }
        for r in results
    }
    written.append(
        _write_text(staged, out / f"{dataset_name}.json", json.dumps(json_results, indent=1) + "\n")
    )

    used_sources = sorted({r.source for rows in comparisons.values() for r in rows if r.kind == "quoted"})
    header = [
        f"# Benchmark: {dataset_name}",
        "",
        f"Made with `{command}` (MedFusion {__version__}, torch {torch.__version__}, device {device}"
        f"{f', {threads} CPU threads' if device == 'cpu' else ''}, {platform.machine()} {platform.system()}).",
        "",
        "**Protocol.** A and B are the 8-bit grey images (BT.601 luminance, rounded, of RGB files); each method "
        "fuses A/255 and B/255 with its default parameters; F = round(clip(255 f)); every metric is computed on "
        "(A, B, F) exactly as the field's reference evaluator does (see `Docs/metrics.md`). `ms_per_pair` is the "
        "median time of the fusion call alone. No method was tuned on these images.",
        "",
        "**Quoted rows** are copied from the papers cited below and were computed by each paper with its own "
        "protocol and code (CDDFuse's, for example, min-max stretches the fused image before scoring); they are "
        "not re-measured here and are not strictly comparable. **Peer rows** were measured with the reference "
        "protocol on this kind of machine.",
        "",
        "## Summary",
        "",
        *summary,
        "",
        f"![example fusions]({examples_png.name})",
        "",
        f"![mean scores]({scores_png.name})",
        "",
        *set_sections,
    ]
    if used_sources:
        header += (
            ["## Sources of quoted rows", ""] + [f"- {key}: {citations[key]}" for key in used_sources] + [""]
        )
    written.insert(0, _write_text(staged, out / f"{dataset_name}.md", "\n".join(header)))
    return written
