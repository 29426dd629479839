"""Run a registration + fusion job in a separate process, and watch it from a GUI.

The Slicer module never does heavy work on its GUI thread. It writes the two input volumes
and a job description (JSON) to a work folder and starts this module as a separate process
(``PythonSlicer -m MedFusionLib.background JOB.json``, the pattern of SlicerMONAIAuto3DSeg).
The process prints one JSON object per line on stdout::

    {"stage": "reading", "progress": 0.0, "message": "reading fixed.nii.gz"}
    {"stage": "fusing", "progress": 0.62, "message": "slab 2 of 4"}
    {"stage": "done", "progress": 1.0, "message": "...", "result": {...}}

Stages, in order: ``reading``, ``registering`` (when asked), ``fusing``, ``writing``,
``scoring`` (when metrics are asked), then ``done``; or ``error`` with a one-line message.
Progress never decreases. The exit status is 0 on success, 2 for errors caused by the input
(a missing file, an unknown method, a parameter out of range: :class:`MedFusionError`) and
1 for anything else. Outputs are written under temporary names and renamed, and a failed job
removes what it wrote, so no half-written output is left behind.

:class:`BackgroundJob` is the parent's side, free of Qt: ``start`` launches the process in
its own process group, a reader thread queues its lines, ``poll`` returns the events that
arrived since the last call without ever blocking, and ``cancel`` ends the process group and
removes partial outputs. A GUI calls ``poll`` from a timer (every 100-200 ms).

Job keys (JSON):
    fixed, moving: input image paths (anything :func:`MedFusionLib.io.read_image` reads).
    output: fused image path (its extension picks the format).
    transform: optional ``.tfm``/``.txt``/``.h5`` path for the registration transform.
    registration: ``"none"`` (default), ``"rigid"``, ``"affine"`` or ``"bspline"``.
    method, parameters, device: as :func:`MedFusionLib.pipeline.fuse_images`; a missing or
        null ``method`` means the fusion recommended for the modality pair (method, colour
        table and parameters of :func:`MedFusionLib.recommended.recommended`; ``parameters``
        then override the recommended ones).
    colormap: ``"auto"`` (default), ``"none"`` (or null) for gray output, or a colour table
        name of :mod:`MedFusionLib.colormaps` (see :func:`MedFusionLib.pipeline.fuse_images`).
        The result summary's ``colormap`` names the table used (null for gray output).
    window_fixed, window_moving: preset name or ``[level, width]``.
    modality_fixed, modality_moving: ``"CT"``, ``"MR"``, ``"PET"`` or ``"SPECT"``.
    interpolation: ``"linear"`` (default), ``"nearest"`` or ``"bspline"``.
    metrics: optional list of metric names (see ``medfusion metrics``) scored on the result.
    lesion: optional path of a lesion mask (nonzero inside, any grid overlapping the fixed
        image); the ``scoring`` stage then adds the result summary's ``clinical`` readout,
        conspicuity kept and anatomy kept (:func:`MedFusionLib.readout.clinical_readout`), or
        ``{"error": "..."}`` when they cannot be computed (unknown modalities, for example).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2

STAGES = ("reading", "registering", "fusing", "writing", "scoring", "done", "error")
REGISTRATION_TYPES = ("none", "rigid", "affine", "bspline")
TRANSFORM_SUFFIXES = (".tfm", ".txt", ".h5")
JOB_KEYS = frozenset(
    {
        "fixed",
        "moving",
        "output",
        "transform",
        "registration",
        "method",
        "parameters",
        "device",
        "window_fixed",
        "window_moving",
        "modality_fixed",
        "modality_moving",
        "interpolation",
        "metrics",
        "colormap",
        "lesion",
    }
)
DEFAULT_METRICS = ("EN", "SD", "MI", "SSIM", "VIF", "Qabf")

Emit = Callable[[str, float, str], None]


# --- the child process ------------------------------------------------------------------
def _window(value: Any) -> str | tuple[float, float] | None:
    if value is None or isinstance(value, str):
        return value
    from .errors import ParameterError

    try:
        level, width = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(f"window must be a preset name or [level, width], got {value!r}") from None
    return level, width


def check_job(job: Mapping[str, Any]) -> None:
    """Refuse an incomplete or malformed job before any work (raises ParameterError/InputError)."""
    from .errors import ParameterError
    from .io import check_output_path

    unknown = sorted(set(job) - JOB_KEYS)
    if unknown:
        raise ParameterError(f"unknown job key {unknown[0]!r} (known: {', '.join(sorted(JOB_KEYS))})")
    for key in ("fixed", "moving", "output"):
        if not job.get(key):
            raise ParameterError(f"job has no {key!r} path")
    registration = job.get("registration") or "none"
    if registration not in REGISTRATION_TYPES:
        raise ParameterError(
            f"unknown registration type {registration!r} (use {', '.join(REGISTRATION_TYPES)})"
        )
    check_output_path(Path(job["output"]))
    if job.get("transform"):
        transform = Path(job["transform"])
        if transform.suffix.lower() not in TRANSFORM_SUFFIXES:
            raise ParameterError(f"transform file {transform} must end in {', '.join(TRANSFORM_SUFFIXES)}")
        if not transform.parent.is_dir():
            raise ParameterError(f"output folder {transform.parent} does not exist")
        if registration == "none":
            raise ParameterError("a transform path was given but registration is 'none'")
    if job.get("parameters") is not None and not isinstance(job["parameters"], Mapping):
        raise ParameterError(f"job parameters must be an object, got {job['parameters']!r}")
    if job.get("method") is not None and not isinstance(job["method"], str):
        raise ParameterError(f"job method must be a method name or null, got {job['method']!r}")
    if "colormap" in job:
        from .pipeline import check_colormap

        check_colormap(job["colormap"], name="job colormap")
    if job.get("lesion") is not None and not isinstance(job["lesion"], str):
        raise ParameterError(f"job lesion must be a file path, got {job['lesion']!r}")


def _write_transform(transform: Any, path: Path) -> None:
    from .io import write_transform

    write_transform(transform, path)  # atomic, checked; a full disk is an InputError


def run_job(job: Mapping[str, Any], emit: Emit) -> dict[str, Any]:
    """Do the job in this process, reporting ``emit(stage, progress, message)``.

    Returns the result summary that the ``done`` line carries. Outputs written before a
    failure are removed before the error propagates.
    """
    from .fusion import get_method
    from .io import check_output_path, read_image, write_image
    from .pipeline import COLORMAP_AUTO, fuse_images, merge_parameters, plan_fusion

    check_job(job)
    registration_type = job.get("registration") or "none"
    method = job.get("method") or None
    colormap = job.get("colormap", COLORMAP_AUTO)
    if method is not None:  # a bad method or parameter fails before reading anything
        get_method(method).resolve_parameters(job.get("parameters"))
    fixed_path, moving_path = str(job["fixed"]), str(job["moving"])
    output = Path(job["output"])
    transform_path = Path(job["transform"]) if job.get("transform") else None
    device = job.get("device") or "auto"
    registering = registration_type != "none"
    fuse_start, fuse_end = (0.45, 0.85) if registering else (0.1, 0.85)

    emit("reading", 0.0, f"reading {fixed_path}")
    fixed = read_image(fixed_path, modality=job.get("modality_fixed"))
    emit("reading", 0.05, f"reading {moving_path}")
    moving = read_image(moving_path, modality=job.get("modality_moving"))
    check_output_path(output, ndim=fixed.ndim)
    lesion = read_image(str(job["lesion"])) if job.get("lesion") else None
    # the recommended method and table depend on the modalities: known once the images are read,
    # and checked here, before a registration that may take minutes
    plan = plan_fusion(
        fixed,
        moving,
        method=method,
        colormap=colormap,
        name="job colormap",
        name_a=fixed_path,
        name_b=moving_path,
    )
    spec = get_method(plan.method)
    spec.resolve_parameters(merge_parameters(plan.parameters, job.get("parameters")))

    registration = None
    if registering:
        from .registration import register

        emit("registering", 0.1, f"{registration_type} registration (Mattes mutual information)")
        registration = register(
            fixed, moving, type=registration_type, name_fixed=fixed_path, name_moving=moving_path
        )
        emit(
            "registering",
            fuse_start,
            f"registered in {registration.seconds:.1f} s, MI {-registration.metric_initial:.4f} -> "
            f"{-registration.metric_final:.4f}",
        )

    def progress(done: int, total: int) -> None:
        emit("fusing", fuse_start + (fuse_end - fuse_start) * done / max(total, 1), f"slab {done} of {total}")

    how = f"{spec.name}" + (f", colour table {plan.colormap}" if plan.colormap else "")
    emit(
        "fusing", fuse_start, f"fusing with {how}" + (" (recommended for the pair)" if method is None else "")
    )
    result = fuse_images(
        fixed,
        moving,
        method=method,
        parameters=job.get("parameters"),
        colormap=colormap,
        device=device,
        window_a=_window(job.get("window_fixed")),
        window_b=_window(job.get("window_moving")),
        interpolation=job.get("interpolation") or "linear",
        name_a=fixed_path,
        name_b=moving_path,
        progress=progress,
        transform=None if registration is None else registration.transform,
    )

    written: list[Path] = []
    try:
        emit("writing", fuse_end, f"writing {output}")
        if transform_path is not None and registration is not None:
            _write_transform(registration.transform, transform_path)
            written.append(transform_path)
        write_image(result.image, output)
        written.append(output)
        summary: dict[str, Any] = {
            "fixed": fixed_path,
            "moving": moving_path,
            "output": str(output),
            "transform": str(transform_path) if written and transform_path in written else None,
            **result.summary(),
            "registration": None if registration is None else registration.summary(),
            "recommended": method is None,
            "metrics": None,
            "clinical": None,
        }
        if job.get("metrics"):
            emit("scoring", 0.9, "computing quality metrics")
            summary["metrics"] = _score(job, fixed, moving, result.image, registration, device)
        if lesion is not None:
            emit("scoring", 0.95, "computing the lesion readout (conspicuity kept, anatomy kept)")
            summary["clinical"] = _clinical(fixed, moving, result, lesion, registration)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return summary


def _score(
    job: Mapping[str, Any], fixed: Any, moving: Any, fused: Any, registration: Any, device: str
) -> dict:
    from .metrics.compute import compute_metrics
    from .metrics.inputs import grey_levels_for_scoring
    from .preprocess import resample_to

    names = list(job["metrics"]) if isinstance(job["metrics"], (list, tuple)) else list(DEFAULT_METRICS)
    moving_on_fixed = resample_to(
        moving, fixed, transform=None if registration is None else registration.transform
    )
    grey = grey_levels_for_scoring(
        fixed,
        moving_on_fixed,
        fused,
        names=("fixed", "moving", "fused"),
        window_a=_window(job.get("window_fixed")),
        window_b=_window(job.get("window_moving")),
    )
    report = compute_metrics(*grey, metrics=names, device=device, names=("fixed", "moving", "fused"))
    return report.to_json()


def _clinical(fixed: Any, moving: Any, result: Any, lesion: Any, registration: Any) -> dict[str, Any]:
    """The lesion readout, or ``{"error": reason}``: a readout that cannot be made never fails the fusion."""
    from .errors import MedFusionError
    from .readout import clinical_readout

    try:
        return clinical_readout(
            fixed,
            moving,
            result.image,
            lesion,
            colormap=result.colormap,
            transform=None if registration is None else registration.transform,
        )
    except MedFusionError as error:
        return {"error": _one_line(error)}


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _event_printer(stream: Any) -> tuple[Emit, Callable[..., None]]:
    last = [0.0]

    def write(stage: str, progress: float, message: str, **extra: Any) -> None:
        last[0] = max(last[0], min(1.0, float(progress)))
        record = {"stage": stage, "progress": round(last[0], 4), "message": message, **extra}
        stream.write(json.dumps(record) + "\n")
        stream.flush()

    def emit(stage: str, progress: float, message: str) -> None:
        write(stage, progress, message)

    return emit, write


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m MedFusionLib.background JOB.json``: run the job, print JSON lines."""
    from .errors import MedFusionError

    argv = list(sys.argv[1:] if argv is None else argv)
    stdout = sys.stdout
    sys.stdout = sys.stderr  # stray prints from libraries must not corrupt the event stream
    emit, write = _event_printer(stdout)

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    try:
        if len(argv) != 1:
            raise MedFusionError("usage: python -m MedFusionLib.background JOB.json")
        job_path = Path(argv[0])
        try:
            job = json.loads(job_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MedFusionError(f"job file not found: {job_path}") from None
        except (OSError, ValueError) as error:
            raise MedFusionError(f"cannot read job file {job_path}: {_one_line(error)}") from None
        if not isinstance(job, dict):
            raise MedFusionError(f"job file {job_path} must hold a JSON object")
        summary = run_job(job, emit)
    except MedFusionError as error:
        write("error", 0.0, _one_line(error), exit_code=EXIT_INPUT)
        return EXIT_INPUT
    except KeyboardInterrupt:
        write("error", 0.0, "cancelled", exit_code=EXIT_FAILED)
        return EXIT_FAILED
    except Exception as error:  # noqa: BLE001 - the parent needs one line whatever happened
        write("error", 0.0, f"{type(error).__name__}: {_one_line(error)}", exit_code=EXIT_FAILED)
        return EXIT_FAILED
    write(
        "done",
        1.0,
        f"fused with {summary['method']} in {summary['seconds']:.1f} s on {summary['device']}",
        result=summary,
    )
    return EXIT_OK


# --- the parent side ----------------------------------------------------------------------
class BackgroundJob:
    """Start a job in a separate process and watch it without blocking.

    Example (a GUI calls :meth:`poll` from a timer)::

        job = BackgroundJob()
        job.start({"fixed": "t1.nii.gz", "moving": "pet.nii.gz", "output": "fused.nii.gz"}, workdir)
        while not job.finished:
            for event in job.poll():
                print(event["stage"], event["progress"])
            time.sleep(0.15)
        print(job.returncode, job.result)

    Args:
        python: the interpreter to run (``PythonSlicer`` inside Slicer; default
            ``sys.executable``).
        kill_after: seconds between the polite termination of :meth:`cancel` and a kill
            (long ITK calls do not see Python's signal handler until they return).
    """

    def __init__(self, python: str | None = None, *, kill_after: float = 2.0) -> None:
        self.python = python or sys.executable
        self.kill_after = kill_after
        self.process: subprocess.Popen[str] | None = None
        self.job: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.cancelled = False
        self._kill_at: float | None = None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stderr: list[str] = []
        self._stdout_closed = False
        self._created: list[Path] = []
        self._launcher: threading.Thread | None = None
        self._early_exit: int | None = None  # the status when the job ended before its process
        self._lock = threading.Lock()

    # starting -------------------------------------------------------------------------
    def start(
        self,
        job: Mapping[str, Any],
        workdir: str | os.PathLike[str],
        *,
        prepare: Callable[[], None] | None = None,
    ) -> Path:
        """Write ``workdir/job.json`` and launch the process; returns the job file's path.

        ``prepare`` (for example writing the input files) runs first on a worker thread, so
        that ``start`` returns at once; the process is launched when it has finished. If it
        raises, the job ends with an ``error`` event naming the failure (status 2 for a
        :class:`~MedFusionLib.errors.MedFusionError`, else 1), and a :meth:`cancel` before it
        has finished means the process is never launched.
        """
        if self.process is not None or self._launcher is not None:
            raise RuntimeError("this BackgroundJob was already started")
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.job = {key: (str(value) if isinstance(value, Path) else value) for key, value in job.items()}
        self._created = [
            Path(self.job[key])
            for key in ("output", "transform")
            if self.job.get(key) and not Path(self.job[key]).exists()
        ]
        job_file = workdir / "job.json"
        job_file.write_text(json.dumps(self.job, indent=2), encoding="utf-8")
        if prepare is None:
            self._launch(job_file, workdir)
        else:
            self._launcher = threading.Thread(
                target=self._prepare_then_launch, args=(prepare, job_file, workdir), daemon=True
            )
            self._launcher.start()
        return job_file

    def _prepare_then_launch(self, prepare: Callable[[], None], job_file: Path, workdir: Path) -> None:
        from .errors import MedFusionError

        try:
            prepare()
        except Exception as error:  # noqa: BLE001 - reported to the parent as one line
            code = EXIT_INPUT if isinstance(error, MedFusionError) else EXIT_FAILED
            self._end_before_launch(code, f"preparing the job failed: {_one_line(error)}")
            return
        with self._lock:
            if self.cancelled:
                self._end_before_launch(EXIT_FAILED, "cancelled")
            else:
                self._launch(job_file, workdir)

    def _end_before_launch(self, code: int, message: str) -> None:
        self._early_exit = code
        self._queue.put({"stage": "error", "progress": 0.0, "message": message, "exit_code": code})
        self._queue.put(None)

    def _launch(self, job_file: Path, workdir: Path) -> None:
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        options: dict[str, Any] = {}
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(
                subprocess, "CREATE_NO_WINDOW", 0
            )
        else:
            options["start_new_session"] = True
        self.process = subprocess.Popen(
            [self.python, "-m", "MedFusionLib.background", str(job_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            cwd=str(workdir),
            env=env,
            **options,
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"stage": "log", "message": line}
            if not isinstance(event, dict):
                event = {"stage": "log", "message": line}
            self._queue.put(event)
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)
            del self._stderr[:-200]

    # watching -------------------------------------------------------------------------
    def poll(self) -> list[dict[str, Any]]:
        """Events that arrived since the last call (never blocks)."""
        new: list[dict[str, Any]] = []
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            if event is None:
                self._stdout_closed = True
                continue
            new.append(event)
            if event.get("stage") == "done":
                self.result = event.get("result")
            elif event.get("stage") == "error":
                self.error = event.get("message")
        self.events.extend(new)
        if self.cancelled:
            self._finish_cancel()
        if self._stdout_closed and self.process is not None and self.process.poll() is not None:
            if self.returncode != EXIT_OK and self.error is None:
                tail = "".join(self._stderr[-5:]).strip().splitlines()
                if self.cancelled:
                    self.error = "cancelled"
                else:
                    self.error = tail[-1] if tail else f"the job process exited with status {self.returncode}"
                event = {
                    "stage": "error",
                    "progress": 0.0,
                    "message": self.error,
                    "exit_code": self.returncode,
                }
                self.events.append(event)
                new.append(event)
        return new

    @property
    def running(self) -> bool:
        if self.process is None:
            return self._launcher is not None and self._early_exit is None
        return self.process.poll() is None

    @property
    def finished(self) -> bool:
        """True once the process has exited (or the job ended before it) and all output was polled."""
        if self.process is None and self._early_exit is not None:
            if not self._stdout_closed:
                self.poll()
            return self._stdout_closed and self._queue.empty()
        if self.process is None or self.process.poll() is None:
            return False
        if not self._stdout_closed:
            self.poll()
        elif self.cancelled:
            self._finish_cancel()
        return self._stdout_closed and self._queue.empty()

    @property
    def returncode(self) -> int | None:
        return self._early_exit if self.process is None else self.process.poll()

    @property
    def progress(self) -> float:
        values = [e["progress"] for e in self.events if isinstance(e.get("progress"), (int, float))]
        return max(values, default=0.0)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process exits (for scripts and tests, not for a GUI).

        Polls while waiting, so a cancelled process that outlives ``kill_after`` is killed.
        """
        if self._launcher is not None:
            self._launcher.join(timeout)
        if self.process is None:
            if self._early_exit is None:
                raise RuntimeError("the job was not started (or is still preparing)")
            self.poll()
            return self._early_exit
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.process.poll() is None:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.process.args, timeout or 0.0)
            time.sleep(0.05)
        for thread in self._threads:
            thread.join(timeout=5)
        self.poll()
        return self.process.returncode

    # cancelling -----------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the process group to end, without waiting (safe on a GUI thread).

        The process is terminated now and killed by :meth:`poll` if it is still running
        ``kill_after`` seconds later (Python cannot act on a signal during a long ITK call).
        Once it has exited, :meth:`poll` removes partial outputs and reports ``"cancelled"``.
        """
        with self._lock:  # the launcher checks the flag under the same lock
            if self.cancelled or (self.process is None and self._launcher is None):
                return
            self.cancelled = True
            if self.process is None:  # still preparing: the process will never start
                return
        if self.process.poll() is None:
            self._signal(signal.SIGTERM if os.name != "nt" else signal.CTRL_BREAK_EVENT)
            self._kill_at = time.monotonic() + self.kill_after
        self.poll()

    def _finish_cancel(self) -> None:
        """After a cancelled process has exited: drop what it wrote, unless it had finished."""
        if self._kill_at is not None and self.process is not None and self.process.poll() is None:
            if time.monotonic() >= self._kill_at:
                self._signal(signal.SIGKILL if os.name != "nt" else None)
                self._kill_at = None
            return
        if self.process is not None and self.process.poll() is not None and self.result is None:
            self.remove_outputs()
            self.error = "cancelled"

    def _signal(self, signum: int | None) -> None:
        assert self.process is not None
        try:
            if os.name == "nt":
                if signum is None:
                    self.process.kill()
                else:
                    self.process.send_signal(signum)
            else:
                os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def remove_outputs(self) -> None:
        """Remove outputs this job created and any temporary files it left beside them."""
        for path in self._created:
            path.unlink(missing_ok=True)
            if path.suffix.lower() in (".mhd", ".nhdr", ".hdr"):
                for data in path.parent.glob(f"{path.stem}.*"):
                    if data.suffix.lower() in (".raw", ".zraw", ".img", ".gz"):
                        data.unlink(missing_ok=True)
        for key in ("output", "transform"):
            if not self.job.get(key):
                continue
            target = Path(self.job[key])
            stem = target.name.split(".")[0]
            if not target.parent.is_dir():
                continue
            for leftover in target.parent.glob(f".{stem}*tmp*"):
                if leftover.is_dir():
                    import shutil

                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)


def run_and_wait(
    job: Mapping[str, Any],
    workdir: str | os.PathLike[str],
    *,
    timeout: float | None = None,
    poll_interval: float = 0.1,
) -> BackgroundJob:
    """Convenience for scripts: run a job in a separate process and wait for it."""
    runner = BackgroundJob()
    runner.start(job, workdir)
    deadline = None if timeout is None else time.monotonic() + timeout
    while not runner.finished:
        runner.poll()
        if deadline is not None and time.monotonic() > deadline:
            runner.cancel()
            break
        time.sleep(poll_interval)
    runner.poll()
    return runner


if __name__ == "__main__":
    sys.exit(main())
