"""Score gain_fusion_net weight files on a pair folder; how the shipped weights were chosen.

Not a test: run it by hand on a quiet machine, for example::

    .venv/bin/python Testing/score_gain_fusion_weights.py ../shared/data/harvard_val \\
        build/nets/patients build/nets/templates --out Docs/benchmarks/cnn/validation_data.md

Each WEIGHTS folder holds ``gain_fusion_net_<PAIR>.safetensors`` files written by
``medfusion train gain_fusion_net --pair PAIR`` (their ``.json`` records give the SHA-256). Every
pair of the folder's sets is fused by the set's own weights with the protocol of
``medfusion benchmark`` (8-bit grey levels, F = round(clip(255 f))) and scored on the seven
metrics the issue counts (EN, SD, SF, MI, SCD, VIF, Qabf) and the VIF parts. The rule used to
choose, declared before any run: per modality pair, among candidates whose smaller VIF part is
at least 0.30 on the validation set, the one higher than CDDFuse*'s published means (Table 5)
on the most of the seven; without such a candidate, the largest smaller VIF part. The published
means are Harvard test-set means, so on the validation pairs they are only a yardstick.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from MedFusionLib.benchmark.dataset import discover_pair_sets  # noqa: E402
from MedFusionLib.benchmark.published import published_rows  # noqa: E402
from MedFusionLib.benchmark.run import _load_grey, fused_grey_levels  # noqa: E402
from MedFusionLib.cnn.networks import GainFusionNet  # noqa: E402
from MedFusionLib.cnn.weights import load_state_dict  # noqa: E402
from MedFusionLib.metrics.compute import compute_metrics  # noqa: E402

TARGET_METRICS = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf")


def cddfuse_star() -> dict[str, dict[str, float]]:
    """CDDFuse*'s published means per set (the rows ``medfusion benchmark`` quotes)."""
    rows, _citations = published_rows("harvard")
    return {
        name: next(r.values for r in set_rows if r.label == "CDDFuse* (quoted, Table 5)")
        for name, set_rows in rows.items()
    }


def load_network(folder: Path, pair: str) -> tuple[GainFusionNet, str]:
    path = folder / f"gain_fusion_net_{pair}.safetensors"
    record = json.loads(path.with_name(path.name + ".json").read_text())
    net = GainFusionNet(**record["config"])
    net.load_state_dict(load_state_dict(path, sha256=record["sha256"]))
    return net.eval(), record["sha256"]


def score_set(net: GainFusionNet, pair_set, *, step: int, worst: list | None = None) -> dict[str, float]:  # noqa: ANN001
    """Means over the set's pairs (every ``step``-th); ``worst`` collects (smaller VIF part, id, A, B, F)."""
    values: list[dict[str, float]] = []
    milliseconds = []
    for pair in pair_set.pairs[::step]:
        grey_a = _load_grey(pair.path_a, name=str(pair.path_a))[0]
        grey_b = _load_grey(pair.path_b, name=str(pair.path_b))[0]
        a = torch.from_numpy((grey_a / 255.0).astype(np.float32))[None, None]
        b = torch.from_numpy((grey_b / 255.0).astype(np.float32))[None, None]
        start = time.perf_counter()
        with torch.no_grad():
            fused = net(a, b).clamp(0.0, 1.0)[0, 0].numpy()
        milliseconds.append(1000.0 * (time.perf_counter() - start))
        grey_f = fused_grey_levels(fused)
        report = compute_metrics(grey_a, grey_b, grey_f, metrics=[*TARGET_METRICS])
        values.append(report.values)
        if worst is not None:
            smaller = min(report.values["VIF_A"], report.values["VIF_B"])
            worst.append((smaller, pair.id, grey_a, grey_b, grey_f))
    means = {key: float(np.nanmean([v[key] for v in values])) for key in values[0]}
    means["ms_per_pair"] = float(np.median(milliseconds))
    means["pairs"] = len(values)
    return means


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", help="folder of pair sets (harvard_val to choose; harvard once, after)")
    parser.add_argument("weights", nargs="+", help="folders of gain_fusion_net_<PAIR>.safetensors")
    parser.add_argument("--step", type=int, default=1, help="score every STEP-th pair (default all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the table as Markdown here")
    parser.add_argument(
        "--worst", help="PNG: per set, the three pairs of the first WEIGHTS with the smallest VIF part"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    targets = cddfuse_star()
    lines = [
        f"Scored with `Testing/score_gain_fusion_weights.py {args.dataset} {' '.join(args.weights)}` "
        f"(torch {torch.__version__}, {args.threads} CPU threads).",
        "",
        "| weights | set | pairs | " + " | ".join(TARGET_METRICS) + " | VIF_A | VIF_B | min part | "
        "higher than CDDFuse* | ms per pair |",
        "|---|---|---:|" + "---:|" * (len(TARGET_METRICS) + 5),
    ]
    worst_rows = []
    for index, folder in enumerate(map(Path, args.weights)):
        for pair_set in discover_pair_sets(args.dataset):
            net, sha256 = load_network(folder, pair_set.name)
            worst: list | None = [] if args.worst and index == 0 else None
            means = score_set(net, pair_set, step=args.step, worst=worst)
            if worst:
                for smaller, pair_id, *images in sorted(worst, key=lambda w: w[0])[:3]:
                    print(f"worst {pair_set.name} {pair_id}: smaller VIF part {smaller:.3f}")
                    worst_rows.append(np.concatenate(images, axis=1))
            wins = [m for m in TARGET_METRICS if means[m] > targets[pair_set.name][m]]
            row = (
                f"| `{folder.name}` ({sha256[:8]}) | {pair_set.name} | {means['pairs']} | "
                + " | ".join(f"{means[m]:.3f}" for m in TARGET_METRICS)
                + f" | {means['VIF_A']:.3f} | {means['VIF_B']:.3f} | {min(means['VIF_A'], means['VIF_B']):.3f} | "
                f"{len(wins)} ({', '.join(wins) or 'none'}) | {means['ms_per_pair']:.1f} |"
            )
            print(row, flush=True)
            lines.append(row)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    if worst_rows:
        from PIL import Image

        Image.fromarray(np.concatenate(worst_rows, axis=0).astype(np.uint8)).save(args.worst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
