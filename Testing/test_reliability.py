"""The reliability catalogue (issue 12): bad inputs and faults against every command and the API.

The cases live in ``reliability_cases.py`` (``Docs/reliability.md`` shows them as a table). For a
command-line case this checks: the exit status (2); exactly one line on stderr, starting with
``medfusion: error:`` and naming the culprit; no traceback; nothing on stdout; the listing of the
folders involved unchanged (no output, no temporary ``.NAME.*.tmp*`` left); every input's SHA-256
unchanged; and for the memory cases a peak RSS bound under an address-space limit. For an API case:
a :class:`~MedFusionLib.errors.MedFusionError` whose one-line message names the culprit, nothing
printed by the libraries, and the inputs unchanged.

Run it alone with ``pytest Testing/test_reliability.py`` (about 80 s on two cores); a case
that fails says why in one line (``-rf`` lists them).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from reliability_cases import CASES, MAX_RSS, MEMORY_LIMIT, Case, Ctx, Outcome, Setup

from MedFusionLib.cli import main
from MedFusionLib.errors import MedFusionError

PREFIX = "medfusion: error:"
# The child reports its own peak resident set (VmHWM) at exit: wait4's ru_maxrss would not do, as
# Linux carries the forking pytest process's peak over fork and exec into the child's figure.
PEAK_AT_EXIT = """
import atexit, os
def _report_peak():
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:")).split()[1]
    with open(os.environ["RELIABILITY_PEAK_FILE"], "w") as out:
        out.write(peak)
atexit.register(_report_peak)
"""
LAUNCH = PEAK_AT_EXIT + "import sys; from MedFusionLib.cli import main; sys.exit(main())"
API_LAUNCH = """
import json, sys
from MedFusionLib.errors import MedFusionError
try:
{body}
except BaseException as error:
    result = {{"type": type(error).__name__, "medfusion": isinstance(error, MedFusionError), "message": str(error)}}
else:
    result = {{"type": None}}
sys.__stdout__.write("\\n@@result@@" + json.dumps(result) + "\\n")
"""
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability_cache")


@pytest.fixture
def mount() -> Iterator[Callable[..., Path]]:
    """``mount(size, read_only=False)``: a fresh tmpfs, unmounted when the case ends."""
    mounted: list[Path] = []

    def mount_tmpfs(size: str = "64k", read_only: bool = False) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs (the full-disk and read-only cases) needs root")
        folder = Path(tempfile.mkdtemp(prefix="medfusion-tmpfs-"))
        options = f"size={size}" + (",ro" if read_only else "")
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True
        )
        if result.returncode != 0:
            folder.rmdir()
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or 'mount failed'}")
        mounted.append(folder)
        return folder

    yield mount_tmpfs
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


# --- what the file system holds ------------------------------------------------------------------------
def _entry(path: Path) -> tuple[str, ...]:
    """Kind and content of one entry, without opening anything but regular files."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return ("dir",)
    if stat.S_ISREG(info.st_mode):
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            while block := stream.read(1 << 22):
                digest.update(block)
        return ("file", digest.hexdigest())
    return ("special", stat.filemode(info.st_mode)[0])


def snapshot(roots: Sequence[Path]) -> dict[str, tuple[str, ...]]:
    """Every entry under ``roots`` (recursively, links not followed) with its SHA-256 or kind."""
    entries: dict[str, tuple[str, ...]] = {}
    for root in roots:
        if not os.path.lexists(root):
            continue
        entries[os.fsdecode(root)] = _entry(root)
        if root.is_dir() and not root.is_symlink():
            for folder, dirs, files in os.walk(root):
                for name in dirs + files:
                    path = Path(folder) / name
                    entries[os.fsdecode(path)] = _entry(path)
    return entries


def short(path: str, ctx: Ctx) -> str:
    return os.path.relpath(path, ctx.work) if path.startswith(str(ctx.work)) else path


def compare(
    before: dict[str, tuple[str, ...]], after: dict[str, tuple[str, ...]], ctx: Ctx, allowed: Path | None
) -> list[str]:
    """Leftovers, lost inputs and changed inputs."""
    problems = []
    allowed_text = None if allowed is None else os.fsdecode(allowed)
    new = [
        p
        for p in after
        if p not in before
        and not (allowed_text and (p == allowed_text or p.startswith(allowed_text + os.sep)))
    ]
    if new:
        problems.append("left behind: " + ", ".join(sorted(short(p, ctx) for p in new)[:4]))
    lost = [p for p in before if p not in after]
    if lost:
        problems.append("input removed: " + ", ".join(sorted(short(p, ctx) for p in lost)[:4]))
    changed = [p for p in before if p in after and after[p] != before[p]]
    if changed:
        problems.append("input changed (SHA-256): " + ", ".join(sorted(short(p, ctx) for p in changed)[:4]))
    return problems


