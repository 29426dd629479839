"""The plain DICOM series writer: an image with no DICOM source, written as a new study.

:func:`MedFusionLib.io.write_image` uses it for a path without a suffix. It writes one file per
slice with SimpleITK's GDCM writer: a new patient, study, series and frame of reference
(UUID-derived UIDs, PS3.5 B.2), ``ImageType`` DERIVED\\SECONDARY, the slice geometry of the
Image Plane module (PS3.3 C.7.6.2) and, for float voxels, Rescale Slope/Intercept (PS3.3
C.11.1 Modality LUT). A fused result whose fixed input came from DICOM is written instead by
:func:`MedFusionLib.dicom.derived.write_derived_series`, into the patient's study and frame of
reference.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..atomic import fsync_directory, fsync_file, temporary_name
from ..errors import InputError
from ..image import Image
from ..io import _execute, _failure_reason, _WriteFailed
from ..signals import deferred_termination, live_temporary

_DICOM_FROM_MODALITY = {"CT": "CT", "MR": "MR", "PET": "PT", "SPECT": "NM"}
# SOP classes written per modality. GDCM reads no geometry back from NM Image Storage (it
# expects the NM detector sequences), so SPECT and unknown modalities use Secondary Capture,
# which keeps Image Position/Orientation (Patient) and the rescale.
_SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "PT": "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def write_dicom_atomically(image: Image, directory: Path) -> None:
    """Write the series into a temporary folder beside ``directory``, check it, then rename it."""
    voxels, slope, intercept = _dicom_voxels(image, directory)  # refuse bad data before any I/O
    grid = _dicom_grid(image, voxels, directory)
    with live_temporary(temporary_name(directory, tag="tmpdir")) as folder:
        folder.mkdir()
        _write_dicom_series(image, folder, grid, slope, intercept)
        slices = sorted(folder.iterdir())
        if len(slices) != grid[0].shape[0] or any(entry.stat().st_size == 0 for entry in slices):
            raise _WriteFailed(_failure_reason(RuntimeError("slices are missing or empty"), directory.parent))
        for entry in slices:
            fsync_file(entry)
        fsync_directory(folder)
        move_folder_into_place(folder, directory)
    fsync_directory(directory.parent)


def move_folder_into_place(folder: Path, directory: Path) -> None:
    """Rename ``folder`` onto ``directory``, moving an older ``directory`` aside first.

    Safe when several processes replace the same directory at once: each one retries until
    its own complete folder is renamed in (the last rename wins), and only ever removes the
    older folders it moved aside itself (registered as live temporaries, so that a signal
    cannot leave them behind). Signals wait until the renames are done.
    """
    with contextlib.ExitStack() as cleanup:
        backups: list[Path] = []
        try:
            with deferred_termination():
                for _attempt in range(1000):
                    try:
                        os.rename(folder, directory)
                        return
                    except OSError as error:
                        if error.errno not in _DIRECTORY_IN_THE_WAY:
                            raise
                        if not directory.is_dir():
                            if (
                                error.errno in _NOT_EMPTY
                                and not directory.exists()
                                and not directory.is_symlink()
                            ):
                                continue  # another writer moved it away since our rename: try again
                            raise
                    backup = cleanup.enter_context(live_temporary(temporary_name(directory, tag="old")))
                    try:
                        os.rename(directory, backup)
                    except FileNotFoundError:
                        continue  # another process moved it away first
                    backups.append(backup)
                raise OSError(errno.EBUSY, "the output folder keeps changing; another process is writing it")
        except BaseException:
            if backups and not directory.exists():
                with contextlib.suppress(OSError):
                    os.rename(backups.pop(), directory)  # put the older output back
            raise


_DIRECTORY_IN_THE_WAY = {errno.EEXIST, errno.ENOTEMPTY, errno.EACCES, errno.EPERM}
_NOT_EMPTY = {errno.EEXIST, errno.ENOTEMPTY}


def decimal_string(value: float) -> str:
    """A DICOM DS value: the most precise decimal that fits in 16 characters."""
    value = float(value)
    if value == 0.0:
        return "0"
    for digits in range(16, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.6e}"  # unreachable for finite values


def _dicom_voxels(image: Image, directory: Path) -> tuple[np.ndarray, float | None, float | None]:
    """The voxels to store and the rescale slope/intercept (``None`` when stored as is)."""
    array = image.array
    if image.is_rgb:
        if array.dtype != np.uint8:
            raise InputError(
                f"cannot write {array.dtype} RGB voxels to DICOM {directory}: RGB DICOM takes uint8"
            )
        return array, None, None
    if array.dtype == np.bool_:
        return array.astype(np.uint8), None, None
    if array.dtype.kind in "iu" and array.size:
        low, high = int(array.min()), int(array.max())
        if array.dtype in (np.uint8, np.int16, np.uint16):
            return array, None, None
        if -32768 <= low and high <= 32767:
            return array.astype(np.int16), None, None
        if 0 <= low and high <= 65535:
            return array.astype(np.uint16), None, None
    if array.dtype.kind not in "iuf":
        raise InputError(f"cannot write {array.dtype} voxels to DICOM {directory}")
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(f"cannot write {bad} NaN/infinite voxels to DICOM {directory}")
    low, high = float(array.min()), float(array.max())
    if high == low:
        return array, 1.0, float(decimal_string(low))
    # q = round((x - intercept) / slope) in -32767..32767; DS strings are parsed back so the
    # quantisation uses exactly the slope and intercept the files state.
    slope = float(decimal_string((high - low) / 65534.0))
    intercept = float(decimal_string((high + low) / 2.0))
    return array, slope, intercept


def _dicom_grid(
    image: Image, voxels: np.ndarray, directory: Path
) -> tuple[np.ndarray, list[float], np.ndarray, np.ndarray]:
    """Voxels as slices plus 3-D spacing, origin and direction, right-handed as DICOM needs."""
    spacing = list(image.spacing)
    origin = np.asarray(image.origin, dtype=np.float64)
    direction = image.direction_matrix.astype(np.float64)
    if image.ndim == 2:
        voxels = voxels[np.newaxis]
        spacing.append(1.0)
        origin = np.append(origin, 0.0)
        embedded = np.eye(3)
        embedded[:2, :2] = direction
        return voxels, spacing, origin, embedded
    normal = np.cross(direction[:, 0], direction[:, 1])
    cosine = float(normal @ direction[:, 2]) / (np.linalg.norm(normal) * np.linalg.norm(direction[:, 2]))
    if abs(cosine) < 1.0 - 1e-6:
        raise InputError(f"cannot write {directory}: DICOM cannot describe a sheared (non-orthogonal) grid")
    if cosine < 0.0:  # left-handed: store the slices in the order of the DICOM normal
        voxels = voxels[::-1]
        origin = origin + (voxels.shape[0] - 1) * spacing[2] * direction[:, 2]
        direction = direction.copy()
        direction[:, 2] = -direction[:, 2]
    return voxels, spacing, origin, direction


def _write_dicom_series(
    image: Image,
    folder: Path,
    grid: tuple[np.ndarray, list[float], np.ndarray, np.ndarray],
    slope: float | None,
    intercept: float | None,
) -> None:
    """One file per slice with the tags a series reader needs to rebuild the grid."""
    voxels, spacing, origin, direction = grid
    dicom_modality = _DICOM_FROM_MODALITY.get(image.modality or "", "OT")
    orientation = "\\".join(decimal_string(v) for v in (*direction[:, 0], *direction[:, 1]))
    series_tags = {
        "0008|0008": "DERIVED\\SECONDARY",
        "0008|0016": _SOP_CLASS.get(dicom_modality, _SECONDARY_CAPTURE),
        "0008|0060": dicom_modality,
        "0008|0064": "WSD",
        "0008|103e": "MedFusion",
        "0018|0050": decimal_string(spacing[2]),
        "0018|0088": decimal_string(spacing[2]),
        "0020|000d": new_uid(),
        "0020|000e": new_uid(),
        "0020|0011": "1",
        "0020|0052": new_uid(),
        "0020|0037": orientation,
        "0028|0030": f"{decimal_string(spacing[1])}\\{decimal_string(spacing[0])}",
    }
    if slope is not None and intercept is not None:
        series_tags.update(
            {
                "0028|1052": decimal_string(intercept),
                "0028|1053": decimal_string(slope),
                "0028|0100": "16",
                "0028|0101": "16",
                "0028|0102": "15",
                "0028|0103": "1",
            }
        )
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    digits = max(4, len(str(voxels.shape[0])))
    for k in range(voxels.shape[0]):
        plane = voxels[k : k + 1]
        if slope is not None and intercept is not None:
            # Hand GDCM the already quantised values; it divides them back to exact integers.
            plane = intercept + slope * np.clip(
                np.rint((plane.astype(np.float64) - intercept) / slope), -32767, 32767
            )
        position = origin + k * spacing[2] * direction[:, 2]
        slice_image = sitk.GetImageFromArray(np.ascontiguousarray(plane), isVector=image.is_rgb)
        slice_image.SetSpacing(spacing)
        slice_image.SetOrigin(tuple(position))
        slice_image.SetDirection(tuple(direction.ravel()))
        for key, value in series_tags.items():
            slice_image.SetMetaData(key, value)
        slice_image.SetMetaData("0008|0018", new_uid())
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0020|0032", "\\".join(decimal_string(v) for v in position))
        writer.SetFileName(str(folder / f"slice_{k + 1:0{digits}d}.dcm"))
        _execute(writer, slice_image, folder.parent)


def new_uid() -> str:
    """A globally unique DICOM UID derived from a random UUID (PS3.5 B.2: root 2.25)."""
    return f"2.25.{uuid.uuid4().int}"
