"""The registration as DICOM: Spatial Registration and Deformable Spatial Registration objects.

A navigation system or another viewer re-uses MedFusion's alignment from these objects:

- :func:`spatial_registration` (rigid and affine) builds a Spatial Registration Storage instance
  (PS3.3 A.39; Spatial Registration module C.20.2) in the fixed series' study and frame of
  reference. Its Registration Sequence holds two items: the fixed series (its frame of
  reference, identity matrix) and the moving series (its frame of reference and its images,
  with the 4x4 ``FrameOfReferenceTransformationMatrix`` that maps a point of the moving
  series' patient coordinates to the fixed ones, C.20.2.1.1).
- :func:`deformable_spatial_registration` (B-spline) builds a Deformable Spatial Registration
  Storage instance (PS3.3 A.45; C.20.3): the whole transform sampled as a displacement grid
  (``VectorGridData``) on the fixed image's extent, with identity pre- and post-deformation
  matrices.
- :func:`read_registration` reads either back as a SimpleITK transform in ITK's resampling
  convention (fixed points to moving points), so that
  ``sitk.Resample(moving, fixed, transform)`` aligns the moving series again.

DICOM patient coordinates are LPS like ITK's, so the matrices need no axis flips. The ITK
transform maps fixed points to moving points; the DICOM matrix maps moving to fixed, its
inverse.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..image import Image
from .derived import MANUFACTURER, _ds, _version, fit_lengths
from .series import header_from_metadata, instances_from_metadata, quiet_pydicom
from .simple_writer import new_uid

SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.1"
DEFORMABLE_SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.3"
REGISTRATION_SERIES_NUMBER = 9002
DEVICE_SERIAL_NUMBER = "MEDFUSION"
"""Device Serial Number (0018,1000) of a software device: its name (no hardware serial exists)."""
_ALIGNMENT = ("125024", "DCM", "Image Content-based Alignment")
GRID_SPACING_MM = 8.0
"""Spacing of the displacement grid of a Deformable Spatial Registration (mm, at most; the grid
covers the fixed image with at most 64 points along each axis)."""


def matrix_of(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 homogeneous matrix of a linear ITK transform (fixed to moving points).

    Raises:
        InputError: the transform is not linear (a B-spline or displacement field).
    """
    if not is_linear(transform) or transform.GetDimension() != 3:
        raise InputError(
            f"cannot store a {transform.GetName()} in a Spatial Registration object (rigid or affine only)"
        )
    origin = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.eye(4)
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        matrix[:3, axis] = np.asarray(transform.TransformPoint(tuple(unit))) - origin
    matrix[:3, 3] = origin
    return matrix


def _flatten(transform: sitk.Transform) -> list[sitk.Transform]:
    if transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        out: list[sitk.Transform] = []
        for index in range(composite.GetNumberOfTransforms()):
            out.extend(_flatten(composite.GetNthTransform(index)))
        return out
    return [transform]


def is_linear(transform: sitk.Transform) -> bool:
    """True for a rigid, similarity or affine transform (and composites of one)."""
    parts = _flatten(transform)
    return len(parts) == 1 and parts[0].GetName() in (
        "Euler3DTransform",
        "VersorRigid3DTransform",
        "Similarity3DTransform",
        "AffineTransform",
        "ScaleSkewVersor3DTransform",
        "TranslationTransform",
    )


