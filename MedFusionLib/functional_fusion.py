"""Colour fusion of a gray functional volume (PET, SPECT) with an anatomical one (CT, MR).

The functional image is shown through a colour table; the fused image takes its *lightness*
from a fusion rule applied to the two lightnesses and its *chroma* (CIELAB a*, b*) from the
functional image's colour in the table. This is the field's intensity-hue-saturation /
luminance-chroma fusion (Du et al., "An overview of multi-modal medical image fusion",
Neurocomputing 215:3-20, 2016, section 3.1; Daneshvar & Ghassemian, Information Fusion
11(2):114-123, 2010), done in the perceptually uniform CIELAB space (CIE 15:2004) instead of
IHS or YCbCr, so that "lightness from the anatomy" is the lightness a reader sees and the
colour differences are the ones the clinical measures of issue 13 score.

Steps (all on torch tensors, 2-D or 3-D, on any device):

1. ``L_A`` = L* of the anatomical display (gray sRGB in ``[0, 1]``); ``Lab_P`` = CIELAB of the
   functional value through the colour table (linear interpolation between table entries).
2. ``L_F`` = ``method(L_A / 100, L_P / 100, **parameters) * 100`` with any registered fusion
   method (the rules of :mod:`MedFusionLib.fusion.functional` are made for this).
3. Gamut. Chroma is impossible near L* = 0 and 100 (black and white have none), so the
   table's chroma does not fit at every lightness. ``gamut="compress"`` first maps ``L_F``
   affinely into the lightness interval where the table entry's full chroma fits (blended by
   ``room`` in ``[0, 1]``: 0 leaves ``L_F`` alone, 1 fits the chroma wherever the interval
   exists), then reduces the chroma that still does not fit; ``gamut="reduce_chroma"`` keeps
   ``L_F`` and scales ``(a*, b*)`` down to the sRGB gamut at that lightness (hue kept).
   Both use a precomputed table of the largest in-gamut chroma scale per (L*, table entry).
4. CIELAB to sRGB (IEC 61966-2-1), clipped to ``[0, 1]`` (only round-off is clipped).

Where the table's chroma is zero (e.g. black at the bottom of a heat table) and the rule leaves
the lightness alone (``uptake_lift`` below the functional background), the output is exactly the
anatomy's gray.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .colormaps import DEFAULT_FUNCTIONAL_COLORMAP, colormap_table, lab_to_srgb, srgb_to_lab
from .errors import InputError, ParameterError
from .fusion.ops import resolve_device
from .fusion.runner import fuse_tensors

DEFAULT_METHOD = "uptake_average"
"""The luminance rule used when none is given."""

DEFAULT_COLORMAP = DEFAULT_FUNCTIONAL_COLORMAP
"""The colour table used when none is given (``neutral_heat``, see :mod:`MedFusionLib.colormaps`):
gray below its knee, so tissue at the PET's background keeps the anatomy's gray."""

_RECOMMENDED_PARAMETERS = {
    "weight": 0.65,
    "background_percentile": 50.0,
    "guide_radius": 2,
    "guide_eps": 0.01,
}

RECOMMENDED: dict[str, dict[str, Any]] = {
    "CT_PET": {
        "colormap": DEFAULT_COLORMAP,
        "method": DEFAULT_METHOD,
        "parameters": dict(_RECOMMENDED_PARAMETERS),
    },
    "MR_PET": {
        "colormap": DEFAULT_COLORMAP,
        "method": DEFAULT_METHOD,
        "parameters": dict(_RECOMMENDED_PARAMETERS),
    },
}
"""Colour table, luminance rule and parameters recommended per modality pair, chosen on the 24
shared patients (``Testing/benchmark_colour_fusion.py``, ``Docs/benchmarks/sts/colour_fusion_exploration.md``):
``neutral_heat`` with ``uptake_average`` at its defaults (written out). It replaced ``bmy`` (Kovesi's
CET-L8), which scored a little lower and tinted every tissue navy blue."""

GAMUT_MODES = ("compress", "reduce_chroma")
"""How chroma that does not fit at the fused lightness is handled (see the module docstring)."""

_LIGHTNESS_STEPS = 101  # rows of the gamut table: L* = 0, 1, ..., 100
_BISECTION_STEPS = 30
_EPSILON = 6.0 / 29.0


@functools.lru_cache(maxsize=16)
def _gamut_tables(table_bytes: bytes, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a colour table: its CIELAB, the largest in-gamut chroma scale per (L*, entry) and,
    per entry, the L* interval where its full chroma fits (``[lo, hi]``; ``lo == hi`` at the
    best lightness when it fits nowhere)."""
    table = np.frombuffer(table_bytes, dtype=np.float64).reshape(rows, 3)
    lab = srgb_to_lab(table)
    lightness = np.linspace(0.0, 100.0, _LIGHTNESS_STEPS)
    low, high = np.zeros((_LIGHTNESS_STEPS, rows)), np.ones((_LIGHTNESS_STEPS, rows))
    chroma = lab[None, :, 1:]
    for _ in range(_BISECTION_STEPS):
        scale = 0.5 * (low + high)
        trial = np.concatenate(
            [np.broadcast_to(lightness[:, None, None], scale.shape + (1,)), scale[..., None] * chroma],
            axis=-1,
        )
        rgb = lab_to_srgb(trial, clip=False)
        inside = np.all((rgb >= -1e-9) & (rgb <= 1.0 + 1e-9), axis=-1)
        low, high = np.where(inside, scale, low), np.where(inside, high, scale)
    # in-gamut scale at the grid rows; between rows the bilinear value may overshoot a little
    scale = np.clip(low - 1e-3, 0.0, 1.0)
    scale[:, np.hypot(lab[:, 1], lab[:, 2]) < 1e-6] = 1.0
    fits = scale >= 1.0 - 1e-3
    lo = np.empty(rows)
    hi = np.empty(rows)
    for entry in range(rows):
        where = np.flatnonzero(fits[:, entry])
        if where.size:
            lo[entry], hi[entry] = lightness[where[0]], lightness[where[-1]]
        else:
            lo[entry] = hi[entry] = lightness[int(np.argmax(scale[:, entry]))]
    return lab, scale, np.stack([lo, hi], axis=-1)


