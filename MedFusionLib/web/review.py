"""The review session behind ``medfusion serve``: one fusion at a time on one MRML scene.

:class:`FusionReview` is what the browser's buttons call, free of any web framework: it checks
a choice against the :class:`~MedFusionLib.web.catalogue.Catalogue` (the browser sends keys,
never paths), runs the :class:`~MedFusionLib.job.FusionJob` in a background process
(:class:`~MedFusionLib.background.BackgroundJob`, the Slicer module's runner, started ahead of
time so that the engine is already imported when Apply is pressed), reads the inputs into the
scene while the job runs, and shows the result with the MRML bridge the Slicer module uses
(:func:`MedFusionLib.mrml.add_job_result_nodes`, :func:`MedFusionLib.mrml.show_fusion`).

Its :attr:`FusionReview.status` is ``idle``, ``running``, ``done``, ``cancelled`` or
``error: <one line>``; :meth:`FusionReview.poll` advances a running job without blocking.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import mrml
from ..background import BackgroundJob
from ..errors import InputError, MedFusionError, ParameterError
from ..job import REGISTRATION_TYPES, FusionJob, one_line
from .catalogue import Catalogue, VolumeEntry

RECOMMENDED = "recommended"
"""The method choice that lets the engine pick the fusion recommended for the modality pair."""
OVERLAY_TABLE = "PET-Heat"
"""Slicer's colour table for the functional overlay drawn over the fused volume."""
RESULT_FORMAT = ".nrrd"


@dataclass(frozen=True)
class Choice:
    """What the user picked in the browser (catalogue keys and option names, unchecked)."""

    fixed: str | None
    moving: str | None
    registration: str = "none"
    method: str = RECOMMENDED
    colormap: str = "auto"
    lesion: str | None = None
    parameters: str = ""
    """The method's options as ``name=value`` pairs separated by spaces or commas (``medfusion fuse --set``)."""


@dataclass
class _Run:
    """A job in its process: a fusion to show, or a DICOM save."""

    runner: BackgroundJob
    folder: Path | None
    choice: Choice
    entries: dict[str, VolumeEntry]
    saving: Path | None = None


@dataclass
class Shown:
    """The result on display: the nodes and what made them."""

    fixed: Any
    moving: Any
    fused: Any
    summary: dict[str, Any]
    choice: Choice
    lesion_centre: tuple[float, float, float] | None


def method_choices() -> list[dict[str, str]]:
    """``[{"value", "title"}]`` for the method select: the recommended fusion, then every method."""
    from ..fusion import list_methods

    items = [{"value": RECOMMENDED, "title": "recommended for the pair"}]
    items += [{"value": m.name, "title": f"{m.name} ({m.family})"} for m in list_methods()]
    return items


def parameter_hint(method: str) -> str:
    """What the parameters field of ``method`` takes: each option's name, range and default."""
    from ..fusion import get_method

    if method == RECOMMENDED:
        return "parameters of the recommended method (see medfusion methods), or leave empty"
    try:
        options = get_method(method).describe()["parameters"]
    except MedFusionError:
        return ""
    if not options:
        return f"{method} has no parameters"
    parts = []
    for option in options:
        choices = option.get("choices")
        if choices:
            shown = "|".join(str(v) for v in choices[:5]) + ("|..." if len(choices) > 5 else "")
        elif option.get("min") is not None or option.get("max") is not None:
            shown = f"{option.get('min', '')}..{option.get('max', '')}"
        else:
            shown = ""
        parts.append(f"{option['name']}={option['default']}" + (f" ({shown})" if shown else ""))
    return "e.g. " + " ".join(parts)


def colormap_choices() -> list[dict[str, str]]:
    """``[{"value", "title"}]`` for the colour table select: auto, every table, gray output."""
    from ..colormaps import list_colormaps

    items = [{"value": "auto", "title": "auto (recommended)"}]
    items += [{"value": name, "title": name} for name in list_colormaps()]
    items.append({"value": "none", "title": "none (gray output)"})
    return items


