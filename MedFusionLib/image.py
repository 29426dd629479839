"""The image model: voxels plus the geometry that places them in the world.

An :class:`Image` holds a NumPy array in SimpleITK's index order (``(y, x)`` for 2-D,
``(z, y, x)`` for 3-D, with an optional trailing axis of 3 for RGB) and the geometry in
ITK's conventions: ``spacing``, ``origin`` and ``direction`` are given for the ``(x, y[, z])``
axes, in millimetres, in the LPS world frame. Geometry travels with the voxels and is never
re-derived from the array shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk

from .errors import InputError

MODALITIES = ("CT", "MR", "PET", "SPECT")

MAX_EXTENT_MM = 10_000.0
"""The largest extent (spacing x size, mm) an image axis may have: 10 m. No body part or
scanner field of view comes near it; beyond it the spacing is a header fault (1e9 mm)."""

DIRECTION_TOLERANCE = 1e-3
"""How far ``D^T D`` of a direction matrix ``D`` may be from the identity (largest entry).
Float32 NIfTI/NRRD and 16-character DICOM strings stay near 1e-7, and even direction cosines
written with 3 decimals stay below it, while a shear of a tenth of a degree (1.7e-3) is above
it (the sheared NRRD of issue 12: 13 degrees, 0.22)."""


def check_geometry(
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
    *,
    size: Sequence[int] | None = None,
    max_extent_mm: float | None = MAX_EXTENT_MM,
) -> None:
    """Refuse a grid that cannot place voxels in the world; the message is one line.

    Args:
        spacing, origin: per axis, in mm.
        direction: the row-major ``dim x dim`` direction cosine matrix, flattened.
        size: voxels per axis; when given, each must be at least 1 and each axis' extent
            (spacing x size) at most ``max_extent_mm``, else the spacing alone is bounded.
        max_extent_mm: the bound; ``None`` for none.

    Raises:
        InputError: non-finite or non-positive spacing, an axis longer than the bound, a
            non-finite origin, a direction that is not orthonormal within
            :data:`DIRECTION_TOLERANCE` (sheared, scaled or singular), or sizes below 1.
    """
    ndim = len(spacing)
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"voxel spacing {_numbers(spacing)} mm is not finite and positive")
    if size is not None and any(n < 1 for n in size):
        raise InputError(f"size {tuple(int(n) for n in size)} has an axis with fewer than 1 voxel")
    extents = [s * n for s, n in zip(spacing, size or (1,) * ndim, strict=True)]
    if max_extent_mm is not None and max(extents) > max_extent_mm:
        axis = int(np.argmax(extents))
        raise InputError(
            f"axis {axis + 1} spans {extents[axis]:.4g} mm (spacing {_numbers(spacing)} mm), more than "
            f"{max_extent_mm / 1000:g} m: the voxel spacing in the header is wrong"
        )
    if not all(math.isfinite(o) for o in origin):
        raise InputError(f"origin {_numbers(origin)} is not finite")
    matrix = np.asarray(direction, dtype=np.float64).reshape(ndim, ndim)
    if not np.isfinite(matrix).all():
        raise InputError(f"direction {_numbers(direction)} is not finite")
    deviation = float(np.abs(matrix.T @ matrix - np.eye(ndim)).max())
    if deviation > DIRECTION_TOLERANCE:
        raise InputError(
            f"direction {_numbers(direction)} is not orthonormal (sheared, scaled or singular axes; "
            f"|D^T D - I| = {deviation:.2g} > {DIRECTION_TOLERANCE:g})"
        )


def _numbers(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


@dataclass(frozen=True)
class Image:
    """Voxels with spacing, origin, direction and an optional modality tag.

    Args:
        array: ``(y, x)`` or ``(z, y, x)`` voxels, optionally with a trailing RGB axis of 3.
        spacing: voxel size in mm along ``x, y[, z]``.
        origin: world position (LPS, mm) of the first voxel's centre.
        direction: row-major ``dim x dim`` direction cosine matrix, flattened.
        modality: ``"CT"``, ``"MR"``, ``"PET"``, ``"SPECT"`` or ``None`` when unknown.
        metadata: strings that travel with the voxels (kept by :meth:`with_array`, ignored by
            ``==``): the source path and format, and for a DICOM series its identity (patient,
            study, series and frame-of-reference UIDs, modality, acquisition details, the first
            header and the instances in slice order; :data:`MedFusionLib.dicom.IDENTITY_KEYS`),
            which a derived series needs to join the patient's study.

    Example:
        >>> img = Image.from_array(np.zeros((4, 5), np.float32))
        >>> img.ndim, img.size
        (2, (5, 4))
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    modality: str | None = None
    metadata: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        rgb = (
            self.array.ndim in (3, 4)
            and self.array.shape[-1] == 3
            and len(self.spacing) == self.array.ndim - 1
        )
        ndim = self.array.ndim - 1 if rgb else self.array.ndim
        if ndim not in (2, 3):
            raise InputError(f"image must be 2-D or 3-D, got array of shape {self.array.shape}")
        if len(self.spacing) != ndim or len(self.origin) != ndim or len(self.direction) != ndim * ndim:
            raise InputError(
                f"geometry does not match a {ndim}-D image: spacing {self.spacing}, "
                f"origin {self.origin}, direction {self.direction}"
            )
        if not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise InputError(f"spacing must be finite and positive, got {self.spacing}")
        if self.modality is not None and self.modality not in MODALITIES:
            raise InputError(f"unknown modality {self.modality!r}; use one of {', '.join(MODALITIES)}")
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(float(d) for d in self.direction))

    # --- construction -------------------------------------------------------------
    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        *,
        spacing: tuple[float, ...] | None = None,
        origin: tuple[float, ...] | None = None,
        direction: tuple[float, ...] | None = None,
        rgb: bool = False,
        modality: str | None = None,
    ) -> Image:
        """Wrap an array with unit spacing, zero origin and identity direction by default."""
        ndim = array.ndim - 1 if rgb else array.ndim
        return cls(
            array=array,
            spacing=spacing or (1.0,) * ndim,
            origin=origin or (0.0,) * ndim,
            direction=direction or tuple(np.eye(ndim).ravel()),
            modality=modality,
        )

    @classmethod
    def from_sitk(
        cls, image: sitk.Image, *, modality: str | None = None, metadata: dict[str, str] | None = None
    ) -> Image:
        """Convert a SimpleITK image (copying the voxels).

        Raises:
            InputError: other than 1 or 3 components per pixel; a grid :func:`check_geometry`
                refuses (no bound on the extent here: :mod:`MedFusionLib.io` applies it to
                the formats that state a physical spacing).
        """
        components = image.GetNumberOfComponentsPerPixel()
        if components not in (1, 3):
            raise InputError(f"expected 1 (gray) or 3 (RGB) components per pixel, got {components}")
        check_geometry(
            image.GetSpacing(),
            image.GetOrigin(),
            image.GetDirection(),
            size=image.GetSize(),
            max_extent_mm=None,
        )
        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing=image.GetSpacing(),
            origin=image.GetOrigin(),
            direction=image.GetDirection(),
            modality=modality,
            metadata=dict(metadata or {}),
        )

    def to_sitk(self) -> sitk.Image:
        """Convert to a SimpleITK image with the same voxels and geometry."""
        image = sitk.GetImageFromArray(self.array, isVector=self.is_rgb)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def with_array(self, array: np.ndarray, **changes: object) -> Image:
        """A new image on the same grid with other voxels (and optionally other fields)."""
        return replace(self, array=array, **changes)

    # --- properties ---------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.spacing)

    @property
    def is_rgb(self) -> bool:
        """True when the voxels carry three colour components."""
        return self.array.ndim == self.ndim + 1

    @property
    def is_pseudo_colour(self) -> bool:
        """True for RGB voxels whose channels differ (gray stored as RGB is not)."""
        if not self.is_rgb:
            return False
        a = self.array
        return not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]))

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape in array order (``(y, x)`` or ``(z, y, x)``)."""
        return self.array.shape[: self.ndim]

    @property
    def size(self) -> tuple[int, ...]:
        """Spatial size in ITK order (``(x, y[, z])``)."""
        return tuple(reversed(self.shape))

    @property
    def direction_matrix(self) -> np.ndarray:
        """The direction cosines as a ``dim x dim`` matrix (columns are the axes)."""
        return np.asarray(self.direction).reshape(self.ndim, self.ndim)

    def index_to_world(self) -> np.ndarray:
        """The ``(dim+1) x (dim+1)`` affine from ITK index ``(i, j[, k])`` to LPS mm."""
        affine = np.eye(self.ndim + 1)
        affine[: self.ndim, : self.ndim] = self.direction_matrix @ np.diag(self.spacing)
        affine[: self.ndim, self.ndim] = self.origin
        return affine

    def world_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world box (LPS mm) covering every voxel, edges included."""
        corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in self.size], indexing="ij"))
        corners = corners.reshape(self.ndim, -1)
        world = self.index_to_world() @ np.vstack([corners, np.ones(corners.shape[1])])
        return world[: self.ndim].min(axis=1), world[: self.ndim].max(axis=1)

    def same_grid(self, other: Image, *, tolerance: float = 1e-6) -> bool:
        """True when both images have the same size, spacing, origin and direction."""
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=tolerance)
            and np.allclose(self.origin, other.origin, atol=tolerance)
            and np.allclose(self.direction, other.direction, atol=tolerance)
        )
