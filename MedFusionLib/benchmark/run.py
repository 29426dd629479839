"""Run fusion methods over every pair of a benchmark dataset and score them.

The protocol is the field's reference one (``harvard_reference_metrics.json``): A and B
are the 8-bit grey images (BT.601 luminance, rounded, for RGB files); each method fuses
``A / 255`` and ``B / 255`` (what the pipeline feeds it for 8-bit slices); the fused image
is ``F = round(clip(255 f, 0, 255))``, first rounded to 1/1000 of a grey level so that
float32 round-off cannot flip an exact half-level tie; all metrics are computed on
``(A, B, F)``. Only the fusion call is timed, on ``threads`` CPU threads unless a device
is named. A pseudo-colour source's chroma is put back only for the example figure.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..colour import rgb_to_ycbcr, ycbcr_to_rgb
from ..fusion import get_method, list_methods
from ..fusion.ops import resolve_device
from ..fusion.runner import fuse_arrays
from ..io import read_image
from ..metrics.compute import compute_metrics
from ..metrics.inputs import grey_levels_from_image
from .dataset import PairSet

TIE_DECIMALS = 3

Progress = Callable[[str], None]


@dataclass
class MethodScores:
    """Per-pair metric values and fusion times of one method on one set."""

    values: dict[str, list[float]] = field(default_factory=dict)
    milliseconds: list[float] = field(default_factory=list)
    example: np.ndarray | None = None

    def add(self, values: dict[str, float], milliseconds: float) -> None:
        for key, value in values.items():
            self.values.setdefault(key, []).append(value)
        self.milliseconds.append(milliseconds)

    def means(self) -> dict[str, float]:
        """Mean over the pairs where each value is finite, and the median ms per pair."""
        means = {}
        for key, values in self.values.items():
            finite = [v for v in values if math.isfinite(v)]
            means[key] = sum(finite) / len(finite) if finite else math.nan
        means["ms_per_pair"] = statistics.median(self.milliseconds) if self.milliseconds else math.nan
        return means


@dataclass
class SetResult:
    """Everything measured on one pair set."""

    pair_set: PairSet
    scores: dict[str, MethodScores]
    example_id: str
    example_sources: tuple[np.ndarray, np.ndarray]

    def means(self) -> dict[str, dict[str, float]]:
        return {method: scores.means() for method, scores in self.scores.items()}


def fused_grey_levels(fused: np.ndarray) -> np.ndarray:
    """``round(clip(255 f, 0, 255))`` with the tie guard described in the module docstring."""
    return np.round(np.clip(np.round(fused.astype(np.float64) * 255.0, TIE_DECIMALS), 0, 255))


def _load_grey(path, *, name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Grey levels (0-255), an RGB view (uint8) and whether it is pseudo-colour."""
    image = read_image(path)
    grey = grey_levels_from_image(image, name=name)
    rgb = image.array if image.is_rgb else np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
    return grey, rgb.astype(np.uint8), image.is_pseudo_colour


def _colourise(fused_grey: np.ndarray, source_rgb: np.ndarray) -> np.ndarray:
    """Put the pseudo-colour source's chroma back on the fused luminance (for figures)."""
    _, cb, cr = rgb_to_ycbcr(source_rgb.astype(np.float32) / 255.0)
    rgb = ycbcr_to_rgb((fused_grey / 255.0).astype(np.float32), cb, cr)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def run_benchmark(
    pair_sets: Sequence[PairSet],
    *,
    methods: Sequence[str] | None = None,
    device: str = "cpu",
    threads: int = 2,
    progress: Progress | None = None,
) -> list[SetResult]:
    """Fuse and score every pair of every set with every method (default: all registered)."""
    specs = [get_method(m) for m in methods] if methods else list_methods()
    defaults = {spec.name: spec.resolve_parameters(None) for spec in specs}
    dev = resolve_device(device)
    previous_threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    results = []
    try:
        for pair_set in pair_sets:
            scores = {spec.name: MethodScores() for spec in specs}
            example = pair_set.pairs[0]
            example_sources = None
            for index, pair in enumerate(pair_set.pairs):
                if progress:
                    progress(f"{pair_set.name} {index + 1}/{len(pair_set.pairs)} ({pair.id})")
                grey_a, rgb_a, _ = _load_grey(pair.path_a, name=str(pair.path_a))
                grey_b, rgb_b, colour_b = _load_grey(pair.path_b, name=str(pair.path_b))
                if pair is example:
                    example_sources = (rgb_a, rgb_b)
                a = (grey_a / 255.0).astype(np.float32)
                b = (grey_b / 255.0).astype(np.float32)
                for spec in specs:
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    parameters = spec.with_modality_pair(defaults[spec.name], pair_set.name)
                    fused = fuse_arrays(a, b, method=spec, parameters=parameters, device=dev)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    milliseconds = (time.perf_counter() - start) * 1000.0
                    grey_f = fused_grey_levels(fused)
                    report = compute_metrics(
                        grey_a, grey_b, grey_f, names=(pair.id + " A", pair.id + " B", "F")
                    )
                    scores[spec.name].add(report.values, milliseconds)
                    if pair is example:
                        scores[spec.name].example = (
                            _colourise(grey_f, rgb_b) if colour_b else grey_f.astype(np.uint8)
                        )
            results.append(
                SetResult(
                    pair_set=pair_set, scores=scores, example_id=example.id, example_sources=example_sources
                )
            )
    finally:
        torch.set_num_threads(previous_threads)
    return results
