"""The metric registry: each fusion quality metric's name, function, citation and conventions.

A metric function takes three float64 tensors ``a``, ``b``, ``f`` of one shape
``(N, *spatial)`` (``N`` images or volumes in a batch, 2 or 3 spatial axes) holding grey
levels on the 0-255 scale, and returns a dict mapping each key it reports (its name, and
``<NAME>_A`` / ``<NAME>_B`` for the parts against each source) to a tensor of ``N`` values.
Undefined values are NaN; the metric's ``undefined_when`` says when that happens. Metric
functions never warn and never raise on degenerate data.

That is the ``"fusion"`` family, the default of :func:`list_metrics` and :func:`get_metric`.
The ``"clinical"`` family (:mod:`MedFusionLib.metrics.clinical`) scores a lesion and the
anatomy from the raw sources and a mask; its functions take one
:class:`~MedFusionLib.metrics.clinical.ClinicalScene` and are run by
:func:`~MedFusionLib.metrics.clinical.compute_clinical_metrics`, never by ``compute_metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..errors import ParameterError

MetricFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
_Function = TypeVar("_Function", bound=Callable[..., Any])

FAMILIES = ("fusion", "clinical")
"""``fusion``: grey-level metrics of ``(a, b, f)`` run by ``compute_metrics``; ``clinical``:
lesion and anatomy measures run by ``compute_clinical_metrics``."""


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
        family: one of :data:`FAMILIES`; it says which function computes the metric.
        extra_keys: further keys it reports besides its name and parts.
    """

    name: str
    function: Callable[..., Any]
    citation: str
    summary: str
    higher_is_better: bool = True
    parts: bool = True
    reference: bool = False
    min_size: int = 2
    undefined_when: str = ""
    family: str = "fusion"
    extra_keys: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key this metric reports."""
        if self.parts:
            return (self.name, f"{self.name}_A", f"{self.name}_B", *self.extra_keys)
        return (self.name, *self.extra_keys)


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
    family: str = "fusion",
    extra_keys: tuple[str, ...] = (),
) -> Callable[[_Function], _Function]:
    """Decorator that adds a metric function to the registry under ``name``."""

    def decorate(function: _Function) -> _Function:
        if name in _REGISTRY:
            raise ValueError(f"metric {name!r} registered twice")
        if family not in FAMILIES:
            raise ValueError(f"metric {name!r}: unknown family {family!r}")
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
            family=family,
            extra_keys=tuple(extra_keys),
        )
        return function

    return decorate


def get_metric(name: str, *, family: str | None = "fusion") -> Metric:
    """The registered metric called ``name`` of ``family`` (``None``: any); a clear error otherwise."""
    from . import _load_all

    _load_all()
    _check_family(family)
    if not isinstance(name, str):
        raise ParameterError(f"a metric name is a string, got {name!r}")
    metric = _REGISTRY.get(name)
    if metric is not None and family is not None and metric.family != family:
        runner = "compute_clinical_metrics" if metric.family == "clinical" else "compute_metrics"
        raise ParameterError(f"metric {name!r} is a {metric.family} metric: compute it with {runner}")
    if metric is None:
        known = ", ".join(m.name for m in _REGISTRY.values() if family is None or m.family == family)
        raise ParameterError(f"unknown metric {name!r} (known: {known})")
    return metric


def _check_family(family: str | None) -> None:
    if family is not None and family not in FAMILIES:
        raise ParameterError(f"unknown metric family {family!r} (use {' or '.join(FAMILIES)})")


def list_metrics(*, family: str | None = "fusion") -> list[Metric]:
    """The registered metrics of ``family`` (``None``: all): module by module in the package's
    order (the reference eleven first), each module's in registration order, whatever order
    the modules were imported in."""
    from . import _FAMILY_MODULES, _load_all

    _load_all()
    _check_family(family)
    rank = {f"{__package__}.{module}": index for index, module in enumerate(_FAMILY_MODULES)}
    chosen = [metric for metric in _REGISTRY.values() if family is None or metric.family == family]
    return sorted(chosen, key=lambda metric: rank.get(metric.function.__module__, len(rank)))


def metrics_markdown(*, family: str | None = "fusion") -> str:
    """The registry as a Markdown table (the end of ``Docs/metrics.md`` is this text for the
    default family)."""
    lines = [
        "| metric | parts | better | reference | what it measures | undefined when | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric in list_metrics(family=family):
        lines.append(
            f"| `{metric.name}` | {'A, B' if metric.parts else '–'} | "
            f"{'higher' if metric.higher_is_better else 'lower'} | {'yes' if metric.reference else ''} | "
            f"{metric.summary} | {metric.undefined_when} | {metric.citation} |"
        )
    return "\n".join(lines) + "\n"
