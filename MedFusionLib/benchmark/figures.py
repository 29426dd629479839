"""Benchmark figures drawn with Pillow only: an examples grid and a score chart.

* :func:`save_examples_figure` shows, for each pair set, the two source images followed by one
  fused image per method, every image as a fixed-size labelled tile.
* :func:`save_score_chart` shows the mean metric values measured by MedFusion as horizontal bar
  charts (one row of panels per set, one panel per metric), with values quoted from papers or
  measured peers drawn as hatched grey bars below them.

Both write the PNG atomically (a temporary file in the target folder, then :func:`os.replace`),
create missing parent folders and return the path.
"""

from __future__ import annotations

import colorsys
import math
import re
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..atomic import replacing

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont
Colour = tuple[int, int, int]

BACKGROUND: Colour = (255, 255, 255)
TEXT: Colour = (20, 20, 20)
MUTED: Colour = (110, 110, 110)
GRID: Colour = (225, 225, 225)
TILE_BACKGROUND: Colour = (0, 0, 0)
EMPTY_TILE: Colour = (238, 238, 238)
MAX_CHART_WIDTH = 2400
BAR_HEIGHT = 11
VALUE_FONT_SIZE = 10
TICK_FONT_SIZE = 10

# Qualitative palette (the tab20 colours, strong ones first) for up to 20 methods; more are generated.
PALETTE: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)

QUOTED_LEGEND = "quoted (papers / peers)"


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------


@cache
def _font(size: int) -> Font:
    """Pillow's default font at ``size`` pixels (the fixed bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no size argument
        return ImageFont.load_default()


def _text_width(text: str, font: Font) -> float:
    """Advance width of ``text`` in pixels."""
    return font.getlength(text)


def _line_height(font: Font) -> int:
    """Height of one line of text, ascenders to descenders, plus a little leading."""
    return int(font.getbbox("Agjy|")[3]) + 2


def _hex(colour: str) -> Colour:
    """``"#rrggbb"`` as an RGB tuple."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def method_colours(methods: Sequence[str]) -> dict[str, Colour]:
    """One distinct colour per method, in order: the palette first, then evenly spread hues."""
    colours: dict[str, Colour] = {}
    for index, method in enumerate(methods):
        if index < len(PALETTE):
            colours[method] = _hex(PALETTE[index])
        else:
            hue = ((index - len(PALETTE)) * 0.618034) % 1.0
            red, green, blue = colorsys.hsv_to_rgb(hue, 0.55, 0.8)
            colours[method] = (round(red * 255), round(green * 255), round(blue * 255))
    return colours


def _ellipsize(text: str, font: Font, max_width: float) -> str:
    """``text`` cut and ended with an ellipsis so that it fits in ``max_width``."""
    if _text_width(text, font) <= max_width:
        return text
    while text and _text_width(text + "…", font) > max_width:
        text = text[:-1]
    return text + "…" if text else ""


def _wrap(text: str, font: Font, max_width: float) -> list[str]:
    """Greedy wrap of ``text`` at spaces, underscores, hyphens and slashes (too-long words are split)."""
    tokens = re.findall(r"[^ _\-/]+[_\-/]?|[_\-/]| +", text)
    lines: list[str] = []
    current = ""
    for token in tokens:
        if _text_width(current + token, font) <= max_width:
            current += token
            continue
        if current.strip():
            lines.append(current.rstrip())
        current = token.lstrip()
        while current and _text_width(current, font) > max_width:
            cut = len(current) - 1
            while cut > 1 and _text_width(current[:cut], font) > max_width:
                cut -= 1
            lines.append(current[:cut])
            current = current[cut:]
    if current.strip():
        lines.append(current.rstrip())
    return lines or [""]


