"""The bridge between MRML volume nodes and the engine's :class:`~MedFusionLib.image.Image`.

Works inside the 3D Slicer application and outside it with the PyPI ``slicer-core`` package
(real MRML classes, no Qt): it imports ``slicer`` and ``vtk`` but never ``qt``, ``ctk`` or
``slicer.app``. ``import MedFusionLib`` does not import this module; import it only where
``slicer`` exists.

Geometry: MRML places voxels with an ``IJKToRAS`` matrix in the RAS world frame, ITK (and
:class:`Image`) with spacing, origin and direction in LPS. The two differ by a sign flip of
the first two world axes; oblique directions are carried over exactly.

Typical use (in Slicer's Python console)::

    from MedFusionLib import mrml

    fused = mrml.fuse_volume_nodes(getNode("T1"), getNode("PET"), registration="rigid")
    mrml.show_fusion(fused, foreground=getNode("PET"), opacity=0.4)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from . import __version__
from .errors import InputError, MedFusionError
from .image import MODALITIES, Image
from .io import write_transform
from .job import FusionJob, run_job
from .pipeline import COLORMAP_AUTO, FusionResult, merge_parameters, plan_fusion
from .registration import TRANSFORM_TYPES
from .validation import check_device

REGISTRATIONS = ("none", *TRANSFORM_TYPES)
"""Values of ``registration`` accepted by :func:`fuse_volume_nodes`."""

GREY_COLOUR_NODE_ID = "vtkMRMLColorTableNodeGrey"
SLICE_VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
"""Slicer's three standard slice views and their orientations."""

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_DICOM_MODALITY = {"CT": "CT", "MR": "MR", "PT": "PET", "NM": "SPECT", "PET": "PET", "SPECT": "SPECT"}
_COLOUR_ID_PREFIXES = (
    "",
    "vtkMRMLPETProceduralColorNode",
    "vtkMRMLColorTableNode",
    "vtkMRMLProceduralColorNode",
)


# --- volume node <-> Image ------------------------------------------------------------------
def _ijk_to_ras(node: Any) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def _check_volume_node(node: Any, role: str) -> None:
    if node is None:
        raise InputError(f"no {role} volume node given (got None)")
    if not (hasattr(node, "IsA") and node.IsA("vtkMRMLVolumeNode")):
        raise InputError(f"{role} must be a volume node, got {type(node).__name__}")
    if node.GetImageData() is None:
        raise InputError(f"{role} volume node {node.GetName()!r} has no voxels")


def _node_modality(node: Any) -> str | None:
    for key in ("MedFusion.Modality", "DICOM.Modality"):
        value = node.GetAttribute(key)
        if value:
            modality = _DICOM_MODALITY.get(value.strip().upper())
            if modality in MODALITIES:
                return modality
    return None


def image_from_volume_node(node: Any) -> Image:
    """The voxels and geometry of a volume node as an :class:`Image` (a copy; the node is untouched).

    A scalar volume gives a gray image; a vector volume (or scalar volume) with three
    components gives an RGB image. The ``IJKToRAS`` matrix becomes LPS spacing, origin and
    direction, oblique directions included.

    A single-slice volume (``k`` dimension 1) becomes a 2-D image when its slice is axial
    (the ``k`` axis is +S and the in-plane axes have no S component): the 2-D image keeps
    the in-plane 2x2 direction, spacing and origin and drops the slice's S position. Any
    other single-slice volume (oblique or non-axial) stays a 3-D image with one slice, so
    that its geometry is kept exactly.

    The node's parent transform is NOT applied: the image is in the node's local frame,
    as the voxels are stored (register or harden the transform first if you need it).

    Args:
        node: a ``vtkMRMLScalarVolumeNode`` or ``vtkMRMLVectorVolumeNode`` (or subclass).

    Returns:
        The image; ``modality`` comes from the node attribute ``MedFusion.Modality`` or
        ``DICOM.Modality`` (``PT`` reads as PET, ``NM`` as SPECT), else ``None``.

    Raises:
        InputError: not a volume node, no voxels, or a component count other than 1 or 3.

    Example:
        >>> image = image_from_volume_node(getNode("MRHead"))  # doctest: +SKIP
    """
    _check_volume_node(node, "input")
    components = node.GetImageData().GetNumberOfScalarComponents()
    if components not in (1, 3):
        raise InputError(
            f"volume {node.GetName()!r} has {components} components per voxel; use 1 (gray) or 3 (RGB)"
        )
    array = np.array(slicer.util.arrayFromVolume(node), copy=True)  # (k, j, i[, c])
    lps = _LPS_FROM_RAS @ _ijk_to_ras(node)
    spacing = np.array(node.GetSpacing(), dtype=float)
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise InputError(
            f"volume {node.GetName()!r}: spacing must be finite and positive, got {tuple(spacing)}"
        )
    direction = lps[:3, :3] / spacing
    origin = lps[:3, 3]
    axial_slice = (
        array.shape[0] == 1
        and np.allclose(direction[2, :2], 0.0, atol=1e-9)
        and np.allclose(direction[:2, 2], 0.0, atol=1e-9)
        and direction[2, 2] > 0
    )
    if axial_slice:
        return Image(
            array=array[0],
            spacing=tuple(spacing[:2]),
            origin=tuple(origin[:2]),
            direction=tuple(direction[:2, :2].ravel()),
            modality=_node_modality(node),
        )
    return Image(
        array=array,
        spacing=tuple(spacing),
        origin=tuple(origin),
        direction=tuple(direction.ravel()),
        modality=_node_modality(node),
    )


def _ras_matrix_of(image: Image) -> np.ndarray:
    """The 4x4 IJKToRAS matrix of ``image`` (a 2-D image as one axial slice at S = 0)."""
    index_to_lps = np.eye(4)
    affine = image.index_to_world()
    n = image.ndim
    index_to_lps[:n, :n] = affine[:n, :n]
    index_to_lps[:n, 3] = affine[:n, n]
    return _LPS_FROM_RAS @ index_to_lps


def _set_ijk_to_ras(node: Any, matrix: np.ndarray) -> None:
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))


