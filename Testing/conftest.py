"""Shared fixtures: paths to the reference data in ``../shared/data``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``../shared/data`` beside the project (CI has it there)."""
    if not DATA.is_dir():
        pytest.fail(f"reference data not found at {DATA}")
    return DATA
