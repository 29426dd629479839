"""The ``medfusion`` command: ``methods``, ``fuse`` and ``demo``.

Errors caused by the input print one line on stderr (``medfusion: error: ...``) and exit
with status 2; no output file is left behind (outputs are written under a temporary name
and renamed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .errors import MedFusionError, ParameterError
from .fusion import get_method, list_methods
from .io import check_output_path, read_image, write_image
from .pipeline import DEFAULT_METHOD, fuse_images

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parse_window(text: str | None) -> str | tuple[float, float] | None:
    """``brain`` or ``LEVEL,WIDTH``."""
    if text is None or "," not in text:
        return text
    try:
        level, width = (float(v) for v in text.split(","))
    except ValueError:
        raise ParameterError(f"window must be a preset name or LEVEL,WIDTH, got {text!r}") from None
    return level, width


def _progress_bar(description: str) -> Any:
    """A tqdm-backed ``progress(done, total)`` callback on stderr (silent when not a TTY)."""
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=description, unit="slab", file=sys.stderr, leave=False)
        bar["bar"].update(done - bar["bar"].n)
        if done == total:
            bar["bar"].close()

    return update


def methods_markdown(methods: Sequence[Any]) -> str:
    """The registry as a Markdown reference (``Docs/methods.md`` is made with it)."""
    lines = [
        "# Fusion methods",
        "",
        "Made with `medfusion methods --markdown`. Every method fuses 2-D slices and 3-D volumes",
        "natively on torch (CPU, CUDA or MPS). Defaults follow the cited paper where it states them;",
        "where a value is this project's choice, the method's docstring says so and why.",
    ]
    for m in methods:
        lines += ["", f"## `{m.name}` ({m.family})", "", m.summary, "", f"*{m.citation}*", ""]
        if not m.parameters:
            lines.append("No parameters.")
            continue
        lines += ["| parameter | type | default | range / choices | meaning |", "|---|---|---|---|---|"]
        for p in m.parameters:
            allowed = f"{p.min:g} .. {p.max:g}" if p.min is not None and p.max is not None else ""
            if p.choices is not None:
                allowed = ", ".join(map(str, p.choices[:8])) + (", ..." if len(p.choices) > 8 else "")
            lines.append(f"| `{p.name}` | {p.type} | `{p.default}` | {allowed} | {p.help} |")
    return "\n".join(lines) + "\n"


def cmd_methods(args: argparse.Namespace) -> int:
    methods = list_methods()
    if args.json:
        print(json.dumps([m.describe() for m in methods], indent=2))
        return 0
    if args.markdown:
        print(methods_markdown(methods))
        return 0
    for m in methods:
        dims = "/".join(f"{d}-D" for d in m.dims)
        print(f"{m.name:20s} {m.family:16s} {dims:8s} {m.summary}")
        for p in m.parameters:
            rng = f"[{p.min:g}, {p.max:g}]" if p.min is not None and p.max is not None else ""
            if p.choices is not None:
                rng = "{" + ", ".join(map(str, p.choices[:6])) + (", ..." if len(p.choices) > 6 else "") + "}"
            print(f"{'':22s}{p.name}={p.default!r} ({p.type}) {rng}")
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    out = Path(args.output)
    check_output_path(out)  # refuse an unusable output before any work
    spec = get_method(args.method or DEFAULT_METHOD)
    parameters = spec.resolve_parameters(spec.parse_parameters(args.set))
    a = read_image(args.a, modality=args.modality_a)
    b = read_image(args.b, modality=args.modality_b)
    check_output_path(out, ndim=a.ndim)
    result = fuse_images(
        a,
        b,
        method=spec.name,
        parameters=parameters,
        device=args.device,
        window_a=_parse_window(args.window_a),
        window_b=_parse_window(args.window_b),
        interpolation=args.interpolation,
        name_a=str(args.a),
        name_b=str(args.b),
        progress=_progress_bar(f"fusing ({spec.name})"),
    )
    write_image(result.image, out)
    if args.json:
        print(
            json.dumps(
                {"inputs": [str(args.a), str(args.b)], "output": str(out), **result.summary()}, indent=2
            )
        )
    else:
        print(f"{out} ({spec.name}, {result.seconds:.2f} s on {result.device})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    paths = run_demo(args.out, device=args.device)
    print(f"wrote {len(paths)} files to {Path(args.out).resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medfusion", description="Multi-modal medical image fusion (CT, MRI, PET, SPECT).")
    parser.add_argument("--version", action="version", version=f"medfusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("methods", help="list the fusion methods and their parameters")
    p.add_argument("--json", action="store_true", help="print the registry as JSON")
    p.add_argument("--markdown", action="store_true", help="print the registry as a Markdown reference")
    p.set_defaults(run=cmd_methods)

    p = sub.add_parser("fuse", help="fuse image B into image A's grid")
    p.add_argument("a", metavar="A", help="reference image (output gets its geometry)")
    p.add_argument("b", metavar="B", help="second image, resampled onto A's grid")
    p.add_argument("-o", "--output", required=True, help="output file; its extension picks the format")
    p.add_argument("--method", help=f"fusion method (default {DEFAULT_METHOD}; see `medfusion methods`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="method parameter")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument(
        "--modality-a", choices=("CT", "MR", "PET", "SPECT"), help="modality of A (picks its window)"
    )
    p.add_argument("--modality-b", choices=("CT", "MR", "PET", "SPECT"), help="modality of B")
    p.add_argument(
        "--window-a", help="intensity window of A: preset (brain, subdural, bone, soft_tissue) or L,W"
    )
    p.add_argument("--window-b", help="intensity window of B")
    p.add_argument("--interpolation", default="linear", help="resampling of B: linear, nearest or bspline")
    p.add_argument("--json", action="store_true", help="print what was done as JSON")
    p.set_defaults(run=cmd_fuse)

    p = sub.add_parser("demo", help="fuse the shipped sample data with several methods")
    p.add_argument("--out", default="medfusion_demo", help="output folder (default ./medfusion_demo)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medfusion`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MedFusionError as error:
        print(f"medfusion: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("medfusion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