def volume_node_from_image(
    image: Image,
    scene: Any,
    name: str,
    *,
    attributes: Mapping[str, str] | None = None,
    node: Any = None,
) -> Any:
    """Put an :class:`Image` into ``scene`` as a volume node with the same voxels and geometry.

    A gray image becomes a ``vtkMRMLScalarVolumeNode`` shown with the Grey colour table (when
    the scene has it) and automatic window/level; an RGB image becomes a
    ``vtkMRMLVectorVolumeNode`` with a vector display node (8-bit RGB at window 255, level 127.5,
    so that the slice views show its own colours). A 2-D image becomes a
    single-slice volume (an axial slice at S = 0). Voxel types are kept as they are.

    Args:
        image: the image (LPS geometry is converted to RAS).
        scene: the ``vtkMRMLScene`` to add the node to.
        name: base name; made unique with ``scene.GenerateUniqueName``.
        attributes: node attributes to set (values are converted with ``str``).
        node: an existing volume node of the right class to update instead (its name and
            display node are kept).

    Returns:
        The new or updated volume node.

    Raises:
        InputError: ``node`` is of the wrong class for the image, or ``scene`` is None.
    """
    if scene is None:
        raise InputError("no MRML scene given (got None)")
    class_name = "vtkMRMLVectorVolumeNode" if image.is_rgb else "vtkMRMLScalarVolumeNode"
    if node is None:
        node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    elif not node.IsA(class_name) or (not image.is_rgb and node.IsA("vtkMRMLVectorVolumeNode")):
        raise InputError(
            f"node {node.GetName()!r} is a {node.GetClassName()}; this image needs a {class_name}"
        )
    array = image.array if image.ndim == 3 else image.array[np.newaxis]
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    _set_ijk_to_ras(node, _ras_matrix_of(image))
    if node.GetDisplayNode() is None:
        _add_display_node(node, scene, rgb=image.is_rgb)
    else:
        _show_rgb_as_stored(node)
    for key, value in (attributes or {}).items():
        node.SetAttribute(key, str(value))
    if image.modality and not (attributes and "MedFusion.Modality" in attributes):
        node.SetAttribute("MedFusion.Modality", image.modality)
    return node


def _show_rgb_as_stored(node: Any) -> None:
    """Show an 8-bit RGB vector volume with its own colours.

    A vector volume display node applies its window/level to every component, and its automatic
    window (the voxels' range) brightens the colours and shifts their balance (a volume whose
    brightest component is 199 is shown with 199 as 255). Window 255 at level 127.5 maps each
    8-bit component to itself.
    """
    display = node.GetDisplayNode()
    if display is None or not display.IsA("vtkMRMLVectorVolumeDisplayNode"):
        return
    image = node.GetImageData()
    if (
        image is None
        or image.GetNumberOfScalarComponents() != 3
        or image.GetScalarType() != vtk.VTK_UNSIGNED_CHAR
    ):
        return
    display.AutoWindowLevelOff()
    display.SetWindowLevel(255.0, 127.5)


def _add_display_node(node: Any, scene: Any, *, rgb: bool) -> None:
    if rgb:
        display = scene.AddNewNodeByClass("vtkMRMLVectorVolumeDisplayNode")
        node.SetAndObserveDisplayNodeID(display.GetID())
        _show_rgb_as_stored(node)
        return
    display = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
    if scene.GetNodeByID(GREY_COLOUR_NODE_ID) is not None:
        display.SetAndObserveColorNodeID(GREY_COLOUR_NODE_ID)
    display.AutoWindowLevelOn()
    node.SetAndObserveDisplayNodeID(display.GetID())


# --- transforms --------------------------------------------------------------------------------
def _components(transform: sitk.Transform) -> list[sitk.Transform]:
    if transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        parts: list[sitk.Transform] = []
        for index in range(composite.GetNumberOfTransforms()):
            parts.extend(_components(composite.GetNthTransform(index)))
        return parts
    return [transform]


def _as_3d_affine(transform: sitk.Transform) -> sitk.AffineTransform:
    """A linear transform (any kind, composite included, 2-D or 3-D) as one 3-D affine."""
    dim = transform.GetDimension()
    zero = np.array(transform.TransformPoint((0.0,) * dim))
    matrix = np.eye(3)
    for axis in range(dim):
        unit = [0.0] * dim
        unit[axis] = 1.0
        matrix[:dim, axis] = np.array(transform.TransformPoint(tuple(unit))) - zero
    translation = np.zeros(3)
    translation[:dim] = zero
    return sitk.AffineTransform(tuple(matrix.ravel()), tuple(translation))


def transform_node_from_transform(transform: sitk.Transform, scene: Any, name: str) -> Any:
    """Add a registration result to ``scene`` as a transform node that aligns like the engine.

    The transform is written to a temporary ITK file and read back with Slicer's own
    ``vtkMRMLTransformStorageNode`` (what Slicer's file loader does), which converts ITK's
    LPS "fixed point to moving point" resampling transform into Slicer's RAS transform of
    the moving volume. Setting the node as the moving volume's parent transform therefore
    shows it aligned with the fixed volume. Linear transforms (Euler, affine, versor, ...,
    or a composite of them) become a ``vtkMRMLLinearTransformNode``, anything else (B-spline,
    composite with a B-spline) a general ``vtkMRMLTransformNode``. No storage node is left
    in the scene.

    Args:
        transform: a SimpleITK transform, fixed-space to moving-space points (ITK convention),
            as :func:`MedFusionLib.registration.register` returns.
        scene: the ``vtkMRMLScene``.
        name: base name; made unique with ``scene.GenerateUniqueName``.

    Returns:
        The new transform node.

    Raises:
        InputError: a 2-D non-linear transform (Slicer's transforms are 3-D), or a file
            Slicer cannot read.
    """
    linear = all(part.IsLinear() for part in _components(transform))
    if linear:
        transform = _as_3d_affine(transform)
    elif transform.GetDimension() != 3:
        raise InputError(
            f"cannot make a Slicer transform node from a {transform.GetDimension()}-D "
            f"{transform.GetName()}; only 2-D linear transforms are converted"
        )
    class_name = "vtkMRMLLinearTransformNode" if linear else "vtkMRMLTransformNode"
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    storage = slicer.vtkMRMLTransformStorageNode()
    with tempfile.TemporaryDirectory(prefix="medfusion-") as directory:
        path = os.path.join(directory, "transform.h5")
        write_transform(transform, path)  # checked, and HDF5 kept out of Slicer's process
        storage.SetFileName(path)
        ok = storage.ReadData(node)
        storage.SetFileName("")
    if not ok:
        scene.RemoveNode(node)
        raise InputError(f"Slicer could not read the {transform.GetName()} as a transform node")
    return node


