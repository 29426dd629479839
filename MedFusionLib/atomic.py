"""Atomic file output: write beside the target, rename over it only when complete."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temporary path beside ``path``; renamed onto ``path`` if the block succeeds.

    The temporary file is created by the caller (so it gets the usual umask permissions, unlike
    :func:`tempfile.mkstemp`'s 0600) and is removed if the block raises: no half-written output
    is ever left under the target's name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
