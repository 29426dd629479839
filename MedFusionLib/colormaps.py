"""Colour tables for functional images, and the sRGB <-> CIELAB conversions that judge them.

Colour tables
-------------
Every table is a ``256 x 3`` float64 array of sRGB values in ``[0, 1]``; entry ``i`` is the
colour of the normalised value ``i / 255``. :func:`apply_colormap` maps values in ``[0, 1]``
through a table (linear interpolation between entries by default).

==============  ==========================================================================
``neutral_heat`` gray up to a knee, then violet-red-orange-yellow, uniform in CIE 1976 Delta
                E*ab with lightness rising monotonically (this project, generated from a formula,
                see :func:`lab_path_table`); :data:`DEFAULT_FUNCTIONAL_COLORMAP` for PET and
                SPECT: fused with CT or MR, tissue at the PET's background level stays gray
``inferno``     perceptually uniform black-purple-orange-yellow heat table (BIDS, CC0)
``magma``       perceptually uniform black-purple-pink-cream table (BIDS, CC0)
``pet_heat``    3D Slicer's ``PET-Heat`` (``vtkMRMLPETProceduralColorNode``), what the
                clinic sees in Slicer
``bmy``         Kovesi's CET-L8 linear blue-magenta-yellow table (lightness 10 to 95, large hue
                change; CC BY 4.0); scores well in colour fusion but tints all anatomy navy blue
``hot``         the classic black-red-yellow-white ``hot`` table (MATLAB, matplotlib)
``gray``        the identity ramp
==============  ==========================================================================

Names are matched case-insensitively, with ``-`` and spaces read as ``_`` (so Slicer's own
name ``PET-Heat`` works) and ``grey`` as ``gray``.

CIELAB
------
:func:`srgb_to_lab` and :func:`lab_to_srgb` implement the sRGB colour space of IEC
61966-2-1:1999 (its transfer function; its primaries and D65 white by chromaticity, the
RGB-to-XYZ matrix derived from them in full precision) and CIE 1976 L*a*b* as defined in
CIE 15:2004 (section 8.2.1), with the reference white the sRGB white, so that sRGB white is
exactly ``L* = 100, a* = b* = 0``.
:func:`delta_e_76` is the CIE 1976 colour difference Delta E*ab (CIE 15:2004, 8.2.1.3).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, ParameterError

TABLE_SIZE = 256
"""Entries per colour table."""

DEFAULT_FUNCTIONAL_COLORMAP = "neutral_heat"
"""The perceptual heat table used for PET and SPECT when none is asked for (gray at the background)."""

_DATA = Path(__file__).parent / "data" / "colormaps_bids.json"
_DATA_CET = Path(__file__).parent / "data" / "colormaps_cet.json"

# --- sRGB (IEC 61966-2-1:1999) and CIELAB (CIE 15:2004) --------------------------------

SRGB_PRIMARIES_XY = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
"""CIE 1931 chromaticities ``(x, y)`` of the sRGB red, green and blue primaries (IEC 61966-2-1:1999, Table 1)."""

D65_XY = (0.3127, 0.3290)
"""CIE 1931 chromaticity of the sRGB reference white, D65 (IEC 61966-2-1:1999, Table 1)."""


def _rgb_to_xyz_matrix() -> tuple[np.ndarray, np.ndarray]:
    """Linear RGB to XYZ from the primaries' and white's chromaticities (SMPTE RP 177-1993, 3.3).

    The 4-decimal matrix printed in IEC 61966-2-1 is this one rounded; deriving it in full
    precision puts sRGB red at the usual reference ``L* = 53.24, a* = 80.09, b* = 67.20``.
    """
    primaries = np.array([[x / y, 1.0, (1.0 - x - y) / y] for x, y in SRGB_PRIMARIES_XY]).T
    x, y = D65_XY
    white = np.array([x / y, 1.0, (1.0 - x - y) / y])
    return primaries * np.linalg.solve(primaries, white), white


SRGB_TO_XYZ, D65_WHITE = _rgb_to_xyz_matrix()
"""Linear sRGB to CIE XYZ (Y of white = 1), and the reference white ``(Xn, Yn, Zn) =
(0.95046, 1, 1.08906)``, which is sRGB white ``SRGB_TO_XYZ @ (1, 1, 1)``."""

XYZ_TO_SRGB = np.linalg.inv(SRGB_TO_XYZ)
"""Inverse of :data:`SRGB_TO_XYZ` (the round trip is exact to float64 round-off)."""

_SRGB_THRESHOLD = 0.04045  # encoded value where the linear segment ends (IEC 61966-2-1, 5.2)
_LINEAR_THRESHOLD = 0.0031308  # the same point on the linear side (IEC 61966-2-1, 5.3)
_LAB_EPSILON = 6.0 / 29.0  # CIE 15:2004, 8.2.1: f(t) is linear below t = (6/29)^3


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """Decode sRGB values in ``[0, 1]`` to linear light (IEC 61966-2-1:1999, 5.2), float64.

    ``c / 12.92`` for ``c <= 0.04045``, ``((c + 0.055) / 1.055) ** 2.4`` above.
    """
    c = np.asarray(values, dtype=np.float64)
    return np.where(
        c <= _SRGB_THRESHOLD, c / 12.92, ((np.maximum(c, _SRGB_THRESHOLD) + 0.055) / 1.055) ** 2.4
    )


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """Encode linear light as sRGB (IEC 61966-2-1:1999, 5.3), float64, unclipped.

    ``12.92 c`` for ``c <= 0.0031308``, ``1.055 c ** (1 / 2.4) - 0.055`` above.
    """
    c = np.asarray(values, dtype=np.float64)
    return np.where(
        c <= _LINEAR_THRESHOLD, 12.92 * c, 1.055 * np.maximum(c, _LINEAR_THRESHOLD) ** (1.0 / 2.4) - 0.055
    )


def _lab_f(t: np.ndarray) -> np.ndarray:
    """CIE 15:2004 eq. 8.9: ``t ** (1/3)`` above ``(6/29)^3``, ``t / (3 (6/29)^2) + 4/29`` below."""
    return np.where(
        t > _LAB_EPSILON**3,
        np.cbrt(np.maximum(t, _LAB_EPSILON**3)),
        t / (3.0 * _LAB_EPSILON**2) + 4.0 / 29.0,
    )


def _lab_f_inverse(t: np.ndarray) -> np.ndarray:
    return np.where(t > _LAB_EPSILON, t**3, 3.0 * _LAB_EPSILON**2 * (t - 4.0 / 29.0))


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise InputError(f"RGB array must have a trailing axis of 3, got shape {rgb.shape}")
    return rgb


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE 1976 L*a*b* (D65) of sRGB colours.

    Args:
        rgb: array with a trailing axis of 3, sRGB values in ``[0, 1]`` (not clipped here).

    Returns:
        float64 array of the same shape holding ``(L*, a*, b*)``.

    Raises:
        InputError: no trailing axis of 3.

    Example:
        >>> np.round(srgb_to_lab(np.array([1.0, 0.0, 0.0])), 2).tolist()
        [53.24, 80.09, 67.2]
    """
    xyz = srgb_to_linear(_check_rgb(rgb)) @ SRGB_TO_XYZ.T
    f = _lab_f(xyz / D65_WHITE)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def lab_to_srgb(lab: np.ndarray, *, clip: bool = True) -> np.ndarray:
    """sRGB colours of CIE 1976 L*a*b* (D65) values, the inverse of :func:`srgb_to_lab`.

    Args:
        lab: array with a trailing axis of 3 holding ``(L*, a*, b*)``.
        clip: clip to ``[0, 1]``; ``False`` keeps out-of-gamut values (below 0 or above 1).

    Returns:
        float64 sRGB of the same shape.
    """
    lab = _check_rgb(lab).astype(np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = _lab_f_inverse(f) * D65_WHITE
    rgb = linear_to_srgb(xyz @ XYZ_TO_SRGB.T)
    return np.clip(rgb, 0.0, 1.0) if clip else rgb


def srgb_lightness(gray_or_rgb: np.ndarray, *, rgb: bool) -> np.ndarray:
    """CIE 1976 lightness L* (D65) of sRGB colours, without computing a* and b*.

    Args:
        gray_or_rgb: sRGB values in ``[0, 1]``: a gray array (``R = G = B``) or, with
            ``rgb=True``, an array with a trailing axis of 3.
        rgb: whether the last axis holds ``(R, G, B)``.

    Returns:
        float64 L* in ``[0, 100]`` for in-gamut input, shaped like the input without the RGB axis.
    """
    if rgb:
        linear = srgb_to_linear(_check_rgb(gray_or_rgb)) @ SRGB_TO_XYZ[1]
    else:
        linear = srgb_to_linear(gray_or_rgb)  # the luminance row sums to Y of white, 1
    return 116.0 * _lab_f(linear / D65_WHITE[1]) - 16.0


def delta_e_76(lab_1: np.ndarray, lab_2: np.ndarray) -> np.ndarray:
    """CIE 1976 colour difference Delta E*ab: the Euclidean distance in L*a*b* (CIE 15:2004, 8.2.1.3)."""
    difference = np.asarray(lab_1, dtype=np.float64) - np.asarray(lab_2, dtype=np.float64)
    return np.sqrt(np.sum(difference**2, axis=-1))


# --- colour tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class Colormap:
    """A colour table and where it comes from.

    Args:
        name: the registry key (lower case).
        table: ``256 x 3`` float64 sRGB in ``[0, 1]`` (read-only).
        summary: one line on what it looks like and what it is for.
        citation: its source and licence.
        perceptual: whether it was designed to be perceptually uniform.
    """

    name: str
    table: np.ndarray
    summary: str
    citation: str
    perceptual: bool = False


def _piecewise_linear(points: list[tuple[float, float, float, float]], positions: np.ndarray) -> np.ndarray:
    """RGB of control points ``(x, r, g, b)`` interpolated linearly in RGB at ``positions``."""
    xs = np.array([p[0] for p in points])
    return np.stack(
        [np.interp(positions, xs, [p[channel] for p in points]) for channel in (1, 2, 3)], axis=-1
    )


# Slicer's PET-Heat: control points on the 0..255 index axis of a vtkColorTransferFunction in
# RGB space (linear interpolation), from Libs/MRML/Core/vtkMRMLPETProceduralColorNode.cxx
# (SetType, PETheat), 3D Slicer, BSD-style Slicer License.
_SLICER_PET_HEAT = [
    (0.0, 0.0, 0.0, 0.0),
    (35.0, 0.36, 0.0, 0.0),
    (38.0, 0.5, 0.0, 0.0),
    (50.0, 0.7, 0.1, 0.0),
    (70.0, 0.7, 0.5, 0.0),
    (87.0, 1.0, 1.0, 0.0),
    (255.0, 1.0, 1.0, 1.0),
]

# matplotlib's `hot` segment data (matplotlib/_cm.py, _hot_data; after MATLAB's hot): per
# channel, (x, value) breakpoints on [0, 1].
_HOT_SEGMENTS = (
    ((0.0, 0.0416), (0.365079, 1.0), (1.0, 1.0)),
    ((0.0, 0.0), (0.365079, 0.0), (0.746032, 1.0), (1.0, 1.0)),
    ((0.0, 0.0), (0.746032, 0.0), (1.0, 1.0)),
)


NEUTRAL_HEAT_POINTS = (
    (5.0, 0.0, 0.0),
    (45.0, 0.0, 0.0),
    (50.0, 85.0, 310.0),
    (60.0, 90.0, 20.0),
    (75.0, 82.0, 65.0),
    (95.0, 85.0, 100.0),
)
"""Control points ``(L*, C*ab, h_ab in degrees)`` of ``neutral_heat``: dark gray, gray at L* 45 (the
knee), violet, magenta-red, orange, light yellow (see :func:`lab_path_table`)."""


def max_chroma(lightness: np.ndarray, hue_degrees: np.ndarray, *, steps: int = 40) -> np.ndarray:
    """The largest CIELAB chroma C*ab inside the sRGB gamut at each ``(L*, h_ab)`` (bisection)."""
    lightness = np.asarray(lightness, dtype=np.float64)
    hue = np.radians(np.asarray(hue_degrees, dtype=np.float64))
    low, high = np.zeros_like(lightness), np.full_like(lightness, 200.0)
    for _ in range(steps):
        chroma = 0.5 * (low + high)
        rgb = lab_to_srgb(
            np.stack([lightness, chroma * np.cos(hue), chroma * np.sin(hue)], axis=-1), clip=False
        )
        inside = np.all((rgb >= 0.0) & (rgb <= 1.0), axis=-1)
        low, high = np.where(inside, chroma, low), np.where(inside, high, chroma)
    return low


def lab_path_table(points: tuple[tuple[float, float, float], ...], size: int = TABLE_SIZE) -> np.ndarray:
    """A colour table along a polyline in CIELAB, uniform in CIE 1976 colour difference.

    The control points ``(L*, C*ab, h_ab)`` are joined by straight segments in ``(L*, a*, b*)``;
    where a point of the path lies outside the sRGB gamut its chroma is scaled down to the gamut's
    edge at that lightness and hue (the lightness, and so its monotone rise, is kept); then the
    ``size`` entries are placed at equal arc length along that path, so that neighbouring entries
    differ by the same Delta E*ab (the perceptual-uniformity criterion of Kovesi, arXiv:1509.03700,
    measured in CIELAB). Returns ``size x 3`` sRGB in ``[0, 1]``.
    """
    corners = np.array(
        [
            [lightness, chroma * np.cos(np.radians(hue)), chroma * np.sin(np.radians(hue))]
            for lightness, chroma, hue in points
        ]
    )
    fraction = np.linspace(0.0, 1.0, 512, endpoint=False)[:, None]
    fine = np.concatenate(
        [start + fraction * (end - start) for start, end in zip(corners[:-1], corners[1:], strict=True)]
        + [corners[-1:]]
    )
    chroma = np.hypot(fine[:, 1], fine[:, 2])
    limit = max_chroma(fine[:, 0], np.degrees(np.arctan2(fine[:, 2], fine[:, 1])))
    fine[:, 1:] *= np.where(chroma > limit, limit / np.maximum(chroma, 1e-12), 1.0)[:, None]
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(fine, axis=0), axis=1))])
    at = np.linspace(0.0, arc[-1], size)
    lab = np.stack([np.interp(at, arc, fine[:, channel]) for channel in range(3)], axis=-1)
    return np.clip(lab_to_srgb(lab, clip=False), 0.0, 1.0)


