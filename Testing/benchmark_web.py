"""Speed of the browser review app as the browser measures it (``Docs/benchmarks/web.md``).

Starts ``medfusion serve`` on the shipped demo data, drives Debian's Chromium with Playwright
and times, with the page's own clock (``performance.now()``) and a MutationObserver on the
slice views' images:

- **Apply to views**: from the click on Apply to the first new image of the last of the three
  views after the status reads ``done`` (the fused result is on screen everywhere);
- **interaction**: from a mouse wheel step (slice scrolling) or a 4-pixel left drag
  (window/level) over the axial view to that view's next image.

Usage: ``python Testing/benchmark_web.py [--runs 7] [--steps 25] [--settle 2 0.5] [--out Docs/benchmarks/web.md]``
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from web_server import Server  # noqa: E402

from MedFusionLib.slicer_support import bundled_sample_paths  # noqa: E402

SAMPLES = Path(next(iter(bundled_sample_paths().values()))).parent
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LARGEST = "STS_049"  # the largest CT of sts/: 232 x 205 x 92
PAIRS = {
    "CT + PET (STS_019, demo data)": (".", "sts019_CT.nii.gz", "sts019_PET.nii.gz", "none"),
    "MR + PET (STS_019, demo data)": (".", "sts019_MR_T1.nii.gz", "sts019_PET.nii.gz", "none"),
    "MR + PET, rigid registration (STS_019)": (".", "sts019_MR_T1.nii.gz", "sts019_PET.nii.gz", "rigid"),
    f"CT + PET ({LARGEST}, largest of sts/)": (
        LARGEST,
        f"{LARGEST}/CT_image.nii.gz",
        f"{LARGEST}/PET_image.nii.gz",
        "none",
    ),
}
DICOM_STUDY = "STS_007"
WATCH = """() => {
  window.__frames = [];
  window.__status = [];
  const watch = (name) => {
    const view = document.querySelector(`[data-testid=view-${name}]`);
    new MutationObserver(() => window.__frames.push([name, performance.now()]))
      .observe(view, {subtree: true, attributes: true, attributeFilter: ['src'], childList: true});
  };
  ['axial', 'sagittal', 'coronal'].forEach(watch);
  const status = document.querySelector('[data-testid=status]');
  new MutationObserver(() => window.__status.push([status.textContent.trim(), performance.now()]))
    .observe(status, {subtree: true, characterData: true, childList: true});
}"""


def _apply_to_views(
    page, study: str, fixed: str, moving: str, registration: str, *, settle: float = 2.0
) -> float:
    """Milliseconds from the click on Apply to the result's image in all three views.

    ``settle`` seconds pass between choosing and pressing Apply (a user reads the choices;
    the server reads the chosen volumes meanwhile and the next job's process starts).
    """
    page.get_by_test_id("study-select").select_option(study)
    page.wait_for_function(
        "(key) => [...document.querySelectorAll('[data-testid=fixed-select] option')].some(o => o.value === key)",
        arg=fixed,
    )
    page.get_by_test_id("fixed-select").select_option(fixed)
    page.get_by_test_id("moving-select").select_option(moving)
    page.get_by_test_id("registration-select").select_option(registration)
    time.sleep(settle)
    runs = int(page.get_by_test_id("status").get_attribute("data-run"))
    start = page.evaluate("() => performance.now()")
    page.get_by_test_id("apply").click()
    page.wait_for_function(
        "(run) => { const e = document.querySelector('[data-testid=status]');"
        " return Number(e.dataset.run) > run && e.textContent.trim() === 'done'; }",
        arg=runs,
        timeout=120_000,
    )
    page.wait_for_function(
        """(start) => {
          const done = window.__status.filter(s => s[0] === 'done' && s[1] > start).map(s => s[1]);
          if (!done.length) return false;
          return ['axial', 'sagittal', 'coronal'].every(
            v => window.__frames.some(f => f[0] === v && f[1] >= done[0]));
        }""",
        arg=start,
        timeout=30_000,
    )
    return page.evaluate(
        """(start) => {
          const done = window.__status.filter(s => s[0] === 'done' && s[1] > start)[0][1];
          const first = ['axial', 'sagittal', 'coronal'].map(
            v => window.__frames.filter(f => f[0] === v && f[1] >= done)[0][1]);
          return Math.max(...first) - start;
        }""",
        start,
    )


def _dicom_pair(page, study: str) -> tuple[str, str, str, str]:
    """The DICOM study's CT and PET series keys, as the page lists them."""
    page.get_by_test_id("study-select").select_option(study)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=fixed-select] option')].some(o => o.value.includes('#'))"
    )
    options = page.get_by_test_id("fixed-select").locator("option").all()
    keys = {o.text_content().split(" · ")[1]: o.get_attribute("value") for o in options}
    return (study, keys["CT"], keys["PET"], "none")


def _next_frame(page, after: float) -> float | None:
    try:
        page.wait_for_function(
            "(t) => window.__frames.some(f => f[0] === 'axial' && f[1] > t)", arg=after, timeout=5_000
        )
    except Exception:  # noqa: BLE001 - no new image: the interaction changed nothing
        return None
    return page.evaluate("(t) => window.__frames.filter(f => f[0] === 'axial' && f[1] > t)[0][1] - t", after)


