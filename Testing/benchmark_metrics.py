"""Speed of every metric on a 256x256 pair and a 256^3 volume; writes ``Docs/benchmarks/metrics_speed.md``.

Not a test: run it by hand on a quiet machine (no other heavy process)::

    .venv/bin/python Testing/benchmark_metrics.py [--threads 2] [--repeats 3]

2-D: the Harvard MRI-PET pair 11 (grey levels) fused by pixel average, median of 20 calls.
3-D: Colin27 1 mm T1 (181x217x181) padded to 256^3 as A, the SPM PET template resampled onto
it as B, their rounded average as F; median of ``--repeats`` calls per metric, and one call of
the whole ``compute_metrics`` (all metrics, as ``medfusion metrics`` runs it).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from MedFusionLib.metrics import list_metrics  # noqa: E402
from MedFusionLib.metrics.compute import compute_metrics  # noqa: E402

SIDE = 256


def harvard_pair() -> tuple[np.ndarray, ...]:
    def grey(modality: str) -> np.ndarray:
        rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / f"harvard/MRI_PET/{modality}/11.png")))
        rgb = rgb.astype(np.float64)
        return np.round(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])

    a, b = grey("MRI"), grey("PET")
    return a, b, np.round((a + b) / 2)


def volume_triple() -> tuple[np.ndarray, ...]:
    t1 = sitk.ReadImage(str(DATA / "mni/colin27_ch2_1mm.nii.gz"), sitk.sitkFloat32)
    pet = sitk.Resample(sitk.ReadImage(str(DATA / "mni/spm_PET.nii.gz"), sitk.sitkFloat32), t1)
    arrays = []
    for image in (t1, pet):
        array = sitk.GetArrayFromImage(image).astype(np.float64)
        array = np.clip(array / np.percentile(array, 99.5), 0, 1) * 255
        pad = [((SIDE - n) // 2, SIDE - n - (SIDE - n) // 2) for n in array.shape]
        arrays.append(np.round(np.pad(array, pad)))
    a, b = arrays
    return a, b, np.round((a + b) / 2)


def time_metric(name: str, tensors: list[torch.Tensor], repeats: int) -> float:
    metric = next(m for m in list_metrics() if m.name == name)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            metric.function(*tensors)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "Docs/benchmarks/metrics_speed.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    flat = [torch.from_numpy(x)[None] for x in harvard_pair()]
    volume = [torch.from_numpy(x)[None] for x in volume_triple()]
    rows = []
    for metric in list_metrics():
        ms_2d = time_metric(metric.name, flat, 20) * 1000
        s_3d = time_metric(metric.name, volume, args.repeats)
        rows.append((metric.name, ms_2d, s_3d))
        print(f"{metric.name:14s} {ms_2d:8.2f} ms  {s_3d:7.2f} s", flush=True)
    start = time.perf_counter()
    compute_metrics(*(t[0].numpy() for t in volume))
    whole_3d = time.perf_counter() - start
    start = time.perf_counter()
    compute_metrics(*(t[0].numpy() for t in flat))
    whole_2d = (time.perf_counter() - start) * 1000

    lines = [
        "# Metric speed",
        "",
        f"Made with `.venv/bin/python Testing/benchmark_metrics.py --threads {args.threads} "
        f"--repeats {args.repeats}` on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} CPU threads, float64. 2-D: Harvard MRI-PET pair 11, median of 20 calls. 3-D: Colin27 "
        f"1 mm T1 padded to {SIDE}^3 with the SPM PET template resampled onto it (16.8 M voxels), median of "
        f"{args.repeats} calls.",
        "",
        "| metric | 256x256 (ms) | 256^3 (s) |",
        "|---|---:|---:|",
        *[f"| {name} | {ms:.2f} | {s:.2f} |" for name, ms, s in rows],
        f"| **all, through `compute_metrics`** | {whole_2d:.1f} | {whole_3d:.1f} |",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