def _fit_text(
    text: str, max_width: float, *, size: int, min_size: int, max_lines: int
) -> tuple[Font, list[str]]:
    """Font and lines showing ``text`` within ``max_width`` on at most ``max_lines`` lines.

    The text is wrapped at the largest size from ``size`` down to ``min_size`` where it fits;
    failing that, it is wrapped at ``min_size`` and its last line is ellipsized.
    """
    for candidate in range(size, min_size - 1, -1):
        font = _font(candidate)
        lines = _wrap(text, font, max_width)
        if len(lines) <= max_lines:
            return font, lines
    font = _font(min_size)
    lines = _wrap(text, font, max_width)
    kept = lines[: max_lines - 1]
    rest = "".join(lines[max_lines - 1 :])
    return font, [*kept, _ellipsize(rest, font, max_width)]


def _draw_lines(
    draw: ImageDraw.ImageDraw,
    lines: Sequence[str],
    font: Font,
    *,
    x: float,
    y: float,
    width: float | None = None,
    fill: Colour = TEXT,
) -> None:
    """Draw ``lines`` from ``(x, y)`` down, centred in ``width`` when one is given."""
    height = _line_height(font)
    for index, line in enumerate(lines):
        left = x if width is None else x + (width - _text_width(line, font)) / 2
        draw.text((round(left), round(y + index * height)), line, font=font, fill=fill)


def _save_atomically(canvas: Image.Image, path: str | Path) -> Path:
    """Write ``canvas`` as a PNG at ``path`` via a temporary file in the same folder."""
    with replacing(path) as temporary, open(temporary, "xb") as stream:
        canvas.save(stream, format="PNG", optimize=True)
    return Path(path)


def _finite(value: object) -> float | None:
    """``value`` as a float, or None when it is missing, not a number, NaN or infinite."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ----------------------------------------------------------------------------------------------
# examples figure
# ----------------------------------------------------------------------------------------------


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """``image`` as an (H, W, 3) uint8 array; gray is replicated, alpha dropped, other dtypes stretched."""
    values = np.asarray(image)
    if values.ndim == 3 and values.shape[2] in (1, 3, 4):
        values = values[..., :1] if values.shape[2] == 1 else values[..., :3]
    elif values.ndim != 2:
        raise ValueError(f"expected a 2-D gray or (H, W, 3) RGB image, got shape {values.shape}")
    if values.size == 0:
        raise ValueError(f"empty image of shape {values.shape}")
    if values.dtype == np.bool_:
        values = values.astype(np.uint8) * 255
    elif values.dtype != np.uint8:
        numbers = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(numbers.min()), float(numbers.max())
        if lo >= 0.0 and hi <= 1.0 and np.issubdtype(values.dtype, np.floating):
            lo, hi = 0.0, 1.0
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        values = np.clip((numbers - lo) * scale + 0.5, 0, 255).astype(np.uint8)
    if values.ndim == 2:
        values = values[..., None]
    if values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    return np.ascontiguousarray(values)


def _image_tile(image: np.ndarray, tile: int) -> Image.Image:
    """``image`` scaled to fit a ``tile`` x ``tile`` square (aspect kept), centred on black."""
    picture = Image.fromarray(_as_rgb_uint8(image), mode="RGB")
    scale = tile / max(picture.width, picture.height)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    if size != picture.size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (tile, tile), TILE_BACKGROUND)
    canvas.paste(picture, ((tile - size[0]) // 2, (tile - size[1]) // 2))
    return canvas


def _column_keys(columns: Sequence[tuple[str, np.ndarray]]) -> list[tuple[str, int]]:
    """Alignment keys of a row's method columns: ``(label, n-th occurrence of that label)``."""
    seen: dict[str, int] = {}
    keys = []
    for label, _ in columns:
        keys.append((label, seen.get(label, 0)))
        seen[label] = seen.get(label, 0) + 1
    return keys