# --- fusion on nodes ---------------------------------------------------------------------------
def _check_pair(fixed: Any, moving: Any) -> None:
    _check_volume_node(fixed, "fixed")
    _check_volume_node(moving, "moving")
    if fixed.GetScene() is None or fixed.GetScene() is not moving.GetScene():
        raise InputError(
            f"fixed volume {fixed.GetName()!r} and moving volume {moving.GetName()!r} are not in one scene"
        )


def fuse_volume_nodes(
    fixed: Any,
    moving: Any,
    *,
    method: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    registration: str = "rigid",
    device: str = "auto",
    colormap: str | None = COLORMAP_AUTO,
) -> Any:
    """Register (optionally) and fuse two volume nodes; add the result to their scene.

    The inputs are never modified: no transform is set on or hardened into ``moving``. The
    registration result is added as a separate transform node named
    ``"<moving> to <fixed> (<registration>)"`` that the user may apply to ``moving`` to see it
    aligned. The fused volume (named ``"<fixed> + <moving> (<method>)"``) has the fixed
    volume's geometry and records how it was made in attributes ``MedFusion.Method``,
    ``MedFusion.Parameters`` (JSON), ``MedFusion.Registration``, ``MedFusion.TransformNodeID``,
    ``MedFusion.Version`` and ``MedFusion.Device``. Both images are read in their nodes' local
    frames (parent transforms are not applied).

    Args:
        fixed: the reference volume node (usually anatomical); the output has its grid.
        moving: the volume node fused into it (resampled in world coordinates).
        method: a registered fusion method; ``None`` uses the one recommended for the nodes'
            modalities (attributes ``MedFusion.Modality`` or ``DICOM.Modality``; see
            :func:`MedFusionLib.recommended.recommended`), the engine's gray default
            (:data:`MedFusionLib.pipeline.DEFAULT_METHOD`) when they are unknown.
        parameters: overrides of the method's defaults.
        registration: ``"none"``, ``"rigid"``, ``"affine"`` or ``"bspline"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        colormap: as :func:`~MedFusionLib.pipeline.fuse_images`: ``"auto"`` colours a gray PET
            or SPECT fused with a CT or MR through the recommended table, ``"none"`` keeps gray
            output, a table name picks the table. Recorded in ``MedFusion.Colormap`` (empty
            for gray).

    Returns:
        The output volume node: scalar for gray output; a ``vtkMRMLVectorVolumeNode`` of 8-bit
        RGB (shown as colour) for colour fusion or a pseudo-colour source.

    Raises:
        InputError: a missing node, nodes in different scenes, an unknown method or
            registration type.
        ParameterError: ``parameters`` not a mapping or with a bad entry, an unknown or
            unavailable device (both checked before any registration).
        MedFusionError: whatever the engine raises (no overlap, registration failure, ...).

    Example:
        >>> fused = fuse_volume_nodes(getNode("T1"), getNode("PET"), method="laplacian_pyramid")  # doctest: +SKIP
    """
    _check_pair(fixed, moving)
    if not isinstance(registration, str) or registration not in REGISTRATIONS:
        raise InputError(f"unknown registration {registration!r} (use {', '.join(REGISTRATIONS)})")
    fixed_image = image_from_volume_node(fixed)
    moving_image = image_from_volume_node(moving)
    names = {"name_a": fixed.GetName(), "name_b": moving.GetName()}
    try:
        from .fusion import get_method

        plan = plan_fusion(fixed_image, moving_image, method=method, colormap=colormap, **names)
        spec = get_method(plan.method)
    except MedFusionError as error:
        raise InputError(str(error)) from None
    # the rest of the options fail here, before a registration that may take minutes
    spec.resolve_parameters(merge_parameters(plan.parameters, parameters))
    check_device(device)
    job = FusionJob(
        fixed=fixed_image,
        moving=moving_image,
        registration=registration,
        method=method,
        parameters=parameters,
        device=device,
        colormap=colormap,
        name_fixed=fixed.GetName(),
        name_moving=moving.GetName(),
    )
    result = run_job(job)
    return add_fusion_result_nodes(
        result.fusion, fixed, moving, registration=registration, transform=result.sitk_transform
    )


def add_fusion_result_nodes(
    result: FusionResult,
    fixed: Any,
    moving: Any,
    *,
    registration: str,
    transform: sitk.Transform | None = None,
    node: Any = None,
) -> Any:
    """Add an already computed fusion (and its registration transform) to the fixed node's scene.

    This is the second half of :func:`fuse_volume_nodes`, for callers that ran the engine
    elsewhere (the module's background process). An RGB result (float in ``[0, 1]``) is stored
    as an 8-bit vector volume so that Slicer shows its colours.

    Args:
        result: the engine's :class:`~MedFusionLib.pipeline.FusionResult` on the fixed grid.
        fixed, moving: the input volume nodes (only read, for names, scene and geometry).
        registration: what was done (``"none"``, ``"rigid"``, ...), recorded in the attributes.
        transform: the registration transform (fixed to moving points) or ``None``; when given,
            a transform node is added (not applied to ``moving``).
        node: an existing output volume node to update instead of creating one.

    Returns:
        The output volume node.
    """
    _check_pair(fixed, moving)
    scene = fixed.GetScene()
    transform_id = ""
    if transform is not None:
        transform_node = transform_node_from_transform(
            transform, scene, f"{moving.GetName()} to {fixed.GetName()} ({registration})"
        )
        transform_id = transform_node.GetID()
    image = result.image
    if image.is_rgb and image.array.dtype != np.uint8:
        image = image.with_array(np.clip(np.rint(image.array * 255.0), 0, 255).astype(np.uint8))
    attributes = {
        "MedFusion.Method": result.method,
        "MedFusion.Parameters": json.dumps(result.parameters, sort_keys=True, default=str),
        "MedFusion.Registration": registration,
        "MedFusion.TransformNodeID": transform_id,
        "MedFusion.FixedNodeID": fixed.GetID(),
        "MedFusion.MovingNodeID": moving.GetID(),
        "MedFusion.Version": __version__,
        "MedFusion.Device": result.device,
        "MedFusion.Colormap": result.colormap or "",
    }
    output = volume_node_from_image(
        image,
        scene,
        f"{fixed.GetName()} + {moving.GetName()} ({result.method})",
        attributes=attributes,
        node=node,
    )
    fixed_dims = fixed.GetImageData().GetDimensions()
    if output.GetImageData().GetDimensions() == fixed_dims:
        # the result is on the fixed grid: copy the matrix so that the geometry is identical
        _set_ijk_to_ras(output, _ijk_to_ras(fixed))
    return output


