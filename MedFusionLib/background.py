"""Run a :class:`~MedFusionLib.job.FusionJob` in a separate process, and watch it from a GUI.

The Slicer module never does heavy work on its GUI thread. It writes the two input volumes
and the job (JSON, :meth:`FusionJob.to_mapping <MedFusionLib.job.FusionJob.to_mapping>`) to a
work folder and starts this module as a separate process (``PythonSlicer -m
MedFusionLib.background JOB.json``, the pattern of SlicerMONAIAuto3DSeg). The process runs
:func:`MedFusionLib.job.run_job` and prints one JSON object per line on stdout::

    {"stage": "reading", "progress": 0.0, "message": "reading fixed.nii.gz", "pid": 4242}
    {"stage": "fusing", "progress": 0.62, "message": "slab 2 of 4"}
    {"stage": "done", "progress": 1.0, "message": "...", "result": {...}}

Stages, in order: ``reading``, ``registering`` (when asked), ``fusing``, ``writing``,
``scoring`` (when metrics are asked), then ``done``; or ``error`` with a one-line message.
Progress never decreases. The exit status is 0 on success, 2 for errors caused by the input
(:class:`~MedFusionLib.errors.MedFusionError`), 3 when cancelled and 1 for anything else.

:class:`BackgroundJob` is the parent's side, free of Qt: ``start`` launches the process, a
reader thread queues its lines, ``poll`` returns the events that arrived since the last call
without ever blocking, and ``cancel`` stops the job and removes partial outputs.

Cancelling stops the whole process tree on every platform. ``PythonSlicer`` is a launcher that
starts the real interpreter as its child, and on Windows killing the launcher leaves that child
running. So the job process does not rely on signals reaching it: a watchdog thread in it exits
the process (``os._exit``, which works even while the main thread is inside a long ITK or torch
call) as soon as the parent writes the ``cancel`` file into the work folder, or as soon as the
parent process itself (``MEDFUSION_PARENT_PID``) is gone. The parent also signals the process
group (POSIX) or kills the tree (``taskkill /T``, Windows) as a second line.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .job import FusionJob, one_line, run_job

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_CANCELLED = 3

STAGES = ("reading", "registering", "fusing", "writing", "scoring", "done", "error")
CANCEL_FILE = "cancel"
"""Written into the work folder by :meth:`BackgroundJob.cancel`; the job process exits when it appears."""
PARENT_PID_VARIABLE = "MEDFUSION_PARENT_PID"
WATCH_INTERVAL = 0.2
WAIT_OPTION = "--wait"
"""``python -m MedFusionLib.background --wait JOB.json``: import the engine now, run JOB.json when it appears."""
WAIT_INTERVAL = 0.01

Emit = Callable[[str, float, str], None]


def check_job(job: Mapping[str, Any]) -> FusionJob:
    """Refuse an incomplete or malformed job before any work; returns it as a :class:`FusionJob`."""
    return FusionJob.from_mapping(job)


# --- the child process ------------------------------------------------------------------
def _event_printer(stream: Any) -> tuple[Emit, Callable[..., None]]:
    last = [0.0]
    first = [True]

    def write(stage: str, progress: float, message: str, **extra: Any) -> None:
        last[0] = max(last[0], min(1.0, float(progress)))
        record = {"stage": stage, "progress": round(last[0], 4), "message": message, **extra}
        if first[0]:
            record["pid"] = os.getpid()  # the real interpreter, whatever launcher started it
            first[0] = False
        stream.write(json.dumps(record) + "\n")
        stream.flush()

    def emit(stage: str, progress: float, message: str) -> None:
        write(stage, progress, message)

    return emit, write


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (POSIX: signal 0; Windows: its exit code)."""
    if os.name == "nt":
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch(workdir: Path, parent_pid: int | None, job: Mapping[str, Any], interval: float) -> None:
    """End this process when the parent asks (cancel file) or is gone, removing partial outputs."""
    cancel = workdir / CANCEL_FILE
    while True:
        if cancel.exists() or (parent_pid is not None and not _process_alive(parent_pid)):
            remove_outputs(job, created=())
            os._exit(EXIT_CANCELLED)
        time.sleep(interval)


