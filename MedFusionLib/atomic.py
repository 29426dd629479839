"""Atomic file output: write beside the target, check, fsync, and rename over it only when complete.

Every output of the engine (images, transforms, reports, figures, weights) goes through one
of these helpers, so that an interrupted or failed write never leaves a half-written file
under the target's name, nor a temporary beside it:

- the data go to a fresh temporary name in the target's folder (unique per process and call,
  so concurrent runs writing the same output never share one; the last rename wins and the
  target is always one complete file);
- the temporary is checked (it exists and is not empty, plus the caller's own check), flushed
  to the disk with ``fsync``, renamed onto the target, and the folder is ``fsync``-ed;
- on any error, on Ctrl-C and (under :func:`MedFusionLib.signals.termination_raises`) on
  SIGTERM/SIGHUP the temporary is removed; an :class:`OSError` (a full disk, a name too long)
  becomes an :class:`~MedFusionLib.errors.InputError` naming the target.

:class:`StagedOutputs` does the same for several files that belong together: all are written
to temporaries first and renamed at the end, so a failure of a later one leaves none of them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import InputError, MedFusionError
from .signals import deferred_termination, live_temporary

# Room kept for the temporary's decorations (".", ".<pid>.<8 hex>.tmp" and an extension)
# within the 255 bytes most file systems allow for one name.
_TEMPORARY_STEM_BYTES = 120


class OutputError(InputError, OSError):
    """An output could not be written (a full disk, a name too long, a failed check).

    It is an :class:`~MedFusionLib.errors.InputError` (one line naming the file; exit
    status 2 on the command line) and, for code that catches I/O failures, an
    :class:`OSError`. Its message is the whole line; ``errno`` is not set.
    """


def temporary_name(path: str | os.PathLike[str], *, suffix: str = "", tag: str = "tmp") -> Path:
    """A fresh hidden name beside ``path``: ``.<name>.<pid>.<random>.<tag><suffix>``.

    The name part is shortened so that the temporary fits the file system's name limit
    whenever the target does; ``suffix`` keeps an extension a writer needs (``.png``).
    """
    path = Path(path)
    stem = os.fsencode(path.name)[:_TEMPORARY_STEM_BYTES].decode("utf-8", "ignore")
    return path.with_name(f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.{tag}{suffix}")


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a written file's data to the disk (errors such as ENOSPC surface here)."""
    flags = os.O_RDWR if os.name == "nt" else os.O_RDONLY
    descriptor = os.open(path, flags | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make a rename in folder ``path`` durable (POSIX; a no-op where folders cannot be synced)."""
    if os.name == "nt":
        return
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError as error:  # some file systems cannot sync a folder
        if error.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EROFS):
            raise
    finally:
        os.close(descriptor)


def os_error_reason(error: OSError) -> str:
    """A short reason for an :class:`OSError` (its ``strerror``, lower-case first letter; a full disk
    is always named as such)."""
    if error.errno == errno.ENOSPC:
        return "no space left on device"
    text = error.strerror or str(error) or type(error).__name__
    return text[:1].lower() + text[1:]


def check_complete(path: Path, *, allow_empty: bool = False) -> None:
    """Raise :class:`OSError` if ``path`` is missing or (unless allowed) empty."""
    if not path.is_file():
        raise OSError(errno.EIO, "the writer left no file")
    if not allow_empty and path.stat().st_size == 0:
        raise OSError(errno.EIO, "the writer left an empty file")


class StagedOutputs:
    """Outputs written to temporaries and renamed into place together at the end.

    Use it as a context manager: :meth:`stage` hands out a temporary for each target; when
    the block ends without an error every temporary is checked, synced and renamed onto its
    target, in the order staged; when it raises (or a check fails) every temporary is
    removed and no target is touched. If a rename fails half-way, the targets already
    renamed are removed too, so the set is all or nothing.

    Example:
        >>> with StagedOutputs() as staged:  # doctest: +SKIP
        ...     Path(staged.stage("report.md")).write_text(text)
        ...     figure.save(staged.stage("chart.png", suffix=".png"))
    """

    def __init__(self) -> None:
        self._entries: list[tuple[Path, Path, Callable[[Path], None] | None, bool]] = []
        self._stack = contextlib.ExitStack()
        self.committed: list[Path] = []

    def __enter__(self) -> StagedOutputs:
        self._stack.__enter__()
        return self

    def stage(
        self,
        path: str | os.PathLike[str],
        *,
        suffix: str = "",
        check: Callable[[Path], None] | None = None,
        allow_empty: bool = False,
    ) -> Path:
        """A temporary for ``path`` (created by the caller); ``check(temporary)`` runs before the rename."""
        target = Path(path)
        temporary = self._stack.enter_context(live_temporary(temporary_name(target, suffix=suffix)))
        self._entries.append((target, temporary, check, allow_empty))
        return temporary

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, trace: object) -> bool:
        try:
            if kind is None:
                self._commit()
        finally:
            self._stack.__exit__(None, None, None)  # removes every temporary still there
        if isinstance(value, (MedFusionError, OSError)):
            self._raise_with_target_names(value)
        return False

    def _raise_with_target_names(self, error: MedFusionError | OSError) -> None:
        """Re-raise an error that names a temporary so that it names the target instead."""
        ours = isinstance(error, MedFusionError)
        message = str(error) if ours else f"{error.filename}: {os_error_reason(error)}"
        for target, temporary, _, _ in self._entries:
            if str(temporary) in message:
                if ours:
                    raise type(error)(message.replace(str(temporary), str(target))) from None
                raise OutputError(f"cannot write {target}: {os_error_reason(error)}") from None

    def _commit(self) -> None:
        current = None
        try:
            for target, temporary, check, allow_empty in self._entries:
                current = target
                check_complete(temporary, allow_empty=allow_empty)
                if check is not None:
                    check(temporary)
                fsync_file(temporary)
            with deferred_termination():  # a signal cannot split the set
                for target, temporary, _, _ in self._entries:
                    current = target
                    os.replace(temporary, target)
                    self.committed.append(target)
            for folder in dict.fromkeys(target.parent for target, _, _, _ in self._entries):
                fsync_directory(folder)
        except BaseException as error:
            for target in self.committed:
                with contextlib.suppress(OSError):
                    target.unlink()
            self.committed = []
            if isinstance(error, OSError) and not isinstance(error, MedFusionError):
                raise OutputError(f"cannot write {current}: {os_error_reason(error)}") from None
            raise


@contextlib.contextmanager
def replacing(
    path: str | os.PathLike[str],
    *,
    suffix: str = "",
    check: Callable[[Path], None] | None = None,
    allow_empty: bool = False,
) -> Iterator[Path]:
    """A fresh temporary path beside ``path``; checked, synced and renamed onto ``path`` if the block succeeds.

    The temporary file is created by the caller (so it gets the usual umask permissions, unlike
    :func:`tempfile.mkstemp`'s 0600) and is removed if the block raises: no half-written output
    is ever left under the target's name, nor beside it. The target's folder is created if
    needed. An :class:`OSError` in the block or in the commit (a full disk) is raised as an
    :class:`~MedFusionLib.errors.InputError` that names ``path``.

    Args:
        path: the target file.
        suffix: an extension for the temporary (writers that pick the format from the name).
        check: called with the temporary before the rename; raise to refuse it.
        allow_empty: accept an empty file (otherwise an empty temporary is an error).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with StagedOutputs() as staged:
            yield staged.stage(path, suffix=suffix, check=check, allow_empty=allow_empty)
    except MedFusionError:
        raise
    except OSError as error:
        raise OutputError(f"cannot write {path}: {os_error_reason(error)}") from None


@contextlib.contextmanager
def making_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Create folder ``path`` (and missing parents) for the block; if the block raises, remove them again.

    Only the folders this call created are removed, and only when empty: the block removes
    its own files first (a failing run leaves nothing it made).
    """
    folder = Path(path)
    missing: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.insert(0, probe)
        probe = probe.parent
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot create folder {folder}: {os_error_reason(error)}") from None
        yield folder
    except BaseException:
        for created in reversed(missing):
            with contextlib.suppress(OSError):
                created.rmdir()
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`replacing`); returns the path."""
    with replacing(path, allow_empty=not data) as temporary, open(temporary, "xb") as stream:
        stream.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`replacing`); returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def save_png_atomically(save: Callable[[Path], object], path: str | Path) -> Path:
    """Run ``save(temporary)`` on a fresh ``.png`` temporary beside ``path``, check it, then rename it.

    :func:`~MedFusionLib.montage.save_tile_columns` writes through a temporary of its own
    (``.<stem>.tmp.png`` beside the name it is given); that one is registered too, so that it
    is removed whatever happens. An :class:`OSError` (a full disk) becomes an
    :class:`~MedFusionLib.errors.InputError` naming ``path``; nothing is left behind.
    """
    path = Path(path)
    with replacing(path, suffix=".png", check=_check_png) as temporary:
        with live_temporary(temporary.with_name(f".{temporary.stem}.tmp.png")):
            save(temporary)
    return path


def _check_png(path: Path) -> None:
    """Refuse a PNG that Pillow cannot decode (a write cut short)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as picture:
            picture.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise OSError(errno.EIO, f"the written PNG is unreadable ({error})") from None
