"""DICOM in and out: series with their identity, derived series, registration objects, PACS.

- :mod:`.series`: the series of a folder (pydicom headers), picking one by Series Instance UID
  or modality, the identity kept with the :class:`~MedFusionLib.image.Image`
  (:data:`IDENTITY_KEYS`), body-weight SUV for PET (PS3.3 C.8.9.1, C.8.9.4).
- :mod:`.derived`: the fused result as a derived series in the fixed series' study and frame of
  reference (PS3.3 C.7.6.1 General Image, C.7.6.2 Image Plane, C.7.4.1 Frame of Reference).
- :mod:`.registration`: Spatial Registration (PS3.3 A.39, C.20.2) and Deformable Spatial
  Registration (PS3.3 A.45, C.20.3) objects, and reading them back as SimpleITK transforms.
- :mod:`.network`: C-ECHO, C-STORE and C-FIND as a service class user (PS3.4 annexes A, B, C).
- :mod:`.simple_writer`: the plain series writer used for an image without a DICOM source.

The DICOM libraries (pydicom, highdicom, pynetdicom) are imported by these modules only, so
``import MedFusionLib`` stays light.
"""

from __future__ import annotations

IDENTITY_KEYS = (
    "dicom_modality",
    "patient_id",
    "patient_name",
    "study_instance_uid",
    "series_instance_uid",
    "frame_of_reference_uid",
    "sop_class_uid",
    "series_description",
    "series_number",
)
"""Keys of :attr:`Image.metadata <MedFusionLib.image.Image.metadata>` a DICOM series fills
(strings; absent when the tag is). ``dicom_header`` holds the first instance's header as
DICOM JSON (PS3.18 F.2, pixel data and private tags left out) and ``dicom_instances`` the
JSON list ``[[SOP Class UID, SOP Instance UID], ...]`` of the slices in voxel order."""
