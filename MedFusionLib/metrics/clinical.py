"""Clinical fusion measures on a lesion: how much of the PET's tumour and of the anatomy a fused image keeps.

Two measures of issue 13, computed on the anatomical image's grid. ``A`` is the anatomical
image (CT in HU, or MR), ``P`` the functional image (PET in SUV, or SPECT) resampled onto
``A``, ``F`` the fused output (gray or RGB in ``[0, 1]``), and the lesion a mask on that grid.

Displays, regions
-----------------
* ``A`` shown alone: gray; CT through the soft-tissue window (level 40 HU, width 400 HU, so
  ``[-160, 240]`` HU maps to ``[0, 1]``), MR through its own 0.5 and 99.5 percentiles.
* ``P`` shown alone: ``P`` mapped linearly from its 0.5 and 99.5 percentiles over ``A``'s grid
  (its field of view) to ``[0, 1]``, clipped, then through the same colour table as ``F``
  (gray when ``F`` is gray).
* Body: CT above -400 HU; MR above its own 20th percentile.
* Lesion: the mask. Shell: body voxels whose in-plane distance from the mask is in
  ``(3, 10]`` mm. In-plane means within the ``(y, x)`` plane of each slice (the last two
  array axes), between voxel centres, with the in-plane spacing; a slice without lesion has
  no shell. The band is computed exactly by dilation with the in-plane discs of radius 3 and
  10 mm (float64 tests of ``(dy sy)^2 + (dx sx)^2 <= r^2``): the same voxels as thresholding
  an exact Euclidean distance transform of each slice (``scipy.ndimage.distance_transform_edt``
  with the pixel spacing, which the tests compare against), without needing SciPy.
* ``F``'s gray values are sRGB-encoded gray (``R = G = B = F``); ``L*`` of a gray voxel is that
  of this sRGB colour.

The measures
------------
* ``conspicuity_kept = Delta E_F / Delta E_P``: ``Delta E`` is the CIE 1976 colour
  difference Delta E*ab (CIE 15:2004; sRGB per IEC 61966-2-1, D65) between the mean
  CIELAB colour of the lesion and the mean CIELAB colour of the shell; ``_F`` for ``F``,
  ``_P`` for ``P`` shown alone. Means are taken over L*a*b* values (not over RGB). 1.0: the
  tumour stands out as much as in the PET alone. Reported parts: ``delta_E_F``, ``delta_E_P``.
* ``anatomy_kept``: the Pearson correlation, over the body's voxels, of ``|grad L*|`` of
  ``F`` with ``|grad L*|`` of ``A`` shown alone. Gradients are central differences in mm
  (``numpy.gradient`` with the voxel spacing; one-sided on the border). In 3-D the gradient
  is the full 3-D one by default: a Pearson correlation does not change when a gradient is
  scaled, so "in mm" only matters when axes of different spacing are combined, which with
  isotropic in-plane pixels happens only through the slice axis (3.27 mm against 0.98 mm on
  the shared patients). ``gradient="in_plane"`` uses the two in-plane axes only (what a
  reader sees on each slice); it is an option, not the definition.

Inputs
------
Arrays (or :class:`~MedFusionLib.image.Image` objects, whose spacing and modality are then
used by default) of one 2-D ``(y, x)`` or 3-D ``(z, y, x)`` shape; ``F`` may add a trailing
RGB axis of 3. ``spacing`` is in ITK's order ``(x, y[, z])`` in mm, as
:attr:`Image.spacing <MedFusionLib.image.Image.spacing>` gives it.

These metrics need the raw ``A``, ``P`` and a mask, unlike the grey-level metrics that
:func:`~MedFusionLib.metrics.compute.compute_metrics` runs: they form the ``"clinical"``
family of the registry, computed by :func:`compute_clinical_metrics`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..colormaps import apply_colormap, colormap_table, get_colormap, srgb_lightness, srgb_to_lab
from ..errors import InputError, ParameterError
from ..image import Image
from .compute import MetricReport
from .registry import get_metric, list_metrics, register_metric

CT_DISPLAY_WINDOW = (40.0, 400.0)
"""``(level, width)`` in HU of the CT shown alone: the soft-tissue window."""

MR_DISPLAY_PERCENTILES = (0.5, 99.5)
"""Percentiles of the MR mapped to black and white when it is shown alone."""

FUNCTIONAL_DISPLAY_PERCENTILES = (0.5, 99.5)
"""Percentiles of ``P`` over ``A``'s grid mapped to 0 and 1 when it is shown alone."""

