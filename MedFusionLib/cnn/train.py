"""The training loop of the project's fusion network (``medfusion train``).

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
from .data import (
    MODALITY_PAIRS,
    PatientSlices,
    TrainingVolumes,
    contrast_window,
    pseudo_colour,
    pseudo_colour_luminances,
)
from .losses import InformationWeights, information_loss
from .networks import GainFusionNet
from .weights import save_state_dict

NETWORKS = {"gain_fusion_net": GainFusionNet}
"""The networks ``medfusion train`` trains."""


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


@dataclass(frozen=True)
class GainRecipe:
    """Training options of :class:`GainFusionNet` (the defaults are the shipped weights' recipe).

    ``patients``: the share of each batch drawn from the shared patients (0: templates only);
    ``window``: the chance of a random display window per crop (:func:`.data.contrast_window`);
    ``pseudo_colour``: the chance that a functional crop (source B of MRI_PET and MRI_SPECT)
    is replaced by its luminance through a pseudo-colour table (:func:`.data.pseudo_colour`).
    """

    steps: int = 600
    batch: int = 16
    crop: int = 96
    learning_rate: float = 2e-3
    seed: int = 20261205
    patients: float = 0.5
    window: float = 0.5
    pseudo_colour: float = 0.7
    loss: InformationWeights = field(default_factory=InformationWeights)


def _mixed_batch(
    rng: np.random.Generator,
    templates: TrainingVolumes | None,
    patients: PatientSlices | None,
    recipe: GainRecipe,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch: ``recipe.patients`` of it from the patients, the rest from the templates."""
    if patients is None:
        from_patients = 0
    elif templates is None:
        from_patients = recipe.batch
    else:
        from_patients = round(recipe.batch * recipe.patients)
    parts = []
    if recipe.batch - from_patients:
        parts.append(templates.batch(rng, size=recipe.crop, count=recipe.batch - from_patients))
    if from_patients:
        parts.append(patients.batch(rng, size=recipe.crop, count=from_patients))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def train_gain_network(
    *,
    pair: str,
    templates: TrainingVolumes | None,
    patients: PatientSlices | None,
    out: str | os.PathLike[str],
    recipe: GainRecipe = GainRecipe(),
    data_description: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train :class:`GainFusionNet` for modality ``pair`` with :func:`.losses.information_loss`.

    ``templates`` must hold only the pair's template pairs, ordered (MR first); ``patients``
    the pair's patient volumes. Either may be ``None`` (not both).
    """
    if pair not in MODALITY_PAIRS:
        raise ParameterError(f"unknown modality pair {pair!r} (use {', '.join(MODALITY_PAIRS)})")
    if templates is None and patients is None:
        raise ParameterError("no training data: give the templates, the patients or both")
    if recipe.steps < 1 or recipe.batch < 1 or recipe.crop < 48:
        raise ParameterError("steps and batch must be at least 1, crop at least 48 (VIF's four scales)")
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    net = GainFusionNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=recipe.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, recipe.steps)
    luminances = pseudo_colour_luminances()
    functional = pair != "MRI_CT"

    def draw(generator: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = _mixed_batch(generator, templates, patients, recipe)
        a, b = contrast_window(generator, a, recipe.window), contrast_window(generator, b, recipe.window)
        if functional:
            b = pseudo_colour(generator, b, recipe.pseudo_colour, luminances)
        return a, b

    check_a, check_b = draw(np.random.default_rng(recipe.seed + 1))

    def check() -> dict[str, float]:
        with torch.no_grad():
            terms = information_loss(net(check_a, check_b), check_a, check_b, recipe.loss)[1]
        return {k: round(v, 6) for k, v in terms.items()}

    before = check()
    curve: list[float] = []
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(recipe.steps):
        a, b = draw(rng)
        loss, _terms = information_loss(net(a, b), a, b, recipe.loss)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0 or step + 1 == recipe.steps:
            curve.append(round(float(np.mean(losses[-100:])), 6))
            if log:
                log(
                    f"step {step + 1}/{recipe.steps}: loss {curve[-1]:.4f} ({time.perf_counter() - start:.0f} s)"
                )
    return _save_with_record(
        f"gain_fusion_net_{pair}",
        net,
        out,
        recipe={**asdict(recipe), "loss": asdict(recipe.loss), "pair": pair},
        data_description=data_description,
        seconds=time.perf_counter() - start,
        results={"loss_per_100_steps": curve, "check": {"before": before, "after": check()}},
    )
