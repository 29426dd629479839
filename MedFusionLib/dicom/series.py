"""The series of a DICOM folder, their identity, and body-weight SUV for PET.

:func:`describe_series` summarises what a folder holds, :func:`choose_series` picks one by its
Series Instance UID (0020,000E) or by modality with a one-line error listing every series
found, and :func:`identity_metadata` makes the strings that travel with the
:class:`~MedFusionLib.image.Image` (:data:`MedFusionLib.dicom.IDENTITY_KEYS`): patient, study,
series and frame-of-reference UIDs (PS3.3 C.7.1.1 Patient, C.7.2.1 General Study, C.7.3.1
General Series, C.7.4.1 Frame of Reference), modality, acquisition details, and the header of
the first instance so that a derived series can copy the patient and study modules.

:func:`suv_factor` converts PET activity concentration to body-weight SUV (PS3.3 C.8.9.1 PET
Series: Units, Decay Correction; C.8.9.2 PET Isotope: Radiopharmaceutical Information
Sequence; C.7.2.2 Patient Study: Patient's Weight).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

_MODALITY_NAMES = {"PET": "PT", "SPECT": "NM"}
"""MedFusion modality names that differ from DICOM's Modality (0008,0060) values."""

# Tags never carried in ``dicom_header`` (pixel data, overlays, big or private content).
_DROPPED_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_HEADER_LIMIT = 64 * 1024  # bytes of DICOM JSON kept with an image


