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

from ..atomic import write_text
from ..errors import ParameterError
from .data import FocusPatches, TrainingVolumes
from .losses import LossWeights, fusion_loss
from .networks import DenseFusionNet, SiameseFocusNet
from .weights import save_state_dict

NETWORKS = {"dense_fusion_net": DenseFusionNet, "liu_cnn": SiameseFocusNet}


@dataclass(frozen=True)
class Recipe:
    """Training options (the defaults are the recipe of the shipped weights)."""

    epochs: int = 6
    steps_per_epoch: int = 100
    batch: int = 16
    crop: int = 96
    learning_rate: float = 2e-3
    seed: int = 20261201
    loss: LossWeights = field(default_factory=LossWeights)


def _save_with_record(
    name: str,
    net: torch.nn.Module,
    out: str | os.PathLike[str],
    *,
    recipe: dict[str, Any],
    data_description: str,
    seconds: float,
    results: dict[str, Any],
) -> dict[str, Any]:
    """Write the weights and ``<out>.json`` (what the manifest keeps); return the record."""
    out = Path(out)
    sha256 = save_state_dict(net.state_dict(), out)
    record = {
        "network": name,
        "file": out.name,
        "sha256": sha256,
        "bytes": out.stat().st_size,
        "parameters": sum(p.numel() for p in net.parameters()),
        "config": net.config(),
        "recipe": recipe,
        "data": data_description,
        "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        **results,
        "torch": torch.__version__,
    }
    write_text(out.with_name(out.name + ".json"), json.dumps(record, indent=2))
    return record


def train_network(
    name: str,
    *,
    volumes: TrainingVolumes,
    out: str | os.PathLike[str],
    recipe: Recipe = Recipe(),
    config: dict[str, int] | None = None,
    data_description: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train network ``name`` on ``volumes``; write the weights and their record; return the record.

    ``config``: constructor arguments of the network (default: its defaults, the shipped shape).
    """
    if name not in NETWORKS:
        raise ParameterError(f"unknown network {name!r} (trainable: {', '.join(NETWORKS)})")
    if recipe.epochs < 1 or recipe.steps_per_epoch < 1 or recipe.batch < 1 or recipe.crop < 16:
        raise ParameterError("epochs, steps per epoch and batch must be at least 1, crop at least 16")
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    net = NETWORKS[name](**(config or {}))
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
    return _save_with_record(
        name,
        net,
        out,
        recipe={**asdict(recipe), "loss": asdict(recipe.loss)},
        data_description=data_description,
        seconds=time.perf_counter() - start,
        results={
            "loss_per_epoch": [round(v, 6) for v in curve],
            "check_loss": {"before": round(before, 6), "after": round(check_loss(), 6)},
        },
    )


@dataclass(frozen=True)
class FocusRecipe:
    """Training options of the Siamese focus classifier (defaults: the shipped weights' recipe)."""

    steps: int = 2000
    batch: int = 128
    learning_rate: float = 1e-3
    seed: int = 20261201


def train_focus_network(
    *,
    patches: FocusPatches,
    out: str | os.PathLike[str],
    recipe: FocusRecipe = FocusRecipe(),
    data_description: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train :class:`SiameseFocusNet` to tell the sharp patch of a pair (cross-entropy, Adam)."""
    if recipe.steps < 1 or recipe.batch < 2:
        raise ParameterError("steps must be at least 1 and batch at least 2")
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    net = SiameseFocusNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=recipe.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, recipe.steps)
    check = patches.batch(np.random.default_rng(recipe.seed + 1), count=1024)

    def accuracy() -> float:
        with torch.no_grad():
            return float((net(check[0], check[1]).flatten(1).argmax(1) == check[2]).float().mean())

    before = accuracy()
    start = time.perf_counter()
    losses = []
    for step in range(recipe.steps):
        a, b, labels = patches.batch(rng, count=recipe.batch)
        loss = torch.nn.functional.cross_entropy(net(a, b).flatten(1), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if log and (step + 1) % 200 == 0:
            log(f"step {step + 1}/{recipe.steps}: loss {np.mean(losses[-200:]):.4f}")
    return _save_with_record(
        "liu_cnn",
        net,
        out,
        recipe=asdict(recipe),
        data_description=data_description,
        seconds=time.perf_counter() - start,
        results={
            "loss_per_200_steps": [
                round(float(np.mean(losses[i : i + 200])), 6) for i in range(0, len(losses), 200)
            ],
            "check_accuracy": {"before": round(before, 4), "after": round(accuracy(), 4)},
        },
    )