def _base(fixed: Image, sop_class: str, *, label: str, description: str) -> Any:
    """A REG instance's common modules in the fixed study and frame of reference (C.20.1, C.7.4.1)."""
    import highdicom as hd

    reference = header_from_metadata(fixed.metadata)
    if reference is None:
        raise InputError(
            "the fixed image was not read from a DICOM series: a registration object needs its study"
        )
    now = datetime.datetime.now()
    ds = hd.SOPClass(
        study_instance_uid=str(reference.StudyInstanceUID),
        series_instance_uid=new_uid(),
        series_number=REGISTRATION_SERIES_NUMBER,
        sop_instance_uid=new_uid(),
        sop_class_uid=sop_class,
        instance_number=1,
        modality="REG",
        manufacturer=MANUFACTURER,
        manufacturer_model_name="MedFusion",
        software_versions=_version(),
        device_serial_number=DEVICE_SERIAL_NUMBER,  # Enhanced General Equipment (C.7.5.2), type 1
        series_description="MedFusion registration"[:64],
        series_date=now.date(),
        series_time=now.time().replace(microsecond=0),
        content_date=now.date(),
        content_time=now.time().replace(microsecond=0),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    ds.copy_patient_and_study_information(reference)
    fit_lengths(ds)
    if "SpecificCharacterSet" in reference:
        ds.SpecificCharacterSet = reference.SpecificCharacterSet
    ds.Laterality = str(getattr(reference, "Laterality", "") or "")  # General Series, type 2C
    ds.FrameOfReferenceUID = str(reference.FrameOfReferenceUID)
    ds.PositionReferenceIndicator = str(getattr(reference, "PositionReferenceIndicator", "") or "")
    # Content Identification macro (C.10.9)
    ds.ContentLabel = label
    ds.ContentDescription = description[:64]
    ds.ContentCreatorName = ""
    ds.ReferencedSeriesSequence = _referenced_series(fixed, None)
    return ds


def _referenced_images(image: Image) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    items = []
    for sop_class, sop_instance in instances_from_metadata(image.metadata):
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    return DicomSequence(items)


def _referenced_series(fixed: Image, moving: Image | None) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    items = []
    for image in (fixed, moving):
        if image is None or not image.metadata.get("series_instance_uid"):
            continue
        series = Dataset()
        series.SeriesInstanceUID = image.metadata["series_instance_uid"]
        series.ReferencedInstanceSequence = _referenced_images(image)
        items.append(series)
    return DicomSequence(items)


def _code(value: tuple[str, str, str]) -> Any:
    from pydicom.dataset import Dataset

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value
    return code


def _matrix_item(matrix: np.ndarray, kind: str) -> Any:
    """Matrix Registration Sequence item (C.20.2): the matrix and its type."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    entry = Dataset()
    entry.FrameOfReferenceTransformationMatrix = [_ds(v) for v in matrix.ravel()]
    entry.FrameOfReferenceTransformationMatrixType = kind
    item = Dataset()
    item.RegistrationTypeCodeSequence = DicomSequence([_code(_ALIGNMENT)])
    item.MatrixSequence = DicomSequence([entry])
    return item


def _matrix_type(matrix: np.ndarray) -> str:
    """RIGID, RIGID_SCALE or AFFINE (C.20.2.1.2) from the upper 3x3 block."""
    a = matrix[:3, :3]
    gram = a.T @ a
    if np.allclose(gram, np.eye(3), atol=1e-6):
        return "RIGID"
    scales = np.sqrt(np.diag(gram))
    if np.allclose(gram, np.diag(np.diag(gram)), atol=1e-6 * float(scales.max() ** 2)):
        return "RIGID_SCALE"
    return "AFFINE"


def spatial_registration(
    fixed: Image, moving: Image, transform: sitk.Transform, *, description: str = "MedFusion rigid"
) -> Any:
    """A Spatial Registration object for a rigid or affine ``transform`` (fixed to moving points).

    Raises:
        InputError: the fixed image has no DICOM identity or the transform is not linear.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    to_moving = matrix_of(transform)
    to_fixed = np.linalg.inv(to_moving)  # moving patient coordinates -> fixed (C.20.2.1.1)
    ds = _base(fixed, SPATIAL_REGISTRATION_STORAGE, label="MEDFUSION_REG", description=description)
    ds.ReferencedSeriesSequence = _referenced_series(fixed, moving)
    fixed_item = Dataset()
    fixed_item.FrameOfReferenceUID = ds.FrameOfReferenceUID
    fixed_item.ReferencedImageSequence = _referenced_images(fixed)
    fixed_item.MatrixRegistrationSequence = DicomSequence([_matrix_item(np.eye(4), "RIGID")])
    moving_item = Dataset()
    moving_for = moving.metadata.get("frame_of_reference_uid")
    if moving_for:
        moving_item.FrameOfReferenceUID = moving_for
    moving_item.ReferencedImageSequence = _referenced_images(moving)
    if not moving_for and not len(moving_item.ReferencedImageSequence):
        raise InputError("the moving image has neither a frame of reference nor DICOM images to refer to")
    if not len(moving_item.ReferencedImageSequence):
        del moving_item.ReferencedImageSequence
    moving_item.MatrixRegistrationSequence = DicomSequence([_matrix_item(to_fixed, _matrix_type(to_fixed))])
    ds.RegistrationSequence = DicomSequence([fixed_item, moving_item])
    return ds


def deformable_spatial_registration(
    fixed: Image, moving: Image, transform: sitk.Transform, *, description: str = "MedFusion B-spline"
) -> Any:
    """A Deformable Spatial Registration object: ``transform`` sampled as displacements.

    The grid covers the fixed image with points at most :data:`GRID_SPACING_MM` apart (at
    most 64 per axis); each vector is ``T(p) - p`` for the grid point ``p`` in the fixed
    (registered) patient coordinates, ``T`` the fixed-to-moving transform, which is the
    displacement to the corresponding point of the moving (source) coordinates (C.20.3.1.3).
    Between grid points the transform is interpolated linearly by the reader.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    low, high = fixed.world_bounds()
    direction = np.eye(3)
    size = [
        int(min(64, max(2, np.ceil((h - lo) / GRID_SPACING_MM) + 1))) for lo, h in zip(low, high, strict=True)
    ]
    spacing = [(h - lo) / (n - 1) for lo, h, n in zip(low, high, size, strict=True)]
    reference = sitk.Image(size, sitk.sitkUInt8)
    reference.SetOrigin(tuple(float(v) for v in low))
    reference.SetSpacing(tuple(float(v) for v in spacing))
    reference.SetDirection(tuple(direction.ravel()))
    field = sitk.TransformToDisplacementField(
        transform,
        sitk.sitkVectorFloat64,
        size,
        reference.GetOrigin(),
        reference.GetSpacing(),
        reference.GetDirection(),
    )
    vectors = sitk.GetArrayFromImage(field).astype("<f4")  # (z, y, x, 3), x fastest as C.20.3.1.3 orders
    ds = _base(
        fixed, DEFORMABLE_SPATIAL_REGISTRATION_STORAGE, label="MEDFUSION_DREG", description=description
    )
    ds.ReferencedSeriesSequence = _referenced_series(fixed, moving)
    item = Dataset()
    item.SourceFrameOfReferenceUID = moving.metadata.get("frame_of_reference_uid") or ds.FrameOfReferenceUID
    images = _referenced_images(moving)
    if len(images):
        item.ReferencedImageSequence = images
    item.DeformableRegistrationGridSequence = DicomSequence([Dataset()])
    grid = item.DeformableRegistrationGridSequence[0]
    grid.ImageOrientationPatient = [_ds(v) for v in (1, 0, 0, 0, 1, 0)]
    grid.ImagePositionPatient = [_ds(v) for v in low]
    grid.GridDimensions = [int(n) for n in size]
    grid.GridResolution = [float(v) for v in spacing]
    grid.VectorGridData = vectors.tobytes()
    item.PreDeformationMatrixRegistrationSequence = DicomSequence([_rigid_identity()])
    item.PostDeformationMatrixRegistrationSequence = DicomSequence([_rigid_identity()])
    item.RegistrationTypeCodeSequence = DicomSequence([_code(_ALIGNMENT)])
    ds.DeformableRegistrationSequence = DicomSequence([item])
    return ds


def _rigid_identity() -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.FrameOfReferenceTransformationMatrixType = "RIGID"
    item.FrameOfReferenceTransformationMatrix = [_ds(v) for v in np.eye(4).ravel()]
    return item


def registration_object(fixed: Image, moving: Image, transform: sitk.Transform, *, kind: str) -> Any:
    """The object for a registration of ``kind`` (rigid, affine: spatial; bspline: deformable)."""
    with quiet_pydicom():
        if kind in ("rigid", "affine") and is_linear(transform):
            return spatial_registration(fixed, moving, transform, description=f"MedFusion {kind}")
        return deformable_spatial_registration(fixed, moving, transform, description=f"MedFusion {kind}")


def read_registration(path: str | os.PathLike[str], *, moving_series: str | None = None) -> sitk.Transform:
    """The transform a (Deformable) Spatial Registration file stores, fixed to moving points.

    Args:
        path: the registration object.
        moving_series: the moving Series Instance UID, to pick its item; by default the item
            that is not the identity of the registered frame of reference.

    Raises:
        InputError: not a registration object, or no item for the moving series.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError) as error:
        raise InputError(f"cannot read registration object {path}: {error}") from None
    if ds.SOPClassUID == SPATIAL_REGISTRATION_STORAGE:
        for item in ds.RegistrationSequence:
            matrix = np.asarray(
                [
                    float(v)
                    for v in item.MatrixRegistrationSequence[0]
                    .MatrixSequence[0]
                    .FrameOfReferenceTransformationMatrix
                ]
            ).reshape(4, 4)
            if (
                np.allclose(matrix, np.eye(4))
                and item.get("FrameOfReferenceUID") == ds.FrameOfReferenceUID
                and moving_series is None
            ):
                continue
            to_moving = np.linalg.inv(matrix)
            affine = sitk.AffineTransform(3)
            affine.SetMatrix(tuple(to_moving[:3, :3].ravel()))
            affine.SetTranslation(tuple(to_moving[:3, 3]))
            return affine
        return sitk.AffineTransform(3)  # the moving series was already in the fixed frame
    if ds.SOPClassUID == DEFORMABLE_SPATIAL_REGISTRATION_STORAGE:
        grid = ds.DeformableRegistrationSequence[0].DeformableRegistrationGridSequence[0]
        size = [int(v) for v in grid.GridDimensions]
        vectors = np.frombuffer(grid.VectorGridData, dtype="<f4").reshape(size[2], size[1], size[0], 3)
        field = sitk.GetImageFromArray(vectors.astype(np.float64), isVector=True)
        field.SetOrigin(tuple(float(v) for v in grid.ImagePositionPatient))
        field.SetSpacing(tuple(float(v) for v in grid.GridResolution))
        row, column = np.asarray([float(v) for v in grid.ImageOrientationPatient]).reshape(2, 3)
        field.SetDirection(tuple(np.column_stack([row, column, np.cross(row, column)]).ravel()))
        return sitk.DisplacementFieldTransform(field)
    raise InputError(f"{path} is not a Spatial Registration or Deformable Spatial Registration object")