# --- background jobs on nodes -----------------------------------------------------------------
def start_background_job(
    fixed: Any,
    moving: Any,
    *,
    workdir: str | os.PathLike[str] | None = None,
    python: str | None = None,
    lesion: Any = None,
    temporary: str | os.PathLike[str] | None = None,
    **options: Any,
) -> tuple[Any, FusionJob]:
    """Run a :class:`~MedFusionLib.job.FusionJob` on two volume nodes in a background process.

    The nodes' voxels are copied now (the scene may change meanwhile; 0.03-0.08 s for a
    512x512x300 CT on a 2-core machine); the copies are written to ``workdir`` as uncompressed
    NRRD on a worker thread, and the process (:class:`~MedFusionLib.background.BackgroundJob`)
    starts when they are written, so this returns at once. The job is checked first: a bad
    option raises here, in one line, before anything is copied or started.

    Args:
        fixed, moving: the input volume nodes.
        workdir: an empty folder for the inputs, the job file and the outputs; ``None`` makes a
            new ``MedFusion-*`` folder in ``temporary`` (the system's by default), removed again
            if the job cannot start. The job's ``workdir`` attribute names it.
        python: the interpreter (``PythonSlicer`` in Slicer).
        lesion: optional segmentation (first segment, exported on the fixed grid) or label map.
        options: :class:`~MedFusionLib.job.FusionJob` fields (registration, method, parameters,
            colormap, device, metrics, modality_fixed, modality_moving, ...). The modalities
            default to the nodes' ``MedFusion.Modality``/``DICOM.Modality`` attributes.

    Returns:
        The started :class:`~MedFusionLib.background.BackgroundJob` and the job it runs.
    """
    import shutil

    _check_pair(fixed, moving)
    if workdir is not None:
        return _start_background_job(fixed, moving, Path(workdir), python, lesion, options)
    folder = Path(tempfile.mkdtemp(prefix="MedFusion-", dir=temporary))
    try:
        return _start_background_job(fixed, moving, folder, python, lesion, options)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _start_background_job(
    fixed: Any, moving: Any, folder: Path, python: str | None, lesion: Any, options: Mapping[str, Any]
) -> tuple[Any, FusionJob]:
    from .background import BackgroundJob
    from .io import write_image

    paths = {key: str(folder / f"{key}.nrrd") for key in ("fixed", "moving", "lesion")}
    registration = options.get("registration") or "none"
    job = FusionJob(
        fixed=paths["fixed"],
        moving=paths["moving"],
        output=str(folder / "fused.nrrd"),
        transform=str(folder / "transform.h5") if registration != "none" else None,
        lesion=paths["lesion"] if lesion is not None else None,
        **{
            "modality_fixed": _node_modality(fixed),
            "modality_moving": _node_modality(moving),
            **{key: value for key, value in options.items() if value is not None or key == "method"},
        },
    )
    job.check()
    fixed_image = image_from_volume_node(fixed)
    moving_image = image_from_volume_node(moving)
    lesion_image = lesion_image_from_node(lesion, fixed) if lesion is not None else None

    def write_inputs() -> None:
        write_image(fixed_image, paths["fixed"], compress=False)
        write_image(moving_image, paths["moving"], compress=False)
        if lesion_image is not None:
            write_image(lesion_image, paths["lesion"], compress=False)

    runner = BackgroundJob(python)
    runner.start(job, folder, prepare=write_inputs)
    return runner, job


def add_job_result_nodes(summary: Mapping[str, Any], fixed: Any, moving: Any, *, node: Any = None) -> Any:
    """Add a finished background job's result (its ``done`` summary) to the fixed node's scene.

    Reads the fused image and the transform the job wrote and calls
    :func:`add_fusion_result_nodes`. ``node`` is reused when it is still in the scene and of the
    right kind (an RGB result needs a vector volume, a gray one a scalar volume).

    Raises:
        InputError: an input node left the scene during the job, or the outputs are missing.
    """
    from .io import read_image

    for role, input_node in (("fixed", fixed), ("moving", moving)):
        if input_node is None or input_node.GetScene() is None:
            raise InputError(f"the {role} volume was removed from the scene during the fusion")
    image = read_image(summary["output"])
    transform = sitk.ReadTransform(summary["transform"]) if summary.get("transform") else None
    if node is not None and (node.GetScene() is None or node.IsA("vtkMRMLVectorVolumeNode") != image.is_rgb):
        node = None
    fusion = FusionResult(
        image=image,
        method=summary["method"],
        parameters=summary["parameters"],
        device=summary["device"],
        seconds=float(summary["seconds"]),
        colour_source=summary.get("colour_source"),
        colormap=summary.get("colormap"),
    )
    registration = (summary.get("registration") or {}).get("type", "none")
    return add_fusion_result_nodes(
        fusion, fixed, moving, registration=registration, transform=transform, node=node
    )


# --- DICOM export and PACS ----------------------------------------------------------------------
DICOM_INSTANCE_UIDS = "DICOM.instanceUIDs"
"""The volume node attribute in which Slicer's DICOM module keeps the SOP Instance UIDs it loaded."""


def image_with_dicom_identity(node: Any, file_for_instance: Any) -> Image:
    """A volume node as an :class:`Image` with the identity of the DICOM series it was loaded from.

    Args:
        node: a volume loaded from Slicer's DICOM database (attribute ``DICOM.instanceUIDs``).
        file_for_instance: ``uid -> path`` of an instance in the database; in Slicer
            ``slicer.dicomDatabase.fileForInstance``.

    Returns:
        The image; its metadata carries the series' identity
        (:func:`MedFusionLib.dicom.series.identity_metadata`) when every slice's file is found,
        with the instances in the image's slice order.

    Raises:
        InputError: the node lists instances but some are missing from the database.
    """
    from .dicom.series import identity_metadata

    image = image_from_volume_node(node)
    uids = (node.GetAttribute(DICOM_INSTANCE_UIDS) or "").split()
    if not uids:
        return image
    files = [file_for_instance(uid) for uid in uids]
    missing = [uid for uid, path in zip(uids, files, strict=True) if not path or not os.path.isfile(path)]
    if missing:
        raise InputError(
            f"volume {node.GetName()!r}: {len(missing)} of its {len(uids)} DICOM instances are not in the "
            f"database (first: {missing[0]})"
        )
    files = _in_slice_order(files, image)
    metadata = {**identity_metadata(files), "source": f"DICOM database ({node.GetName()})", "format": "dicom"}
    return image.with_array(image.array, metadata=metadata)


