"""A picture to judge a registration by eye: checkerboard and edge overlay of the mid-slices.

Columns: the fixed image, the moving image resampled through the transform, a checkerboard
of the two (misalignment shows as broken edges at the squares' borders), and the moving
image's edges in colour over the fixed image. Rows: axial, coronal and sagittal mid-slices
(one row for 2-D), oriented as in :mod:`MedFusionLib.montage`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image as PILImage
from PIL import ImageChops, ImageFilter

from .atomic import save_png_atomically
from .colour import luminance
from .image import Image
from .montage import TILE, orthogonal_slices, save_tile_columns
from .preprocess import resample_to

SQUARES = 8
EDGE_COLOUR = (255, 64, 0)


def _checkerboard(first: PILImage.Image, second: PILImage.Image) -> PILImage.Image:
    cell = max(1, TILE // SQUARES)
    rows, cols = np.indices((TILE, TILE)) // cell
    mask = PILImage.fromarray(((rows + cols) % 2 * 255).astype(np.uint8), mode="L")
    return PILImage.composite(first, second, mask)


def _edge_overlay(base: PILImage.Image, edges_of: PILImage.Image) -> PILImage.Image:
    strength = np.asarray(edges_of.convert("L").filter(ImageFilter.SMOOTH).filter(ImageFilter.FIND_EDGES))
    inner = strength[2:-2, 2:-2]
    threshold = max(4.0, float(np.percentile(inner[inner > 0], 88))) if np.any(inner > 0) else 255.0
    mask = np.zeros_like(strength)
    mask[2:-2, 2:-2] = np.where(inner >= threshold, 255, 0)
    edges = PILImage.fromarray(mask.astype(np.uint8), mode="L")
    colour = PILImage.new("RGB", base.size, EDGE_COLOUR)
    return PILImage.composite(
        colour, ImageChops.multiply(base, PILImage.new("RGB", base.size, (200, 200, 200))), edges
    )


def save_registration_qa(
    fixed: Image, moving: Image, transform: sitk.Transform, path: str | Path, *, title: str = ""
) -> Path:
    """Write the QA PNG for ``transform`` (fixed to moving points) atomically and return its path.

    Raises:
        InputError: the picture cannot be written (the folder is missing, the disk is full).
    """
    fixed_gray = luminance(fixed) if fixed.is_rgb else fixed
    moving_gray = luminance(moving) if moving.is_rgb else moving
    moved = resample_to(
        moving_gray.with_array(moving_gray.array.astype(np.float32)), fixed_gray, transform=transform
    )
    fixed_tiles = orthogonal_slices(fixed_gray)
    moved_tiles = orthogonal_slices(moved)
    columns = [
        ("fixed", fixed_tiles),
        ("moving, registered", moved_tiles),
        ("checkerboard", [_checkerboard(f, m) for f, m in zip(fixed_tiles, moved_tiles, strict=True)]),
        (
            "moving's edges on fixed",
            [_edge_overlay(f, m) for f, m in zip(fixed_tiles, moved_tiles, strict=True)],
        ),
    ]
    return save_png_atomically(lambda temporary: save_tile_columns(columns, temporary, title=title), path)