def start_watchdog(
    workdir: Path, job: Mapping[str, Any], *, interval: float = WATCH_INTERVAL
) -> threading.Thread:
    """Start the thread that ends this process on cancel or when the parent dies."""
    text = os.environ.get(PARENT_PID_VARIABLE, "")
    parent_pid = int(text) if text.isdigit() else None
    thread = threading.Thread(target=_watch, args=(workdir, parent_pid, job, interval), daemon=True)
    thread.start()
    return thread


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m MedFusionLib.background JOB.json``: run the job, print JSON lines.

    Started by :class:`BackgroundJob` (``MEDFUSION_PARENT_PID`` set), it also starts the
    watchdog that ends the process on cancel or when the parent is gone.
    """
    stdout, handler = sys.stdout, signal.getsignal(signal.SIGTERM)
    sys.stdout = sys.stderr  # stray prints from libraries must not corrupt the event stream
    try:
        return _main(list(sys.argv[1:] if argv is None else argv), stdout)
    finally:
        sys.stdout = stdout
        signal.signal(signal.SIGTERM, handler)


def _main(argv: list[str], stdout: Any) -> int:
    from .errors import MedFusionError

    emit, write = _event_printer(stdout)

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    try:
        waiting = len(argv) == 2 and argv[0] == WAIT_OPTION
        if len(argv) != 1 and not waiting:
            raise MedFusionError(f"usage: python -m MedFusionLib.background [{WAIT_OPTION}] JOB.json")
        job_path = Path(argv[-1])
        watched: dict[str, Any] = {}
        if waiting:
            _preload_engine()
            if PARENT_PID_VARIABLE in os.environ:
                start_watchdog(job_path.resolve().parent, watched)
            while not job_path.exists():
                time.sleep(WAIT_INTERVAL)
        try:
            mapping = json.loads(job_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MedFusionError(f"job file not found: {job_path}") from None
        except (OSError, ValueError) as error:
            raise MedFusionError(f"cannot read job file {job_path}: {one_line(error)}") from None
        if not isinstance(mapping, dict):
            raise MedFusionError(f"job file {job_path} must hold a JSON object")
        watched.update(mapping)
        if PARENT_PID_VARIABLE in os.environ and not waiting:
            start_watchdog(job_path.resolve().parent, watched)
        summary = run_job(FusionJob.from_mapping(mapping), emit=emit).summary()
    except MedFusionError as error:
        write("error", 0.0, one_line(error), exit_code=EXIT_INPUT)
        return EXIT_INPUT
    except KeyboardInterrupt:
        write("error", 0.0, "cancelled", exit_code=EXIT_CANCELLED)
        return EXIT_CANCELLED
    except Exception as error:  # noqa: BLE001 - the parent needs one line whatever happened
        write("error", 0.0, f"{type(error).__name__}: {one_line(error)}", exit_code=EXIT_FAILED)
        return EXIT_FAILED
    write(
        "done",
        1.0,
        f"fused with {summary['method']} in {summary['seconds']:.1f} s on {summary['device']}",
        result=summary,
    )
    return EXIT_OK


def _preload_engine() -> None:
    """Import what every job needs (torch, SimpleITK, the methods), before the job is known."""
    from . import io, pipeline, registration  # noqa: F401
    from .fusion import get_method

    get_method("average")


def remove_outputs(job: Mapping[str, Any], *, created: Sequence[Path]) -> None:
    """Remove the outputs a job created (``created``) and any temporary files left beside its outputs."""
    for path in created:
        path.unlink(missing_ok=True)
        if path.suffix.lower() in (".mhd", ".nhdr", ".hdr"):
            for data in path.parent.glob(f"{path.stem}.*"):
                if data.suffix.lower() in (".raw", ".zraw", ".img", ".gz"):
                    data.unlink(missing_ok=True)
    for key in ("output", "transform"):
        if not job.get(key):
            continue
        target = Path(job[key])
        stem = target.name.split(".")[0]
        if not target.parent.is_dir():
            continue
        for leftover in target.parent.glob(f".{stem}*tmp*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


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
        self.workdir: Path | None = None
        self.pid: int | None = None  # the job's own interpreter (behind any launcher), once it reports
        self._early_exit: int | None = None  # the status when the job ended before its process
        self._waiting = False  # launched by prelaunch(), the job file not yet written
        self._lock = threading.Lock()

    # starting -------------------------------------------------------------------------
    def prelaunch(self, workdir: str | os.PathLike[str]) -> None:
        """Start the job's interpreter now, before the job is known; :meth:`start` hands it the job.

        The process imports the engine (torch, SimpleITK, the methods: about a second) and then
        waits for ``workdir/job.json``, so that a job started later begins at once. It exits
        by itself when cancelled or when this process ends.
        """
        if self.process is not None or self._launcher is not None:
            raise RuntimeError("this BackgroundJob was already started")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._waiting = True
        self._launch(self.workdir / "job.json", self.workdir)

    def start(
        self,
        job: FusionJob | Mapping[str, Any],
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
        workdir = Path(workdir)
        if self._waiting:
            if workdir != self.workdir or self.cancelled or prepare is not None:
                raise RuntimeError("a prelaunched BackgroundJob takes one prepared job, in its own folder")
        elif self.process is not None or self._launcher is not None:
            raise RuntimeError("this BackgroundJob was already started")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        if isinstance(job, FusionJob):
            job = job.to_mapping()
        self.job = {key: (str(value) if isinstance(value, Path) else value) for key, value in job.items()}
        self._created = [
            Path(self.job[key])
            for key in ("output", "transform")
            if self.job.get(key) and not Path(self.job[key]).exists()
        ]
        job_file = workdir / "job.json"
        text = json.dumps(self.job, indent=2)
        if self._waiting:  # the waiting process runs the job as soon as the file appears whole
            self._waiting = False

            def deliver() -> None:
                partial = workdir / ".job.json.partial"
                partial.write_text(text, encoding="utf-8")
                os.replace(partial, job_file)

        else:
            job_file.write_text(text, encoding="utf-8")

            def deliver() -> None:
                self._launch(job_file, workdir)

        if prepare is None:
            deliver()
        else:
            self._launcher = threading.Thread(
                target=self._prepare_then_launch, args=(prepare, deliver), daemon=True
            )
            self._launcher.start()
        return job_file

    def _prepare_then_launch(self, prepare: Callable[[], None], deliver: Callable[[], None]) -> None:
        from .errors import MedFusionError

        try:
            prepare()
        except Exception as error:  # noqa: BLE001 - reported to the parent as one line
            code = EXIT_INPUT if isinstance(error, MedFusionError) else EXIT_FAILED
            self._end_before_launch(code, f"preparing the job failed: {one_line(error)}")
            return
        with self._lock:
            if self.cancelled:
                self._end_before_launch(EXIT_FAILED, "cancelled")
            else:
                deliver()

    def _end_before_launch(self, code: int, message: str) -> None:
        self._early_exit = code
        self._queue.put({"stage": "error", "progress": 0.0, "message": message, "exit_code": code})
        self._queue.put(None)

    def _launch(self, job_file: Path, workdir: Path) -> None:
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        env[PARENT_PID_VARIABLE] = str(os.getpid())
        (workdir / CANCEL_FILE).unlink(missing_ok=True)
        options: dict[str, Any] = {}
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(
                subprocess, "CREATE_NO_WINDOW", 0
            )
        else:
            options["start_new_session"] = True
        wait = [WAIT_OPTION] if self._waiting else []
        self.process = subprocess.Popen(
            [self.python, "-m", "MedFusionLib.background", *wait, str(job_file)],
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
            if isinstance(event.get("pid"), int) and self.pid is None:
                self.pid = event["pid"]
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

    def wait(self, timeout: float | None = None, *, idle: Callable[[], Any] | None = None) -> int:
        """Block until the process exits (for scripts and tests, not for a GUI).

        Polls while waiting (every event stays in :attr:`events`), so a cancelled process that
        outlives ``kill_after`` is killed; ``idle`` is called between polls (a self-test inside
        Slicer passes ``slicer.app.processEvents``).
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
            if idle is not None:
                idle()
            time.sleep(0.05)
        for thread in self._threads:
            thread.join(timeout=5)
        self.poll()
        return self.process.returncode

    # cancelling -----------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the job's whole process tree, without waiting (safe on a GUI thread).

        Writes the ``cancel`` file that the job's own interpreter watches (it exits within
        :data:`WATCH_INTERVAL` seconds, even behind a launcher such as ``PythonSlicer``), and
        terminates the process group now; :meth:`poll` kills what is left (the process group on
        POSIX, the process tree with ``taskkill /T`` on Windows) ``kill_after`` seconds later.
        Once it has exited, :meth:`poll` removes partial outputs and reports ``"cancelled"``.
        """
        with self._lock:  # the launcher checks the flag under the same lock
            if self.cancelled or (self.process is None and self._launcher is None):
                return
            self.cancelled = True
            if self.process is None:  # still preparing: the process will never start
                return
        if self.process.poll() is None:
            if self.workdir is not None:
                try:
                    (self.workdir / CANCEL_FILE).write_text("cancel\n", encoding="utf-8")
                except OSError:
                    pass  # the signals below still end the process
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
        """Signal the process group (POSIX); on Windows break, or kill the whole tree (``None``)."""
        assert self.process is not None
        try:
            if os.name == "nt":
                if signum is None:
                    subprocess.run(
                        ["taskkill", "/F", "/T", "/PID", str(self.process.pid)],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        timeout=10,
                        check=False,
                    )
                    self.process.kill()
                else:
                    self.process.send_signal(signum)
            else:
                os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError, OSError, subprocess.SubprocessError):
            pass

    def remove_outputs(self) -> None:
        """Remove outputs this job created and any temporary files it left beside them."""
        remove_outputs(self.job, created=self._created)


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
