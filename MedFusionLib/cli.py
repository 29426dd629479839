"""The ``medfusion`` command: ``methods``, ``colormaps``, ``fuse``, ``register``, ``metrics``, ``benchmark``, ``train``, ``demo`` and ``send``.

Errors caused by the input print one line on stderr (``medfusion: error: ...``) and exit
with status 2; no output file is left behind (outputs are written under a temporary name
and renamed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .atomic import StagedOutputs, os_error_reason
from .errors import InputError, MedFusionError, ParameterError
from .fusion import get_method, list_methods
from .io import (
    check_output_path,
    check_transform_output_path,
    read_image,
    remove_output,
    write_image,
    write_transform,
)
from .job import FusionJob, run_job
from .output_guard import check_output_file, check_output_folder, guard_outputs
from .pipeline import COLORMAP_AUTO, DEFAULT_METHOD, check_colormap, plan_fusion
from .preprocess import INTERPOLATIONS, check_window
from .signals import Terminated, remove_live_temporaries, termination_raises
from .validation import check_device, check_fraction, check_int, check_seed, check_threads

EXIT_USAGE = 2
EXIT_INTERNAL = 1


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("medfusion").strip()
        self.exit(EXIT_USAGE, f"medfusion: error: {command + ': ' if command else ''}{message}\n")


def _parse_window(text: str | None, *, option: str) -> str | tuple[float, float] | None:
    """``brain`` or ``LEVEL,WIDTH``, checked: a known preset, finite numbers, width > 0."""
    if text is None:
        return None
    window: str | tuple[float, float] = text
    if "," in text:
        try:
            level, width = (float(v) for v in text.split(","))
        except ValueError:
            raise ParameterError(f"{option} must be a preset name or LEVEL,WIDTH, got {text!r}") from None
        window = (level, width)
    return check_window(window, name=option)


# --- option checks: every option that needs no file fails before any file is read ------------
def _check_choice_option(option: str, value: str, choices: Sequence[str]) -> None:
    """One line naming the option (argparse's ``choices`` would print its own usage error)."""
    if value not in choices:
        raise ParameterError(f"{option} must be one of {', '.join(choices)}, got {value!r}")


def _check_fuse_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--device``, ``--interpolation`` and the windows of ``fuse``; returns the parsed windows."""
    check_device(args.device, name="--device")
    _check_choice_option("--interpolation", args.interpolation, INTERPOLATIONS)
    return {
        "window_a": _parse_window(args.window_a, option="--window-a"),
        "window_b": _parse_window(args.window_b, option="--window-b"),
    }


def _check_register_options(args: argparse.Namespace) -> None:
    """``--sampling`` in (0, 1] and ``--seed`` in the range ITK takes (0 would seed from the clock)."""
    from .registration import MIN_SEED

    check_fraction(args.sampling, name="--sampling")
    check_seed(args.seed, name="--seed", low=MIN_SEED)


def _check_metrics_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--metrics``, ``--mode``, ``--axis``, ``--device`` and the windows; returns metrics and windows."""
    from .metrics.compute import MODES
    from .metrics.registry import get_metric

    _check_choice_option("--mode", args.mode, MODES)
    chosen = _comma_list(args.metrics)
    if args.metrics is not None and not chosen:
        raise ParameterError(f"--metrics names no metric: {args.metrics!r}")
    for name in chosen or []:
        get_metric(name)
    check_int(args.axis, name="--axis", low=-3, high=2)
    check_device(args.device, name="--device")
    return {
        "metrics": chosen,
        "window_a": _parse_window(args.window_a, option="--window-a"),
        "window_b": _parse_window(args.window_b, option="--window-b"),
    }


def _check_benchmark_options(args: argparse.Namespace) -> None:
    """``--threads``, ``--device`` and ``--methods`` of ``benchmark``."""
    check_threads(args.threads, name="--threads")
    check_device(args.device, name="--device")
    methods = _comma_list(args.methods)
    if args.methods is not None and not methods:
        raise ParameterError(f"--methods names no method: {args.methods!r}")
    for name in methods or []:
        get_method(name)
    if args.peers:
        from .benchmark.published import peer_rows

        try:
            peer_rows(args.peers)
        except (AttributeError, TypeError, ValueError) as error:
            raise InputError(
                f"--peers {args.peers}: not a peer-results file ({{'sets': {{SET: {{LABEL: {{METRIC: value}}}}}}}}): "
                f"{error}"
            ) from None


def _check_train_options(args: argparse.Namespace) -> None:
    """``--threads``, ``--seed``, ``--pair`` and the recipe options of ``train``."""
    from .cnn.data import MODALITY_PAIRS

    check_threads(args.threads, name="--threads")
    if args.seed is not None:
        check_seed(args.seed, name="--seed")
    if args.pair is None:
        raise ParameterError(
            f"train needs --pair ({', '.join(MODALITY_PAIRS)}): one network per modality pair"
        )
    if args.pair not in MODALITY_PAIRS:
        raise ParameterError(f"--pair {args.pair!r}: use {', '.join(MODALITY_PAIRS)}")
    minimum = {"--steps": 1, "--batch": 1, "--crop": 48}
    for option, value in (("--steps", args.steps), ("--batch", args.batch), ("--crop", args.crop)):
        if value is not None:
            check_int(value, name=option, low=minimum[option])


def _progress_bar(description: str) -> Any:
    """A tqdm-backed ``progress(done, total)`` callback on stderr (silent when not a TTY)."""
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(
                total=total,
                desc=description,
                unit="slab",
                file=sys.stderr,
                leave=False,
                disable=not sys.stderr.isatty(),
            )
        bar["bar"].update(done - bar["bar"].n)
        if done == total:
            bar["bar"].close()

    return update


def methods_markdown(methods: Sequence[Any]) -> str:
    """The registry as a Markdown reference (``Docs/methods.md`` is made with it)."""
    lines = [
        "# Fusion methods",
        "",
        "Made with `medfusion methods --markdown`. Every method fuses 2-D slices and 3-D volumes on",
        "torch (CPU, CUDA or MPS), natively in 3-D except the `cnn` family, whose 2-D networks fuse a",
        "volume slice by slice (see Docs/models.md). Defaults follow the cited paper where it states",
        "them; where a value is this project's choice, the method's docstring says so and why.",
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


def cmd_colormaps(args: argparse.Namespace) -> int:
    """Print every colour table: ``{name: 256 x [r, g, b]}`` with ``--json``, a list otherwise."""
    from .colormaps import colormaps_as_lists, describe_colormap, list_colormaps
    from .functional_fusion import RECOMMENDED

    if args.json:
        print(json.dumps(colormaps_as_lists()))
        return 0
    for name in list_colormaps():
        table = describe_colormap(name)
        pairs = [pair.replace("_", "+") for pair, entry in RECOMMENDED.items() if entry["colormap"] == name]
        chosen = f" [recommended for {', '.join(pairs)}]" if pairs else ""
        print(f"{name:10s} {table.summary}{chosen}")
        print(f"{'':11s}{table.citation}")
    print(f"{'none':10s} no colour table: gray fusion")
    return 0


def _fuse_method(
    args: argparse.Namespace, *, colormap: str | None, plan: Any = None
) -> tuple[Any, dict[str, Any]]:
    """The method ``fuse`` will use and the ``--set`` values parsed and checked for it.

    Before the files are read (``plan`` None) the method is ``--method`` or the one recommended
    for the ``--modality-a/-b`` flags, so that a bad ``--set`` fails before any reading; once the
    files' own modalities are known (DICOM tags, header fields) ``plan`` settles it.
    """
    if plan is not None:
        name, base = plan.method, plan.parameters
    elif args.method:
        name, base = args.method, {}
    else:
        from .recommended import functional_side, recommended

        colour = colormap is not None and functional_side(args.modality_a, args.modality_b) is not None
        choice = recommended(args.modality_a, args.modality_b)
        name, base = (choice.method, choice.parameters) if colour else (DEFAULT_METHOD, {})
    spec = get_method(name)
    overrides = spec.parse_parameters(args.set)
    spec.resolve_parameters({**base, **overrides})
    return spec, overrides


def cmd_fuse(args: argparse.Namespace) -> int:
    out = Path(args.output)
    guard_outputs(inputs=[args.a, args.b], outputs=[out])  # inputs are never overwritten
    check_output_path(out)  # refuse an unusable output before any work
    colormap = check_colormap(args.colormap, name="--colormap")
    spec, overrides = _fuse_method(args, colormap=colormap)
    windows = _check_fuse_options(args)
    _check_dicom_options(args, out)
    a = read_image(args.a, modality=args.modality_a, series=args.series_a)
    b = read_image(args.b, modality=args.modality_b, series=args.series_b)
    check_output_path(out, ndim=a.ndim)
    plan = plan_fusion(
        a, b, method=args.method, colormap=colormap, name="--colormap", name_a=str(args.a), name_b=str(args.b)
    )
    if plan.method != spec.name or plan.parameters:
        spec, overrides = _fuse_method(args, colormap=colormap, plan=plan)
    job = FusionJob(
        fixed=a,
        moving=b,
        output=str(out),
        registration=args.register,
        method=args.method,
        parameters=overrides,
        colormap=colormap,
        device=args.device,
        window_fixed=windows["window_a"],
        window_moving=windows["window_b"],
        interpolation=args.interpolation,
        name_fixed=str(args.a),
        name_moving=str(args.b),
        output_format=args.format,
        send=args.send,
        calling_ae=args.calling_ae,
    )
    done = run_job(
        job,
        progress=_progress_bar(f"fusing ({spec.name})"),
        warn=lambda warning: print(f"medfusion: warning: {warning}", file=sys.stderr),
    )
    result, registration = done.fusion, done.registration
    if args.json:
        record = {"inputs": [str(args.a), str(args.b)], "output": str(out), **result.summary()}
        record["registration"] = None if registration is None else registration.summary()
        if "sent" in done.extra:
            record["sent"] = {"peer": str(done.extra["sent"].peer), "instances": done.extra["sent"].total}
        print(json.dumps(record, indent=2))
    else:
        colour = f"colour table {result.colormap}" if result.colormap else "gray"
        print(f"{out} ({result.method}, {colour}, {result.seconds:.2f} s on {result.device})")
    if "sent" in done.extra and not args.json:
        print(_sent_line(done.extra["sent"]))
    return 0


def _check_dicom_options(args: argparse.Namespace, out: Path) -> None:
    """``--format``, ``--send`` and ``--calling-ae`` of ``fuse``, before any file is read."""
    from .dicom.network import parse_peer

    if args.format is not None and args.format != "dicom":
        raise ParameterError(
            f"--format must be dicom (other formats follow the extension), got {args.format!r}"
        )
    fmt = check_output_path(out)
    if args.format == "dicom" and fmt != "dicom":
        raise ParameterError(f"--format dicom writes a folder: {out} has a file extension")
    if args.send is not None:
        parse_peer(args.send, option="--send")
        if fmt != "dicom":
            raise ParameterError("--send needs a DICOM output: -o FOLDER/ (or --format dicom)")
    parse_peer(f"{args.calling_ae}@localhost:1", option="--calling-ae")


def _sent_line(report: Any) -> str:
    warned = f", {len(report.warnings)} with a warning" if report.warnings else ""
    return f"sent {report.total} instances to {report.peer}{warned}"


def cmd_send(args: argparse.Namespace) -> int:
    """``medfusion send DIR... --to AE@HOST:PORT``: C-STORE every DICOM file (PS3.4 annex B)."""
    from .dicom.network import parse_peer, send

    peer = parse_peer(args.to, option="--to")
    parse_peer(f"{args.calling_ae}@localhost:1", option="--calling-ae")
    report = send(args.paths, peer, calling_ae=args.calling_ae, timeout=args.timeout)
    if args.json:
        print(
            json.dumps(
                {
                    "peer": str(peer),
                    "stored": [str(p) for p in report.stored],
                    "warnings": [[str(p), reason] for p, reason in report.warnings],
                },
                indent=2,
            )
        )
    else:
        print(_sent_line(report))
    return 0


TRANSFORM_SUFFIXES = (".tfm", ".txt", ".h5")


def cmd_register(args: argparse.Namespace) -> int:
    from .registration import register

    _check_register_options(args)
    out = Path(args.output)
    if out.suffix.lower() not in TRANSFORM_SUFFIXES:
        raise ParameterError(f"transform file {out} must end in {', '.join(TRANSFORM_SUFFIXES)}")
    if not out.parent.is_dir():
        raise ParameterError(f"output folder {out.parent} does not exist")
    if args.qa and Path(args.qa).suffix.lower() != ".png":
        raise ParameterError(f"--qa {args.qa} must be a .png file")
    resampled = Path(args.resampled) if args.resampled else None
    qa = Path(args.qa) if args.qa else None
    # Every output is checked before any work: a late failure must not leave earlier outputs.
    guard_outputs(inputs=[args.fixed, args.moving], outputs=[out, resampled, qa])
    check_transform_output_path(out)
    if qa is not None:
        check_output_file(qa, what="--qa image")
    if resampled is not None:
        check_output_path(resampled)
    fixed, moving = read_image(args.fixed), read_image(args.moving)
    if resampled is not None:
        check_output_path(resampled, ndim=fixed.ndim)
    result = register(
        fixed,
        moving,
        type=args.type,
        initialisation=args.initialisation,
        sampling_fraction=args.sampling,
        seed=args.seed,
        name_fixed=str(args.fixed),
        name_moving=str(args.moving),
    )
    for warning in result.warnings:
        print(f"medfusion: warning: {warning}", file=sys.stderr)
    _write_registration_outputs(args, result.transform, fixed, moving, out=out, resampled=resampled, qa=qa)
    if args.json:
        print(
            json.dumps(
                {
                    "fixed": str(args.fixed),
                    "moving": str(args.moving),
                    "transform": str(out),
                    **result.summary(),
                },
                indent=2,
            )
        )
    else:
        print(
            f"{out} ({args.type}, MI {-result.metric_initial:.4f} -> {-result.metric_final:.4f}, {result.seconds:.1f} s)"
        )
    return 0


def _write_registration_outputs(
    args: argparse.Namespace,
    transform: Any,
    fixed: Any,
    moving: Any,
    *,
    out: Path,
    resampled: Path | None,
    qa: Path | None,
) -> None:
    """Write the transform, QA picture and resampled image all or none.

    The transform and the picture are staged under temporary names; the resampled image is
    written last (atomically on its own); only then are the staged files renamed into place.
    A failure at any step removes what this run wrote.
    """
    from .preprocess import resample_to
    from .registration_qa import save_registration_qa

    moved = resample_to(moving, fixed, transform=transform) if resampled is not None else None
    written: Path | None = None
    try:
        with StagedOutputs() as staged:
            write_transform(transform, staged.stage(out, suffix=out.suffix.lower()))
            if qa is not None:
                title = f"{args.moving} -> {args.fixed} ({args.type})"
                save_registration_qa(fixed, moving, transform, staged.stage(qa, suffix=".png"), title=title)
            if resampled is not None and moved is not None:
                written = write_image(moved, resampled)
    except BaseException:
        if written is not None:
            remove_output(written)
        raise


def cmd_serve(args: argparse.Namespace) -> int:
    from .validation import check_device
    from .web.serve import serve

    check_device(args.device, name="--device")
    serve(
        args.data,
        host=args.host,
        port=args.port,
        token=args.token,
        save_dir=args.save_dir,
        allowed_hosts=args.allow_host,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        device=args.device,
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    paths = run_demo(args.out, device=args.device)
    print(f"wrote {len(paths)} files to {Path(args.out).resolve()}")
    return 0


def _comma_list(text: str | None) -> list[str] | None:
    return [item.strip() for item in text.split(",") if item.strip()] if text else None


def cmd_metrics(args: argparse.Namespace) -> int:
    from .metrics.compute import check_axis, compute_metrics
    from .metrics.inputs import grey_levels_for_scoring

    names = (str(args.a), str(args.b), str(args.fused))
    options = _check_metrics_options(args)  # unknown names fail before any file is read
    chosen = options["metrics"]
    images = [read_image(path) for path in (args.a, args.b, args.fused)]
    grey = grey_levels_for_scoring(
        *images, names=names, window_a=options["window_a"], window_b=options["window_b"]
    )
    check_axis(args.axis, ndim=grey[0].ndim, name="--axis")
    report = compute_metrics(
        *grey, metrics=chosen, mode=args.mode, axis=args.axis, device=args.device, names=names
    )
    for key, note in report.notes.items():
        print(f"medfusion: note: {key}: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(
        f"{'metric':12s} {'value':>12s} {'A part':>12s} {'B part':>12s}   ({report.mode}, {report.seconds:.2f} s)"
    )
    for key, value in report.values.items():
        if key.endswith(("_A", "_B")):
            continue
        part_a, part_b = report.values.get(f"{key}_A"), report.values.get(f"{key}_B")
        parts = "".join(f" {v:12.4f}" if v is not None else f" {'':12s}" for v in (part_a, part_b))
        print(f"{key:12s} {value:12.4f}{parts}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark.clinical import benchmark_command, wants_clinical
    from .benchmark.dataset import discover_pair_sets
    from .benchmark.published import peer_rows, published_rows
    from .benchmark.report import write_report
    from .benchmark.run import run_benchmark

    if wants_clinical(args):  # STS_* patients, or --pairs/--patients/--metrics/--figure: 3-D clinical
        command = (
            "medfusion " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["benchmark"] else "medfusion benchmark"
        )
        return benchmark_command(args, command=command)
    _check_benchmark_options(args)
    dataset = Path(args.dataset)
    out_dir = check_output_folder(args.out, option="--out")  # before the work, not after it
    guard_outputs(inputs=[dataset, args.peers], outputs=[out_dir])
    methods = _comma_list(args.methods)
    for name in methods or []:
        get_method(name)
    sets = discover_pair_sets(dataset)
    quoted, citations = published_rows(dataset.resolve().name)
    peers = peer_rows(args.peers) if args.peers else {}
    comparisons = {name: quoted.get(name, []) + peers.get(name, []) for name in {s.name for s in sets}}

    def progress(message: str) -> None:
        if not args.json:
            print(f"\r{message:60s}", end="", file=sys.stderr, flush=True)

    results = run_benchmark(
        sets, methods=methods, device=args.device, threads=args.threads, progress=progress
    )
    if not args.json:
        print(file=sys.stderr)
    command = (
        "medfusion " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["benchmark"] else "medfusion benchmark"
    )
    written = write_report(
        results,
        args.out,
        dataset_name=dataset.resolve().name,
        command=command,
        device=args.device,
        threads=args.threads,
        comparisons=comparisons,
        citations=citations,
    )
    if args.json:
        summary = {
            r.pair_set.name: {
                method: {k: (v if math.isfinite(v) else None) for k, v in values.items()}
                for method, values in r.means().items()
            }
            for r in results
        }
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {len(written)} files to {Path(args.out).resolve()} (report: {written[0].name})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``train gain_fusion_net --pair PAIR``: the pair's templates, plus the patients unless
    ``--templates-only``; writes the weights and their record."""
    import torch

    from .cnn.data import HELD_OUT_PATIENTS, TRAINING_PARTS, PatientSlices, TrainingVolumes, pair_templates
    from .cnn.train import NETWORKS, GainRecipe, train_gain_network

    if args.method not in NETWORKS:
        raise ParameterError(f"unknown network {args.method!r} (trainable: {', '.join(NETWORKS)})")
    _check_train_options(args)
    data = Path(args.data)
    if any((data / name).is_dir() for name in ("MRI_CT", "MRI_PET", "MRI_SPECT")):
        raise InputError(
            f"{data} holds Harvard pairs (test or validation): networks are never trained on them"
        )
    out = Path(args.out or f"{args.method}_{args.pair}.safetensors")
    if out.suffix != ".safetensors":
        raise InputError(f"{out}: the weights file must end in .safetensors")
    check_output_file(out, what="weights")
    guard_outputs(inputs=[data], outputs=[out, out.with_name(out.name + ".json")])
    torch.set_num_threads(args.threads)
    options = {"seed": args.seed, "batch": args.batch, "steps": args.steps, "crop": args.crop}
    recipe = GainRecipe(**{k: v for k, v in options.items() if v is not None})
    if args.templates_only:
        recipe = replace(recipe, patients=0.0)
    templates = pair_templates(TrainingVolumes.from_directory(data), args.pair)
    patients = None if args.templates_only else PatientSlices.from_directory(data, modality_pair=args.pair)
    description = (
        f"SPM/MNI templates from {data} (axial slices {TRAINING_PARTS[0][1]}-{TRAINING_PARTS[1][0] - 1} of the "
        "Colin27 grid never drawn)"
    )
    if patients is not None:
        description += (
            f" and {len(patients.patients)} shared patients from {data / 'sts'} (CC BY 3.0; "
            f"{', '.join(HELD_OUT_PATIENTS)} held out)"
        )
    record = train_gain_network(
        pair=args.pair,
        templates=templates,
        patients=patients,
        out=out,
        recipe=recipe,
        data_description=description,
        log=None if args.json else (lambda line: print(line, file=sys.stderr, flush=True)),
    )
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"wrote {out} ({record['bytes']} bytes, sha256 {record['sha256']}) and {out.name}.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .web.serve import DEFAULT_HOST, DEFAULT_PORT, RESULTS_FOLDER

    parser = _Parser(prog="medfusion", description="Multi-modal medical image fusion (CT, MRI, PET, SPECT).")
    parser.add_argument("--version", action="version", version=f"medfusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("methods", help="list the fusion methods and their parameters")
    p.add_argument("--json", action="store_true", help="print the registry as JSON")
    p.add_argument("--markdown", action="store_true", help="print the registry as a Markdown reference")
    p.set_defaults(run=cmd_methods)

    p = sub.add_parser("colormaps", help="list the colour tables for PET and SPECT")
    p.add_argument("--json", action="store_true", help="print {name: 256 x [r, g, b] in [0, 1]} as JSON")
    p.set_defaults(run=cmd_colormaps)

    p = sub.add_parser("fuse", help="fuse image B into image A's grid")
    p.add_argument("a", metavar="A", help="reference image (output gets its geometry)")
    p.add_argument("b", metavar="B", help="second image, resampled onto A's grid")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file (its extension picks the format) or DICOM folder (ending in / or no extension)",
    )
    p.add_argument(
        "--method",
        help="fusion method (default: the one recommended for the modality pair, "
        f"{DEFAULT_METHOD} for unknown or anatomical pairs; see `medfusion methods`)",
    )
    p.add_argument(
        "--colormap",
        default=COLORMAP_AUTO,
        help="colour table of the PET or SPECT for colour fusion with a CT or MR (default: the pair's "
        "recommended table; none: gray output; see `medfusion colormaps`)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="method parameter")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument(
        "--modality-a",
        choices=("CT", "MR", "PET", "SPECT"),
        help="modality of A (picks its window and the recommended fusion; default: DICOM tag or header field)",
    )
    p.add_argument("--modality-b", choices=("CT", "MR", "PET", "SPECT"), help="modality of B (likewise)")
    p.add_argument(
        "--window-a", help="intensity window of A: preset (brain, subdural, bone, soft_tissue) or L,W"
    )
    p.add_argument("--window-b", help="intensity window of B")
    p.add_argument("--interpolation", default="linear", help="resampling of B: linear, nearest or bspline")
    p.add_argument(
        "--register",
        default="none",
        choices=("none", "rigid", "affine", "bspline"),
        help="register B to A first with mutual information (default none: slice pairs come registered)",
    )
    p.add_argument(
        "--format",
        help="dicom: write -o as a DICOM folder (a derived series in A's study and frame of reference "
        "when A is a DICOM series; a folder ending in / or without extension does the same)",
    )
    p.add_argument(
        "--series-a", metavar="UID|MODALITY", help="the series of A to read when its folder holds several"
    )
    p.add_argument(
        "--series-b", metavar="UID|MODALITY", help="the series of B to read when its folder holds several"
    )
    p.add_argument("--send", metavar="AE@HOST:PORT", help="store the DICOM output on this PACS (C-STORE)")
    p.add_argument(
        "--calling-ae", default="MEDFUSION", help="AE title to call the PACS with (default MEDFUSION)"
    )
    p.add_argument("--json", action="store_true", help="print what was done as JSON")
    p.set_defaults(run=cmd_fuse)

    p = sub.add_parser("send", help="send DICOM files or folders to a PACS (C-STORE)")
    p.add_argument("paths", metavar="PATH", nargs="+", help="DICOM files or folders of DICOM files")
    p.add_argument(
        "--to", required=True, metavar="AE@HOST:PORT", help="the PACS: called AE title, host, port"
    )
    p.add_argument("--calling-ae", default="MEDFUSION", help="AE title to call with (default MEDFUSION)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the PACS (default 30)")
    p.add_argument("--json", action="store_true", help="print the instances stored as JSON")
    p.set_defaults(run=cmd_send)

    p = sub.add_parser("register", help="register MOVING onto FIXED (Mattes mutual information)")
    p.add_argument("fixed", metavar="FIXED", help="the reference image")
    p.add_argument("moving", metavar="MOVING", help="the image to align")
    p.add_argument(
        "-o", "--output", required=True, help="ITK transform file (.tfm, .txt or .h5): FIXED to MOVING points"
    )
    p.add_argument("--type", default="rigid", choices=("rigid", "affine", "bspline"), help="default rigid")
    p.add_argument("--initialisation", default="geometry", choices=("geometry", "moments"), help="centring")
    p.add_argument("--sampling", type=float, default=0.1, help="fraction of voxels sampled (default 0.1)")
    p.add_argument("--seed", type=int, default=20261124, help="sampling seed (fixed: results repeat)")
    p.add_argument("--resampled", help="also write MOVING resampled onto FIXED's grid")
    p.add_argument("--qa", help="write a PNG checkerboard and edge overlay of the mid-slices")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=cmd_register)

    p = sub.add_parser("metrics", help="score a fused image against its two sources")
    p.add_argument("a", metavar="A", help="first source (anatomical)")
    p.add_argument("b", metavar="B", help="second source (resampled onto A's grid if needed)")
    p.add_argument("fused", metavar="FUSED", help="the fused image, on A's grid")
    p.add_argument("--metrics", help="comma-separated metric names (default: all)")
    p.add_argument("--mode", default="volume", help="volumes: 'volume' (3-D metrics) or 'slices' (2-D mean)")
    p.add_argument(
        "--axis", type=int, default=0, help="slicing axis for --mode slices (array order, default 0)"
    )
    p.add_argument("--window-a", help="intensity window of A when it is not 8-bit: preset or L,W")
    p.add_argument("--window-b", help="intensity window of B when it is not 8-bit")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object: metric -> value")
    p.set_defaults(run=cmd_metrics)

    p = sub.add_parser("benchmark", help="fuse and score every pair of a dataset with every method")
    p.add_argument(
        "dataset",
        metavar="DATASET",
        help="folder of pair sets (DATASET/<SET>/<MODALITY>/<id>.png) or of patients (DATASET/STS_NNN/)",
    )
    p.add_argument(
        "--methods",
        help="comma-separated methods (default: all); patients also METHOD+TABLE, recommended, slicer_overlay_NN",
    )
    p.add_argument("--pairs", help="patients: comma-separated pairs, CT_PET and/or MR_PET (default both)")
    p.add_argument("--patients", help="patients: comma-separated ids such as STS_007 (default: all)")
    p.add_argument(
        "--metrics",
        help="patients: 3-D grey-level metrics beside the clinical ones (default MI,SCD,Qabf,SSIM,CC; all; none)",
    )
    p.add_argument(
        "--figure", help="patients: the figure's PNG path (default OUT/<DATASET>_tumour_slices.png)"
    )
    p.add_argument(
        "--out", default="medfusion_benchmark", help="output folder (default ./medfusion_benchmark)"
    )
    p.add_argument("--peers", help="JSON of peer rows measured with the same protocol, shown for comparison")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the fusion calls (default 2)")
    p.add_argument(
        "--json", action="store_true", help="print {SET or PAIR: {METHOD: {METRIC: mean, ...}}} as JSON"
    )
    p.set_defaults(run=cmd_benchmark)

    p = sub.add_parser("train", help="train MedFusion's fusion network for one modality pair (reproducible)")
    p.add_argument("method", metavar="METHOD", help="network to train: gain_fusion_net")
    p.add_argument("--pair", help="the modality pair to train for: MRI_CT, MRI_PET or MRI_SPECT")
    p.add_argument(
        "--data",
        required=True,
        help="folder with mni/ (SPM/MNI templates) and sts/ (the patients); never Harvard",
    )
    p.add_argument("--templates-only", action="store_true", help="leave the patients out (templates only)")
    p.add_argument(
        "--out", help="weights file (default ./METHOD_PAIR.safetensors); its record goes to OUT.json"
    )
    p.add_argument("--steps", type=int, help="training steps (default 600)")
    p.add_argument("--batch", type=int, help="crops per step (default 16)")
    p.add_argument("--crop", type=int, help="crop size in pixels, at least 48 (default 96)")
    p.add_argument("--seed", type=int, help="seed of weights and batches (default 20261205)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--json", action="store_true", help="print the weights' record as JSON")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("serve", help="review fusions in a web browser (needs the web extra)")
    p.add_argument("--data", default=".", help="folder of images and DICOM series to offer (default .)")
    p.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}; others need a token)"
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)"
    )
    p.add_argument(
        "--token", help="token every request must carry (generated and printed when binding beyond loopback)"
    )
    p.add_argument("--save-dir", help=f"where Save writes (default DATA/{RESULTS_FOLDER})")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name the server is reached by (its DNS name); repeatable",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="certificate file: serve HTTPS (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("demo", help="fuse the shipped sample data with several methods")
    p.add_argument("--out", default="medfusion_demo", help="output folder (default ./medfusion_demo)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.set_defaults(run=cmd_demo)
    return parser


def _error(message: str) -> int:
    """Print one ``medfusion: error:`` line and return the usage exit status."""
    print(f"medfusion: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


def _os_error_message(error: OSError) -> str:
    """One line for an :class:`OSError` no command turned into its own error (names the file)."""
    reason = os_error_reason(error)
    return f"{error.filename}: {reason}" if error.filename else reason


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medfusion`` console script.

    Errors print one line on stderr and exit with status 2 (bad input) or 1 (a bug). SIGTERM and SIGHUP, like Ctrl-C, stop the command with
    its temporaries removed (every write is atomic) and exit with ``128 + signal``; the
    previous signal handlers are restored on return. Set ``MEDFUSION_TRACEBACK=1`` to see the
    traceback of an unexpected error instead of its one line.
    """
    args = build_parser().parse_args(argv)
    with termination_raises():
        try:
            return args.run(args)
        except MedFusionError as error:
            return _error(str(error))
        except Terminated as stop:
            remove_live_temporaries()
            print(f"medfusion: stopped by {stop.name}; nothing half-written was left", file=sys.stderr)
            return int(stop.code)
        except KeyboardInterrupt:
            remove_live_temporaries()
            print("medfusion: interrupted", file=sys.stderr)
            return 130
        except OSError as error:
            return _error(_os_error_message(error))
        except MemoryError:
            return _error("not enough memory for this command")
        except Exception as error:  # a bug, not bad input: one line and status 1, never a traceback
            if os.environ.get("MEDFUSION_TRACEBACK"):
                raise
            _error(
                f"internal error {type(error).__name__}: {error} "
                "(please report it; MEDFUSION_TRACEBACK=1 shows the traceback)"
            )
            return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