def _in_slice_order(files: list[str], image: Image) -> list[str]:
    """Files sorted along the image's third axis (by Image Position (Patient), LPS)."""
    import pydicom

    if image.ndim != 3:
        return files
    axis = image.direction_matrix[:, 2]
    positions = [
        float(
            np.dot([float(v) for v in pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient], axis)
        )
        for f in files
    ]
    return [f for _, f in sorted(zip(positions, files, strict=True))]


def export_fusion_to_dicom(
    fused: Any,
    fixed: Any,
    moving: Any,
    folder: str | os.PathLike[str],
    *,
    file_for_instance: Any,
    send: str | None = None,
    calling_ae: str = "MEDFUSION",
) -> list[Path]:
    """Write a fused volume node as a derived series in the fixed volume's DICOM study; optionally send it.

    The fused node must be on the fixed node's grid (what :func:`fuse_volume_nodes` and the
    module make). Its attributes ``MedFusion.Method``, ``MedFusion.Parameters`` and
    ``MedFusion.Registration`` give the ``DerivationDescription``; the transform node named by
    ``MedFusion.TransformNodeID`` becomes a Spatial Registration (rigid, affine) or Deformable
    Spatial Registration (B-spline) object beside the series (:mod:`MedFusionLib.dicom`).

    Args:
        fused, fixed, moving: volume nodes; ``fixed`` (and ``moving``, for the references and the
            registration object) loaded from Slicer's DICOM database.
        folder: the output folder (replaced atomically; must not exist or hold only ``.dcm`` files).
        file_for_instance: ``uid -> path`` (``slicer.dicomDatabase.fileForInstance`` in Slicer).
        send: ``AE@HOST:PORT`` of a PACS to store the series on (C-STORE), or ``None``.

    Returns:
        The files written.

    Raises:
        InputError: the fixed volume has no DICOM identity, or the fused one is not on its grid.
        MedFusionError: a failed send (one line naming the instances not stored).
    """
    from .dicom.derived import derivation_description, write_derived_series
    from .dicom.network import parse_peer
    from .dicom.network import send as send_files
    from .dicom.registration import registration_object
    from .io import check_output_path

    out = Path(folder)
    if check_output_path(out) != "dicom":
        raise InputError(f"cannot export DICOM to {out}: a folder without extension is needed")
    peer = parse_peer(send, option="send") if send else None
    from .output_guard import guard_outputs

    sources = {
        os.path.dirname(str(file_for_instance(uid)))
        for node in (fixed, moving)
        if node is not None
        for uid in (node.GetAttribute(DICOM_INSTANCE_UIDS) or "").split()[:1]
        if file_for_instance(uid)
    }
    guard_outputs(inputs=sorted(sources), outputs=[out])  # never replace the database's own folders
    fixed_image = image_with_dicom_identity(fixed, file_for_instance)
    if not fixed_image.metadata.get("study_instance_uid"):
        raise InputError(
            f"volume {fixed.GetName()!r} was not loaded from the DICOM database: no study to add the fusion to"
        )
    moving_image = image_with_dicom_identity(moving, file_for_instance) if moving is not None else None
    fused_image = image_from_volume_node(fused)
    registration = fused.GetAttribute("MedFusion.Registration") or "none"
    extra = []
    transform = None
    transform_id = fused.GetAttribute("MedFusion.TransformNodeID")
    transform_node = fused.GetScene().GetNodeByID(transform_id) if transform_id and fused.GetScene() else None
    if (
        transform_node is not None
        and moving_image is not None
        and moving_image.metadata.get("dicom_instances")
    ):
        transform = transform_from_transform_node(transform_node)
        extra.append(
            ("REG_0001.dcm", registration_object(fixed_image, moving_image, transform, kind=registration))
        )
    try:
        parameters = json.loads(fused.GetAttribute("MedFusion.Parameters") or "{}")
    except ValueError:
        parameters = {}
    description = derivation_description(
        fused.GetAttribute("MedFusion.Method") or "unknown",
        parameters,
        None if registration == "none" else registration,
        fused.GetAttribute("MedFusion.Colormap") or None,
    )
    files = write_derived_series(
        fused_image, fixed_image, moving_image, out, description=description, extra=extra, transform=transform
    )
    if peer is not None:
        send_files([out], peer, calling_ae=calling_ae)
    return files


# --- the lesion readout ------------------------------------------------------------------------
LESION_NODE_CLASSES = ("vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode")
"""Node classes accepted as the lesion of :func:`clinical_readout`."""


def segment_to_label_map(segmentation: Any, reference: Any, *, segment_id: str | None = None) -> Any:
    """Export one segment of ``segmentation`` to a new label map node on ``reference``'s grid.

    Uses Slicer's own ``vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode`` (what
    ``slicer.modules.segmentations.logic()`` does in the application; the static method exists
    in ``slicer-core`` too). The caller removes the returned node from the scene when done.

    Args:
        segmentation: a ``vtkMRMLSegmentationNode``.
        reference: the volume node whose geometry the label map gets.
        segment_id: the segment to export; default: the first segment.

    Returns:
        A new ``vtkMRMLLabelMapVolumeNode`` in the segmentation's scene.

    Raises:
        InputError: no segment, an unknown segment ID, or an export failure.
    """
    scene = segmentation.GetScene()
    segments = segmentation.GetSegmentation()
    if segments.GetNumberOfSegments() == 0:
        raise InputError(f"segmentation {segmentation.GetName()!r} has no segment")
    segment_id = segment_id or segments.GetNthSegmentID(0)
    if segments.GetSegment(segment_id) is None:
        raise InputError(f"segmentation {segmentation.GetName()!r} has no segment {segment_id!r}")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    label_map = scene.AddNewNodeByClass(
        "vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName(f"{segmentation.GetName()} (lesion)")
    )
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.ExportSegmentsToLabelmapNode(segmentation, ids, label_map, reference):
        scene.RemoveNode(label_map)
        raise InputError(
            f"could not export segment {segment_id!r} of {segmentation.GetName()!r} to a label map"
        )
    return label_map


