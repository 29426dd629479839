"""One description of a fusion job and the one function that runs it.

Every front end describes its work as a :class:`FusionJob` (inputs, registration, method and
parameters, colour table, device, windows, metrics, lesion, outputs) and hands it to
:func:`run_job`: the ``medfusion fuse`` command, the background process of the Slicer module
(:mod:`MedFusionLib.background`, which reads the job from JSON with :meth:`FusionJob.from_mapping`)
and the MRML bridge (:func:`MedFusionLib.mrml.fuse_volume_nodes`, whose inputs are images in
memory). An option is therefore added once, here.

Steps of :func:`run_job`, reported through ``emit(stage, progress, message)``: ``reading``,
``registering`` (when asked), ``fusing``, ``writing`` (when an output path is given) and
``scoring`` (when metrics or a lesion are given). Outputs are written atomically and removed
again if a later step fails, so no half-written output is left behind.

Example:
    >>> job = FusionJob(fixed="t1.nii.gz", moving="pet.nii.gz", output="fused.nii.gz",
    ...                 registration="rigid", method=None)  # doctest: +SKIP
    >>> result = run_job(job)  # doctest: +SKIP
    >>> result.summary()["method"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ParameterError

REGISTRATION_TYPES = ("none", "rigid", "affine", "bspline")
"""Values of :attr:`FusionJob.registration`."""

TRANSFORM_SUFFIXES = (".tfm", ".txt", ".h5")
"""File types of :attr:`FusionJob.transform`."""

DEFAULT_METRICS = ("EN", "SD", "MI", "SSIM", "VIF", "Qabf")
"""The metrics scored when a job asks for metrics without naming them."""

COLORMAP_AUTO = "auto"

Emit = Callable[[str, float, str], None]
"""``emit(stage, progress in [0, 1], message)``."""


def _quiet(stage: str, progress: float, message: str) -> None:
    """The default ``emit``: report nothing."""


@dataclass(frozen=True)
class FusionJob:
    """What to fuse, how, and where the results go.

    Attributes:
        fixed, moving: input image paths (anything :func:`MedFusionLib.io.read_image` reads) or
            :class:`~MedFusionLib.image.Image` objects already in memory. The output has the
            fixed image's grid.
        output: fused image path (its extension picks the format); ``None`` keeps the result in
            memory only (:attr:`JobResult.fusion`).
        transform: optional ``.tfm``/``.txt``/``.h5`` path for the registration transform.
        registration: ``"none"``, ``"rigid"``, ``"affine"`` or ``"bspline"``.
        method: a registered method name, or ``None`` for the fusion recommended for the
            modality pair (:func:`MedFusionLib.recommended.recommended`).
        parameters: overrides of the method's (or the recommended) parameters.
        colormap: ``"auto"``, ``None``/``"none"`` for gray output, or a colour table name.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        window_fixed, window_moving: intensity window, a preset name or ``(level, width)``.
        modality_fixed, modality_moving: ``"CT"``, ``"MR"``, ``"PET"`` or ``"SPECT"``; for paths
            they override what the file says; for images they replace a missing modality.
        interpolation: ``"linear"``, ``"nearest"`` or ``"bspline"`` (resampling the moving image).
        metrics: metric names scored on the result (see ``medfusion metrics``), or ``None``.
        lesion: optional lesion mask (path or image, nonzero inside); adds the conspicuity kept
            and anatomy kept readout (:func:`MedFusionLib.readout.clinical_readout`).
        name_fixed, name_moving: how messages name the inputs (default: the path, or
            ``"fixed image"``/``"moving image"``).
        output_format: ``None`` (the output's extension decides; a path without one is a DICOM
            folder) or ``"dicom"``. A DICOM output of a fixed image read from a DICOM series is
            a derived series in its study and frame of reference, with a (Deformable) Spatial
            Registration object beside it when the job registers
            (:mod:`MedFusionLib.dicom.derived`, :mod:`MedFusionLib.dicom.registration`).
        series_fixed, series_moving: for a DICOM folder holding several series, the one to read
            (Series Instance UID or modality; see :func:`MedFusionLib.io.read_image`).
        send: ``AE@HOST:PORT`` of a PACS to store the DICOM output on (C-STORE,
            :func:`MedFusionLib.dicom.network.send`); needs a DICOM output.
        calling_ae: the AE title MedFusion calls the PACS with.
        compress: compress a NRRD or MetaImage output (``False`` for a file read back at once:
            the web app's results, 0.45 s saved on a 4-million-voxel colour volume).
    """

    fixed: Any
    moving: Any
    output: str | None = None
    transform: str | None = None
    registration: str = "none"
    method: str | None = None
    parameters: Mapping[str, Any] | None = None
    colormap: str | None = COLORMAP_AUTO
    device: str = "auto"
    window_fixed: str | tuple[float, float] | None = None
    window_moving: str | tuple[float, float] | None = None
    modality_fixed: str | None = None
    modality_moving: str | None = None
    interpolation: str = "linear"
    metrics: tuple[str, ...] | None = None
    lesion: Any = None
    name_fixed: str | None = None
    name_moving: str | None = None
    output_format: str | None = None
    series_fixed: str | None = None
    series_moving: str | None = None
    send: str | None = None
    calling_ae: str = "MEDFUSION"
    compress: bool = True

    # --- construction and serialisation -----------------------------------------------------
    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> FusionJob:
        """A job from its JSON form (what :meth:`to_mapping` writes), checked.

        Raises:
            ParameterError: an unknown key, a missing path, or any problem :meth:`check` finds.
        """
        if not isinstance(mapping, Mapping):
            raise ParameterError(f"a job must be an object, got {type(mapping).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ParameterError(f"unknown job key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        for key in ("fixed", "moving"):
            if not mapping.get(key):
                raise ParameterError(f"job has no {key!r} path")
        if "output" in mapping and not mapping["output"]:
            raise ParameterError("job has no 'output' path")
        values = dict(mapping)
        for key in ("fixed", "moving", "output", "transform"):
            if isinstance(values.get(key), Path):
                values[key] = str(values[key])
        if values.get("lesion") is not None and isinstance(values["lesion"], Path):
            values["lesion"] = str(values["lesion"])
        for key in ("window_fixed", "window_moving"):
            values[key] = _window(values.get(key), name=key)
        metrics = values.get("metrics")
        if metrics is True:
            values["metrics"] = metrics = DEFAULT_METRICS
        if metrics is not None and metrics is not False and not isinstance(metrics, str):
            if not isinstance(metrics, Sequence):
                raise ParameterError(f"job metrics must be a list of metric names, got {metrics!r}")
            values["metrics"] = tuple(metrics)
        values["registration"] = values.get("registration") or "none"
        values["device"] = values.get("device") or "auto"
        values["interpolation"] = values.get("interpolation") or "linear"
        job = cls(**values)
        job.check()
        return job

    def to_mapping(self) -> dict[str, Any]:
        """The job as JSON-ready values (for a job file); only jobs on files can be written.

        Raises:
            ParameterError: an input or the lesion is an image in memory, not a path.
        """
        values: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name in ("fixed", "moving", "lesion") and value is not None:
                if not isinstance(value, (str, Path)):
                    raise ParameterError(f"job {item.name} is an image in memory; a job file needs a path")
                value = str(value)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            if value is not None or item.name in ("method", "colormap"):
                values[item.name] = value
        return values

    def replace(self, **changes: Any) -> FusionJob:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    # --- checks -----------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse a malformed job before any file is read (one-line errors naming the field).

        Raises:
            ParameterError: a bad registration type, transform path, method, parameters, colour
                table, device, window, interpolation, metrics or lesion.
            InputError: an output path that cannot be written.
        """
        from .io import check_output_path
        from .pipeline import check_colormap
        from .preprocess import INTERPOLATIONS
        from .validation import check_choice, check_device

        if not isinstance(self.registration, str) or self.registration not in REGISTRATION_TYPES:
            raise ParameterError(
                f"unknown registration type {self.registration!r} (use {', '.join(REGISTRATION_TYPES)})"
            )
        if self.output_format not in (None, "auto", "dicom"):
            raise ParameterError(
                f"unknown output format {self.output_format!r} (use dicom, or none for the extension's)"
            )
        if self.output is not None:
            check_output_path(Path(self.output))
            if self.output_format == "dicom" and check_output_path(Path(self.output)) != "dicom":
                raise ParameterError(
                    f"output {self.output} has a file extension; a DICOM series is written to a folder"
                )
        if self.send is not None:
            from .dicom.network import parse_peer

            parse_peer(self.send, option="send")
            if self.output is None or check_output_path(Path(self.output)) != "dicom":
                raise ParameterError(
                    "sending to a PACS needs a DICOM output folder (an output without extension)"
                )
        if self.transform:
            transform = Path(self.transform)
            if transform.suffix.lower() not in TRANSFORM_SUFFIXES:
                raise ParameterError(
                    f"transform file {transform} must end in {', '.join(TRANSFORM_SUFFIXES)}"
                )
            if not transform.parent.is_dir():
                raise ParameterError(f"output folder {transform.parent} does not exist")
            if self.registration == "none":
                raise ParameterError("a transform path was given but registration is 'none'")
        if self.parameters is not None and not isinstance(self.parameters, Mapping):
            raise ParameterError(f"job parameters must be an object, got {self.parameters!r}")
        if self.method is not None and not isinstance(self.method, str):
            raise ParameterError(f"job method must be a method name or null, got {self.method!r}")
        check_colormap(self.colormap, name="job colormap")
        check_device(self.device, name="job device")
        check_choice(self.interpolation, INTERPOLATIONS, name="job interpolation")
        if self.lesion is not None and not _is_image_source(self.lesion):
            raise ParameterError(f"job lesion must be a file path, got {self.lesion!r}")
        if self.method is not None:  # a bad method or parameter fails before reading anything
            from .fusion import get_method

            get_method(self.method).resolve_parameters(self.parameters)

    def metric_names(self) -> list[str] | None:
        """The metrics to score: ``None`` for none, the defaults for ``"default"``/``True``."""
        if not self.metrics:
            return None
        if isinstance(self.metrics, str):
            return list(DEFAULT_METRICS) if self.metrics == "default" else [self.metrics]
        return list(self.metrics)


def _is_image_source(value: Any) -> bool:
    from .image import Image

    return isinstance(value, (str, Path, Image))


def _window(value: Any, *, name: str) -> str | tuple[float, float] | None:
    if value is None or isinstance(value, str):
        return value
    try:
        level, width = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a preset name or [level, width], got {value!r}") from None
    return level, width


@dataclass
class JobResult:
    """What :func:`run_job` made.

    Attributes:
        job: the job that was run.
        fusion: the :class:`~MedFusionLib.pipeline.FusionResult` (image in memory).
        registration: the :class:`~MedFusionLib.registration.RegistrationResult`, or ``None``.
        output, transform: the files written, or ``None``.
        metrics: the metric report as JSON (``None`` unless asked).
        clinical: the lesion readout, ``{"error": reason}`` when it could not be made, or ``None``.
    """

    job: FusionJob
    fusion: Any
    registration: Any = None
    output: Path | None = None
    transform: Path | None = None
    metrics: dict[str, Any] | None = None
    clinical: dict[str, Any] | None = None
    names: tuple[str, str] = ("fixed image", "moving image")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sitk_transform(self) -> Any:
        """The registration transform (fixed to moving points), or ``None``."""
        return None if self.registration is None else self.registration.transform

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: inputs, outputs, method, parameters, device, seconds, colour
        table, registration, metrics and lesion readout."""
        return {
            "fixed": self.names[0],
            "moving": self.names[1],
            "output": None if self.output is None else str(self.output),
            "transform": None if self.transform is None else str(self.transform),
            **self.fusion.summary(),
            "registration": None if self.registration is None else self.registration.summary(),
            "recommended": self.job.method is None,
            "metrics": self.metrics,
            "clinical": self.clinical,
        }


def _load(source: Any, *, modality: str | None, name: str, series: str | None = None) -> Any:
    from .image import Image
    from .io import read_image

    if isinstance(source, Image):
        if modality and not source.modality:
            return dataclasses.replace(source, modality=modality)
        return source
    return read_image(source, modality=modality, series=series)


def _write_dicom_output(
    job: FusionJob, fusion: Any, fixed: Any, moving: Any, registration: Any, output: Path, warn: Any
) -> Path:
    """The DICOM output: a derived series in the fixed study (with the registration object) when
    the fixed image came from DICOM, else a plain new series (:func:`MedFusionLib.io.write_image`)."""
    from .atomic import OutputError
    from .dicom.derived import derivation_description, has_dicom_identity, write_derived_series
    from .io import write_image

    if fixed.ndim != 3 or not has_dicom_identity(fixed):
        written = write_image(fusion.image, output)
        if warn is not None:  # after the write: a failed write stays a one-line error
            warn(
                "the fixed image was not read from a DICOM series: the output is a new study, not a derived series"
            )
        return written
    extra = []
    name = registration and job.registration
    if registration is not None:
        from .dicom.registration import registration_object

        if moving.metadata.get("frame_of_reference_uid") or moving.metadata.get("dicom_instances"):
            extra.append(
                (
                    "REG_0001.dcm",
                    registration_object(fixed, moving, registration.transform, kind=job.registration),
                )
            )
        elif warn is not None:
            warn("the moving image was not read from DICOM: no registration object is written")
    description = derivation_description(fusion.method, fusion.parameters, name or None, fusion.colormap)
    try:
        write_derived_series(
            fusion.image,
            fixed,
            moving,
            output,
            description=description,
            extra=extra,
            transform=None if registration is None else registration.transform,
        )
    except OSError as error:
        from .atomic import os_error_reason

        raise OutputError(f"cannot write {output}: {os_error_reason(error)}") from None
    return output


def run_job(
    job: FusionJob,
    *,
    emit: Emit | None = None,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> JobResult:
    """Run ``job``: read, plan, register, fuse, write, score.

    Args:
        job: the job (checked again here).
        emit: ``emit(stage, progress, message)`` for each step (progress never decreases).
        progress: ``progress(done, total)`` after each fused slab (a progress bar).
        warn: called with each registration warning (for example little overlap).

    Returns:
        A :class:`JobResult`.

    Raises:
        MedFusionError: anything caused by the input (a missing file, an unknown method, a
            parameter out of range, no overlap); outputs written before it are removed.
    """
    from .fusion import get_method
    from .io import check_output_path, write_image, write_transform
    from .pipeline import fuse_images, merge_parameters, plan_fusion

    emit = emit or _quiet
    job.check()
    name_fixed = job.name_fixed or (str(job.fixed) if isinstance(job.fixed, (str, Path)) else "fixed image")
    name_moving = job.name_moving or (
        str(job.moving) if isinstance(job.moving, (str, Path)) else "moving image"
    )
    registering = job.registration != "none"
    fuse_start, fuse_end = (0.45, 0.85) if registering else (0.1, 0.85)

    emit("reading", 0.0, f"reading {name_fixed}")
    fixed = _load(job.fixed, modality=job.modality_fixed, name=name_fixed, series=job.series_fixed)
    emit("reading", 0.05, f"reading {name_moving}")
    moving = _load(job.moving, modality=job.modality_moving, name=name_moving, series=job.series_moving)
    output = Path(job.output) if job.output is not None else None
    if output is not None:
        check_output_path(output, ndim=fixed.ndim)
    lesion = None if job.lesion is None else _load(job.lesion, modality=None, name="lesion")
    # the recommended method and table depend on the modalities: known once the images are read,
    # and checked here, before a registration that may take minutes
    plan = plan_fusion(
        fixed,
        moving,
        method=job.method,
        colormap=job.colormap,
        name="job colormap",
        name_a=name_fixed,
        name_b=name_moving,
    )
    spec = get_method(plan.method)
    spec.resolve_parameters(merge_parameters(plan.parameters, job.parameters))

    registration = None
    if registering:
        from .registration import register

        emit("registering", 0.1, f"{job.registration} registration (Mattes mutual information)")
        registration = register(
            fixed, moving, type=job.registration, name_fixed=name_fixed, name_moving=name_moving
        )
        for warning in registration.warnings:
            if warn is not None:
                warn(warning)
        emit(
            "registering",
            fuse_start,
            f"registered in {registration.seconds:.1f} s, MI {-registration.metric_initial:.4f} -> "
            f"{-registration.metric_final:.4f}",
        )

    def on_slab(done: int, total: int) -> None:
        emit("fusing", fuse_start + (fuse_end - fuse_start) * done / max(total, 1), f"slab {done} of {total}")
        if progress is not None:
            progress(done, total)

    how = spec.name + (f", colour table {plan.colormap}" if plan.colormap else "")
    emit(
        "fusing",
        fuse_start,
        f"fusing with {how}" + (" (recommended for the pair)" if job.method is None else ""),
    )
    fusion = fuse_images(
        fixed,
        moving,
        method=job.method,
        parameters=job.parameters,
        colormap=job.colormap,
        device=job.device,
        window_a=job.window_fixed,
        window_b=job.window_moving,
        interpolation=job.interpolation,
        name_a=name_fixed,
        name_b=name_moving,
        progress=on_slab,
        transform=None if registration is None else registration.transform,
    )

    result = JobResult(job=job, fusion=fusion, registration=registration, names=(name_fixed, name_moving))
    written: list[Path] = []
    try:
        if job.transform and registration is not None:
            emit("writing", fuse_end, f"writing {job.transform}")
            written.append(write_transform(registration.transform, job.transform))
            result.transform = Path(job.transform)
        if output is not None:
            emit("writing", fuse_end, f"writing {output}")
            if check_output_path(output) == "dicom":
                written.append(_write_dicom_output(job, fusion, fixed, moving, registration, output, warn))
            else:
                written.append(write_image(fusion.image, output, compress=job.compress))
            result.output = output
        names = job.metric_names()
        if names:
            emit("scoring", 0.9, "computing quality metrics")
            result.metrics = _score(job, names, fixed, moving, fusion.image, registration)
        if lesion is not None:
            emit("scoring", 0.95, "computing the lesion readout (conspicuity kept, anatomy kept)")
            result.clinical = _clinical(fixed, moving, fusion, lesion, registration)
    except BaseException:
        from .io import remove_output

        for path in written:
            remove_output(path)
        raise
    if job.send is not None and result.output is not None:
        from .dicom.network import NetworkError, parse_peer, send

        emit("sending", 0.98, f"sending {result.output} to {job.send}")
        try:
            result.extra["sent"] = send(
                [result.output], parse_peer(job.send, option="send"), calling_ae=job.calling_ae
            )
        except NetworkError as error:  # the output is complete: keep it, say how to send it again
            raise NetworkError(
                f"{error} (the output {result.output} is complete; send it again with medfusion send)"
            ) from None
    return result


def _score(job: FusionJob, names: list[str], fixed: Any, moving: Any, fused: Any, registration: Any) -> dict:
    from .metrics.compute import compute_metrics
    from .metrics.inputs import grey_levels_for_scoring
    from .preprocess import resample_to

    moving_on_fixed = resample_to(
        moving, fixed, transform=None if registration is None else registration.transform
    )
    grey = grey_levels_for_scoring(
        fixed,
        moving_on_fixed,
        fused,
        names=("fixed", "moving", "fused"),
        window_a=job.window_fixed,
        window_b=job.window_moving,
    )
    report = compute_metrics(*grey, metrics=names, device=job.device, names=("fixed", "moving", "fused"))
    return report.to_json()


def _clinical(fixed: Any, moving: Any, fusion: Any, lesion: Any, registration: Any) -> dict[str, Any]:
    """The lesion readout, or ``{"error": reason}``: a readout that cannot be made never fails the fusion."""
    from .errors import MedFusionError
    from .readout import clinical_readout

    try:
        return clinical_readout(
            fixed,
            moving,
            fusion.image,
            lesion,
            colormap=fusion.colormap,
            transform=None if registration is None else registration.transform,
        )
    except MedFusionError as error:
        return {"error": one_line(error)}


def one_line(error: BaseException, *, limit: int = 300) -> str:
    """An exception as one line of at most ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
