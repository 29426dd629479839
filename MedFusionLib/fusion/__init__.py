"""Fusion methods on torch tensors, a registry of them, and the slab-wise runner.

Import :func:`get_method` / :func:`list_methods` to discover methods, and
:func:`fuse_tensors` or :func:`fuse_arrays` to run one; :mod:`MedFusionLib.pipeline` does
the whole job on :class:`~MedFusionLib.image.Image` objects.
"""

from __future__ import annotations

import importlib

from .registry import FusionMethod, Parameter, get_method, list_methods, register_method
from .runner import fuse_arrays, fuse_tensors

_FAMILY_MODULES = ("basic", "pyramid", "wavelet", "edge_preserving", "pcnn", "cnn", "functional")
_loaded = False


def _load_all() -> None:
    """Import every family module once so that its methods register themselves."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _FAMILY_MODULES:
        importlib.import_module(f"{__name__}.{module}")


__all__ = [
    "FusionMethod",
    "Parameter",
    "fuse_arrays",
    "fuse_tensors",
    "get_method",
    "list_methods",
    "register_method",
]