def _frozen(table: np.ndarray) -> np.ndarray:
    table = np.ascontiguousarray(table, dtype=np.float64)
    if table.shape != (TABLE_SIZE, 3) or not (np.all(table >= 0.0) and np.all(table <= 1.0)):
        raise AssertionError(f"colour table has shape {table.shape} or values outside [0, 1]")
    table.setflags(write=False)
    return table


@functools.cache
def _tables() -> dict[str, Colormap]:
    ramp = np.linspace(0.0, 1.0, TABLE_SIZE)
    with open(_DATA, encoding="utf-8") as handle:
        bids = json.load(handle)["tables"]
    with open(_DATA_CET, encoding="utf-8") as handle:
        cet = json.load(handle)["tables"]
    bids_citation = (
        "N. J. Smith, S. van der Walt, 'inferno' and 'magma' (BIDS colormaps for matplotlib, 2015, "
        "https://bids.github.io/colormap/), CC0 1.0; values as shipped in matplotlib (_cm_listed.py), "
        "stored in MedFusionLib/data/colormaps_bids.json"
    )
    tables = [
        Colormap(
            "neutral_heat",
            lab_path_table(NEUTRAL_HEAT_POINTS),
            "gray (L* 5 to 45) up to entry 28, then violet-magenta-red-orange-light yellow (L* 45 to 95), equal "
            "Delta E*ab per entry; the default for PET/SPECT: fused with CT or MR the anatomy stays gray "
            "where the PET is at its background, uptake shows in warm colour",
            "MedFusion (issue 13): generated by colormaps.lab_path_table from colormaps.NEUTRAL_HEAT_POINTS "
            "(CIELAB polyline, equal arc length in CIE 1976 Delta E*ab, chroma cut to the sRGB gamut); "
            "design after P. Kovesi, 'Good colour maps: how to design them', arXiv:1509.03700, 2015; "
            "same licence as this project",
            perceptual=True,
        ),
        Colormap(
            "inferno",
            np.array(bids["inferno"]),
            "black-purple-red-orange-yellow heat, lightness rising uniformly (CAM02-UCS)",
            bids_citation,
            perceptual=True,
        ),
        Colormap(
            "magma",
            np.array(bids["magma"]),
            "black-purple-pink-cream heat, lightness rising uniformly (CAM02-UCS)",
            bids_citation,
            perceptual=True,
        ),
        Colormap(
            "pet_heat",
            _piecewise_linear(_SLICER_PET_HEAT, np.arange(TABLE_SIZE, dtype=np.float64)),
            "3D Slicer's PET-Heat: black-dark red-orange-yellow (by entry 87)-white; Slicer's default PET table",
            "3D Slicer, Libs/MRML/Core/vtkMRMLPETProceduralColorNode.cxx (PET-Heat control points, "
            "interpolated in RGB by vtkColorTransferFunction at the entries 0..255), Slicer License (BSD-style)",
        ),
        Colormap(
            "bmy",
            np.array(cet["bmy"]),
            "dark blue-magenta-red-orange-yellow, lightness rising linearly from L* 10 to 95 with a large hue "
            "change (its saturated blue low end tints fused anatomy navy)",
            "P. Kovesi, 'Good colour maps: how to design them', arXiv:1509.03700, 2015; CET-L8 "
            "(linear_bmy_10_95_c78), CET Perceptually Uniform Colour Maps (https://colorcet.com), CC BY 4.0; "
            "values as shipped in colorcet 3.1.0, stored in MedFusionLib/data/colormaps_cet.json",
            perceptual=True,
        ),
        Colormap(
            "hot",
            np.stack(
                [
                    np.interp(ramp, [x for x, _ in segment], [v for _, v in segment])
                    for segment in _HOT_SEGMENTS
                ],
                axis=-1,
            ),
            "black-red-yellow-white, channels rising one after the other",
            "matplotlib 'hot' (matplotlib/_cm.py, after MATLAB's hot), matplotlib licence (BSD-style)",
        ),
        Colormap("gray", np.repeat(ramp[:, None], 3, axis=1), "the identity gray ramp", "-"),
    ]
    return {
        colormap.name: Colormap(
            colormap.name, _frozen(colormap.table), colormap.summary, colormap.citation, colormap.perceptual
        )
        for colormap in tables
    }