def lesion_image_from_node(lesion: Any, reference: Any) -> Image:
    """The lesion mask of a label map or segmentation node as an :class:`Image`.

    A label map (or any scalar volume) is read as it is stored, on its own grid (the engine
    resamples it onto the fixed grid with nearest neighbour interpolation); a segmentation's
    first segment is exported on ``reference``'s grid (:func:`segment_to_label_map`) and the
    temporary label map node is removed again.

    Raises:
        InputError: ``lesion`` is not a segmentation or volume node, or has no segment.
    """
    if lesion is None or not hasattr(lesion, "IsA"):
        raise InputError(f"the lesion must be a segmentation or label map node, got {type(lesion).__name__}")
    if lesion.IsA("vtkMRMLSegmentationNode"):
        label_map = segment_to_label_map(lesion, reference)
        try:
            return image_from_volume_node(label_map)
        finally:
            label_map.GetScene().RemoveNode(label_map)
    if lesion.IsA("vtkMRMLScalarVolumeNode"):
        _check_volume_node(lesion, "lesion")
        return image_from_volume_node(lesion)
    raise InputError(
        f"the lesion must be a segmentation or label map node, got a {lesion.GetClassName()} "
        f"({lesion.GetName()!r})"
    )


def transform_from_transform_node(node: Any) -> sitk.Transform:
    """A transform node as the SimpleITK transform it was made from (inverse of :func:`transform_node_from_transform`).

    Written with Slicer's ``vtkMRMLTransformStorageNode`` to a temporary ITK file and read back:
    fixed-space to moving-space points in LPS, ITK's resampling convention.
    """
    storage = slicer.vtkMRMLTransformStorageNode()
    with tempfile.TemporaryDirectory(prefix="medfusion-") as directory:
        path = os.path.join(directory, "transform.h5")
        storage.SetFileName(path)
        ok = storage.WriteData(node)
        if not ok or not os.path.isfile(path):
            raise InputError(f"Slicer could not write transform node {node.GetName()!r}")
        return sitk.ReadTransform(path)


def clinical_readout(
    fixed: Any,
    moving: Any,
    fused: Any,
    lesion: Any,
    *,
    colormap: str | None = None,
    modality_fixed: str | None = None,
    modality_moving: str | None = None,
) -> dict[str, Any]:
    """Conspicuity kept and anatomy kept of a fused volume node for a lesion node (issue 13).

    Computed on the fixed volume's grid (where ``fused`` lies) by
    :func:`MedFusionLib.readout.clinical_readout`: the moving volume is resampled onto it through
    the registration transform recorded on ``fused`` (``MedFusion.TransformNodeID``, when
    ``fused`` was made from this moving node), the lesion with nearest neighbour interpolation.

    Args:
        fixed, moving: the input volume nodes of the fusion; one CT or MR and one PET or SPECT,
            by their ``MedFusion.Modality`` / ``DICOM.Modality`` attributes or the overrides.
        fused: the fusion output node (gray, or 8-bit RGB for a colour fusion).
        lesion: a ``vtkMRMLLabelMapVolumeNode`` (any grid overlapping the fixed volume) or a
            ``vtkMRMLSegmentationNode`` (its first segment is used).
        colormap: the colour table through which an RGB ``fused`` shows the functional image;
            default: ``fused``'s ``MedFusion.Colormap`` attribute.
        modality_fixed, modality_moving: override the nodes' modalities.

    Returns:
        See :func:`MedFusionLib.readout.clinical_readout`.

    Raises:
        InputError, ParameterError: bad nodes, unknown modalities, no overlap.
    """
    from .readout import clinical_readout as readout

    _check_pair(fixed, moving)
    _check_volume_node(fused, "fused")
    if colormap is None:
        colormap = fused.GetAttribute("MedFusion.Colormap") or None
    transform = None
    transform_id = fused.GetAttribute("MedFusion.TransformNodeID")
    if transform_id and fused.GetAttribute("MedFusion.MovingNodeID") == moving.GetID():
        transform_node = fixed.GetScene().GetNodeByID(transform_id)
        if transform_node is not None:
            transform = transform_from_transform_node(transform_node)
    return readout(
        image_from_volume_node(fixed),
        image_from_volume_node(moving),
        image_from_volume_node(fused),
        lesion_image_from_node(lesion, fixed),
        colormap=colormap,
        transform=transform,
        modality_fixed=modality_fixed,
        modality_moving=modality_moving,
    )


# --- slice views -------------------------------------------------------------------------------
def _colour_node_id(scene: Any, lut: str) -> str:
    for prefix in _COLOUR_ID_PREFIXES:
        colour = scene.GetNodeByID(prefix + lut)
        if colour is not None and colour.IsA("vtkMRMLColorNode"):
            return colour.GetID()
    by_name = scene.GetFirstNode(lut, "vtkMRMLColorNode")
    if by_name is not None:
        return by_name.GetID()
    names = [n.GetName() for n in _nodes(scene, "vtkMRMLPETProceduralColorNode")]
    if scene.GetNodeByID(GREY_COLOUR_NODE_ID) is not None:
        names.append("Grey")
    total = len(list(_nodes(scene, "vtkMRMLColorNode")))
    raise InputError(
        f"unknown colour table {lut!r} (for example {', '.join(names) or 'none'}; "
        f"{total} colour nodes in the scene)"
    )


def _nodes(scene: Any, class_name: str) -> Iterable[Any]:
    collection = scene.GetNodesByClass(class_name)
    return [collection.GetItemAsObject(index) for index in range(collection.GetNumberOfItems())]


def _fit_slice_node(slice_node: Any, volume: Any) -> None:
    """Centre ``slice_node`` on ``volume`` and zoom so that the volume fills the view."""
    bounds = [0.0] * 6
    volume.GetRASBounds(bounds)
    low, high = np.array(bounds[0::2]), np.array(bounds[1::2])
    if not np.all(np.isfinite(low)) or np.any(high < low):
        return
    centre, half = (low + high) / 2, (high - low) / 2
    slice_to_ras = slicer.util.arrayFromVTKMatrix(slice_node.GetSliceToRAS())
    fov_x = 2 * float(np.abs(slice_to_ras[:3, 0]) @ half)
    fov_y = 2 * float(np.abs(slice_to_ras[:3, 1]) @ half)
    width, height, _ = slice_node.GetDimensions()
    if width <= 0 or height <= 0 or fov_x <= 0 or fov_y <= 0:
        return
    if fov_x / fov_y > width / height:
        fov_y = fov_x * height / width
    else:
        fov_x = fov_y * width / height
    slice_node.SetFieldOfView(fov_x, fov_y, slice_node.GetFieldOfView()[2])
    slice_node.JumpSliceByCentering(*centre)
    slice_node.UpdateMatrices()