def _interpolate_entries(values: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` (``N x C``) at fractional positions ``values * (N - 1)``, linearly interpolated."""
    rows = table.shape[0]
    position = values.clamp(0.0, 1.0) * (rows - 1)
    low = position.floor().long().clamp_(max=rows - 2)
    weight = (position - low).unsqueeze(-1)
    return table[low] * (1.0 - weight) + table[low + 1] * weight


def _bilinear(grid: torch.Tensor, lightness: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``grid`` (``L-rows x entries``) at L* ``lightness`` and table position ``values``, bilinearly."""
    rows, entries = grid.shape
    x = lightness.clamp(0.0, 100.0) * ((rows - 1) / 100.0)
    y = values.clamp(0.0, 1.0) * (entries - 1)
    x0 = x.floor().long().clamp_(max=rows - 2)
    y0 = y.floor().long().clamp_(max=entries - 2)
    fx, fy = x - x0, y - y0
    flat = grid.reshape(-1)
    base = x0 * entries + y0
    top = flat[base] * (1.0 - fy) + flat[base + 1] * fy
    bottom = flat[base + entries] * (1.0 - fy) + flat[base + entries + 1] * fy
    return top * (1.0 - fx) + bottom * fx


def gray_lightness(gray: torch.Tensor) -> torch.Tensor:
    """CIE L* of sRGB gray values in ``[0, 1]`` (IEC 61966-2-1 decoding, CIE 15:2004 L*)."""
    linear = torch.where(gray <= 0.04045, gray / 12.92, ((gray.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)
    f = torch.where(
        linear > _EPSILON**3,
        linear.clamp(min=_EPSILON**3) ** (1.0 / 3.0),
        linear / (3 * _EPSILON**2) + 4 / 29,
    )
    return 116.0 * f - 16.0


def lab_to_rgb_tensor(lightness: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sRGB in ``[0, 1]`` (trailing axis of 3) of CIELAB ``(L*, a*, b*)`` (D65), clipped."""
    from .colormaps import D65_WHITE, XYZ_TO_SRGB

    fy = (lightness + 16.0) / 116.0
    f = torch.stack([fy + a / 500.0, fy, fy - b / 200.0], dim=-1)
    xyz = torch.where(f > _EPSILON, f * f * f, 3 * _EPSILON**2 * (f - 4 / 29))
    xyz = xyz * torch.as_tensor(D65_WHITE, dtype=f.dtype, device=f.device)
    linear = (xyz @ torch.as_tensor(XYZ_TO_SRGB.T, dtype=f.dtype, device=f.device)).clamp_(0.0, 1.0)
    return torch.where(
        linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055
    ).clamp_(0.0, 1.0)


def _check_unit_array(values: Any, *, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "biuf" or array.dtype == bool:
        raise InputError(f"{name} must hold real numbers in [0, 1], got {array.dtype}")
    if array.ndim not in (2, 3):
        raise InputError(f"{name} must be 2-D (y, x) or 3-D (z, y, x), got shape {array.shape}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite values")
    if array.size and (array.min() < -1e-6 or array.max() > 1.0 + 1e-6):
        raise InputError(f"{name} has values in [{array.min():g}, {array.max():g}]; expected [0, 1]")
    return np.clip(array, 0.0, 1.0)


def fuse_functional(
    anatomical: np.ndarray,
    functional: np.ndarray,
    *,
    colormap: str | np.ndarray = DEFAULT_COLORMAP,
    method: str = DEFAULT_METHOD,
    parameters: Mapping[str, Any] | None = None,
    gamut: str = "compress",
    room: float = 0.0,
    device: str | torch.device = "cpu",
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Colour-fuse an anatomical display with a functional image through a colour table.

    Args:
        anatomical: ``A`` as displayed, gray sRGB in ``[0, 1]`` (CT through its window, MR through
            its percentiles), 2-D ``(y, x)`` or 3-D ``(z, y, x)``.
        functional: ``P`` normalised to ``[0, 1]`` (e.g. its 0.5-99.5 percentiles) on ``A``'s grid.
        colormap: a table name of :mod:`MedFusionLib.colormaps` or an ``N x 3`` sRGB table.
        method: the registered fusion method that fuses the two lightnesses (L* / 100).
        parameters: that method's parameters (defaults otherwise).
        gamut: ``"compress"`` or ``"reduce_chroma"`` (see the module docstring).
        room: for ``"compress"``, how far the lightness is moved into the range where the table's
            chroma fits (0: not at all, chroma is reduced instead; 1: fully).
        device: torch device for the computation.
        spacing: voxel size (unused by the current rules; accepted so callers can pass it).

    Returns:
        float32 sRGB of shape ``anatomical.shape + (3,)`` in ``[0, 1]``.

    Raises:
        InputError: shapes differ, not 2-D/3-D, NaN, values outside ``[0, 1]``.
        ParameterError: unknown method, table, gamut mode; ``room`` outside ``[0, 1]``; bad parameters.
    """
    del spacing
    if gamut not in GAMUT_MODES:
        raise ParameterError(f"unknown gamut mode {gamut!r} (use {' or '.join(GAMUT_MODES)})")
    if not isinstance(room, int | float) or isinstance(room, bool) or not 0.0 <= float(room) <= 1.0:
        raise ParameterError(f"room must be a number in [0, 1], got {room!r}")
    a = _check_unit_array(anatomical, name="the anatomical image")
    p = _check_unit_array(functional, name="the functional image")
    if a.shape != p.shape:
        raise InputError(f"the functional image has shape {p.shape} but the anatomical one {a.shape}")
    table = np.ascontiguousarray(colormap_table(colormap), dtype=np.float64)
    table_lab, scale_grid, fit_range = _gamut_tables(table.tobytes(), table.shape[0])
    dev = resolve_device(device)

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=dev)

    with torch.no_grad():
        a_t, p_t = tensor(a), tensor(p)
        lightness_a = gray_lightness(a_t)
        lab_p = _interpolate_entries(p_t, tensor(table_lab))
        lightness = (
            fuse_tensors(
                (lightness_a / 100.0).clamp_(0.0, 1.0),
                (lab_p[..., 0] / 100.0).clamp_(0.0, 1.0),
                method=method,
                parameters=parameters,
            )
            * 100.0
        )
        del lightness_a
        if gamut == "compress" and room > 0.0:
            bounds = _interpolate_entries(p_t, tensor(fit_range))
            low = bounds[..., 0] * room
            high = 100.0 - (100.0 - bounds[..., 1]) * room
            lightness = low + (high - low) * (lightness / 100.0)
        scale = _bilinear(tensor(scale_grid), lightness, p_t)
        rgb = lab_to_rgb_tensor(lightness, lab_p[..., 1] * scale, lab_p[..., 2] * scale)
        return rgb.cpu().numpy().astype(np.float32, copy=False)
