"""Rows to set beside MedFusion's: values quoted from papers, and peers measured elsewhere.

Quoted rows come from ``MedFusionLib/data/published_harvard.json`` (each with its paper and
table; every paper computed them with its own protocol). Peer rows come from a JSON file in
the layout of ``../shared/data/harvard_peer_results.json`` (``{"sets": {SET: {LABEL:
{METRIC: value}}}}``), measured with the reference protocol.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import InputError

PUBLISHED_FILE = "published_harvard.json"


@dataclass(frozen=True)
class ComparisonRow:
    """One row from outside MedFusion: a label, where it comes from, and its values."""

    label: str
    source: str
    kind: str  # "quoted" (from a paper) or "peer" (measured with the reference protocol)
    values: dict[str, float]


def _finite(values: dict[str, object]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}


def published_rows(dataset_name: str) -> tuple[dict[str, list[ComparisonRow]], dict[str, str]]:
    """Quoted rows per set for a dataset (only ``harvard`` has any), and citations by source key."""
    text = resources.files("MedFusionLib").joinpath("data", PUBLISHED_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    if dataset_name.lower() != data.get("dataset", "harvard"):
        return {}, {}
    rows: dict[str, list[ComparisonRow]] = {}
    for row in data["rows"]:
        source = data["sources"][row["source"]]
        label = f"{row['method']} (quoted, {source.get('table', '')})".replace(" ()", "")
        rows.setdefault(row["set"], []).append(
            ComparisonRow(label=label, source=row["source"], kind="quoted", values=_finite(row["metrics"]))
        )
    citations = {key: source["citation"] for key, source in data["sources"].items()}
    return rows, citations


def peer_rows(path: str | Path) -> dict[str, list[ComparisonRow]]:
    """Measured peer rows per set from a peer-results JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        sets = data["sets"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"cannot read peer results {path}: {error}") from None
    rows: dict[str, list[ComparisonRow]] = {}
    for set_name, methods in sets.items():
        for label, values in methods.items():
            rows.setdefault(set_name, []).append(
                ComparisonRow(
                    label=f"{label} (peer, measured)", source=path.name, kind="peer", values=_finite(values)
                )
            )
    return rows
