"""Shipped network weights: written atomically, recorded with their SHA-256, checked at load.

Weights are plain ``state_dict`` tensors in the safetensors format: a JSON header and raw
tensor bytes, so loading never runs pickled code, and the same tensors always give the same
bytes (``torch.save`` embeds a random id and the file name, so its digest would change with
every save of identical weights). Each shipped file
is listed in ``weights/manifest.json`` with its SHA-256, size and how it was trained; a
missing file or one whose digest differs from the record is refused with a one-line
:class:`~MedFusionLib.errors.WeightsError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import replacing
from ..errors import WeightsError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"
MAX_BYTES = 5 * 1024 * 1024


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: Path = MANIFEST) -> dict[str, dict[str, Any]]:
    """The shipped weights' records, by network name (empty when none ship yet)."""
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def load_state_dict(path: str | os.PathLike[str], *, sha256: str) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, after checking its SHA-256 against ``sha256``.

    Raises:
        WeightsError: the file is missing, its digest differs, or it is not a tensor dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"network weights {path} are missing (reinstall MedFusion, or train them: medfusion train)"
        )
    actual = sha256_of(path)
    if actual != sha256:
        raise WeightsError(
            f"network weights {path} do not match their recorded SHA-256 "
            f"(expected {sha256[:12]}..., got {actual[:12]}...): the file was altered or is corrupt"
        )
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"network weights {path} are not a safetensors file: {error}") from None


def save_state_dict(state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> str:
    """Write ``state`` atomically (temporary file, then rename); returns its SHA-256."""
    path = Path(path)
    with replacing(path) as temporary:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(temporary))
        size = temporary.stat().st_size
        if size > MAX_BYTES:
            raise WeightsError(f"network weights for {path} take {size} bytes, over the {MAX_BYTES} limit")
    return sha256_of(path)
