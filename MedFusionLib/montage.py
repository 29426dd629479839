"""PNG montages: columns of images shown as their three orthogonal mid-slices (or one 2-D slice).

Volumes are reoriented to LPS so that every row looks the same whatever the file's
direction matrix: axial slices with anterior up and the patient's left on the right
(radiological convention), coronal and sagittal with superior up. In-plane spacing is
honoured so that anisotropic volumes are not distorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image as PILImage
from PIL import ImageDraw

from .image import Image

TILE = 192
LABEL_HEIGHT = 18


def _to_uint8(values: np.ndarray, *, rgb: bool = False) -> np.ndarray:
    """Stretch to 0-255 between the 0.5 and 99.5 percentiles (RGB in [0,1] kept as is).

    ``rgb`` says the trailing axis holds colour (a 3-D RGB volume); without it only a 2-D
    slice with a trailing axis of 3 is taken as RGB.
    """
    finite = np.nan_to_num(values.astype(np.float32))
    colour = rgb or (finite.ndim == 3 and finite.shape[-1] == 3)
    if colour and finite.max() <= 1.0 and finite.min() >= 0.0:
        return (finite * 255 + 0.5).astype(np.uint8)
    lo, hi = np.percentile(finite, (0.5, 99.5))
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((finite - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def _tile(plane: np.ndarray, row_spacing: float, col_spacing: float) -> PILImage.Image:
    """One slice as a square tile, aspect ratio from the physical spacing."""
    height, width = plane.shape[:2]
    phys_h, phys_w = height * row_spacing, width * col_spacing
    scale = TILE / max(phys_h, phys_w)
    size = (max(1, round(phys_w * scale)), max(1, round(phys_h * scale)))
    mode = "RGB" if plane.ndim == 3 else "L"
    picture = PILImage.fromarray(plane, mode=mode).resize(size, PILImage.BILINEAR)
    canvas = PILImage.new("RGB", (TILE, TILE))
    canvas.paste(picture, ((TILE - size[0]) // 2, (TILE - size[1]) // 2))
    return canvas


def orthogonal_slices(image: Image, *, centre: Sequence[float] | None = None) -> list[PILImage.Image]:
    """Tiles for an image: one for 2-D, axial/coronal/sagittal slices for 3-D.

    The three slices cross at ``centre`` (a physical LPS point, e.g. a tumour's centre; clamped
    into the volume) or, without it, at the volume's middle.
    """
    values = _to_uint8(image.array, rgb=image.is_rgb)
    if image.ndim == 2:
        return [_tile(values, image.spacing[1], image.spacing[0])]
    oriented = sitk.DICOMOrient(image.with_array(values).to_sitk(), "LPS")
    volume = sitk.GetArrayFromImage(oriented)  # (z: I->S, y: A->P, x: R->L)
    sx, sy, sz = oriented.GetSpacing()
    nz, ny, nx = volume.shape[:3]
    if centre is None:
        kx, ky, kz = nx // 2, ny // 2, nz // 2
    else:
        index = oriented.TransformPhysicalPointToContinuousIndex([float(c) for c in centre])
        kx, ky, kz = (min(max(round(i), 0), n - 1) for i, n in zip(index, (nx, ny, nz), strict=True))
    axial = volume[kz]
    coronal = volume[:, ky][::-1]
    sagittal = volume[:, :, kx][::-1]
    return [_tile(axial, sy, sx), _tile(coronal, sz, sx), _tile(sagittal, sz, sy)]


def save_montage(
    columns: Sequence[tuple[str, Image]],
    path: str | Path,
    *,
    title: str = "",
    centre: Sequence[float] | None = None,
) -> Path:
    """Write a PNG with one labelled column per ``(label, image)``; returns the path.

    Each column shows the image's axial, coronal and sagittal slices from top to bottom, through
    ``centre`` (a physical point) or the middle (one slice for 2-D images).
    """
    return save_tile_columns(
        [(label, orthogonal_slices(image, centre=centre)) for label, image in columns], path, title=title
    )


def save_tile_columns(
    columns: Sequence[tuple[str, Sequence[PILImage.Image]]], path: str | Path, *, title: str = ""
) -> Path:
    """Write labelled columns of ``TILE``-sized tiles as one PNG (atomically); returns the path."""
    rows = max(len(tiles) for _, tiles in columns)
    top = LABEL_HEIGHT * (2 if title else 1)
    canvas = PILImage.new("RGB", (len(columns) * TILE, top + rows * TILE), "black")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 3), title, fill="white")
    for c, (label, tiles) in enumerate(columns):
        draw.text((c * TILE + 4, top - LABEL_HEIGHT + 3), label[:32], fill="white")
        for r, tile in enumerate(tiles):
            canvas.paste(tile, (c * TILE, top + r * TILE))
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    canvas.save(tmp)
    tmp.replace(path)
    return path