@dataclass(frozen=True)
class SeriesSummary:
    """One series of a folder: its UID, modality, description and files (names, unsorted)."""

    uid: str
    modality: str
    description: str
    files: tuple[str, ...]

    def line(self) -> str:
        """``UID (CT, 70 files, "description")`` for error messages."""
        described = f', "{self.description}"' if self.description else ""
        return f"{self.uid} ({self.modality or '?'}, {len(self.files)} files{described})"


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings about values that break their VR (archives hold such series;
    :func:`MedFusionLib.dicom.derived.fit_lengths` repairs what MedFusion writes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def describe_series(paths: Sequence[str | os.PathLike[str]]) -> list[SeriesSummary]:
    """Group DICOM files by Series Instance UID, reading headers only (no pixel data).

    Files that are not DICOM are skipped; the series are ordered by their number of files
    (most first), then by UID.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    groups: dict[str, list[str]] = {}
    info: dict[str, tuple[str, str]] = {}
    for path in paths:
        try:
            with quiet_pydicom():
                header = pydicom.dcmread(
                    path,
                    stop_before_pixels=True,
                    specific_tags=["SeriesInstanceUID", "Modality", "SeriesDescription"],
                )
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        groups.setdefault(uid, []).append(str(path))
        info.setdefault(
            uid, (str(header.get("Modality", "") or ""), str(header.get("SeriesDescription", "") or ""))
        )
    series = [SeriesSummary(uid, *info[uid], tuple(files)) for uid, files in groups.items()]
    return sorted(series, key=lambda s: (-len(s.files), s.uid))


def choose_series(
    series: Sequence[SeriesSummary], choice: str | None, *, where: str | os.PathLike[str]
) -> SeriesSummary:
    """The series ``choice`` names: a Series Instance UID or a modality (``CT``, ``MR``, ``PT``/``PET``,
    ``NM``/``SPECT``, any DICOM Modality value); ``None`` picks the series with the most files.

    Raises:
        InputError: no series, no series matching ``choice``, or several series of that modality;
            the message lists the series found.
    """
    if not series:
        raise InputError(f"no DICOM series found in directory {where}")
    if choice is None:
        return series[0]
    matches = [s for s in series if s.uid == choice]
    if not matches:
        wanted = _MODALITY_NAMES.get(choice.upper(), choice.upper())
        matches = [s for s in series if s.modality.upper() == wanted]
        if len(matches) > 1:
            raise InputError(
                f"{where} holds {len(matches)} {wanted} series; pick one by UID with --series: "
                + "; ".join(s.line() for s in matches)
            )
    if not matches:
        raise InputError(
            f"no series {choice!r} in {where} (give a Series Instance UID or a modality); series found: "
            + "; ".join(s.line() for s in series)
        )
    return matches[0]


def identity_metadata(files: Sequence[str | os.PathLike[str]]) -> dict[str, str]:
    """The identity strings of a series read from ``files`` (in voxel order).

    Returns:
        :data:`MedFusionLib.dicom.IDENTITY_KEYS` that the first file states, plus
        ``dicom_header`` (its header as DICOM JSON, PS3.18 F.2, without pixel data or private
        tags), ``dicom_instances`` (JSON ``[[SOP Class UID, SOP Instance UID], ...]``) and the
        acquisition details ``acquisition_date``, ``manufacturer``, ``slice_thickness``,
        ``kvp``, ``magnetic_field_strength``, ``radiopharmaceutical`` where stated.
    """
    import pydicom

    with quiet_pydicom():
        headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    first = headers[0]

    def text(keyword: str, dataset: object = first) -> str:
        value = getattr(dataset, keyword, None)
        return "" if value is None else str(value).strip()

    metadata = {
        "dicom_modality": text("Modality").upper(),
        "patient_id": text("PatientID"),
        "patient_name": text("PatientName"),
        "study_instance_uid": text("StudyInstanceUID"),
        "series_instance_uid": text("SeriesInstanceUID"),
        "frame_of_reference_uid": text("FrameOfReferenceUID"),
        "sop_class_uid": text("SOPClassUID"),
        "series_description": text("SeriesDescription"),
        "series_number": text("SeriesNumber"),
        "acquisition_date": text("AcquisitionDate") or text("SeriesDate"),
        "manufacturer": text("Manufacturer"),
        "slice_thickness": text("SliceThickness"),
        "kvp": text("KVP"),
        "magnetic_field_strength": text("MagneticFieldStrength"),
    }
    radiopharmaceutical = getattr(first, "RadiopharmaceuticalInformationSequence", None)
    if radiopharmaceutical:
        metadata["radiopharmaceutical"] = text("Radiopharmaceutical", radiopharmaceutical[0])
    metadata = {key: value for key, value in metadata.items() if value}
    metadata["dicom_instances"] = json.dumps(
        [[text("SOPClassUID", h), text("SOPInstanceUID", h)] for h in headers], separators=(",", ":")
    )
    metadata["dicom_header"] = header_json(first)
    return metadata


def header_json(dataset: object) -> str:
    """A header as DICOM JSON (PS3.18 F.2) without pixel data, private tags or bulk values."""
    from pydicom import Dataset

    assert isinstance(dataset, Dataset)
    kept = Dataset()
    for element in dataset:
        if (
            element.tag.is_private
            or element.keyword in _DROPPED_KEYWORDS
            or element.VR in ("OB", "OW", "OF", "OD", "UN")
        ):
            continue
        kept.add(element)
    text = kept.to_json(bulk_data_threshold=_HEADER_LIMIT, bulk_data_element_handler=lambda _element: "")
    return text


def header_from_metadata(metadata: dict[str, str]) -> object | None:
    """The ``dicom_header`` of an image's metadata as a pydicom Dataset, or ``None``."""
    from pydicom import Dataset

    text = metadata.get("dicom_header")
    if not text:
        return None
    return Dataset.from_json(text)


def instances_from_metadata(metadata: dict[str, str]) -> list[tuple[str, str]]:
    """``[(SOP Class UID, SOP Instance UID), ...]`` of an image's source slices (may be empty)."""
    text = metadata.get("dicom_instances")
    return [] if not text else [(str(c), str(i)) for c, i in json.loads(text)]


# --- SUV ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SUV:
    """How stored PET values become body-weight SUV (g/ml): ``suv = factor * value``.

    Attributes:
        factor: the multiplier (1.0 when the series already states SUV, Units ``GML``).
        note: how it was obtained, for the image's metadata.
    """

    factor: float
    note: str


def suv_factor(header: object) -> SUV | None:
    """Body-weight SUV factor of a PET header, or ``None`` when the tags do not allow it.

    ``SUVbw = C * W / D``: C the activity concentration in Bq/ml (Units (0054,1001) ``BQML``),
    W the Patient's Weight (0010,1030) in grams, D the Radionuclide Total Dose (0018,1074) in Bq
    decayed with the Radionuclide Half Life (0018,1075) from the Radiopharmaceutical Start Time
    (0018,1072) to the Series Time (0008,0031) when Decay Correction (0054,1102) is ``START``
    (images decay-corrected to the series start), and not decayed when it is ``ADMIN`` (images
    already corrected to the administration time). Units ``GML`` are SUVbw already (factor 1).
    Other units (counts, ``CNTS``; ``NONE``), a missing weight, dose, half-life or time, or a
    ``NONE`` decay correction give ``None``: the values are left as stored.
    """
    units = str(getattr(header, "Units", "") or "").upper()
    if units == "GML":
        return SUV(1.0, "SUVbw as stored (Units GML)")
    if units != "BQML":
        return None
    try:
        weight_kg = float(header.PatientWeight)  # type: ignore[attr-defined]
        drug = header.RadiopharmaceuticalInformationSequence[0]  # type: ignore[attr-defined]
        dose = float(drug.RadionuclideTotalDose)
        half_life = float(drug.RadionuclideHalfLife)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    if not (weight_kg > 0 and dose > 0 and half_life > 0):
        return None
    correction = str(getattr(header, "DecayCorrection", "") or "").upper()
    if correction == "ADMIN":
        decayed = dose
    elif correction == "START":
        start = _seconds(getattr(drug, "RadiopharmaceuticalStartTime", None))
        series = _seconds(getattr(header, "SeriesTime", None) or getattr(header, "AcquisitionTime", None))
        if start is None or series is None:
            return None
        elapsed = series - start
        if elapsed < 0:
            elapsed += 24 * 3600  # injected before midnight, scanned after
        decayed = dose * 2.0 ** (-elapsed / half_life)
    else:
        return None
    factor = weight_kg * 1000.0 / decayed
    return SUV(factor, f"SUVbw = Bq/ml x {weight_kg:g} kg / {decayed:.4g} Bq (decay correction {correction})")


def _seconds(value: object) -> float | None:
    """A DICOM TM value (``HHMMSS.FFFFFF``) as seconds since midnight, or ``None``."""
    text = str(value or "").strip()
    if len(text) < 2 or not text.replace(".", "").isdigit():
        return None
    try:
        hours, minutes = int(text[0:2]), int(text[2:4] or 0)
        seconds = float(text[4:] or 0)
    except ValueError:
        return None
    return float(datetime.timedelta(hours=hours, minutes=minutes, seconds=seconds).total_seconds())


def regular_files(directory: Path) -> list[Path]:
    """The regular files directly in ``directory`` (links followed), sorted by name."""
    files = []
    for entry in sorted(os.scandir(directory), key=lambda item: item.name):
        try:
            if entry.is_file():
                files.append(Path(entry.path))
        except OSError:
            continue
    return files
