"""Fusion quality metrics in 2-D and 3-D, reproducing the field's reference implementation.

:func:`compute_metrics` scores a fused image against its two sources; :func:`list_metrics`
and :func:`get_metric` describe the registered metrics. ``Docs/metrics.md`` documents each
metric's definition, conventions, 3-D form and slice-wise mode. The clinical measures of a
lesion and the anatomy (:mod:`.clinical`) form their own family, computed by
:func:`~MedFusionLib.metrics.clinical.compute_clinical_metrics`.
"""

from __future__ import annotations

import importlib

from .registry import Metric, get_metric, list_metrics, register_metric

_FAMILY_MODULES = ("reference", "information", "structural", "perceptual", "clinical")
_loaded = False


def _load_all() -> None:
    """Import every metric module once so that its metrics register themselves."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _FAMILY_MODULES:
        importlib.import_module(f"{__name__}.{module}")


__all__ = ["Metric", "get_metric", "list_metrics", "register_metric"]