def _key(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return "gray" if key == "grey" else key


def describe_colormap(name: str) -> Colormap:
    """The :class:`Colormap` called ``name`` (see the module docstring for how names match).

    Raises:
        ParameterError: unknown name.
    """
    tables = _tables()
    try:
        return tables[_key(name)]
    except (KeyError, AttributeError):
        raise ParameterError(f"unknown colour table {name!r} (known: {', '.join(tables)})") from None


def get_colormap(name: str) -> np.ndarray:
    """The ``256 x 3`` float64 sRGB table called ``name`` (a writable copy).

    Raises:
        ParameterError: unknown name.

    Example:
        >>> get_colormap("PET-Heat")[87].tolist()
        [1.0, 1.0, 0.0]
    """
    return describe_colormap(name).table.copy()


def list_colormaps() -> list[str]:
    """The names of every colour table, the default functional table first."""
    return list(_tables())


def colormaps_as_lists() -> dict[str, list[list[float]]]:
    """Every table as ``{name: 256 x [r, g, b]}`` (plain lists, ready for JSON)."""
    return {name: colormap.table.tolist() for name, colormap in _tables().items()}


def colormap_table(colormap: str | np.ndarray) -> np.ndarray:
    """The table itself for a name, or a given ``N x 3`` table checked (float64).

    Raises:
        ParameterError: unknown name; not an ``N x 3`` array (``N >= 2``) of numbers in ``[0, 1]``.
    """
    if isinstance(colormap, str):
        return describe_colormap(colormap).table
    try:
        table = np.asarray(colormap, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(
            f"a colour table is a name or an N x 3 array, got {type(colormap).__name__}"
        ) from None
    if table.ndim != 2 or table.shape[1] != 3 or table.shape[0] < 2:
        raise ParameterError(f"a colour table must be an N x 3 array with N >= 2, got shape {table.shape}")
    if not (np.all(table >= 0.0) and np.all(table <= 1.0)):  # NaN fails too
        raise ParameterError("colour table values must lie in [0, 1]")
    return table


def apply_colormap(
    values: np.ndarray, colormap: str | np.ndarray, *, interpolation: str = "linear"
) -> np.ndarray:
    """Map normalised values through a colour table.

    Args:
        values: array of any shape with values in ``[0, 1]`` (values beyond are clipped).
        colormap: a table name or an ``N x 3`` table in ``[0, 1]``.
        interpolation: ``"linear"`` blends the two nearest entries (value ``v`` sits at
            position ``v * (N - 1)``); ``"nearest"`` takes entry ``round(v * (N - 1))``.

    Returns:
        float64 sRGB of shape ``values.shape + (3,)``.

    Raises:
        InputError: NaN or non-numeric values.
        ParameterError: unknown table or interpolation.

    Example:
        >>> apply_colormap(np.array([0.0, 0.5, 1.0]), "gray")[:, 0].tolist()
        [0.0, 0.5, 1.0]
    """
    if interpolation not in ("linear", "nearest"):
        raise ParameterError(f"unknown interpolation {interpolation!r} (use linear or nearest)")
    table = colormap_table(colormap)
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise InputError(f"values to colour must be real numbers, got {values.dtype}")
    values = values.astype(np.float64)
    if np.isnan(values).any():
        raise InputError("values to colour contain NaN")
    position = np.clip(values, 0.0, 1.0) * (table.shape[0] - 1)
    if interpolation == "nearest":
        return table[np.rint(position).astype(np.intp)]
    low = np.minimum(np.floor(position).astype(np.intp), table.shape[0] - 2)
    weight = (position - low)[..., None]
    return table[low] * (1.0 - weight) + table[low + 1] * weight