# --- running a case --------------------------------------------------------------------------------
class _Timeout(BaseException):
    pass


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise :class:`_Timeout` in the test process after ``seconds`` (Python code only)."""

    def expire(signum: int, frame: Any) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def warnings_shown() -> Iterator[list[str]]:
    """Python warnings as a user would see them on stderr (pytest would otherwise keep them)."""
    shown: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield shown
        finally:
            shown += [warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught]


def run_in_process(argv: Sequence[str | bytes], capfd: pytest.CaptureFixture[str], timeout: float) -> Outcome:
    """``medfusion ARGV`` through ``MedFusionLib.cli.main`` with fd-level capture."""
    capfd.readouterr()
    outcome = Outcome()
    start = time.perf_counter()
    trace = ""
    shown: list[str] = []
    try:
        with alarm(timeout), warnings_shown() as shown:
            outcome.code = main([os.fsdecode(item) for item in argv])
    except SystemExit as exit_:
        code = exit_.code
        outcome.code = code if isinstance(code, int) else (0 if code is None else 1)
        if isinstance(code, str):
            trace = code + "\n"
    except _Timeout:
        outcome.timed_out = True
    except BaseException as error:  # an uncaught exception is what a user sees as a traceback
        outcome.code = 1
        outcome.error = error
        trace = "".join(traceback.format_exception(error))
    outcome.seconds = time.perf_counter() - start
    captured = capfd.readouterr()
    outcome.stdout, outcome.stderr = captured.out, captured.err + "".join(shown) + trace
    return outcome


def _preexec(memory: bool, drop_dac: bool) -> Callable[[], None]:
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def limit() -> None:
        # a child starts with the signal state a shell gives a command (nothing blocked, SIGINT
        # at its default), whatever this test process was left with by earlier tests (a
        # blocked or ignored SIGINT is inherited across fork and exec and would hide the
        # signal cases' interruptions)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        if drop_dac:  # root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH obeys file modes
            for capability in (1, 2):
                if prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return limit


def start(command: Sequence[str | bytes], ctx: Ctx, *, memory: bool = False, drop_dac: bool = False) -> Any:
    """Start a child whose stdout and stderr go to files in ``ctx.aside`` (read by :func:`finish`)."""
    tag = f"{time.monotonic_ns()}"
    logs = ctx.aside / f"{tag}.out", ctx.aside / f"{tag}.err"
    peak_file = ctx.aside / f"{tag}.peak"
    with open(logs[0], "wb") as out, open(logs[1], "wb") as err:
        process = subprocess.Popen(
            list(command),
            cwd=ctx.work,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env={**os.environ, **CHILD_ENV, "RELIABILITY_PEAK_FILE": str(peak_file)},
            preexec_fn=_preexec(memory, drop_dac),
            start_new_session=True,
        )
    process.logs = logs  # type: ignore[attr-defined]
    process.peak_file = peak_file  # type: ignore[attr-defined]
    return process


def finish(process: Any, timeout: float, started: float) -> Outcome:
    """Wait for the child (killing its group after ``timeout``); exit status, output and its reported peak RSS."""
    outcome = Outcome()
    while True:
        pid, status = os.waitpid(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - started > timeout:
            outcome.timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            pid, status = os.waitpid(process.pid, 0)
            break
        time.sleep(0.01)
    process.returncode = outcome.code = os.waitstatus_to_exitcode(status)
    peak_file = process.peak_file
    outcome.max_rss_kb = int(peak_file.read_text()) if peak_file.is_file() else None
    outcome.seconds = time.perf_counter() - started
    out, err = process.logs
    outcome.stdout = out.read_bytes().decode("utf-8", "backslashreplace")
    outcome.stderr = err.read_bytes().decode("utf-8", "backslashreplace")
    return outcome


def run_process(case: Case, setup: Setup, ctx: Ctx) -> Outcome:
    started = time.perf_counter()
    process = start(
        [sys.executable, "-c", LAUNCH, *setup.argv], ctx, memory=case.memory, drop_dac=setup.drop_dac
    )
    return finish(process, case.timeout, started)


def run_api_process(case: Case, setup: Setup, ctx: Ctx) -> Outcome:
    assert setup.script is not None
    body = "\n".join("    " + line for line in setup.script.splitlines())
    started = time.perf_counter()
    outcome = finish(start([sys.executable, "-c", API_LAUNCH.format(body=body)], ctx), case.timeout, started)
    marker = outcome.stdout.rfind("@@result@@")
    if marker >= 0:
        result = json.loads(outcome.stdout[marker + len("@@result@@") :])
        outcome.error_type = result["type"]
        outcome.error_is_medfusion = bool(result.get("medfusion"))
        outcome.value = result.get("message")
        outcome.stdout = outcome.stdout[:marker].strip()
    return outcome


def run_api(setup: Setup, capfd: pytest.CaptureFixture[str], timeout: float) -> Outcome:
    assert setup.call is not None
    capfd.readouterr()
    outcome = Outcome()
    start_time = time.perf_counter()
    shown: list[str] = []
    try:
        with alarm(timeout), warnings_shown() as shown:
            outcome.value = setup.call()
    except _Timeout:
        outcome.timed_out = True
    except BaseException as error:
        outcome.error = error
    outcome.seconds = time.perf_counter() - start_time
    captured = capfd.readouterr()
    outcome.stdout, outcome.stderr = captured.out, captured.err + "".join(shown)
    return outcome


def new_entries(folder: Path, before: set[str]) -> list[Path]:
    with contextlib.suppress(OSError):
        return [folder / name for name in os.listdir(folder) if name not in before]
    return []


def run_with_signal(case: Case, setup: Setup, ctx: Ctx) -> tuple[Outcome, list[str]]:
    """Start the write, send the signal once it is under way, and wait for the process."""
    assert setup.output is not None and case.signal is not None
    folder = setup.output.parent
    before = set(os.listdir(folder))
    ready = setup.ready or bool
    started = time.perf_counter()
    process = start([sys.executable, "-c", LAUNCH, *setup.argv], ctx)
    problems: list[str] = []
    sent = False
    while time.perf_counter() - started < case.timeout:
        if process.poll() is not None:
            break
        entries = new_entries(folder, before)
        if entries and ready(entries):
            os.kill(process.pid, case.signal)
            sent = True
            break
        time.sleep(0.002)
    if not sent:
        problems.append("the process ended (or never started writing) before the signal could be sent")
    outcome = finish(process, case.timeout, started)
    return outcome, problems


def run_race(case: Case, setup: Setup, ctx: Ctx) -> tuple[list[Outcome], list[str]]:
    started = time.perf_counter()
    processes = [start([sys.executable, "-c", LAUNCH, *setup.argv], ctx) for _ in range(2)]
    outcomes = [finish(process, case.timeout, started) for process in processes]
    problems: list[str] = []
    if not any(o.code == 0 for o in outcomes):
        problems.append(f"neither writer succeeded (exit {[o.code for o in outcomes]})")
    return outcomes, problems


# --- what must hold --------------------------------------------------------------------------------
def names_culprit(text: str, culprits: Sequence[str]) -> bool:
    return not culprits or any(c.lower() in text.lower() for c in culprits)


def traceback_line(text: str) -> str:
    """The exception line that ends a traceback (or the first line)."""
    lines = [line for line in text.splitlines() if line.strip()]
    after = lines[[i for i, line in enumerate(lines) if line.startswith("Traceback")][-1] :]
    candidates = [line for line in after if not line.startswith((" ", "Traceback"))]
    return (candidates[-1] if candidates else lines[-1]).strip()[:160]


def command_problems(case: Case, outcome: Outcome, culprits: Sequence[str]) -> list[str]:
    """The contract for one run of the command."""
    problems: list[str] = []
    if outcome.timed_out:
        return [f"no answer within {case.timeout:g} s (blocked, or did its work before failing)"]
    if case.exit and outcome.code not in case.exit:
        shown = (
            f"killed by signal {-outcome.code}"
            if outcome.code and outcome.code < 0
            else f"exit {outcome.code}"
        )
        problems.append(f"{shown}, expected {' or '.join(map(str, case.exit))}")
    text = outcome.stdout + outcome.stderr
    if "Traceback" in text:
        problems.append(f"traceback ({traceback_line(text)})")
    if outcome.code != 0:
        lines = [line for line in outcome.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith(PREFIX)]
        if not errors:
            problems.append(f"no '{PREFIX}' line on stderr (first line: {(lines or [''])[0][:120]!r})")
        elif not names_culprit(errors[0], culprits):
            problems.append(f"the error does not name {' or '.join(culprits)}: {errors[0][:160]!r}")
        elif not names_culprit(errors[0], case.reason):
            problems.append(f"the error does not say {' or '.join(case.reason)}: {errors[0][:160]!r}")
        if len(lines) > 1 and "Traceback" not in text:
            others = [line for line in lines if not line.startswith(PREFIX)]
            problems.append(
                f"{len(lines)} lines on stderr (also {others[0][:100] if others else lines[1][:100]!r})"
            )
        if outcome.stdout.strip():
            problems.append(f"stdout not empty ({outcome.stdout.strip().splitlines()[0][:100]!r})")
    if case.memory and outcome.max_rss_kb is None:
        problems.append("the child did not report its peak RSS")
    elif case.memory and outcome.max_rss_kb * 1024 > MAX_RSS:
        problems.append(f"peak RSS {outcome.max_rss_kb >> 10} MB > {MAX_RSS >> 20} MB")
    return problems


def api_problems(case: Case, outcome: Outcome, culprits: Sequence[str]) -> list[str]:
    if outcome.timed_out:
        return [f"no answer within {case.timeout:g} s (blocked)"]
    problems: list[str] = []
    if case.mode == "api-proc":
        kind, medfusion, message = outcome.error_type, outcome.error_is_medfusion, outcome.value or ""
        if kind is None and outcome.code != 0:
            problems.append(
                f"the subprocess died (exit {outcome.code}): {traceback_line(outcome.stderr or '?')}"
            )
    else:
        error = outcome.error
        kind, medfusion = (
            (type(error).__name__, isinstance(error, MedFusionError)) if error else (None, False)
        )
        message = str(error) if error else ""
    if case.exit == (0,):
        if kind is not None:
            problems.append(f"raised {kind}: {message.splitlines()[0][:140] if message else ''}")
    elif kind is None:
        problems.append(f"no error raised (returned {type(outcome.value).__name__})")
    elif not medfusion:
        first = message.splitlines()[0][:140] if message else ""
        problems.append(f"raised {kind}, not a MedFusionError ({first})")
    else:
        if "\n" in message.strip():
            problems.append(f"{kind} message has {len(message.strip().splitlines())} lines")
        if not names_culprit(message, culprits):
            problems.append(f"{kind} does not name {' or '.join(culprits)}: {message[:140]!r}")
        elif not names_culprit(message, case.reason):
            problems.append(f"{kind} does not say {' or '.join(case.reason)}: {message[:140]!r}")
    chatter = (outcome.stdout + outcome.stderr).strip()
    if chatter:
        problems.append(f"printed {chatter.splitlines()[0][:100]!r}")
    return problems


def signal_problems(outcome: Outcome) -> list[str]:
    problems = []
    if outcome.timed_out:
        problems.append("did not stop after the signal")
    elif outcome.code == 0:
        problems.append("exit 0 after the signal")
    text = outcome.stdout + outcome.stderr
    if "Traceback" in text:
        problems.append(f"traceback ({traceback_line(text)})")
    return problems


# --- the test --------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_reliability(
    case: Case,
    tmp_path: Path,
    cache: Path,
    mount: Callable[..., Path],
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work, aside = tmp_path / "work", tmp_path / "aside"
    work.mkdir()
    aside.mkdir()
    ctx = Ctx(work=work, aside=aside, cache=cache, mount=mount)
    monkeypatch.chdir(work)
    setup = case.build(ctx)
    try:
        roots = [work, *setup.watch, *setup.inputs]
        before = snapshot(roots)
        state_before = setup.state() if setup.state else None
        culprits = tuple(setup.culprit) if setup.culprit is not None else case.culprit
        problems: list[str] = []
        allowed: Path | None = None

        if case.mode == "cli":
            outcome = run_in_process(setup.argv, capfd, case.timeout)
            problems += command_problems(case, outcome, culprits)
        elif case.mode == "proc":
            outcome = run_process(case, setup, ctx)
            problems += command_problems(case, outcome, culprits)
        elif case.mode == "api":
            outcome = run_api(setup, capfd, case.timeout)
            problems += api_problems(case, outcome, culprits)
        elif case.mode == "api-proc":
            outcome = run_api_process(case, setup, ctx)
            problems += api_problems(case, outcome, culprits)
        elif case.mode == "signal":
            outcome, problems = run_with_signal(case, setup, ctx)
            problems += signal_problems(outcome)
        elif case.mode == "race":
            outcomes, problems = run_race(case, setup, ctx)
            for each in outcomes:
                problems += [f"writer: {p}" for p in command_problems(case, each, culprits)]
            outcome = outcomes[0]
            allowed = setup.output
        else:
            raise AssertionError(case.mode)

        succeeded = outcome.code == 0 if case.mode not in ("api", "api-proc") else outcome.error is None
        if succeeded and case.exit and 0 in case.exit:
            allowed = setup.output
        if setup.check is not None:
            problems += setup.check(outcome)
        problems += compare(before, snapshot(roots), ctx, allowed)
        if setup.state is not None and setup.state() != state_before:
            problems.append("an in-memory input (array, tensor or scene node) was changed")
    finally:
        if setup.cleanup is not None:
            setup.cleanup()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
