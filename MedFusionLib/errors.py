"""Exceptions raised by the engine.

Every error a user can cause derives from :class:`MedFusionError`; its message is one
line that names the culprit (a file, a method or a parameter). The command line prints
that line and exits with status 2.
"""

from __future__ import annotations


class MedFusionError(Exception):
    """Base class for errors caused by the input (files, images, options)."""


class InputError(MedFusionError):
    """A file or image cannot be used: missing, unreadable, wrong shape or content."""


class ParameterError(MedFusionError):
    """An unknown method, an unknown parameter or a value out of its range."""


class GeometryError(MedFusionError):
    """Two images cannot be put on one grid (for example they do not overlap)."""


class RegistrationError(MedFusionError):
    """Registration failed: no improvement of the metric, or the result leaves the field of view."""


class WeightsError(MedFusionError):
    """Network weights are missing, altered (SHA-256 mismatch) or not loadable."""
