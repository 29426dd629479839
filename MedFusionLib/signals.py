"""Stop cleanly on SIGTERM and SIGHUP, and know which temporaries to remove.

Python turns SIGINT into :class:`KeyboardInterrupt`, so every ``finally`` block runs and the
outputs' temporaries are removed. SIGTERM and SIGHUP kill the process outright by default,
leaving half-written temporaries behind. :func:`termination_raises` makes them raise
:class:`Terminated` instead (from the main thread, between two Python bytecodes, like
``KeyboardInterrupt``), and the writers register each temporary with :func:`live_temporary`
so that whoever catches :class:`Terminated` can remove what a ``finally`` could not reach (a
temporary of another thread) with :func:`remove_live_temporaries`.

Example:
    >>> with termination_raises():  # doctest: +SKIP
    ...     try:
    ...         run()
    ...     except Terminated as stop:
    ...         remove_live_temporaries()
    ...         sys.exit(stop.code)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

_lock = threading.Lock()
_live: dict[Path, int] = {}


class Terminated(SystemExit):
    """Raised in the main thread when SIGTERM or SIGHUP arrives under :func:`termination_raises`.

    It derives from :class:`SystemExit` (not :class:`Exception`), so ``except Exception``
    blocks let it through and an uncaught one ends the interpreter quietly with status
    ``128 + signum`` after every ``finally`` block has run.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    @property
    def name(self) -> str:
        """The signal's name, e.g. ``"SIGTERM"``."""
        return signal.Signals(self.signum).name


def termination_signals() -> tuple[signal.Signals, ...]:
    """The signals :func:`termination_raises` handles on this platform."""
    names = ("SIGTERM", "SIGHUP")
    return tuple(getattr(signal, name) for name in names if hasattr(signal, name))


@contextlib.contextmanager
def termination_raises() -> Iterator[None]:
    """Make SIGTERM and SIGHUP raise :class:`Terminated` in the block; restore the handlers after.

    The first signal raises; further ones while the first is being handled (the ``finally``
    blocks cleaning up) are ignored. Outside the main thread, where Python cannot install
    handlers, the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise Terminated(signum)

    previous = {}
    try:
        for signum in termination_signals():
            previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def deferred_termination() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back during the block (a few renames that belong together).

    A signal arriving meanwhile is delivered, and its handler runs, when the block ends. On
    platforms without :func:`signal.pthread_sigmask` the block runs unchanged.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signals = {signal.SIGINT, *termination_signals()}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def live_temporary(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Register ``path`` (a temporary file or folder) for the block; remove it when the block ends.

    Whatever happens in the block, the path is gone afterwards unless the block renamed it
    away (then there is nothing left to remove). While the block runs,
    :func:`remove_live_temporaries` can remove it from another thread or a signal handler.
    """
    path = Path(path)
    with _lock:
        _live[path] = _live.get(path, 0) + 1
    try:
        yield path
    finally:
        _remove(path)  # if a signal interrupts this, the path stays registered for remove_live_temporaries
        with _lock:
            count = _live.pop(path, 1) - 1
            if count > 0:
                _live[path] = count


def live_temporaries() -> list[Path]:
    """The temporaries registered right now (for tests and diagnostics)."""
    with _lock:
        return list(_live)


def remove_live_temporaries() -> None:
    """Remove every registered temporary now (best effort; errors are ignored)."""
    for path in live_temporaries():
        with contextlib.suppress(OSError):
            _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


atexit.register(remove_live_temporaries)