class FusionReview:
    """One reviewer's session: choose, fuse in the background, show, save.

    Args:
        catalogue: what may be opened (the data folder).
        scene, application_logic: the MRML scene the slice views show and its application
            logic (``trame_slicer.core.SlicerApp``'s, or :func:`MedFusionLib.mrml.new_scene`'s).
        save_dir: where Save writes (created on first use).
        device: the engine's device (``"auto"``, ``"cpu"``, ...).
        on_change: called (on the caller's thread, from :meth:`poll` and the actions) whenever
            the status, progress or result changed, so a front end can refresh.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        scene: Any,
        application_logic: Any,
        *,
        save_dir: str | Path,
        device: str = "auto",
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.scene = scene
        self.application_logic = application_logic
        self.save_dir = Path(save_dir)
        self.device = device
        self.on_change = on_change or (lambda: None)
        self.status = "idle"
        self.message = ""
        self.progress = 0.0
        self.opacity = 0.0
        self.shown: Shown | None = None
        self.saved: Path | None = None
        self._work = Path(tempfile.mkdtemp(prefix="medfusion-serve-"))
        self._count = 0
        self._spare: tuple[BackgroundJob, Path] | None = None
        self._running: _Run | None = None
        self._reading: dict[str, Future[Any]] = {}
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="medfusion-read")
        self._input_nodes: dict[str, Any] = {}
        self._images: dict[str, Future[Any]] = {}  # by catalogue key: read once, kept while chosen
        self._readout: Future[dict[str, Any]] | None = None
        self._shown_folder: Path | None = None  # the shown result's job folder (Save reads it)
        self.prepare_worker()

    # --- the background process -------------------------------------------------------------
    def prepare_worker(self) -> None:
        """Start the next job's process now (it imports the engine while the user chooses)."""
        if self._spare is None:
            folder = self._next_folder()
            runner = BackgroundJob()
            runner.prelaunch(folder)
            self._spare = (runner, folder)

    def _next_folder(self) -> Path:
        self._count += 1
        return self._work / f"job{self._count:04d}"

    def close(self) -> None:
        """Stop every process, remove the work folder (the saved results stay)."""
        for runner in [self._spare and self._spare[0], self._running and self._running.runner]:
            if runner is not None:
                runner.cancel()
                with contextlib.suppress(Exception):
                    runner.wait(timeout=5)
        self._spare = self._running = None
        self._readers.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._work, ignore_errors=True)

    # --- actions ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running is not None

    @property
    def busy(self) -> bool:
        """A job runs or the lesion readout is being computed: keep calling :meth:`poll`."""
        return self._running is not None or self._readout is not None

    @property
    def saving(self) -> bool:
        return self._running is not None and self._running.saving is not None

    def apply(self, choice: Choice) -> None:
        """Check ``choice`` and start its fusion; a bad choice sets ``error: ...`` and starts nothing."""
        if self._running is not None:
            self._set("error: a fusion is already running; cancel it first")
            return
        try:
            entries, job = self._job_for(choice)
        except MedFusionError as error:
            self._set(f"error: {one_line(error)}")
            return
        registering = job.registration != "none"
        self._start(
            job,
            choice,
            entries,
            output=lambda folder: folder / ("fused" + RESULT_FORMAT),
            transform=lambda folder: folder / "transform.h5" if registering else None,
        )
        self._reading = {role: self._image(entry, role) for role, entry in entries.items()}
        self.saved = None
        self._set("running", message="starting", progress=0.0)

    def _start(
        self,
        job: FusionJob,
        choice: Choice,
        entries: dict[str, VolumeEntry],
        *,
        output: Callable[[Path], Path],
        transform: Callable[[Path], Path | None],
        saving: Path | None = None,
    ) -> None:
        """Hand ``job`` (outputs placed by ``output``/``transform`` in the job's folder) to the spare process."""
        self.prepare_worker()
        assert self._spare is not None
        runner, folder = self._spare
        self._spare = None
        written = transform(folder)
        runner.start(
            job.replace(output=str(output(folder)), transform=None if written is None else str(written)),
            folder,
        )
        self._running = _Run(runner, folder, choice, entries, saving)

    def _job_for(self, choice: Choice) -> tuple[dict[str, VolumeEntry], FusionJob]:
        if not choice.fixed or not choice.moving:
            raise ParameterError("choose a fixed and a moving volume")
        entries = {"fixed": self.catalogue.entry(choice.fixed), "moving": self.catalogue.entry(choice.moving)}
        if entries["fixed"].is_mask or entries["moving"].is_mask:
            raise ParameterError("a lesion mask cannot be fused; choose it as the lesion")
        if choice.lesion:
            entries["lesion"] = self.catalogue.entry(choice.lesion)
        if choice.registration not in REGISTRATION_TYPES:
            raise ParameterError(
                f"unknown registration type {choice.registration!r} (use {', '.join(REGISTRATION_TYPES)})"
            )
        method = None if choice.method == RECOMMENDED else choice.method
        parameters = None
        if choice.parameters.strip():  # checked now, on the method the engine will use
            from ..fusion import get_method

            name, base = method, {}
            if method is None:  # the engine's own choice, on the images (read already, or now)
                from ..pipeline import plan_fusion

                plan = plan_fusion(
                    self._image(entries["fixed"], "fixed").result(),
                    self._image(entries["moving"], "moving").result(),
                    method=None,
                    colormap=choice.colormap,
                    name="colour table",
                    name_a=entries["fixed"].key,
                    name_b=entries["moving"].key,
                )
                name, base = plan.method, plan.parameters
            spec = get_method(name)
            parameters = spec.parse_parameters(choice.parameters.replace(",", " ").split())
            spec.resolve_parameters({**base, **parameters})
        job = FusionJob(
            fixed=str(entries["fixed"].path),
            moving=str(entries["moving"].path),
            series_fixed=entries["fixed"].series,
            series_moving=entries["moving"].series,
            modality_fixed=entries["fixed"].modality,
            modality_moving=entries["moving"].modality,
            name_fixed=entries["fixed"].key,
            name_moving=entries["moving"].key,
            registration=choice.registration,
            method=method,
            parameters=parameters,
            colormap=choice.colormap,
            device=self.device,
            compress=False,  # read back at once by this process
        )
        job.check()  # an unknown method, parameter or table fails here, before any process work
        return entries, job

    def cancel(self) -> None:
        """Stop the running fusion (its process and partial outputs); the shown result stays."""
        if self._running is None:
            return
        self._running.runner.cancel()

    def poll(self) -> None:
        """Advance a running job: progress, then the result in the views (call it often)."""
        if self._readout is not None and self._readout.done():
            readout, self._readout = self._readout, None
            if self.shown is not None and self.shown.summary.get("clinical", {}).get("pending"):
                try:
                    self.shown.summary["clinical"] = readout.result()
                except Exception as error:  # noqa: BLE001 - a readout never fails the fusion
                    self.shown.summary["clinical"] = {"error": one_line(error)}
                self.on_change()
        if self._running is None:
            return
        run = self._running
        runner = run.runner
        for event in runner.poll():
            stage = event.get("stage")
            if stage not in ("done", "error", "log"):
                status = "done" if run.saving else "running"
                self._set(status, message=str(event.get("message", "")), progress=event.get("progress"))
        if not runner.finished and runner.result is None:
            return  # the result is in the "done" event: no need to wait for the process to exit
        self._running = None
        if run.saving is not None:
            self._finish_save(runner, run.saving)
        elif runner.cancelled:
            self._set("cancelled", message="")
        elif runner.result is None:
            self._set(f"error: {runner.error or 'the fusion failed'}")
        else:
            try:
                self._show(runner.result, run.choice, run.entries)
            except MedFusionError as error:
                self._set(f"error: {one_line(error)}")
            else:
                self._set("done", message=_describe(runner.result), progress=1.0)
                run.folder, self._shown_folder = self._shown_folder, run.folder  # drop the older result
        if run.folder is not None:
            shutil.rmtree(run.folder, ignore_errors=True)
        self.prepare_worker()

    # --- showing ----------------------------------------------------------------------------
    def _image(self, entry: VolumeEntry, role: str) -> Future[Any]:
        """The image of ``entry``, read once on a worker thread (while the user chooses or the job runs)."""
        future = self._images.get(entry.key)
        if future is None or (future.done() and future.exception() is not None):
            from ..io import read_image

            modality = None if role == "lesion" else entry.modality
            future = self._readers.submit(read_image, entry.path, modality=modality, series=entry.series)
            self._images[entry.key] = future
        return future

    def prefetch(self, choice: Choice) -> None:
        """Start reading the chosen volumes now, so that Apply shows its result sooner.

        Keys that are not in the catalogue are ignored here (Apply reports them); images no
        longer chosen nor shown are dropped.
        """
        keep = (
            {self.shown.choice.fixed, self.shown.choice.moving, self.shown.choice.lesion}
            if self.shown
            else set()
        )
        for role, key in (("fixed", choice.fixed), ("moving", choice.moving), ("lesion", choice.lesion)):
            if not key:
                continue
            try:
                entry = self.catalogue.entry(key)
            except MedFusionError:
                continue
            if not entry.is_mask or role == "lesion":
                self._image(entry, role)
                keep.add(key)
        self._drop_images(keep)

    def _drop_images(self, keep: set[str | None]) -> None:
        """Forget the images of other keys; reads not started yet are cancelled (a user going
        through a list would otherwise queue a read per volume passed)."""
        for key in [k for k in self._images if k not in keep]:
            future = self._images.pop(key)
            if all(future is not needed for needed in self._reading.values()):  # a running job's stay
                future.cancel()

    def _input_node(self, entry: VolumeEntry, image: Any) -> Any:
        node = self._input_nodes.get(entry.key)
        if node is None or node.GetScene() is None:
            node = mrml.volume_node_from_image(image, self.scene, _stem(entry.key))
            if entry.modality:
                node.SetAttribute("MedFusion.Modality", entry.modality)
            self._input_nodes[entry.key] = node
        return node

    def _show(self, summary: dict[str, Any], choice: Choice, entries: dict[str, VolumeEntry]) -> None:
        try:
            images = {role: future.result() for role, future in self._reading.items()}
        except MedFusionError:
            raise
        except Exception as error:  # noqa: BLE001 - one line for the page
            raise InputError(f"cannot read the inputs for display: {one_line(error)}") from None
        fixed = self._input_node(entries["fixed"], images["fixed"])
        moving = self._input_node(entries["moving"], images["moving"])
        self._forget_inputs_but(set(e.key for e in entries.values()))
        previous = self.shown.fused if self.shown is not None else None
        fused = mrml.add_job_result_nodes(summary, fixed, moving, node=previous)
        centre = lesion_centre_ras(images["lesion"]) if "lesion" in images else None
        self.shown = Shown(fixed, moving, fused, summary, choice, centre)
        self.show_layers(fit=True)
        if "lesion" in images:  # after the views: the readout takes longer than the fusion
            summary["clinical"] = {"pending": True}
            self._readout = self._readers.submit(_lesion_readout, summary, images)

    def _forget_inputs_but(self, keep: set[str]) -> None:
        self._drop_images(keep)
        for key in [k for k in self._input_nodes if k not in keep]:
            node = self._input_nodes.pop(key)
            for other in mrml._nodes(self.scene, "vtkMRMLScalarVolumeNode"):
                if other.GetAttribute("MedFusion.OverlayOf") == node.GetID():
                    self.scene.RemoveNode(other)
            if node.GetScene() is not None:
                self.scene.RemoveNode(node)

    def show_layers(self, *, fit: bool = False) -> None:
        """Show the result: the fused volume, the functional overlay at :attr:`opacity`."""
        if self.shown is None:
            return
        mrml.show_fusion(
            self.shown.fused,
            foreground=self.shown.moving,
            opacity=self.opacity,
            foreground_lut=OVERLAY_TABLE,
            application_logic=self.application_logic,
            fit=fit,
        )
        if fit and self.shown.lesion_centre is not None:  # the lesion in the middle of every view
            for slice_node in mrml._nodes(self.scene, "vtkMRMLSliceNode"):
                slice_node.JumpSliceByCentering(*self.shown.lesion_centre)
            crosshair = self.scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
            if crosshair is not None:
                crosshair.SetCrosshairRAS(*self.shown.lesion_centre)

    def set_opacity(self, opacity: float) -> None:
        """The functional overlay's opacity over the fused volume, in ``[0, 1]``."""
        opacity = float(opacity)
        if not 0.0 <= opacity <= 1.0:
            raise ParameterError(f"opacity must be in [0, 1], got {opacity}")
        self.opacity = opacity
        self.show_layers()

    # --- saving -----------------------------------------------------------------------------
    def save(self) -> Path | None:
        """Save the shown result in :attr:`save_dir` under a new name (never overwriting).

        A fixed volume read from a DICOM series gets a derived DICOM series in its study and
        frame of reference (with the registration object): the job is run again, with the
        same options, writing DICOM (registration is seeded, so the result is the one shown).
        Other results are written as NRRD (with the transform as ``.h5`` when registered).
        Returns the path written (the DICOM folder once its job has finished), or ``None``
        (status ``error: ...``) when there is nothing to save or writing failed.
        """
        from ..io import read_image, write_image, write_transform
        from ..output_guard import guard_outputs

        if self.shown is None or self._running is not None:
            self._set("error: nothing to save: press Apply and wait for the result")
            return None
        summary, choice = self.shown.summary, self.shown.choice
        stem = "_".join(
            [_stem(choice.fixed or "fixed"), _stem(choice.moving or "moving"), str(summary["method"])]
        )
        try:
            entries, job = self._job_for(choice)
            inputs = [entries[role].path for role in ("fixed", "moving")]
            self.save_dir.mkdir(parents=True, exist_ok=True)
            if entries["fixed"].series is not None:
                target = _free_name(self.save_dir, stem, "")
                guard_outputs(inputs=inputs, outputs=[target])
                self._start(
                    job.replace(method=summary["method"], output_format="dicom"),
                    choice,
                    entries,
                    output=lambda _folder: target,
                    transform=lambda _folder: None,
                    saving=target,
                )
                self._set("done", message=f"writing the DICOM series {target.name}")
                return target
            target = _free_name(self.save_dir, stem, RESULT_FORMAT)
            transform = None
            if summary.get("transform"):
                transform = target.with_name(target.name[: -len(RESULT_FORMAT)] + "_transform.h5")
            guard_outputs(inputs=inputs, outputs=[target, transform])
            write_image(read_image(summary["output"]), target, protect=inputs)
            if transform is not None:
                import SimpleITK as sitk

                write_transform(sitk.ReadTransform(summary["transform"]), transform)
        except (MedFusionError, OSError) as error:
            self._set(f"error: {one_line(error)}")
            return None
        self.saved = target
        self.on_change()
        return target

    def _finish_save(self, runner: BackgroundJob, target: Path) -> None:
        if runner.result is not None:
            self.saved = target
            self._set("done", message=f"saved the DICOM series {target.name}")
        elif runner.cancelled:
            self._set("done", message="saving cancelled; nothing was written")
        else:
            self._set(f"error: saving failed: {runner.error or 'unknown reason'}")

    # --- state ------------------------------------------------------------------------------
    def _set(self, status: str, *, message: str | None = None, progress: float | None = None) -> None:
        self.status = status
        if message is not None:
            self.message = message
        if progress is not None:
            self.progress = max(0.0, min(1.0, float(progress)))
        self.on_change()

    def readout(self) -> dict[str, Any] | None:
        """The lesion readout of the shown result (conspicuity kept, anatomy kept), if any."""
        return None if self.shown is None else self.shown.summary.get("clinical")


