"""Keep the C/C++ libraries' own console output away from the user.

ITK, GDCM, MetaImage, the NIfTI library and HDF5 write warnings and error stacks straight
to the process's file descriptors 1 and 2, bypassing Python. The engine's contract is one
line per error, its own; :func:`native_output_captured` redirects both descriptors to a
temporary file around a library call, so nothing reaches the terminal, and hands back what
was printed (it can explain a failure in the error message the engine raises).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

import SimpleITK as sitk

# ITK's warnings (e.g. "NiftiImageIO: qform not set") go through its output window.
sitk.ProcessObject.SetGlobalWarningDisplay(False)

_lock = threading.RLock()
_depth = 0


class CapturedOutput:
    """What the libraries printed inside a :func:`native_output_captured` block."""

    def __init__(self) -> None:
        self.text = ""

    def lines(self) -> list[str]:
        """The non-empty printed lines, stripped."""
        return [line.strip() for line in self.text.splitlines() if line.strip()]


@contextlib.contextmanager
def native_output_captured() -> Iterator[CapturedOutput]:
    """Redirect file descriptors 1 and 2 to a temporary file for the block.

    Python's own ``sys.stdout``/``sys.stderr`` are flushed first so that nothing written
    before the block is lost or reordered. Nested blocks share the outer redirection. The
    redirection is process-wide: other threads' native output is captured too while a
    block runs (a lock keeps two blocks from interleaving).

    Example:
        >>> with native_output_captured() as printed:  # doctest: +SKIP
        ...     sitk.ReadImage("broken.mha")
    """
    global _depth
    captured = CapturedOutput()
    with _lock:
        if _depth:
            _depth += 1
            try:
                yield captured
            finally:
                _depth -= 1
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sink = tempfile.TemporaryFile(mode="w+b")
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            _depth = 1
            try:
                yield captured
            finally:
                _depth = 0
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                sink.seek(0)
                captured.text = sink.read().decode("utf-8", "replace")
        finally:
            for descriptor in saved:
                os.close(descriptor)
            sink.close()
