"""The training loop of the project's fusion networks (``medfusion train``).

Reproducible: the seed fixes the network's initial weights and every batch; training uses
the CPU threads it is given (``torch.set_num_threads``). The result is a weights file (a
tensor dict, :mod:`.weights`) and a record beside it (``<out>.json``: configuration, recipe,
data, seconds, loss curve, SHA-256) that becomes the shipped weights' manifest entry.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ParameterError
from .data import TrainingVolumes
from .losses import LossWeights, fusion_loss
from .networks import DenseFusionNet
from .weights import save_state_dict

NETWORKS = {"dense_fusion_net": DenseFusionNet}


@dataclass(frozen=True)
class Recipe:
    """Training options (the defaults are the recipe of the shipped weights)."""

    epochs: int = 20
    steps_per_epoch: int = 100
    batch: int = 16
    crop: int = 96
    learning_rate: float = 2e-3
    seed: int = 20261201
    loss: LossWeights = field(default_factory=LossWeights)


def train_network(
    name: str,
    *,
    volumes: TrainingVolumes,
    out: str | os.PathLike[str],
    recipe: Recipe = Recipe(),
    data_description: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train network ``name`` on ``volumes``; write the weights and their record; return the record."""
    if name not in NETWORKS:
        raise ParameterError(f"unknown network {name!r} (trainable: {', '.join(NETWORKS)})")
    if recipe.epochs < 1 or recipe.steps_per_epoch < 1 or recipe.batch < 1 or recipe.crop < 16:
        raise ParameterError("epochs, steps per epoch and batch must be at least 1, crop at least 16")
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    net = NETWORKS[name]()
    optimiser = torch.optim.Adam(net.parameters(), lr=recipe.learning_rate)
    total_steps = recipe.epochs * recipe.steps_per_epoch
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, total_steps)
    # a fixed held-out draw (its own seed) scored before and after: did the network learn?
    check_a, check_b = volumes.batch(
        np.random.default_rng(recipe.seed + 1), size=recipe.crop, count=2 * recipe.batch
    )

    def check_loss() -> float:
        with torch.no_grad():
            return float(fusion_loss(net(check_a, check_b), check_a, check_b, recipe.loss)[0])

    before = check_loss()
    curve: list[float] = []
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        losses = []
        for _ in range(recipe.steps_per_epoch):
            a, b = volumes.batch(rng, size=recipe.crop, count=recipe.batch)
            loss, _terms = fusion_loss(net(a, b), a, b, recipe.loss)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        curve.append(float(np.mean(losses)))
        if log:
            log(
                f"epoch {epoch + 1}/{recipe.epochs}: loss {curve[-1]:.5f} ({time.perf_counter() - start:.0f} s)"
            )
    seconds = time.perf_counter() - start
    out = Path(out)
    sha256 = save_state_dict(net.state_dict(), out)
    record = {
        "network": name,
        "file": out.name,
        "sha256": sha256,
        "bytes": out.stat().st_size,
        "parameters": sum(p.numel() for p in net.parameters()),
        "config": net.config(),
        "recipe": {**asdict(recipe), "loss": asdict(recipe.loss)},
        "data": data_description,
        "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "loss_per_epoch": [round(v, 6) for v in curve],
        "check_loss": {"before": round(before, 6), "after": round(check_loss(), 6)},
        "torch": torch.__version__,
    }
    out.with_name(out.name + ".json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record