def _lesion_readout(summary: dict[str, Any], images: dict[str, Any]) -> dict[str, Any]:
    """Conspicuity kept and anatomy kept of the result, or ``{"error": reason}``
    (:func:`MedFusionLib.readout.clinical_readout`, on the result file the job wrote)."""
    import SimpleITK as sitk

    from ..io import read_image
    from ..readout import clinical_readout

    try:
        return clinical_readout(
            images["fixed"],
            images["moving"],
            read_image(summary["output"]),
            images["lesion"],
            colormap=summary.get("colormap"),
            transform=sitk.ReadTransform(summary["transform"]) if summary.get("transform") else None,
        )
    except MedFusionError as error:
        return {"error": one_line(error)}


def _describe(summary: dict[str, Any]) -> str:
    colour = f", colour table {summary['colormap']}" if summary.get("colormap") else ""
    return f"{summary['method']}{colour}, fused in {float(summary['seconds']):.2f} s on {summary['device']}"


def _stem(key: str) -> str:
    """A file name from a catalogue key: its path with ``_`` for ``/``, without the extension."""
    from ..io import known_extension

    name = key.split("#", 1)[0].strip("/").replace("/", "_")
    extension = known_extension(Path(name))
    return name[: -len(extension)] if extension else name


def _free_name(folder: Path, stem: str, suffix: str) -> Path:
    for number in range(1, 10_000):
        candidate = folder / (stem + (f"_{number}" if number > 1 else "") + suffix)
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
    raise InputError(f"too many saved results named {stem} in {folder}")


def lesion_centre_ras(mask: Any) -> tuple[float, float, float] | None:
    """The centre of a 3-D mask's nonzero voxels in RAS millimetres (``None`` for an empty or 2-D mask)."""
    from ..readout import lesion_centre

    if mask.ndim != 3 or mask.is_rgb:
        return None
    centre = lesion_centre(mask)
    return None if centre is None else (-centre[0], -centre[1], centre[2])  # LPS -> RAS