def save_examples_figure(
    examples: Mapping[str, Sequence[tuple[str, np.ndarray]]],
    path: str | Path,
    *,
    title: str = "",
    tile: int = 160,
    sources: int = 2,
) -> Path:
    """Write a PNG grid of example fusions, one row per pair set; returns the path.

    Args:
        examples: row label (a pair-set name such as ``"MRI_CT"`` or ``"MRI_CT 11"``) to its
            columns ``(column label, image)``: first the ``sources`` source images, then one fused
            image per method. Images are 2-D gray or (H, W, 3) RGB arrays, uint8 (other dtypes are
            stretched to 0-255), of any size.
        path: where to write the PNG; missing parent folders are created.
        title: optional heading above the grid.
        tile: side in pixels of the square each image is fitted into (aspect ratio kept).
        sources: how many leading columns of each row are source images. They keep their
            position; the method columns after them are aligned across rows by label, in the
            order in which labels first appear, and a row lacking a method leaves its cell empty.

    Every tile has its column label above it (wrapped and, if need be, shrunk or ellipsized to
    the tile width); the row label is at the left.

    Raises:
        ValueError: when ``examples`` is empty, ``tile`` is too small or an image has a bad shape.
    """
    if not examples:
        raise ValueError("no examples to draw")
    if tile < 16:
        raise ValueError(f"tile must be at least 16 pixels, got {tile}")
    rows = [(str(label), list(columns)) for label, columns in examples.items()]

    n_sources = min(sources, max(len(columns) for _, columns in rows))
    method_keys: list[tuple[str, int]] = []
    for _, columns in rows:
        for key in _column_keys(columns[n_sources:]):
            if key not in method_keys:
                method_keys.append(key)

    pad, gap, block_gap = 10, 6, 14
    label_size = max(9, min(13, tile // 12))
    label_lines = 2
    label_h = _line_height(_font(label_size)) * label_lines + 4
    row_font_size = max(10, min(15, tile // 10))
    row_font = _font(row_font_size)
    longest = max(_text_width(label, row_font) for label, _ in rows)
    row_label_w = int(min(max(longest, 40), max(tile, 150))) + 4
    title_font = _font(max(14, min(20, tile // 8)))
    title_h = _line_height(title_font) + 8 if title else 0

    def column_x(slot: int) -> int:
        """Left edge of the ``slot``-th tile (sources first, then methods)."""
        x = pad + row_label_w + pad + slot * (tile + gap)
        return x + (block_gap if slot >= n_sources and n_sources else 0)

    n_slots = n_sources + len(method_keys)
    width = column_x(n_slots - 1) + tile + pad if n_slots else pad + row_label_w + pad
    row_h = label_h + tile
    height = pad + title_h + len(rows) * row_h + (len(rows) - 1) * (gap + 4) + pad
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        _draw_lines(draw, [_ellipsize(title, title_font, width - 2 * pad)], title_font, x=pad, y=pad)

    for index, (row_label, columns) in enumerate(rows):
        top = pad + title_h + index * (row_h + gap + 4)
        font, lines = _fit_text(row_label, row_label_w, size=row_font_size, min_size=9, max_lines=4)
        text_h = _line_height(font) * len(lines)
        _draw_lines(draw, lines, font, x=pad, y=top + label_h + (tile - text_h) / 2)
        slots = list(range(min(n_sources, len(columns))))
        slots += [n_sources + method_keys.index(key) for key in _column_keys(columns[n_sources:])]
        for slot in range(n_slots):
            if slot not in slots:
                draw.rectangle(
                    (column_x(slot), top + label_h, column_x(slot) + tile - 1, top + row_h - 1),
                    fill=EMPTY_TILE,
                )
        for slot, (label, image) in zip(slots, columns, strict=True):
            x = column_x(slot)
            canvas.paste(_image_tile(image, tile), (x, top + label_h))
            font, lines = _fit_text(str(label), tile - 2, size=label_size, min_size=9, max_lines=label_lines)
            text_h = _line_height(font) * len(lines)
            _draw_lines(draw, lines, font, x=x, y=top + label_h - text_h - 2, width=tile)
    return _save_atomically(canvas, path)


# ----------------------------------------------------------------------------------------------
# score chart
# ----------------------------------------------------------------------------------------------


def _format_value(value: float) -> str:
    """Compact label for a metric value (3 significant digits, no exponent below 10^6)."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}" if abs(value) < 1e6 else f"{value:.3g}"
    return f"{value:.3g}"


@lru_cache(maxsize=8)
def _hatch_pattern(size: int = 512) -> Image.Image:
    """A large diagonal-hatch texture (dark lines on light grey) to crop quoted bars from."""
    y, x = np.mgrid[0:size, 0:size]
    lines = (x + y) % 5 < 1
    pattern = np.where(lines[..., None], np.array([90, 90, 90]), np.array([215, 215, 215])).astype(np.uint8)
    return Image.fromarray(pattern, mode="RGB")


def _hatched_box(canvas: Image.Image, box: tuple[int, int, int, int]) -> None:
    """Fill ``box`` (inclusive corners) with the hatch texture and outline it in black."""
    x0, y0, x1, y1 = box
    x0, x1 = min(x0, x1), max(x0, x1)
    if x1 < x0 or y1 < y0:
        return
    pattern = _hatch_pattern()
    w, h = min(x1 - x0 + 1, pattern.width), min(y1 - y0 + 1, pattern.height)
    canvas.paste(pattern.crop((0, 0, w, h)), (x0, y0))
    ImageDraw.Draw(canvas).rectangle((x0, y0, x0 + w - 1, y0 + h - 1), outline=(0, 0, 0))


def _ordered_union(mappings: Sequence[Mapping[str, object]]) -> list[str]:
    """Keys of all ``mappings``, each once, in order of first appearance."""
    keys: dict[str, None] = {}
    for mapping in mappings:
        keys.update(dict.fromkeys(str(key) for key in mapping))
    return list(keys)


def _draw_legend(
    canvas: Image.Image,
    entries: Sequence[tuple[str, Colour | None]],
    *,
    x: int,
    y: int,
    width: int,
    font: Font,
    draw_items: bool = True,
) -> int:
    """Lay out ``(label, colour)`` swatches left to right, wrapping at ``width``; returns the height.

    A colour of None is the hatched "quoted" swatch. With ``draw_items`` False only measures.
    """
    draw = ImageDraw.Draw(canvas)
    line_h = max(_line_height(font), 14) + 4
    swatch = 12
    left, top = x, y
    for label, colour in entries:
        label = _ellipsize(label, font, max(width - swatch - 21, 20))
        item_w = swatch + 5 + int(_text_width(label, font)) + 16
        if left > x and left + item_w > x + width:
            left, top = x, top + line_h
        if draw_items:
            box = (left, top + 2, left + swatch - 1, top + 2 + swatch - 1)
            if colour is None:
                _hatched_box(canvas, box)
            else:
                draw.rectangle(box, fill=colour, outline=(60, 60, 60))
            draw.text((left + swatch + 5, top), label, font=font, fill=TEXT)
        left += item_w
    return top + line_h - y


def _draw_panel(
    canvas: Image.Image,
    box: tuple[int, int, int, int],
    bars: Sequence[tuple[Colour | None, float | None]],
    bar_tops: Sequence[int],
    separator_y: int | None,
) -> None:
    """Draw one metric panel: framed plot area ``box`` (left, top, right, bottom) and its tick labels below.

    ``bars`` holds, per bar, its colour (None: hatched quoted bar) and finite value (None: missing);
    ``bar_tops`` the top pixel row of each bar; ``separator_y`` the row of the dashed line that
    separates measured from quoted bars, if any.
    """
    draw = ImageDraw.Draw(canvas)
    value_font, tick_font = _font(VALUE_FONT_SIZE), _font(TICK_FONT_SIZE)
    x0, y0, x1, y1 = box
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=GRID)
    finite = [value for _, value in bars if value is not None]
    if not finite:
        message = "n/a"
        position = (x0 + (x1 - x0 - _text_width(message, tick_font)) / 2, (y0 + y1) / 2 - 6)
        draw.text(position, message, font=tick_font, fill=MUTED)
        return
    lo, hi = min(0.0, min(finite)), max(0.0, max(finite))
    if hi <= lo:
        hi = lo + 1.0
    # room on the right for the value written after the longest bar
    value_w = max(_text_width(_format_value(value), value_font) for value in finite) + 8
    plot_x0, plot_x1 = x0 + 4, x1 - 4 - int(value_w)

    def to_x(value: float) -> int:
        """Pixel column of ``value`` on this panel's axis."""
        return round(plot_x0 + (value - lo) / (hi - lo) * (plot_x1 - plot_x0))

    zero = to_x(0.0)
    for tick in {lo, hi, 0.0}:
        draw.line((to_x(tick), y0 + 1, to_x(tick), y1 - 2), fill=GRID)
    if separator_y is not None:
        for x in range(x0 + 2, x1 - 2, 6):
            draw.line((x, separator_y, x + 2, separator_y), fill=(180, 180, 180))
    for (colour, value), top in zip(bars, bar_tops, strict=True):
        middle = top + BAR_HEIGHT // 2
        if value is None:
            draw.line((zero + 2, middle, zero + 7, middle), fill=(170, 170, 170))
            continue
        end = to_x(value)
        bar = (min(zero, end), top, max(zero, end), top + BAR_HEIGHT - 1)
        if colour is None:
            _hatched_box(canvas, bar)
        else:
            draw.rectangle(bar, fill=colour)
        text_x = (end if value >= 0 else zero) + 3
        text_y = top + (BAR_HEIGHT - _line_height(value_font)) / 2
        draw.text((text_x, text_y), _format_value(value), font=value_font, fill=TEXT)
    draw.line((zero, y0, zero, y1 - 1), fill=(90, 90, 90))

    # ticks and their labels at both ends of the axis (and at 0 when the axis crosses it and there is room)
    tick_y = y1 + 4
    low_text, high_text = _format_value(lo), _format_value(hi)
    for tick in (lo, hi):
        draw.line((to_x(tick), y1, to_x(tick), y1 + 3), fill=(90, 90, 90))
    draw.text((to_x(lo), tick_y), low_text, font=tick_font, fill=MUTED)
    high_w = _text_width(high_text, tick_font)
    high_x = min(to_x(hi) - high_w / 2, x1 - high_w)
    draw.text((round(high_x), tick_y), high_text, font=tick_font, fill=MUTED)
    if lo < 0 < hi:
        zero_w = _text_width("0", tick_font)
        low_end = to_x(lo) + _text_width(low_text, tick_font) + 4
        if low_end < zero - zero_w / 2 and zero + zero_w / 2 + 4 < high_x:
            draw.text((round(zero - zero_w / 2), tick_y), "0", font=tick_font, fill=MUTED)


def save_score_chart(
    scores: Mapping[str, Mapping[str, Mapping[str, float]]],
    path: str | Path,
    *,
    metrics: Sequence[str],
    quoted: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
    title: str = "",
    max_width: int = MAX_CHART_WIDTH,
) -> Path:
    """Write a PNG of horizontal bar charts of metric values; returns the path.

    Args:
        scores: ``scores[set][method][metric]``, the mean values measured by MedFusion.
        path: where to write the PNG; missing parent folders are created.
        metrics: the metrics to show, one panel each, in this order.
        quoted: ``quoted[set][label][metric]``, values quoted from papers or measured by peers;
            drawn as hatched grey bars below the methods' bars (metrics may be missing).
        title: optional heading above the chart.
        max_width: target image width in pixels; panels are narrowed to fit (down to a minimum
            readable width, beyond which the image grows wider).

    Layout: one row of panels per set (sets from ``scores``, then any only in ``quoted``), one
    panel per metric titled with its name. Every panel is a horizontal bar chart with one bar
    per method, in the same order and colour in all panels (legend at the top), then one
    hatched bar per quoted label; the row labels are at the left of each set's first panel.
    The value axis runs from 0 (or the panel minimum, if negative) to the panel maximum, with
    tick labels at both ends, and each bar has its value written beside it. Missing, NaN and
    infinite values draw no bar (a grey dash marks them).

    Raises:
        ValueError: when ``metrics`` is empty or there is no set to draw.
    """
    metrics = [str(metric) for metric in metrics]
    if not metrics:
        raise ValueError("no metrics to draw")
    quoted = quoted or {}
    sets = _ordered_union([scores, quoted])
    if not sets:
        raise ValueError("no sets to draw")
    methods = _ordered_union([scores[name] for name in scores])
    colours = method_colours(methods)

    pad, panel_gap = 12, 14
    step = BAR_HEIGHT + 4
    label_font, tick_font = _font(12), _font(TICK_FONT_SIZE)
    panel_title_font, set_font, title_font = _font(13), _font(16), _font(20)

    all_quoted = _ordered_union([quoted[name] for name in quoted])
    labels = methods + all_quoted
    longest = max((_text_width(label, label_font) for label in labels), default=40)
    label_w = int(min(max(longest, 40), 190)) + 8
    panel_w = (max_width - 2 * pad - label_w - (len(metrics) - 1) * panel_gap) // len(metrics)
    panel_w = max(140, min(320, panel_w))
    width = 2 * pad + label_w + len(metrics) * panel_w + (len(metrics) - 1) * panel_gap

    title_h = _line_height(title_font) + 10 if title else 0
    legend_entries: list[tuple[str, Colour | None]] = [(method, colours[method]) for method in methods]
    if all_quoted:
        legend_entries.append((QUOTED_LEGEND, None))
    probe = Image.new("RGB", (1, 1))
    legend_h = _draw_legend(
        probe, legend_entries, x=0, y=0, width=width - 2 * pad, font=label_font, draw_items=False
    )

    set_h = _line_height(set_font) + 4
    panel_title_h = _line_height(panel_title_font) + 4
    tick_h = _line_height(tick_font) + 6
    row_layout = []
    for name in sets:
        quoted_labels = [str(label) for label in quoted.get(name, {})]
        n_rows = len(methods) + len(quoted_labels)
        separator = 6 if methods and quoted_labels else 0
        plot_h = max(n_rows, 1) * step + separator + 4
        row_layout.append((name, quoted_labels, separator, plot_h))
    body_h = sum(set_h + panel_title_h + plot_h + tick_h + 16 for *_, plot_h in row_layout)
    height = pad + title_h + legend_h + 8 + body_h + pad

    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    top = pad
    if title:
        _draw_lines(draw, [_ellipsize(title, title_font, width - 2 * pad)], title_font, x=pad, y=top)
        top += title_h
    top += _draw_legend(canvas, legend_entries, x=pad, y=top, width=width - 2 * pad, font=label_font) + 8

    for name, quoted_labels, separator, plot_h in row_layout:
        draw.line((pad, top, width - pad, top), fill=(170, 170, 170))
        draw.text((pad, top + 3), _ellipsize(str(name), set_font, width - 2 * pad), font=set_font, fill=TEXT)
        top += set_h
        plot_top = top + panel_title_h
        set_scores = scores.get(name, {})
        set_quoted = quoted.get(name, {})
        # (label, colour or None for quoted, values by metric), in drawing order
        bars: list[tuple[str, Colour | None, Mapping[str, float]]] = [
            (method, colours[method], set_scores.get(method, {})) for method in methods
        ]
        bars += [(label, None, set_quoted.get(label, {})) for label in quoted_labels]

        # quoted bars come after a small gap below the methods' bars
        bar_tops = [
            plot_top + 2 + i * step + (separator if i >= len(methods) else 0) for i in range(len(bars))
        ]
        separator_y = bar_tops[len(methods)] - separator // 2 - 2 if methods and quoted_labels else None
        for (label, colour, _), bar_top in zip(bars, bar_tops, strict=True):
            text = _ellipsize(label, label_font, label_w - 8)
            y = bar_top + (BAR_HEIGHT - _line_height(label_font)) / 2
            fill = TEXT if colour is not None else (70, 70, 70)
            draw.text((pad, round(y)), text, font=label_font, fill=fill)
        if not bars:
            draw.text((pad, plot_top + 2), "(no methods)", font=label_font, fill=MUTED)

        for m, metric in enumerate(metrics):
            x0 = pad + label_w + m * (panel_w + panel_gap)
            metric_title = _ellipsize(metric, panel_title_font, panel_w)
            _draw_lines(draw, [metric_title], panel_title_font, x=x0, y=top, width=panel_w)
            _draw_panel(
                canvas,
                (x0, plot_top, x0 + panel_w, plot_top + plot_h),
                [(colour, _finite(values.get(metric))) for _, colour, values in bars],
                bar_tops,
                separator_y,
            )
        top = plot_top + plot_h + tick_h + 16
    return _save_atomically(canvas, path)
