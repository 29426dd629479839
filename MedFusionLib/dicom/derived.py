"""The fused result as a derived DICOM series in the fixed series' study and frame of reference.

A fusion workstation hands its result back to the hospital as a new series of the patient's
study: :func:`write_derived_series` writes one single-frame instance per slice of the fixed
(anatomical) series' grid, built on :class:`highdicom.SOPClass` (SOP Common, General Series,
General Equipment, the Patient and Study modules copied from the fixed series' first header)
with pydicom for the image modules:

- Gray: the fixed series' own storage class when it is CT Image Storage (PS3.3 A.3: CT Image
  module C.8.2.1 with ``ImageType`` DERIVED\\SECONDARY\\AXIAL), otherwise Secondary Capture Image
  Storage (PS3.3 A.8.1); 16-bit signed voxels with Rescale Slope/Intercept (C.11.1 Modality
  LUT) and a window (C.11.2 VOI LUT) spanning the values.
- Colour: Secondary Capture Image Storage, RGB, 8 bits per sample (C.7.6.3 Image Pixel).

Every instance carries the fixed series' Study Instance UID and Frame of Reference UID (C.7.4.1),
the fixed slice's Image Position/Orientation (Patient) and Pixel Spacing (C.7.6.2 Image Plane),
new Series and SOP Instance UIDs (UUID-derived, PS3.5 B.2), a ``DerivationDescription`` naming
the method, parameters and registration (C.7.6.1 General Image), a ``SourceImageSequence`` with
the fixed slice and the moving slice nearest to it, and a ``ReferencedSeriesSequence`` listing
every instance of both inputs (C.12.2 Common Instance Reference).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..image import Image
from .series import header_from_metadata, instances_from_metadata, quiet_pydicom
from .simple_writer import new_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
MANUFACTURER = "MedFusion"
SERIES_NUMBER = 9001
"""Series Number of a derived series (a fixed, recognisable number above the scanner's)."""

_SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
_DERIVATION_LIMIT = 1024  # ST: at most 1024 characters


@dataclass(frozen=True)
class DerivedSeries:
    """What :func:`build_derived_series` made: the datasets and the new series' identity."""

    datasets: list[Any]
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str


def has_dicom_identity(image: Image) -> bool:
    """True when ``image`` was read from a DICOM series (its metadata carries the header)."""
    return bool(image.metadata.get("dicom_header")) and bool(image.metadata.get("study_instance_uid"))


def derivation_description(
    method: str, parameters: dict[str, Any] | None, registration: str | None, colormap: str | None
) -> str:
    """``DerivationDescription`` (ST, at most 1024 characters): method, parameters, registration."""
    settings = ", ".join(f"{key}={value}" for key, value in sorted((parameters or {}).items()))
    text = f"MedFusion fusion: method {method}" + (f" ({settings})" if settings else "")
    text += f"; colour table {colormap}" if colormap else "; gray"
    text += f"; moving series registered to fixed: {registration}" if registration else "; no registration"
    return text[:_DERIVATION_LIMIT]


def build_derived_series(
    fused: Image,
    fixed: Image,
    moving: Image | None,
    *,
    description: str,
    series_description: str = "MedFusion fusion",
    moving_slice_of: Any = None,
    transform: Any = None,
) -> DerivedSeries:
    """The derived instances of ``fused`` in memory (see the module docstring).

    Args:
        fused: the fused image, on ``fixed``'s grid (gray or RGB, 3-D).
        fixed: the fixed image as read from its DICOM series (metadata with its identity).
        moving: the moving image (its DICOM identity, when it has one, is referenced).
        description: the ``DerivationDescription``.
        series_description: ``SeriesDescription`` (LO, at most 64 characters).
        moving_slice_of: ``f(point_lps) -> moving slice index or None``; by default the moving
            slice nearest to the point (mapped by ``transform`` first when given).
        transform: the registration (SimpleITK, fixed to moving points), or ``None``.

    Raises:
        InputError: ``fixed`` has no DICOM identity, ``fused`` is not on its grid or not 3-D.
    """
    import highdicom as hd
    from pydicom.sequence import Sequence as DicomSequence

    if not has_dicom_identity(fixed):
        raise InputError("the fixed image was not read from a DICOM series: a derived series needs its study")
    if fused.ndim != 3 or not fused.same_grid(fixed, tolerance=1e-6):
        raise InputError("the fused image is not on the fixed series' grid; cannot write a derived series")
    reference = header_from_metadata(fixed.metadata)
    fixed_instances = instances_from_metadata(fixed.metadata)
    if len(fixed_instances) != fused.shape[0]:
        raise InputError(
            f"the fixed series lists {len(fixed_instances)} instances for {fused.shape[0]} slices; "
            "cannot reference its slices"
        )
    moving_instances = [] if moving is None else instances_from_metadata(moving.metadata)
    rgb = fused.is_rgb
    sop_class = (
        CT_IMAGE_STORAGE
        if (not rgb and reference.SOPClassUID == CT_IMAGE_STORAGE)
        else SECONDARY_CAPTURE_IMAGE_STORAGE
    )
    pixels, slope, intercept = _stored_pixels(fused)
    direction = fused.direction_matrix
    normal = np.cross(direction[:, 0], direction[:, 1])
    if float(normal @ direction[:, 2]) <= 0:
        raise InputError("the fixed series' slices run against their normal; cannot write a derived series")
    orientation = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    spacing = fused.spacing
    if moving_slice_of is None and moving is not None and moving_instances:
        moving_slice_of = _nearest_slice(moving, transform)

    series_uid = new_uid()
    now = datetime.datetime.now()
    common = {
        "study_instance_uid": str(reference.StudyInstanceUID),
        "series_instance_uid": series_uid,
        "series_number": SERIES_NUMBER,
        "sop_class_uid": sop_class,
        "modality": str(getattr(reference, "Modality", "") or "OT"),
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": "MedFusion",
        "software_versions": _version(),
        "series_description": series_description[:64],
        "series_date": now.date(),
        "series_time": now.time().replace(microsecond=0),
        "content_date": now.date(),
        "content_time": now.time().replace(microsecond=0),
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    }
    referenced_series = _referenced_series(fixed, moving, fixed_instances, moving_instances)
    image_type = (
        ["DERIVED", "SECONDARY", "AXIAL"] if sop_class == CT_IMAGE_STORAGE else ["DERIVED", "SECONDARY"]
    )
    datasets = []
    for k in range(fused.shape[0]):
        position = np.asarray(fused.origin) + k * spacing[2] * direction[:, 2]
        ds = hd.SOPClass(sop_instance_uid=new_uid(), instance_number=k + 1, **common)
        ds.copy_patient_and_study_information(reference)
        fit_lengths(ds)
        if "SpecificCharacterSet" in reference:
            ds.SpecificCharacterSet = reference.SpecificCharacterSet
        # Frame of Reference (C.7.4.1): the fixed series' own
        ds.FrameOfReferenceUID = str(reference.FrameOfReferenceUID)
        ds.PositionReferenceIndicator = str(getattr(reference, "PositionReferenceIndicator", "") or "")
        if "PatientPosition" in reference:
            ds.PatientPosition = reference.PatientPosition
        ds.Laterality = str(getattr(reference, "Laterality", "") or "")  # type 2C, as the fixed series
        if "BodyPartExamined" in reference:
            ds.BodyPartExamined = reference.BodyPartExamined
        # General Image (C.7.6.1)
        ds.ImageType = image_type
        ds.DerivationDescription = description
        ds.PatientOrientation = _patient_orientation(direction)
        ds.BurnedInAnnotation = "NO"
        ds.SourceImageSequence = DicomSequence(
            [_source_item(*fixed_instances[k])]
            + (
                [_source_item(*moving_instances[index])]
                if moving_slice_of is not None and (index := moving_slice_of(position)) is not None
                else []
            )
        )
        # Image Plane (C.7.6.2): the fixed slice's geometry
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.ImageOrientationPatient = orientation
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceThickness = _ds(float(getattr(reference, "SliceThickness", None) or spacing[2]))
        # Image Pixel (C.7.6.3)
        plane = pixels[k]
        ds.Rows, ds.Columns = int(plane.shape[0]), int(plane.shape[1])
        if rgb:
            ds.SamplesPerPixel = 3
            ds.PhotometricInterpretation = "RGB"
            ds.PlanarConfiguration = 0
            ds.BitsAllocated = ds.BitsStored = 8
            ds.HighBit = 7
            ds.PixelRepresentation = 0
        else:
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            # Modality LUT (C.11.1) and VOI LUT (C.11.2)
            ds.RescaleIntercept = _ds(intercept)
            ds.RescaleSlope = _ds(slope)
            if sop_class != CT_IMAGE_STORAGE:
                ds.RescaleType = "US"  # unspecified: fused values are not Hounsfield units
            low, high = float(intercept - 32767 * slope), float(intercept + 32767 * slope)
            ds.WindowCenter = _ds((low + high) / 2)
            ds.WindowWidth = _ds(max(high - low, 1e-6))
            if high - low < 1.0:  # fused values in [0, 1]: a width below 1 needs LINEAR_EXACT (C.11.2.1.3)
                ds.VOILUTFunction = "LINEAR_EXACT"
        ds.PixelData = np.ascontiguousarray(plane).tobytes()
        if sop_class == CT_IMAGE_STORAGE:  # CT Image (C.8.2.1): type 2 acquisition attributes
            ds.KVP = getattr(reference, "KVP", None)
            ds.AcquisitionNumber = getattr(reference, "AcquisitionNumber", None)
        else:  # SC Equipment (C.8.6.1): made on a workstation
            ds.ConversionType = "WSD"
        ds.ReferencedSeriesSequence = referenced_series
        datasets.append(ds)
    return DerivedSeries(
        datasets, series_uid, str(reference.StudyInstanceUID), str(reference.FrameOfReferenceUID)
    )


_MAX_LENGTH = {"AE": 16, "CS": 16, "DS": 16, "IS": 12, "LO": 64, "SH": 16, "PN": 64, "ST": 1024, "UI": 64}
"""Largest value lengths of the string VRs (PS3.5 table 6.2-1) that copied values are cut to."""


def fit_lengths(dataset: Any) -> list[str]:
    """Cut top-level string values longer than their VR allows (PS3.5 6.2); returns the keywords cut.

    Some archives hold series whose study-level values break the VR limits (STS_007's Study ID
    has 17 characters for SH's 16); a derived series copies them and would fail validation.
    """
    cut = []
    for element in dataset:
        limit = _MAX_LENGTH.get(element.VR)
        if limit is None or element.value is None or element.VR == "PN":
            continue
        values = element.value if element.VM > 1 else [element.value]
        fitted = [str(v)[:limit] if len(str(v)) > limit else v for v in values]
        if fitted != list(values):
            element.value = fitted if element.VM > 1 else fitted[0]
            cut.append(element.keyword)
    return cut


def _stored_pixels(image: Image) -> tuple[np.ndarray, float, float]:
    """Voxels as stored: uint8 RGB, or int16 with (slope, intercept) reproducing the values."""
    array = image.array
    if image.is_rgb:
        if array.dtype != np.uint8:
            array = np.rint(np.clip(np.nan_to_num(array.astype(np.float64)), 0.0, 1.0) * 255.0).astype(
                np.uint8
            )
        return array, 1.0, 0.0
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise InputError(f"cannot write {int((~np.isfinite(values)).sum())} NaN/infinite voxels to DICOM")
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros(array.shape, np.int16), 1.0, float(_ds(low))
    slope = float(_ds((high - low) / 65534.0))
    intercept = float(_ds((high + low) / 2.0))
    stored = np.clip(np.rint((values - intercept) / slope), -32767, 32767).astype(np.int16)
    return stored, slope, intercept


def _ds(value: float) -> str:
    """A DS value (PS3.5 6.2): the most precise decimal that fits in 16 characters."""
    from .simple_writer import decimal_string

    return decimal_string(value)


def _patient_orientation(direction: np.ndarray) -> list[str]:
    """Patient Orientation (C.7.6.1.1.1): the LPS letters of the row and column directions."""
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    values = []
    for axis in (direction[:, 0], direction[:, 1]):
        order = np.argsort(-np.abs(axis))
        text = "".join(letters[i][0 if axis[i] > 0 else 1] for i in order if abs(axis[i]) > 1e-3)
        values.append(text[:3])
    return values


def _source_item(sop_class: str, sop_instance: str) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = _SOURCE_PURPOSE
    item.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
    return item


def _referenced_series(
    fixed: Image,
    moving: Image | None,
    fixed_instances: Sequence[tuple[str, str]],
    moving_instances: Sequence[tuple[str, str]],
) -> Any:
    """Referenced Series Sequence (C.12.2): every instance of both inputs in the fixed study.

    A moving series of another study is listed there too: its instances are referenced by
    Series Instance UID, which is unique across studies.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    items = []
    for image, instances in ((fixed, fixed_instances), (moving, moving_instances)):
        if image is None or not instances or not image.metadata.get("series_instance_uid"):
            continue
        series = Dataset()
        series.SeriesInstanceUID = image.metadata["series_instance_uid"]
        references = []
        for sop_class, sop_instance in instances:
            reference = Dataset()
            reference.ReferencedSOPClassUID = sop_class
            reference.ReferencedSOPInstanceUID = sop_instance
            references.append(reference)
        series.ReferencedInstanceSequence = DicomSequence(references)
        items.append(series)
    return DicomSequence(items)


def _nearest_slice(moving: Image, transform: Any = None) -> Any:
    """``f(point) -> index`` of the moving slice nearest to a fixed LPS point (``None`` outside),
    the point mapped into the moving image by ``transform`` (fixed to moving) when given."""
    inverse = np.linalg.inv(moving.index_to_world())
    depth = moving.shape[0] if moving.ndim == 3 else 1

    def slice_of(point: np.ndarray) -> int | None:
        if transform is not None:
            point = np.asarray(transform.TransformPoint(tuple(float(v) for v in point)))
        index = inverse @ np.append(np.asarray(point, dtype=np.float64), 1.0)
        k = int(np.rint(index[2])) if moving.ndim == 3 else 0
        return k if 0 <= k < depth else None

    return slice_of


def _version() -> str:
    from .. import __version__

    return f"MedFusion {__version__}"


def write_datasets(datasets: Sequence[Any], directory: Path, *, names: Sequence[str]) -> list[Path]:
    """Write datasets as DICOM Part 10 files into a new folder moved onto ``directory`` at once.

    The files go to a temporary folder beside ``directory``, are read back (each must parse
    with its SOP Instance UID), synced, and the folder is renamed into place; on any failure
    nothing is left behind and an older ``directory`` stays as it was.

    Raises:
        OSError: a failed write (the caller turns it into a one-line error).
    """
    import pydicom

    from ..atomic import fsync_directory, fsync_file, temporary_name
    from ..signals import live_temporary
    from .simple_writer import move_folder_into_place

    written = []
    with live_temporary(temporary_name(directory, tag="tmpdir")) as folder:
        folder.mkdir()
        for dataset, name in zip(datasets, names, strict=True):
            target = folder / name
            dataset.save_as(target, enforce_file_format=True)
            back = pydicom.dcmread(target, stop_before_pixels=True)
            if back.SOPInstanceUID != dataset.SOPInstanceUID:
                raise OSError(f"{name} did not read back")
            fsync_file(target)
            written.append(directory / name)
        fsync_directory(folder)
        move_folder_into_place(folder, directory)
    fsync_directory(directory.parent)
    return written


def instance_names(count: int, prefix: str = "IM") -> list[str]:
    """``IM_0001.dcm``, ... (zero-padded to the count's width, at least 4 digits)."""
    digits = max(4, len(str(count)))
    return [f"{prefix}_{k + 1:0{digits}d}.dcm" for k in range(count)]


def write_derived_series(
    fused: Image,
    fixed: Image,
    moving: Image | None,
    directory: str | os.PathLike[str],
    *,
    description: str,
    series_description: str = "MedFusion fusion",
    extra: Sequence[tuple[str, Any]] = (),
    transform: Any = None,
) -> list[Path]:
    """Write the derived series (and ``extra`` ``(file name, dataset)`` pairs such as a
    registration object) into ``directory`` atomically; returns the files written.

    Raises:
        InputError: see :func:`build_derived_series`.
        OSError: the write failed (nothing is left behind).
    """
    with quiet_pydicom():
        series = build_derived_series(
            fused,
            fixed,
            moving,
            description=description,
            series_description=series_description,
            transform=transform,
        )
    names = instance_names(len(series.datasets))
    return write_datasets(
        [*series.datasets, *(dataset for _, dataset in extra)],
        Path(directory),
        names=[*names, *(name for name, _ in extra)],
    )