def show_fusion(
    fused: Any,
    *,
    foreground: Any = None,
    opacity: float = 0.5,
    foreground_lut: str = "PET-Heat",
    application_logic: Any = None,
    fit: bool = True,
) -> None:
    """Show ``fused`` in every slice view, optionally with ``foreground`` blended over it.

    Every ``vtkMRMLSliceCompositeNode`` of the scene gets ``fused`` as background and
    ``foreground`` (or none) as foreground at ``opacity``; the views are linked and fitted to
    the volumes. An RGB ``fused`` (a colour fusion: 8-bit vector volume) is shown with its own
    colours (window 255, level 127.5; not the automatic window, which distorts them).

    A scalar ``foreground`` is shown through an overlay node, "<name> (overlay)", that shares
    its voxels (no copy) but has its own display node (``foreground_lut``, window from the
    median to the 99.5th percentile of the voxels inside the body, so that the uptake rather
    than the whole body is coloured) and, when ``fused``
    was registered from this very node, sits under the registration's transform node, so the
    overlay is aligned like the fusion and follows any adjustment made in the Transforms
    module. The user's node itself is never changed. Calling again reuses the overlay.

    Args:
        fused: the volume node to show as background (usually a fusion output).
        foreground: a volume node to overlay, or ``None``.
        opacity: foreground opacity in ``[0, 1]``.
        foreground_lut: a colour node name or ID, e.g. ``"PET-Heat"``, ``"PET-Rainbow2"``,
            ``"Grey"`` or ``"vtkMRMLPETProceduralColorNodePET-Heat"``.
        application_logic: a ``vtkMRMLApplicationLogic`` whose slice logics fit the views
            (``slicer.app.applicationLogic()`` in Slicer). Without slice logics the views are
            fitted from the volume bounds directly.
        fit: fit the views to the volumes; ``False`` changes only the layers, opacity and colours
            (a display setting changed on a result the user is looking at).

    Raises:
        InputError: ``fused`` missing, opacity out of range, unknown colour table.
    """
    _check_volume_node(fused, "fused")
    scene = fused.GetScene()
    if scene is None:
        raise InputError(f"volume {fused.GetName()!r} is not in a scene")
    if not 0.0 <= opacity <= 1.0:
        raise InputError(f"opacity must be in [0, 1], got {opacity}")
    if foreground is not None:
        _check_volume_node(foreground, "foreground")
        colour_id = _colour_node_id(scene, foreground_lut)
        if not foreground.IsA("vtkMRMLVectorVolumeNode"):
            foreground = _overlay_node(fused, foreground, colour_id)
    _show_rgb_as_stored(fused)
    for composite in _nodes(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(fused.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(opacity)
        composite.SetLinkedControl(1)
    if not fit:
        return
    logics = application_logic.GetSliceLogics() if application_logic is not None else None
    if logics is not None and logics.GetNumberOfItems() > 0:
        for index in range(logics.GetNumberOfItems()):
            logics.GetItemAsObject(index).FitSliceToAll()
    else:
        for slice_node in _nodes(scene, "vtkMRMLSliceNode"):
            _fit_slice_node(slice_node, fused)


def show_result(
    output: Any,
    *,
    show_foreground: bool = True,
    foreground_lut: str = "PET-Heat",
    opacity: float = 0.5,
    application_logic: Any = None,
    fit: bool = True,
) -> None:
    """Show a MedFusion result with the moving volume it was made from (not the current selection).

    The moving volume (the result's ``MedFusion.MovingNodeID``) is blended on top when
    ``show_foreground`` and the result is gray; a colour fusion already shows the PET or SPECT
    in colour, so nothing goes on top of it. See :func:`show_fusion` for the rest.
    """
    _check_volume_node(output, "output")
    scene = output.GetScene()
    moving = scene.GetNodeByID(output.GetAttribute("MedFusion.MovingNodeID") or "") if scene else None
    colour_fusion = bool(output.GetAttribute("MedFusion.Colormap"))
    show_fusion(
        output,
        foreground=moving if show_foreground and not colour_fusion else None,
        opacity=float(opacity),
        foreground_lut=foreground_lut,
        application_logic=application_logic,
        fit=fit,
    )


def load_bundled_samples(scene: Any) -> list[Any]:
    """Add the sample T1 + PET pair shipped inside MedFusionLib to ``scene`` (offline).

    Each node carries the data's licence in its ``MedFusion.License`` attribute
    (:data:`~MedFusionLib.slicer_support.SAMPLE_DATA_LICENSE`).
    """
    from .io import read_image
    from .slicer_support import SAMPLE_DATA_LICENSE, bundled_sample_paths

    nodes = []
    for name, path in bundled_sample_paths().items():
        node = volume_node_from_image(read_image(path), scene, name)
        node.SetAttribute("MedFusion.License", SAMPLE_DATA_LICENSE)
        nodes.append(node)
    return nodes


def _overlay_node(fused: Any, foreground: Any, colour_id: str) -> Any:
    """The display-only twin of ``foreground`` (shared voxels), aligned by the fusion's transform."""
    scene = fused.GetScene()
    overlay = next(
        (
            n
            for n in _nodes(scene, "vtkMRMLScalarVolumeNode")
            if n.GetAttribute("MedFusion.OverlayOf") == foreground.GetID()
        ),
        None,
    )
    if overlay is None:
        overlay = scene.AddNewNodeByClass(
            "vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(f"{foreground.GetName()} (overlay)")
        )
        overlay.SetAttribute("MedFusion.OverlayOf", foreground.GetID())
        overlay.SetHideFromEditors(True)  # display-only: not offered as an input or output
        overlay.SetAndObserveImageData(foreground.GetImageData())
        _set_ijk_to_ras(overlay, _ijk_to_ras(foreground))
        display = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
        overlay.SetAndObserveDisplayNodeID(display.GetID())
    display = overlay.GetDisplayNode()
    display.SetAndObserveColorNodeID(colour_id)
    voxels = numpy_support.vtk_to_numpy(foreground.GetImageData().GetPointData().GetScalars())
    voxels = voxels[np.isfinite(voxels)].astype(np.float64)
    floor, top = np.percentile(voxels, [0.5, 99.5])
    inside = voxels[voxels > floor + 0.1 * (top - floor)]  # the body, not the air around it
    low, high = np.percentile(inside, [50.0, 99.5]) if inside.size else (floor, top)
    if high <= low:
        low, high = float(voxels.min()), float(voxels.max())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(float(low), float(high))
    registered_from_it = fused.GetAttribute("MedFusion.MovingNodeID") == foreground.GetID()
    transform_id = fused.GetAttribute("MedFusion.TransformNodeID") if registered_from_it else None
    if not transform_id:
        transform_id = foreground.GetTransformNodeID()  # the user's own placement, if any
    overlay.SetAndObserveTransformNodeID(transform_id or None)
    return overlay


def render_slice_views_png(
    scene: Any,
    path: str | os.PathLike[str],
    *,
    size: tuple[int, int] | None = (256, 256),
    layouts: tuple[str, ...] = ("Red", "Yellow", "Green"),
) -> Path:
    """Write the blended slice views side by side to a PNG without OpenGL.

    Each view's picture is what its composite node describes (background, foreground and
    opacity, with the volumes' colour tables), taken from ``vtkMRMLSliceLogic``'s image data
    pipeline, so no render window is needed. Meant for headless scenes (tests, screenshots).

    Args:
        scene: a scene with slice nodes (and composite nodes) named by ``layouts``.
        path: the PNG to write.
        size: ``(width, height)`` of each view; the slice nodes are resized to it and refitted
            on their background volume. ``None`` keeps the slice nodes' dimensions.
        layouts: the slice views to put side by side, left to right.

    Returns:
        The PNG path.

    Raises:
        InputError: a view named in ``layouts`` is missing from the scene.
    """
    from PIL import Image as PILImage

    tiles = []
    for layout in layouts:
        slice_node = next((n for n in _nodes(scene, "vtkMRMLSliceNode") if n.GetLayoutName() == layout), None)
        if slice_node is None:
            raise InputError(f"the scene has no {layout!r} slice view")
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        logic.SetSliceNode(slice_node)
        if size is not None:
            slice_node.SetDimensions(int(size[0]), int(size[1]), 1)
            background = scene.GetNodeByID(logic.GetSliceCompositeNode().GetBackgroundVolumeID() or "")
            if background is not None:
                _fit_slice_node(slice_node, background)
        tiles.append(_slice_pixels(logic, slice_node))
        logic.SetMRMLScene(None)
    gap = np.zeros((tiles[0].shape[0], 4, 3), np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row.extend([gap, tile])
    path = Path(path)
    PILImage.fromarray(np.concatenate(row, axis=1)).save(path, optimize=True)
    return path


def _slice_pixels(logic: Any, slice_node: Any) -> np.ndarray:
    """The blended RGB picture of one slice view, top row first (black when nothing is shown)."""
    width, height, _ = slice_node.GetDimensions()
    connection = logic.GetImageDataConnection()
    if connection is None:
        return np.zeros((height, width, 3), np.uint8)
    producer = connection.GetProducer()
    producer.Update()
    data = producer.GetOutputDataObject(connection.GetIndex())
    scalars = data.GetPointData().GetScalars() if data is not None else None
    if scalars is None:
        return np.zeros((height, width, 3), np.uint8)
    width, height, _ = data.GetDimensions()
    pixels = numpy_support.vtk_to_numpy(scalars).reshape(height, width, -1)[::-1]
    return np.ascontiguousarray(pixels[..., :3]).astype(np.uint8)


# --- headless scenes ---------------------------------------------------------------------------
@dataclass
class HeadlessScene:
    """A scene with the logics the Slicer application would give it (for tests and scripts)."""

    scene: Any
    application_logic: Any
    colour_logic: Any
    volumes_logic: Any
    slice_logics: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        """Detach the logics from the scene and clear it.

        Call this (or use the object as a context manager) before dropping the last
        reference: letting VTK destroy a scene whose slice logics still observe a PET colour
        node crashes the process in slicer-core 5.11.
        """
        for logic in self.slice_logics.values():
            logic.SetMRMLScene(None)
        for logic in (self.volumes_logic, self.colour_logic, self.application_logic):
            logic.SetMRMLScene(None)
        self.application_logic.SetSliceLogics(None)
        self.slice_logics.clear()
        self.scene.Clear(1)

    def __enter__(self) -> HeadlessScene:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def new_scene(
    *, views: Mapping[str, str] | None = None, view_size: tuple[int, int] = (256, 256)
) -> HeadlessScene:
    """A new scene with colour nodes (Grey, PET-Heat, ...), the Volumes logic and slice views.

    Outside the Slicer application (``slicer-core``) nothing creates these: this sets up an
    application logic, the Colors logic (which makes the built-in colour nodes), the
    Volumes logic (for ``ResampleVolumeToReferenceVolume``, ``AddArchetypeVolume``) and one
    slice logic, slice node and composite node per view. Keep the returned object alive as
    long as the scene is used (it owns the logics) and call :meth:`HeadlessScene.close`
    when done (or use it in a ``with`` block).

    Args:
        views: slice view layout names and orientations; default Red/Yellow/Green as
            Axial/Sagittal/Coronal (:data:`SLICE_VIEWS`).
        view_size: ``(width, height)`` of each slice view in pixels.

    Returns:
        A :class:`HeadlessScene`.
    """
    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    colours = slicer.vtkSlicerColorLogic()
    colours.SetMRMLApplicationLogic(application)
    colours.SetMRMLScene(scene)
    application.SetModuleLogic("Colors", colours)
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLApplicationLogic(application)
    volumes.SetMRMLScene(scene)
    application.SetModuleLogic("Volumes", volumes)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    collection = vtk.vtkCollection()
    logics = {}
    for layout, orientation in (views or SLICE_VIEWS).items():
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(application)
        logic.SetMRMLScene(scene)
        slice_node = logic.AddSliceNode(layout)
        slice_node.SetOrientation(orientation)
        slice_node.SetDimensions(int(view_size[0]), int(view_size[1]), 1)
        logics[layout] = logic
        collection.AddItem(logic)
    application.SetSliceLogics(collection)
    return HeadlessScene(scene, application, colours, volumes, logics)
