"""Train a dense_fusion_net recipe and score it on the validation split against the pixel maximum.

Not a test: how the recipe in Docs/models.md was chosen. Run it by hand, for example::

    .venv/bin/python Testing/compare_cnn_recipes.py gain13 --gradient 20 --gain 1.3
    .venv/bin/python Testing/compare_cnn_recipes.py wide --epochs 20 --config '{"width": 24, "growth": 12}'

It trains with ``MedFusionLib.cnn.train.train_network`` (weights and record under
``build/recipes/NAME.safetensors``), fuses every pair of the validation split
(``MedFusionLib.cnn.data.write_validation_set``; never the Harvard images) and prints, per set,
the seven target metrics, the VIF parts and on which of the seven the network is higher than
the pixel maximum. The rule used to choose: the most metrics above the maximum over the three
sets, among candidates whose smaller VIF part is at least 0.30 on every set; ties go to the
larger smaller VIF part.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from MedFusionLib.benchmark.dataset import discover_pair_sets  # noqa: E402
from MedFusionLib.benchmark.run import fused_grey_levels  # noqa: E402
from MedFusionLib.cnn.data import TrainingVolumes, write_validation_set  # noqa: E402
from MedFusionLib.cnn.losses import LossWeights  # noqa: E402
from MedFusionLib.cnn.networks import DenseFusionNet  # noqa: E402
from MedFusionLib.cnn.train import Recipe, train_network  # noqa: E402
from MedFusionLib.cnn.weights import load_state_dict  # noqa: E402
from MedFusionLib.io import read_image  # noqa: E402
from MedFusionLib.metrics.compute import compute_metrics  # noqa: E402
from MedFusionLib.metrics.inputs import grey_levels_from_image  # noqa: E402

TARGET = ["EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf"]


def main() -> int:
    defaults, loss = Recipe(), LossWeights()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--structure", type=float, default=loss.structure)
    parser.add_argument("--intensity", type=float, default=loss.intensity)
    parser.add_argument("--gradient", type=float, default=loss.gradient)
    parser.add_argument("--gain", type=float, default=loss.gradient_gain)
    parser.add_argument("--config", default="{}", help="DenseFusionNet arguments as JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)

    volumes = TrainingVolumes.from_directory(args.data)
    out = ROOT / "build" / "recipes" / f"{args.name}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        loss=LossWeights(args.structure, args.intensity, args.gradient, args.gain),
    )
    config = json.loads(args.config)
    record = train_network("dense_fusion_net", volumes=volumes, out=out, recipe=recipe, config=config)
    net = DenseFusionNet(**record["config"])
    net.load_state_dict(load_state_dict(out, sha256=record["sha256"]))
    net.eval()

    folder = write_validation_set(volumes, args.data, ROOT / "build" / "mni_validation")
    for pair_set in discover_pair_sets(folder):
        scores: dict[str, list[dict[str, float]]] = {"net": [], "maximum": []}
        for pair in pair_set.pairs:
            a, b = (
                grey_levels_from_image(read_image(path), name=str(path))
                for path in (pair.path_a, pair.path_b)
            )
            with torch.inference_mode():
                fused = net(
                    torch.from_numpy(a / 255).float()[None, None],
                    torch.from_numpy(b / 255).float()[None, None],
                )
            for key, f in (("net", fused_grey_levels(fused[0, 0].numpy())), ("maximum", np.maximum(a, b))):
                scores[key].append(compute_metrics(a, b, f, metrics=TARGET).values)
        means = {
            k: {m: float(np.mean([v[m] for v in rows])) for m in [*TARGET, "VIF_A", "VIF_B"]}
            for k, rows in scores.items()
        }
        above = [m for m in TARGET if means["net"][m] > means["maximum"][m]]
        values = " ".join(f"{m}={means['net'][m]:.3f}" for m in [*TARGET, "VIF_A", "VIF_B"])
        smaller = min(means["net"]["VIF_A"], means["net"]["VIF_B"])
        print(
            f"{args.name} {pair_set.name}: {values} | above max on {len(above)} {above} | min VIF {smaller:.3f}"
        )
    print(f"{args.name}: trained in {record['seconds']} s, sha256 {record['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