def _interaction(page, kind: str, steps: int) -> list[float | None]:
    """Milliseconds from each wheel step or drag step over the axial view to its next image."""
    box = page.get_by_test_id("view-axial").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    time.sleep(1.0)  # the view renders at its focus rate once hovered
    times: list[float | None] = []
    if kind == "drag":
        page.mouse.down()
    for step in range(steps):
        time.sleep(0.25)  # let the previous image arrive: each step is timed alone
        start = page.evaluate("() => performance.now()")
        if kind == "wheel":
            page.mouse.wheel(0, 120 if step % 2 == 0 else -120)
        else:
            page.mouse.move(x + 4 * (step + 1), y + 4 * (step + 1))
        times.append(_next_frame(page, start))
    if kind == "drag":
        page.mouse.up()
    return times


def _summary(values: list[float | None]) -> str:
    measured = [v for v in values if v is not None]
    if not measured:
        return "no new image (the interaction changed nothing)"
    text = f"median {statistics.median(measured):.0f} ms, max {max(measured):.0f} ms (n = {len(measured)})"
    missing = len(values) - len(measured)
    return text + (f", {missing} steps without a new image" if missing else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--settle",
        type=float,
        nargs="+",
        default=[2.0, 0.5],
        help="seconds between choosing and pressing Apply, one table each (default 2 and 0.5)",
    )
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--out", default=None, help="Markdown report (default: print only)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="medfusion-web-bench-"))
    for path in SAMPLES.glob("*.nii.gz"):
        shutil.copyfile(path, folder / path.name)
    shutil.copytree(DATA / "sts" / LARGEST, folder / LARGEST)
    dicom = DATA / "sts_dicom" / DICOM_STUDY
    for series in ("CT", "PET"):
        shutil.copytree(dicom / series / "image", folder / "dicom" / series)
    server = Server(folder)
    results: dict[float, dict[str, list[float]]] = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 800})
            page.goto(server.url)
            page.get_by_test_id("fixed-select").wait_for()
            page.evaluate(WATCH)
            studies = page.get_by_test_id("study-select").locator("option").all()
            dicom_study = next(o.get_attribute("value") for o in studies if DICOM_STUDY in o.text_content())
            PAIRS[f"CT + PET ({DICOM_STUDY}, DICOM series)"] = _dicom_pair(page, dicom_study)
            _apply_to_views(page, *PAIRS["CT + PET (STS_019, demo data)"])  # warm-up, not counted
            for settle in args.settle:
                results[settle] = {name: [] for name in PAIRS}
                for _ in range(args.runs):
                    for name, pair in PAIRS.items():
                        results[settle][name].append(_apply_to_views(page, *pair, settle=settle))
                        print(f"{name}, {settle} s: {results[settle][name][-1]:.0f} ms", flush=True)
            _apply_to_views(page, *PAIRS["CT + PET (STS_019, demo data)"])
            wheel = _interaction(page, "wheel", args.steps)
            drag = _interaction(page, "drag", args.steps)
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)

    lines = [
        "# Browser review app: speed as the browser measures it",
        "",
        f"Made by `python Testing/benchmark_web.py --runs {args.runs} --steps {args.steps} "
        f"--settle {' '.join(f'{v:g}' for v in args.settle)}` on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} CPU cores, {platform.machine()}, no GPU: "
        "the server renders with Mesa's llvmpipe through EGL), Debian's Chromium headless on the same "
        "machine, 1500x800 window. Times are the page's own clock (`performance.now()`), "
        "from the input event to the new image of the view (a MutationObserver on the views' images).",
        "",
        "## Apply to the fused result in the three views (target: 3 s)",
        "",
        "Each run: choose the pair (the study changes between pairs, so nothing of the previous pair "
        "is reused), wait, press Apply, wait for `done` and the new image in all three views. The job runs "
        "in a background process started before Apply (the engine already imported); the server reads the "
        "chosen volumes while the user chooses. The pairs run in turn, the runs of a pair are spread over "
        "the whole benchmark.",
    ]
    for settle, by_pair in results.items():
        lines += [
            "",
            f"### {settle:g} s between choosing and pressing Apply",
            "",
            "| pair | median | min | max | runs (ms) |",
            "|---|---|---|---|---|",
        ]
        for name, values in by_pair.items():
            runs = ", ".join(f"{v:.0f}" for v in values)
            lines.append(
                f"| {name} | {statistics.median(values) / 1000:.2f} s | {min(values) / 1000:.2f} s | "
                f"{max(values) / 1000:.2f} s | {runs} |"
            )
    lines += [
        "",
        "## Interacting with a slice (target: 100 ms per frame)",
        "",
        "Over the axial view of the STS_019 CT + PET result, each step timed alone (0.25 s apart):",
        "",
        f"- mouse wheel (next/previous slice): {_summary(wheel)}",
        f"- left drag of 4 pixels (window/level): {_summary(drag)}",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
