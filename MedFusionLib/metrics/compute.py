"""Score a fused image against its two sources with every registered metric.

Modes for volumes: ``"volume"`` computes each metric on the whole volume (3-D windows and
gradients); ``"slices"`` computes the 2-D metric on every slice along ``axis`` and
averages over the slices where it is defined, for comparison with the 2-D literature.
2-D images have a single mode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError, ParameterError
from ..validation import check_device, check_int, check_names
from .registry import Metric, get_metric, list_metrics

MODES = ("volume", "slices")


@dataclass(frozen=True)
class MetricReport:
    """Metric values by key, and why any of them is not a finite number.

    ``values`` maps every metric name (and its ``_A`` / ``_B`` parts, and ``balance``) to a
    float; ``notes`` maps a key to a one-line reason when its value is NaN or infinite, or
    when slices were skipped.
    """

    values: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)
    mode: str = "image"
    seconds: float = 0.0

    def to_json(self) -> dict[str, float | None]:
        """The values with NaN and infinities as ``None`` (JSON has no such numbers)."""
        return {key: (value if math.isfinite(value) else None) for key, value in self.values.items()}


def balance(part_a: float, part_b: float) -> float:
    """``min(VIF_A, VIF_B) / max(VIF_A, VIF_B)``: 1 when F carries both sources' information
    equally, near 0 when it copies one source (NaN when both parts are 0 or undefined)."""
    low, high = min(part_a, part_b), max(part_a, part_b)
    return low / high if high > 0 else math.nan


def _as_tensor(values: Any, *, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        if values.is_complex() or values.dtype == torch.bool:
            raise InputError(f"{name} has {values.dtype} values: grey levels are real numbers")
        values = values.detach().to("cpu", torch.float64)
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):
        raise InputError(f"{name} is not an array of grey levels ({type(values).__name__})") from None
    if array.dtype.kind not in "iuf":
        raise InputError(f"{name} has {array.dtype} values: grey levels are real numbers")
    if array.ndim not in (2, 3):
        raise InputError(
            f"{name} must be a 2-D image or a 3-D volume of grey levels, got shape {array.shape}"
        )
    if array.size == 0:
        raise InputError(f"{name} is empty")
    tensor = torch.as_tensor(array, dtype=torch.float64).to(device)
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(f"{name} contains NaN or infinite values")
    return tensor


def _batched(tensors: Sequence[torch.Tensor], mode: str, axis: int) -> list[torch.Tensor]:
    if tensors[0].ndim == 3 and mode == "slices":
        return [t.movedim(axis, 0) for t in tensors]
    return [t.unsqueeze(0) for t in tensors]


def _score(metric: Metric, batch: Sequence[torch.Tensor]) -> tuple[dict[str, float], dict[str, str]]:
    """Run one metric on a batch; average over the items where it is defined."""
    values: dict[str, float] = {}
    notes: dict[str, str] = {}
    spatial = batch[0].shape[1:]
    if min(spatial) < metric.min_size:
        reason = f"needs at least {metric.min_size} samples along each axis, got {tuple(spatial)}"
        return {key: math.nan for key in metric.keys}, {key: reason for key in metric.keys}
    with torch.no_grad():
        results = metric.function(*batch)
    for key in metric.keys:
        per_item = results[key].double().cpu()
        defined = ~torch.isnan(per_item)
        count = int(defined.sum())
        values[key] = float(per_item[defined].mean()) if count else math.nan
        if count == 0:
            notes[key] = f"undefined: {metric.undefined_when}"
        elif count < per_item.numel():
            notes[key] = (
                f"undefined on {per_item.numel() - count} of {per_item.numel()} slices, which were skipped"
            )
        elif math.isinf(values[key]):
            notes[key] = f"infinite: {metric.undefined_when}"
    return values, notes


def check_axis(axis: Any, *, ndim: int, name: str = "axis") -> int:
    """A slicing axis of an ``ndim``-D image (negative counts from the end).

    Raises:
        ParameterError: not an integer, or out of ``-ndim .. ndim - 1``.
    """
    axis = check_int(axis, name=name)
    if not -ndim <= axis < ndim:
        raise ParameterError(f"{name} {axis} is out of range for a {ndim}-D image (use {-ndim}..{ndim - 1})")
    return axis


def _chosen_metrics(metrics: Any) -> list[Metric]:
    if metrics is None:
        return list_metrics()
    if isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise ParameterError(f"metrics must be a list of metric names, got {metrics!r}")
    if not metrics:
        raise ParameterError("metrics names no metric (give None for all of them)")
    return [get_metric(name) for name in metrics]


def compute_metrics(
    a: Any,
    b: Any,
    f: Any,
    *,
    metrics: Sequence[str] | None = None,
    mode: str = "volume",
    axis: int = 0,
    device: str = "cpu",
    names: tuple[str, str, str] = ("A", "B", "F"),
) -> MetricReport:
    """Score the fused image ``f`` against sources ``a`` and ``b``.

    Args:
        a, b, f: arrays (or tensors) of one 2-D or 3-D shape holding grey levels on the 0-255
            scale (see :mod:`MedFusionLib.metrics.inputs` for turning files into them).
        metrics: names to compute (default: all registered).
        mode: ``"volume"`` or ``"slices"`` (3-D only; see the module docstring).
        axis: the slicing axis (array order) for ``"slices"``.
        device: where to compute (``"cpu"``, ``"cuda"``, ``"auto"``).
        names: how errors name the three inputs.

    Returns:
        A :class:`MetricReport`; with VIF computed it includes ``balance``.

    Raises:
        InputError: shapes differ, wrong dimensionality, values that are not real numbers
            (complex, boolean, object), NaN or infinite values.
        ParameterError: unknown metric, mode, axis or device; ``metrics`` not a list of names.
    """
    start = time.perf_counter()
    if not isinstance(mode, str) or mode not in MODES:
        raise ParameterError(f"unknown metric mode {mode!r} (use {' or '.join(MODES)})")
    chosen = _chosen_metrics(metrics)
    axis = check_int(axis, name="axis")
    dev = check_device(device)
    names = check_names(names, count=3, name="names")
    tensors = [_as_tensor(x, name=n, device=dev) for x, n in zip((a, b, f), names, strict=True)]
    for tensor, name in zip(tensors[1:], names[1:], strict=True):
        if tensor.shape != tensors[0].shape:
            raise InputError(
                f"{name} has shape {tuple(tensor.shape)} but {names[0]} has {tuple(tensors[0].shape)}; "
                "resample onto one grid first"
            )
    check_axis(axis, ndim=tensors[0].ndim)
    batch = _batched(tensors, mode, axis)
    values: dict[str, float] = {}
    notes: dict[str, str] = {}
    for metric in chosen:
        metric_values, metric_notes = _score(metric, batch)
        values.update(metric_values)
        notes.update(metric_notes)
    if "VIF_A" in values:
        values["balance"] = balance(values["VIF_A"], values["VIF_B"])
        if math.isnan(values["balance"]):
            notes["balance"] = "undefined: VIF parts undefined or both zero"
    shown_mode = "image" if tensors[0].ndim == 2 else mode
    return MetricReport(values=values, notes=notes, mode=shown_mode, seconds=time.perf_counter() - start)