CT_BODY_HU = -400.0
"""CT voxels above this HU are body."""

MR_BODY_PERCENTILE = 20.0
"""MR voxels above this percentile of the MR are body."""

SHELL_MM = (3.0, 10.0)
"""The shell holds body voxels whose in-plane distance from the lesion is in ``(inner, outer]`` mm."""

ANATOMICAL_MODALITIES = ("CT", "MR")
GRADIENTS = ("3d", "in_plane")
FAMILY = "clinical"

_CITATION = (
    "MedFusion issue 13 (this project); colour difference: CIE 1976 Delta E*ab, CIE 15:2004 "
    "Colorimetry; sRGB: IEC 61966-2-1:1999"
)
_RANGE_TOLERANCE = 1e-6


# --- displays and regions -----------------------------------------------------------------


def _window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` mapped linearly from ``[low, high]`` to ``[0, 1]`` and clipped (all 0 when flat)."""
    values = np.asarray(values, dtype=np.float64)
    if not high > low:
        return np.zeros(values.shape)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def display_anatomical(a: np.ndarray, modality: str) -> np.ndarray:
    """``A`` shown alone as gray float64 ``[0, 1]``: CT soft-tissue window, MR 0.5-99.5 percentiles.

    Raises:
        ParameterError: a modality other than ``"CT"`` or ``"MR"``.
    """
    modality = _check_modality(modality)
    if modality == "CT":
        level, width = CT_DISPLAY_WINDOW
        return _window(a, level - width / 2.0, level + width / 2.0)
    low, high = np.percentile(a, MR_DISPLAY_PERCENTILES)
    return _window(a, float(low), float(high))


def normalise_functional(p: np.ndarray) -> np.ndarray:
    """``P`` mapped from its 0.5 and 99.5 percentiles (over all its voxels) to ``[0, 1]``, clipped."""
    low, high = np.percentile(p, FUNCTIONAL_DISPLAY_PERCENTILES)
    return _window(p, float(low), float(high))


def display_functional(p: np.ndarray, *, colormap: str | np.ndarray | None = None) -> np.ndarray:
    """``P`` shown alone: :func:`normalise_functional`, then through ``colormap``.

    Returns:
        float64 gray ``[0, 1]`` for ``colormap=None`` (or ``"gray"``), otherwise sRGB with a
        trailing axis of 3.
    """
    normalised = normalise_functional(p)
    return normalised if _is_gray(colormap) else apply_colormap(normalised, colormap)


def body_mask(a: np.ndarray, modality: str) -> np.ndarray:
    """The body: CT above -400 HU, MR above its own 20th percentile."""
    modality = _check_modality(modality)
    a = np.asarray(a)
    if modality == "CT":
        return a > CT_BODY_HU
    return a > np.percentile(a, MR_BODY_PERCENTILE)


def _largest_offset(limit_sq: float, step: float) -> int:
    """The largest integer ``n >= 0`` with ``(n step)^2 <= limit_sq`` (``-1`` when ``limit_sq < 0``)."""
    if limit_sq < 0.0:
        return -1
    n = int(math.floor(math.sqrt(limit_sq) / step)) + 1
    while n >= 0 and (n * step) ** 2 > limit_sq:
        n -= 1
    return n


def _dilate_last_axis(mask: np.ndarray, half_width: int) -> np.ndarray:
    """Boolean dilation along the last axis by ``half_width`` samples on each side (a running sum)."""
    if half_width == 0:
        return mask.copy()
    length = mask.shape[-1]
    sums = np.zeros(mask.shape[:-1] + (length + 2 * half_width + 1,), dtype=np.int32)
    np.cumsum(mask, axis=-1, out=sums[..., half_width + 1 : half_width + 1 + length])
    sums[..., half_width + 1 + length :] = sums[..., half_width + length, None]
    # sums[..., k] = number of mask samples at indices < k - half_width; window [x - w, x + w]:
    return (sums[..., 2 * half_width + 1 :] - sums[..., :length]) > 0


def within_in_plane(mask: np.ndarray, radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Voxels whose in-plane Euclidean distance from the mask is at most ``radius_mm``.

    The distance is measured within each ``(y, x)`` plane (the last two axes) between voxel
    centres, with the pixel size ``spacing_yx`` (mm, array order). Exact: the union over the
    in-plane offsets ``(dy, dx)`` with ``(dy sy)^2 + (dx sx)^2 <= r^2`` of the shifted mask,
    row by row (a dilation along ``x`` per ``dy``).
    """
    mask = np.asarray(mask, dtype=bool)
    sy, sx = (float(s) for s in spacing_yx)
    radius_sq = float(radius_mm) ** 2
    rows, columns = _largest_offset(radius_sq, sy), _largest_offset(radius_sq, sx)
    result = np.zeros_like(mask)
    if not mask.any() or rows < 0:
        return result
    # Work on the box that can be reached: slices with lesion, rows and columns within reach.
    box = []
    for axis, reach in zip(range(mask.ndim), [0] * (mask.ndim - 2) + [rows, columns], strict=True):
        present = np.flatnonzero(mask.any(axis=tuple(i for i in range(mask.ndim) if i != axis)))
        box.append(slice(max(int(present[0]) - reach, 0), int(present[-1]) + reach + 1))
    result[tuple(box)] = _within_in_plane_box(mask[tuple(box)], radius_sq, sy, sx, rows)
    return result


def _within_in_plane_box(mask: np.ndarray, radius_sq: float, sy: float, sx: float, rows: int) -> np.ndarray:
    height = mask.shape[-2]
    out = np.zeros_like(mask)
    dilated_by_width: dict[int, np.ndarray] = {}
    for dy in range(-rows, rows + 1):
        half_width = _largest_offset(radius_sq - (dy * sy) ** 2, sx)
        if half_width < 0 or abs(dy) >= height:
            continue
        if half_width not in dilated_by_width:
            dilated_by_width[half_width] = _dilate_last_axis(mask, half_width)
        dilated = dilated_by_width[half_width]
        # out[y] |= dilated[y + dy]
        if dy >= 0:
            out[..., : height - dy, :] |= dilated[..., dy:, :]
        else:
            out[..., -dy:, :] |= dilated[..., : height + dy, :]
    return out


def shell_mask(
    lesion: np.ndarray,
    body: np.ndarray,
    spacing_yx: tuple[float, float],
    *,
    shell_mm: tuple[float, float] = SHELL_MM,
) -> np.ndarray:
    """Body voxels whose in-plane distance from the lesion is in ``(inner, outer]`` mm."""
    inner, outer = shell_mm
    return body & within_in_plane(lesion, outer, spacing_yx) & ~within_in_plane(lesion, inner, spacing_yx)


def gradient_magnitude(values: np.ndarray, spacing: Sequence[float], *, axes: Sequence[int]) -> np.ndarray:
    """``|grad values|`` in units per mm over ``axes``: central differences (one-sided on the
    border, ``numpy.gradient``) with ``spacing`` (mm, array order, one per axis of ``values``).
    Axes with a single sample contribute nothing."""
    squared = np.zeros(values.shape)
    for axis in axes:
        if values.shape[axis] > 1:
            squared += np.gradient(values, float(spacing[axis]), axis=axis) ** 2
    return np.sqrt(squared)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-length samples (float64); NaN when either is constant or empty."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size < 2:
        return math.nan
    x = x - x.mean()
    y = y - y.mean()
    denominator = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    return float(np.dot(x, y)) / denominator if denominator > 0.0 else math.nan


# --- inputs -------------------------------------------------------------------------------


def _is_gray(colormap: str | np.ndarray | None) -> bool:
    if colormap is None:
        return True
    if isinstance(colormap, str):
        return np.array_equal(get_colormap(colormap), get_colormap("gray"))
    return False


def _check_modality(modality: Any) -> str:
    if not isinstance(modality, str) or modality not in ANATOMICAL_MODALITIES:
        raise ParameterError(f"the anatomical image's modality must be CT or MR, got {modality!r}")
    return modality


def _as_array(value: Any, *, name: str) -> np.ndarray:
    try:
        array = value.array if isinstance(value, Image) else np.asarray(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} is not an array ({type(value).__name__})") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name} has {array.dtype} values: expected real numbers")
    if array.size == 0:
        raise InputError(f"{name} is empty")
    return array


def _check_spacing(spacing: Any, *, ndim: int) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ParameterError(f"spacing must give {ndim} sizes in mm, got {spacing!r}") from None
    if len(values) != ndim or not all(math.isfinite(s) and s > 0.0 for s in values):
        raise ParameterError(f"spacing must give {ndim} positive sizes in mm (x, y[, z]), got {spacing!r}")
    return values


def _chosen_metrics(metrics: Any) -> list[Any]:
    if metrics is None:
        return list_metrics(family=FAMILY)
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not metrics:
        raise ParameterError(f"metrics must be a non-empty list of clinical metric names, got {metrics!r}")
    return [get_metric(name, family=FAMILY) for name in metrics]


def _fused_unit(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if array.dtype.kind not in "fiu":
        raise InputError(f"F has {array.dtype} values; expected floats in [0, 1] or uint8")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise InputError("F contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise InputError(f"F has values in [{low:g}, {high:g}]; the clinical metrics take F in [0, 1]")
    return np.clip(values, 0.0, 1.0)


class ClinicalScene:
    """Everything the clinical metrics share, computed once and on demand.

    Build it with :func:`compute_clinical_metrics` (or directly, with checked inputs); each
    clinical metric function takes one and returns ``{key: value}``. ``reasons`` collects a
    one-line reason for every key that comes out NaN.
    """

    def __init__(
        self,
        a: np.ndarray,
        p: np.ndarray,
        fused: np.ndarray,
        *,
        lesion: np.ndarray,
        modality_a: str,
        spacing_zyx: tuple[float, ...],
        colormap: str | np.ndarray | None,
        fused_is_rgb: bool,
        gradient: str = "3d",
    ) -> None:
        self.a = a
        self.p = p
        self.fused = fused
        self.lesion = lesion
        self.modality_a = modality_a
        self.spacing_zyx = spacing_zyx
        self.fused_is_rgb = fused_is_rgb
        self.colormap = colormap if fused_is_rgb else None
        self.gradient = gradient
        self.reasons: dict[str, str] = {}

    @functools.cached_property
    def display_a(self) -> np.ndarray:
        """``A`` shown alone, gray ``[0, 1]``."""
        return display_anatomical(self.a, self.modality_a)

    @functools.cached_property
    def body(self) -> np.ndarray:
        return body_mask(self.a, self.modality_a)

    @functools.cached_property
    def shell(self) -> np.ndarray:
        return shell_mask(self.lesion, self.body, self.spacing_zyx[-2:])

    @functools.cached_property
    def normalised_p(self) -> np.ndarray:
        return normalise_functional(self.p)

    def lab_of_fused(self, where: np.ndarray) -> np.ndarray:
        """CIELAB of ``F`` at the voxels ``where`` (``n x 3``)."""
        if self.fused_is_rgb:
            return srgb_to_lab(self.fused[where])
        return _gray_lab(self.fused[where])

    def lab_of_p(self, where: np.ndarray) -> np.ndarray:
        """CIELAB of ``P`` shown alone at the voxels ``where`` (``n x 3``)."""
        values = self.normalised_p[where]
        if self.colormap is None:
            return _gray_lab(values)
        return srgb_to_lab(apply_colormap(values, self.colormap))

    def lightness_fused(self) -> np.ndarray:
        return srgb_lightness(self.fused, rgb=self.fused_is_rgb)

    @property
    def gradient_axes(self) -> tuple[int, ...]:
        ndim = self.a.ndim
        return tuple(range(ndim)) if self.gradient == "3d" else (ndim - 2, ndim - 1)


def _gray_lab(gray: np.ndarray) -> np.ndarray:
    lab = np.zeros(gray.shape + (3,))
    lab[..., 0] = srgb_lightness(gray, rgb=False)
    return lab


def _mean_difference(lab_lesion: np.ndarray, lab_shell: np.ndarray) -> float:
    return float(np.linalg.norm(lab_lesion.mean(axis=0) - lab_shell.mean(axis=0)))


# --- the metrics --------------------------------------------------------------------------


@register_metric(
    "conspicuity_kept",
    family=FAMILY,
    parts=False,
    extra_keys=("delta_E_F", "delta_E_P"),
    citation=_CITATION,
    summary=(
        "CIE 1976 Delta E*ab between the mean CIELAB colour of the lesion and of its shell "
        "(body voxels at in-plane distance (3, 10] mm from the lesion) in F, divided by the same "
        "for P shown alone (0.5-99.5 percentiles, through F's colour table; gray when F is gray); "
        "parts delta_E_F and delta_E_P. 1: the lesion stands out as much as in P"
    ),
    undefined_when="the lesion or its shell is empty, or the lesion does not differ from its shell in P shown alone",
)
def conspicuity_kept(scene: ClinicalScene) -> dict[str, float]:
    """Lesion conspicuity in ``F`` relative to ``P`` shown alone (see the module docstring)."""
    lesion, shell = scene.lesion, scene.shell
    keys = ("conspicuity_kept", "delta_E_F", "delta_E_P")
    if not lesion.any() or not shell.any():
        reason = "the lesion mask is empty" if not lesion.any() else "the lesion's shell holds no body voxel"
        scene.reasons.update(dict.fromkeys(keys, reason))
        return dict.fromkeys(keys, math.nan)
    delta_f = _mean_difference(scene.lab_of_fused(lesion), scene.lab_of_fused(shell))
    delta_p = _mean_difference(scene.lab_of_p(lesion), scene.lab_of_p(shell))
    ratio = delta_f / delta_p if delta_p > 0.0 else math.nan
    if delta_p == 0.0:
        scene.reasons["conspicuity_kept"] = "the lesion does not differ from its shell in P shown alone"
    return {"conspicuity_kept": ratio, "delta_E_F": delta_f, "delta_E_P": delta_p}


@register_metric(
    "anatomy_kept",
    family=FAMILY,
    parts=False,
    citation=_CITATION,
    summary=(
        "Pearson correlation inside the body (CT > -400 HU; MR above its 20th percentile) of |grad L*| "
        "of F with |grad L*| of A shown alone (CT level 40 width 400 HU, MR 0.5-99.5 percentiles); "
        "central differences in mm, 3-D gradient on volumes. 1: every edge of A where it was, as strong "
        "relative to the others"
    ),
    undefined_when="the body holds fewer than 2 voxels, or either gradient magnitude is constant over it",
)
def anatomy_kept(scene: ClinicalScene) -> dict[str, float]:
    """Correlation of the edges of ``F`` with those of ``A`` shown alone (see the module docstring)."""
    body = scene.body
    if int(body.sum()) < 2:
        scene.reasons["anatomy_kept"] = "the body holds fewer than 2 voxels"
        return {"anatomy_kept": math.nan}
    axes = scene.gradient_axes
    edges_a = gradient_magnitude(srgb_lightness(scene.display_a, rgb=False), scene.spacing_zyx, axes=axes)[
        body
    ]
    edges_f = gradient_magnitude(scene.lightness_fused(), scene.spacing_zyx, axes=axes)[body]
    value = pearson(edges_f, edges_a)
    if math.isnan(value):
        scene.reasons["anatomy_kept"] = "the gradient magnitude of F or of A is constant over the body"
    return {"anatomy_kept": value}


def compute_clinical_metrics(
    a: np.ndarray | Image,
    p: np.ndarray | Image,
    fused: np.ndarray | Image,
    *,
    mask: np.ndarray | Image,
    modality_a: str | None = None,
    colormap: str | np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    metrics: Sequence[str] | None = None,
    gradient: str = "3d",
) -> MetricReport:
    """Score a fused image for the lesion and the anatomy it keeps (see the module docstring).

    Args:
        a: the anatomical image, raw (CT in HU, MR as stored), 2-D ``(y, x)`` or 3-D ``(z, y, x)``.
        p: the functional image (PET in SUV, SPECT counts) resampled onto ``a``'s grid.
        fused: ``F``, gray of ``a``'s shape or RGB (``a``'s shape plus a trailing 3), floats in
            ``[0, 1]`` (uint8 is divided by 255).
        mask: the lesion, nonzero inside, of ``a``'s shape.
        modality_a: ``"CT"`` or ``"MR"``; default: ``a.modality`` when ``a`` is an Image.
        colormap: the colour table (name or ``N x 3`` array) through which ``F`` shows ``P``;
            required when ``F`` is RGB, ignored when it is gray (``P`` alone is then gray).
        spacing: voxel size in mm in ITK order ``(x, y[, z])``; default: ``a.spacing`` when
            ``a`` is an Image.
        metrics: names of clinical metrics to compute (default: both).
        gradient: ``"3d"`` (the definition) or ``"in_plane"`` for ``anatomy_kept`` on volumes.

    Returns:
        A :class:`~MedFusionLib.metrics.compute.MetricReport` with ``conspicuity_kept``,
        ``delta_E_F``, ``delta_E_P`` and ``anatomy_kept``; ``notes`` says why any is NaN.

    Raises:
        InputError: shapes differ, wrong dimensionality, values out of range, NaN.
        ParameterError: unknown modality, metric, colour table or gradient; no spacing;
            RGB ``F`` without a colour table.

    Example:
        >>> report = compute_clinical_metrics(ct, pet_on_ct, fused, mask=gtv, modality_a="CT",
        ...                                   spacing=ct_image.spacing)  # doctest: +SKIP
        >>> report.values["conspicuity_kept"], report.values["anatomy_kept"]  # doctest: +SKIP
    """
    start = time.perf_counter()
    if modality_a is None and isinstance(a, Image):
        modality_a = a.modality
    modality_a = _check_modality(modality_a)
    if spacing is None:
        if not isinstance(a, Image):
            raise ParameterError("give the voxel spacing (mm, x, y[, z]) or pass A as an Image")
        spacing = a.spacing
    if not isinstance(gradient, str) or gradient not in GRADIENTS:
        raise ParameterError(f"unknown gradient {gradient!r} (use {' or '.join(GRADIENTS)})")
    chosen = _chosen_metrics(metrics)

    array_a = _as_array(a, name="A")
    if array_a.ndim not in (2, 3):
        raise InputError(f"A must be a 2-D image or a 3-D volume, got shape {array_a.shape}")
    spacing = _check_spacing(spacing, ndim=array_a.ndim)
    array_p = _as_array(p, name="P")
    array_f = _as_array(fused, name="F")
    lesion = _as_array(mask, name="the lesion mask") != 0
    for name, array in (("P", array_p), ("the lesion mask", lesion)):
        if array.shape != array_a.shape:
            raise InputError(
                f"{name} has shape {array.shape} but A has {array_a.shape}; resample it onto A's grid first"
            )
    if array_f.shape == array_a.shape:
        fused_is_rgb = False
    elif array_f.shape == array_a.shape + (3,):
        fused_is_rgb = True
    else:
        raise InputError(
            f"F has shape {array_f.shape}; expected {array_a.shape} (gray) or {array_a.shape + (3,)}"
        )
    if fused_is_rgb and colormap is None:
        raise ParameterError("F is RGB: give the colour table through which it shows P (colormap=...)")
    if fused_is_rgb:
        colormap_table(colormap)  # an unknown name or a malformed table fails here, before any work
    for name, array in (("A", array_a), ("P", array_p)):
        if not np.isfinite(array).all():
            raise InputError(f"{name} contains NaN or infinite values")

    scene = ClinicalScene(
        array_a,
        array_p,
        _fused_unit(array_f),
        lesion=lesion,
        modality_a=modality_a,
        spacing_zyx=tuple(reversed(spacing)),
        colormap=colormap,
        fused_is_rgb=fused_is_rgb,
        gradient=gradient,
    )
    values: dict[str, float] = {}
    notes: dict[str, str] = {}
    for metric in chosen:
        results = metric.function(scene)
        for key in metric.keys:
            values[key] = float(results[key])
            if math.isnan(values[key]):
                notes[key] = scene.reasons.get(key, f"undefined: {metric.undefined_when}")
    return MetricReport(
        values=values,
        notes=notes,
        mode="image" if array_a.ndim == 2 else "volume",
        seconds=time.perf_counter() - start,
    )
