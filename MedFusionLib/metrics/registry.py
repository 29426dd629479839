"""The metric registry: each fusion quality metric's name, function, citation and conventions.

A metric function takes three float64 tensors ``a``, ``b``, ``f`` of one shape
``(N, *spatial)`` (``N`` images or volumes in a batch, 2 or 3 spatial axes) holding grey
levels on the 0-255 scale, and returns a dict mapping each key it reports (its name, and
``<NAME>_A`` / ``<NAME>_B`` for the parts against each source) to a tensor of ``N`` values.
Undefined values are NaN; the metric's ``undefined_when`` says when that happens. Metric
functions never warn and never raise on degenerate data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ParameterError

MetricFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Metric:
    """One fusion quality metric.

    Args:
        name: the key it reports (``EN``, ``VIF``, ``Q_CB`` ...).
        function: see the module docstring.
        citation: the paper it comes from.
        summary: one line on what it measures and the conventions used here.
        higher_is_better: ``False`` for error-like metrics (``Q_CV``).
        parts: whether it also reports ``<name>_A`` and ``<name>_B``.
        reference: whether ``../shared/data/harvard_reference_metrics.json`` has values
            for it (its conventions then follow that file's protocol exactly).
        min_size: the smallest spatial extent (per axis) the metric is defined on.
        undefined_when: when the metric is NaN.
    """

    name: str
    function: MetricFunction
    citation: str
    summary: str
    higher_is_better: bool = True
    parts: bool = True
    reference: bool = False
    min_size: int = 2
    undefined_when: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key this metric reports."""
        if self.parts:
            return (self.name, f"{self.name}_A", f"{self.name}_B")
        return (self.name,)


_REGISTRY: dict[str, Metric] = {}


def register_metric(
    name: str,
    *,
    citation: str,
    summary: str,
    higher_is_better: bool = True,
    parts: bool = True,
    reference: bool = False,
    min_size: int = 2,
    undefined_when: str = "",
) -> Callable[[MetricFunction], MetricFunction]:
    """Decorator that adds a metric function to the registry under ``name``."""

    def decorate(function: MetricFunction) -> MetricFunction:
        if name in _REGISTRY:
            raise ValueError(f"metric {name!r} registered twice")
        _REGISTRY[name] = Metric(
            name=name,
            function=function,
            citation=citation,
            summary=summary,
            higher_is_better=higher_is_better,
            parts=parts,
            reference=reference,
            min_size=min_size,
            undefined_when=undefined_when,
        )
        return function

    return decorate


def get_metric(name: str) -> Metric:
    """The registered metric called ``name``; a clear error otherwise."""
    from . import _load_all

    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise ParameterError(f"unknown metric {name!r} (known: {known})") from None


def list_metrics() -> list[Metric]:
    """All registered metrics: module by module in the package's order (the reference eleven
    first), each module's in registration order, whatever order the modules were imported in."""
    from . import _FAMILY_MODULES, _load_all

    _load_all()
    rank = {f"{__package__}.{module}": index for index, module in enumerate(_FAMILY_MODULES)}
    return sorted(_REGISTRY.values(), key=lambda metric: rank.get(metric.function.__module__, len(rank)))


def metrics_markdown() -> str:
    """The registry as a Markdown table (the end of ``Docs/metrics.md`` is this text)."""
    lines = [
        "| metric | parts | better | reference | what it measures | undefined when | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric in list_metrics():
        lines.append(
            f"| `{metric.name}` | {'A, B' if metric.parts else '–'} | "
            f"{'higher' if metric.higher_is_better else 'lower'} | {'yes' if metric.reference else ''} | "
            f"{metric.summary} | {metric.undefined_when} | {metric.citation} |"
        )
    return "\n".join(lines) + "\n"
