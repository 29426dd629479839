"""Speed and memory of every fusion method; writes ``Docs/benchmarks.md``.

Not a test: run it by hand on the machine you want figures for::

    .venv/bin/python Testing/benchmark_speed.py            # all methods, all sizes
    .venv/bin/python Testing/benchmark_speed.py --methods laplacian_pyramid,dwt --no-large

Measures, on ``--threads`` CPU threads (2 by default, like CI) and on CUDA when present:
- median ms per 256x256 pair (fusion call only, the Harvard MRI/PET pair 11 luminance);
- median s per 3-D pair at 91x109x91 (SPM T1 + PET);
- s and peak extra memory per 3-D pair at 301x370x316 (Colin27 0.5 mm + the SPM T1 resampled
  onto it, 35 M voxels), each method in a fresh subprocess; peak memory is the highest RSS
  sampled every 2 ms during the call minus the RSS just before it, also given as a multiple
  of one float32 input volume (140 MB).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from MedFusionLib.fusion import fuse_arrays, fuse_tensors, list_methods  # noqa: E402

LARGE_CACHE = Path("/tmp/medfusion_bench_large.npz")


def _gray_png(path: Path) -> np.ndarray:
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float64)
    return (rgb @ np.array([0.299, 0.587, 0.114]) / 255).astype(np.float32)


def _volume(name: str) -> np.ndarray:
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "mni" / name))).astype(np.float32)
    return array / array.max()


def large_pair() -> tuple[np.ndarray, np.ndarray]:
    """Colin27 at 0.5 mm and the SPM T1 resampled onto its grid (cached in /tmp)."""
    if not LARGE_CACHE.exists():
        colin = sitk.ReadImage(str(DATA / "mni" / "colin27_ch2better_0.5mm.nii.gz"), sitk.sitkFloat32)
        t1 = sitk.ReadImage(str(DATA / "mni" / "spm_T1.nii.gz"), sitk.sitkFloat32)
        t1_on_colin = sitk.Resample(t1, colin, sitk.Transform(), sitk.sitkLinear, 0.0)
        a = sitk.GetArrayFromImage(colin)
        b = sitk.GetArrayFromImage(t1_on_colin)
        np.savez(LARGE_CACHE, a=a / a.max(), b=b / b.max())
    with np.load(LARGE_CACHE) as data:
        return data["a"], data["b"]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def measure_large(method: str, device: str) -> dict[str, float]:
    """Run in a subprocess: seconds and peak extra RSS for the 35 M-voxel pair."""
    a, b = large_pair()
    baseline = _rss()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    fuse_arrays(a, b, method=method, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    extra = peak[0] - baseline
    return {
        "seconds": seconds,
        "peak_extra_mb": extra / 2**20,
        "peak_ratio": extra / a.nbytes,
        "shape": list(a.shape),
    }


def median_ms_2d(method: str, device: str, repeats: int) -> float:
    a = torch.from_numpy(_gray_png(DATA / "harvard/MRI_PET/MRI/11.png")).to(device)
    b = torch.from_numpy(_gray_png(DATA / "harvard/MRI_PET/PET/11.png")).to(device)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        fuse_tensors(a, b, method=method)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def median_s_3d(method: str, device: str, repeats: int) -> float:
    a, b = _volume("spm_T1.nii.gz"), _volume("spm_PET.nii.gz")
    fuse_arrays(a, b, method=method, device=device)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fuse_arrays(a, b, method=method, device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", help="comma-separated (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats-2d", type=int, default=50)
    parser.add_argument("--repeats-3d", type=int, default=3)
    parser.add_argument("--no-large", action="store_true", help="skip the 35 M-voxel case")
    parser.add_argument("--large-timeout", type=float, default=600.0, help="seconds per method")
    parser.add_argument("--out", type=Path, default=ROOT / "Docs" / "benchmarks.md")
    parser.add_argument("--from-log", type=Path, help="re-render the report from the JSON rows a run printed")
    parser.add_argument("--large-worker", nargs=2, metavar=("METHOD", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.large_worker:
        print(json.dumps(measure_large(*args.large_worker)))
        return

    if args.from_log:
        latest: dict[tuple[str, str], dict[str, object]] = {}
        for line in args.from_log.read_text().splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                latest.setdefault((row["method"], row["device"]), {}).update(row)  # re-runs update
        write_report(list(latest.values()), args)
        return

    methods = args.methods.split(",") if args.methods else [m.name for m in list_methods()]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        if not args.no_large:
            large_pair()  # build the cache outside the timed subprocesses
        for method in methods:
            row: dict[str, object] = {"method": method, "device": device}
            row["ms_2d"] = median_ms_2d(method, device, args.repeats_2d)
            row["s_3d_small"] = median_s_3d(method, device, args.repeats_3d)
            if not args.no_large:
                cmd = [
                    sys.executable,
                    __file__,
                    "--threads",
                    str(args.threads),
                    "--large-worker",
                    method,
                    device,
                ]
                try:
                    proc = subprocess.run(
                        cmd, capture_output=True, text=True, timeout=args.large_timeout, check=True
                    )
                    row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
                except subprocess.TimeoutExpired:
                    row["large_note"] = f"over {args.large_timeout:.0f} s, stopped"
                except subprocess.CalledProcessError as error:
                    row["large_note"] = "failed: " + (error.stderr.strip().splitlines() or ["?"])[-1][:120]
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_report(rows, args)


def write_report(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    cpu = platform.processor() or platform.machine()
    lines = [
        "# Benchmarks: speed and memory of the fusion methods",
        "",
        f"Measured on {time.strftime('%Y-%m-%d')} with `python Testing/benchmark_speed.py` "
        f"({cpu}, {args.threads} torch threads, torch {torch.__version__}, Python {platform.python_version()}).",
        "",
        "- **2-D**: median ms per 256x256 pair over "
        f"{args.repeats_2d} calls after 3 warm-ups, fusion call only (`fuse_tensors`), Harvard MRI/PET pair 11.",
        f"- **3-D small**: median s over {args.repeats_3d} runs of `fuse_arrays` on SPM T1 + PET, 91x109x91.",
        "- **3-D large**: one run of `fuse_arrays` on Colin27 0.5 mm + SPM T1 resampled onto it, "
        "316x370x301 = 35.2 M voxels, in a fresh process; *peak extra* is the highest RSS sampled every 2 ms "
        "during the call minus the RSS before it (inputs already loaded), and *x input* that figure divided by "
        "one float32 input volume (141 MB). Volumes above 4 M voxels run in overlapping slabs unless the "
        "method needs global statistics.",
        "",
        "| method | device | 2-D ms/pair | 3-D 91x109x91 s | 3-D 35 M voxels s | peak extra MB | x input |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        large = (
            f"{r['seconds']:.2f} | {r['peak_extra_mb']:.0f} | {r['peak_ratio']:.2f}"
            if "seconds" in r
            else f"{r.get('large_note', 'not run')} | | "
        )
        lines.append(
            f"| {r['method']} | {r['device']} | {r['ms_2d']:.2f} | {r['s_3d_small']:.3f} | {large} |"
        )
    lines += ["", "## Targets (issue 2)", ""]
    cpu_rows = [r for r in rows if r["device"] == "cpu"]
    slow_2d = [
        f"{r['method']} ({r['ms_2d']:.1f} ms)"
        for r in cpu_rows
        if r["ms_2d"] >= 10 and r["method"] != "pa_pcnn"
    ]
    lines.append(
        "- Every 2-D method but the PCNN rule under 10 ms per 256x256 pair: "
        + ("met." if not slow_2d else "missed by " + ", ".join(slow_2d) + ".")
    )
    lap = next((r for r in cpu_rows if r["method"] == "laplacian_pyramid" and "seconds" in r), None)
    if lap is not None:
        ok = lap["seconds"] < 10 and lap["peak_ratio"] < 6
        lines.append(
            f"- `laplacian_pyramid` on the 35 M-voxel pair under 10 s and under 6x one input: "
            f"{lap['seconds']:.2f} s and {lap['peak_ratio']:.2f}x, {'met' if ok else 'missed'}."
        )
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
