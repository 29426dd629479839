"""Tests of the output side of the reliability contract (issue 12).

Inputs are never overwritten (:mod:`MedFusionLib.output_guard`), outputs are complete or
absent (:mod:`MedFusionLib.atomic`, the writers of :mod:`MedFusionLib.io`), temporaries go
away on SIGTERM/SIGHUP (:mod:`MedFusionLib.signals`), concurrent writers never mix, a full
disk is an error, and output problems are one line before any work.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedFusionLib import io as mio
from MedFusionLib.atomic import StagedOutputs, making_folder, replacing, write_text
from MedFusionLib.cli import main
from MedFusionLib.errors import InputError
from MedFusionLib.image import Image
from MedFusionLib.io import read_image, write_image, write_transform
from MedFusionLib.output_guard import check_output_folder, guard_outputs
from MedFusionLib.signals import Terminated, live_temporaries, live_temporary, termination_raises

ROOT = Path(__file__).resolve().parents[1]
HARVARD = ROOT.parent / "shared" / "data" / "harvard" / "MRI_CT"
SAMPLE = ROOT / "MedFusionLib" / "sample_data"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error_line(err: str, *needles: str) -> None:
    lines = [line.split("\r")[-1] for line in err.strip().split("\n")]  # after a progress bar
    assert len(lines) == 1 and lines[0].startswith("medfusion: error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A registered MR/CT slice pair (256 x 256) in ``tmp_path``."""
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    write_image(read_image(HARVARD / "MRI" / "11.png"), a)
    write_image(read_image(HARVARD / "CT" / "11.png"), b)
    return a, b


# --- the guard ---------------------------------------------------------------------------
def test_guard_refuses_every_spelling_of_an_input(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    a, b = pair
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.nii.gz").symlink_to(a)
    os.link(a, tmp_path / "hard.nii.gz")
    for output, words in (
        (a, "is the input"),
        (tmp_path / "sub" / ".." / "a.nii.gz", "is the input"),
        (tmp_path / "link.nii.gz", "is the input"),
        (tmp_path / "hard.nii.gz", "(a link)"),
        (tmp_path, "holds the input"),
    ):
        with pytest.raises(InputError, match=words) as caught:
            guard_outputs(inputs=[a, b], outputs=[output])
        assert str(output) in str(caught.value) and "a.nii.gz" in str(caught.value)
    with pytest.raises(InputError, match="is the input"):  # the input given through the link
        guard_outputs(inputs=[tmp_path / "link.nii.gz"], outputs=[a])
    guard_outputs(inputs=[a, b, None], outputs=[tmp_path / "fused.nii.gz", None])  # fine


def test_guard_folders_data_files_and_repeated_outputs(tmp_path: Path) -> None:
    series = tmp_path / "ct"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"x")
    with pytest.raises(InputError, match="inside the input folder"):
        guard_outputs(inputs=[series], outputs=[series / "fused.nii.gz"])
    with pytest.raises(InputError, match="is the input"):
        guard_outputs(inputs=[series], outputs=[series])
    (tmp_path / "x.raw").write_bytes(b"x")
    with pytest.raises(InputError, match="x.raw"):
        guard_outputs(inputs=[tmp_path / "x.raw"], outputs=[tmp_path / "x.mhd"])
    with pytest.raises(InputError, match="same file"):
        guard_outputs(inputs=[], outputs=[tmp_path / "q.png", tmp_path / "." / "q.png"])
    guard_outputs(inputs=[series], outputs=[tmp_path / "ct_fused"])


def test_write_image_protect(pair: tuple[Path, Path]) -> None:
    a, b = pair
    before = _digest(a)
    with pytest.raises(InputError, match="is the input"):
        write_image(read_image(b), a, protect=[a, b])
    assert _digest(a) == before


@pytest.mark.parametrize("output", ["a.nii.gz", "sub/../a.nii.gz", "link.nii.gz", "hard.nii.gz", "b.nii.gz"])
def test_fuse_never_overwrites_an_input(
    output: str, tmp_path: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = pair
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.nii.gz").symlink_to(a)
    os.link(a, tmp_path / "hard.nii.gz")
    digests = {a: _digest(a), b: _digest(b)}
    code = main(["fuse", str(a), str(b), "--method", "average", "-o", str(tmp_path / output)])
    _one_error_line(capsys.readouterr().err, output)
    assert code == 2 and {p: _digest(p) for p in digests} == digests


# --- up-front output checks ----------------------------------------------------------------
def test_name_too_long_is_one_line(tmp_path: Path, pair: tuple[Path, Path], capsys) -> None:  # noqa: ANN001
    a, b = pair
    code = main(["fuse", str(a), str(b), "-o", str(tmp_path / ("x" * 300 + ".nii.gz"))])
    _one_error_line(capsys.readouterr().err, "too long")
    assert code == 2
    with pytest.raises(InputError, match="too long"):
        write_image(read_image(a), tmp_path / ("y" * 300 + ".nrrd"))
    # A name just under the limit still works: the temporary's name is shortened.
    long_name = tmp_path / ("z" * 240 + ".nii.gz")
    write_image(read_image(a), long_name)
    assert long_name.is_file() and not _hidden(tmp_path)


def test_register_checks_every_output_before_work(tmp_path: Path, pair: tuple[Path, Path], capsys) -> None:  # noqa: ANN001
    a, b = pair
    for extra, words in (
        (["--qa", str(tmp_path / "missing" / "qa.png")], "missing"),
        (["--qa", str(tmp_path / "q.png"), "--resampled", str(tmp_path / "q.png")], "same file"),
        (["--resampled", str(a)], "is the input"),
        (["--resampled", str(tmp_path / "missing" / "r.nii.gz")], "missing"),
    ):
        started = time.perf_counter()
        code = main(["register", str(a), str(b), "-o", str(tmp_path / "t.tfm"), *extra])
        _one_error_line(capsys.readouterr().err, words)
        assert code == 2 and time.perf_counter() - started < 5
        assert not (tmp_path / "t.tfm").exists()
    code = main(["register", str(a), str(b), "-o", str(a.with_suffix(".tfm"))])
    assert code == 0, capsys.readouterr().err


def test_register_writes_all_outputs_or_none(
    tmp_path: Path, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # noqa: ANN001
    a, b = pair
    out, qa, resampled = tmp_path / "t.h5", tmp_path / "qa.png", tmp_path / "r.nrrd"
    args = ["register", str(a), str(b), "-o", str(out), "--qa", str(qa), "--resampled", str(resampled)]
    assert main(args) == 0, capsys.readouterr().err
    transform = sitk.ReadTransform(str(out))
    assert qa.stat().st_size > 1000 and read_image(resampled).size == (256, 256)
    for path in (out, qa, resampled):
        path.unlink()

    def fail(*args: object, **kwargs: object) -> None:
        raise InputError(f"cannot write {resampled}: no space left on device")

    monkeypatch.setattr("MedFusionLib.cli.write_image", fail)
    assert main(args) == 2
    _one_error_line(capsys.readouterr().err, "r.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert transform.GetName()


def test_demo_refusals_leave_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep")
    assert main(["demo", "--out", str(afile)]) == 2
    _one_error_line(capsys.readouterr().err, "afile", "not a folder")
    assert afile.read_text() == "keep"
    out = tmp_path / "new" / "demo"
    assert main(["demo", "--out", str(out), "--device", "nonsense"]) == 2
    _one_error_line(capsys.readouterr().err, "nonsense")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert main(["demo", "--out", str(SAMPLE)]) == 2
    _one_error_line(capsys.readouterr().err, "holds the input")


def test_benchmark_out_is_checked_up_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "report.md"
    afile.write_text("keep")
    started = time.perf_counter()
    assert main(["benchmark", str(HARVARD.parent), "--out", str(afile)]) == 2
    _one_error_line(capsys.readouterr().err, "report.md", "not a folder")
    assert time.perf_counter() - started < 5
    assert main(["benchmark", str(HARVARD.parent), "--out", str(HARVARD / "report")]) == 2
    _one_error_line(capsys.readouterr().err, "inside the input folder")
    assert not (HARVARD / "report").exists()


def test_benchmark_report_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from MedFusionLib.benchmark import report

    def broken_chart(*args: object, **kwargs: object) -> None:
        raise InputError("cannot draw the chart")

    monkeypatch.setattr(report, "save_score_chart", broken_chart)
    monkeypatch.setattr(
        report, "save_examples_figure", lambda figures, path, title: Path(path).write_bytes(b"png")
    )
    out = tmp_path / "new" / "report"
    with pytest.raises(InputError, match="chart"):
        report.write_report(
            [],
            out,
            dataset_name="d",
            command="medfusion benchmark",
            device="cpu",
            threads=1,
            comparisons={},
            citations={},
        )
    assert not list(tmp_path.iterdir())


# --- atomic writes ---------------------------------------------------------------------------
def test_replacing_checks_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "r.txt"
    target.write_text("old")
    with pytest.raises(InputError, match="r.txt"), replacing(target):
        pass  # the block never created the temporary
    with pytest.raises(InputError, match="empty"), replacing(target) as temporary:
        temporary.write_bytes(b"")
    with pytest.raises(RuntimeError), replacing(target) as temporary:
        temporary.write_text("new")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and not _hidden(tmp_path)
    write_text(target, "new")
    assert target.read_text() == "new" and not _hidden(tmp_path) and not live_temporaries()


def test_staged_outputs_name_the_target_and_keep_all_or_none(tmp_path: Path) -> None:
    first, second = tmp_path / "one.txt", tmp_path / "two.txt"
    with pytest.raises(InputError) as caught, StagedOutputs() as staged:
        staged.stage(first).write_text("1")
        temporary = staged.stage(second)
        raise InputError(f"cannot write {temporary}: no space left on device")
    assert str(second) in str(caught.value) and ".tmp" not in str(caught.value)
    assert not list(tmp_path.iterdir())
    with StagedOutputs() as staged:
        staged.stage(first).write_text("1")
        staged.stage(second).write_text("2")
    assert first.read_text() == "1" and second.read_text() == "2" and not _hidden(tmp_path)


def test_making_folder_removes_only_what_it_made(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), making_folder(tmp_path / "a" / "b"):
        raise RuntimeError("boom")
    assert not list(tmp_path.iterdir())
    with pytest.raises(InputError, match="exists and is not a folder"):
        (tmp_path / "f").write_text("x")
        check_output_folder(tmp_path / "f")


def test_a_truncated_nifti_write_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = Image.from_array(np.random.default_rng(0).random((8, 30, 30)).astype(np.float32))
    real_execute = mio._execute

    def execute_then_truncate(writer: sitk.ImageFileWriter, sitk_image: sitk.Image, folder: Path) -> None:
        real_execute(writer, sitk_image, folder)
        written = Path(writer.GetFileName())
        written.write_bytes(written.read_bytes()[: written.stat().st_size * 2 // 3])

    monkeypatch.setattr(mio, "_execute", execute_then_truncate)
    for name in ("cut.nii", "cut.nii.gz"):
        with pytest.raises(InputError, match=f"cannot write .*{name}"):
            write_image(image, tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_a_library_error_line_is_a_failed_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def chatty(writer: sitk.ImageFileWriter, image: sitk.Image) -> None:
        os.write(2, b"** ERROR: NWAD: wrote only 5 of 10 bytes to file\n")

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", chatty)
    with pytest.raises(InputError, match="out.nii.gz"):
        write_image(Image.from_array(np.zeros((4, 4), np.float32)), tmp_path / "out.nii.gz")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("suffix", [".tfm", ".txt", ".h5"])
def test_write_transform_round_trip(suffix: str, tmp_path: Path) -> None:
    rigid = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, 0.2, 0.3, (1 / 3, 2 / 7, -5.0))
    grid = sitk.Image([8, 8, 8], sitk.sitkFloat32)
    bspline = sitk.BSplineTransformInitializer(grid, [3, 3, 3])
    bspline.SetParameters(tuple(np.linspace(-1, 1, len(bspline.GetParameters()))))
    for transform in (rigid, sitk.CompositeTransform([rigid, bspline])):
        path = write_transform(transform, tmp_path / f"t{suffix}")
        back = sitk.ReadTransform(str(path))
        assert mio._transform_parts(back) == mio._transform_parts(transform)
    assert not _hidden(tmp_path)
    with pytest.raises(InputError, match="must end in"):
        write_transform(rigid, tmp_path / "t.mat")


def test_hdf5_failure_is_reported_not_crashed(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing"):
        write_transform(sitk.Euler2DTransform(), tmp_path / "missing" / "t.h5")
    # The child process reports HDF5's failure (here: a folder where the file should go).
    blocked = tmp_path / "blocked.h5"
    blocked.mkdir()
    with pytest.raises(mio._WriteFailed):
        mio._write_hdf5_transform(sitk.Euler2DTransform(), blocked, tmp_path)


def test_dicom_replacement_keeps_one_complete_series(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    for value in (1, 2):
        write_image(Image.from_array(np.full((6, 8, 8), value, np.int16)), folder)
    assert np.all(read_image(folder).array == 2) and not _hidden(tmp_path)


# --- signals ---------------------------------------------------------------------------------
def test_termination_raises_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as caught, termination_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert caught.value.code == 128 + signal.SIGTERM and caught.value.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_live_temporary_is_removed(tmp_path: Path) -> None:
    with live_temporary(tmp_path / ".x.tmp") as temporary:
        temporary.mkdir()
        (temporary / "slice.dcm").write_bytes(b"x")
        assert temporary in live_temporaries()
    assert not temporary.exists() and temporary not in live_temporaries()


_WRITER = """
import sys
from pathlib import Path
import numpy as np
from MedFusionLib.image import Image
from MedFusionLib.io import write_image
from MedFusionLib.signals import Terminated, remove_live_temporaries, termination_raises
target, value, count = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
image = Image.from_array(np.full((120, 64, 64), value, np.float32))
with termination_raises():
    try:
        print("ready", flush=True)
        for _ in range(count):
            write_image(image, target)
    except Terminated as stop:
        remove_live_temporaries()
        sys.exit(stop.code)
"""


def _writer(target: Path, value: float, count: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target), str(value), str(count)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("name", ["out.nii.gz", "series"])
def test_a_signal_during_writing_leaves_no_temporary(signum: int, name: str, tmp_path: Path) -> None:
    target = tmp_path / name
    process = _writer(target, 3.0, 1000)
    time.sleep(0.8)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    assert not _hidden(tmp_path), _hidden(tmp_path)
    if target.exists():  # an earlier, complete write
        assert read_image(target).array.shape == (120, 64, 64)


@pytest.mark.parametrize("name", ["out.nii.gz", "series"])
def test_concurrent_writers_never_mix(name: str, tmp_path: Path) -> None:
    target = tmp_path / name
    writers = [_writer(target, value, 4) for value in (1.0, 2.0)]
    for process in writers:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    values = np.unique(read_image(target).array)
    assert len(values) == 1 and values[0] in (1.0, 2.0)
    assert not _hidden(tmp_path)


def test_the_command_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "MedFusionLib.cli", "demo", "--out", str(out), "--device", "cpu"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and "->" in process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == ["medfusion: stopped by SIGTERM; nothing half-written was left"]
    assert not out.exists()


# --- a full disk -----------------------------------------------------------------------------
@contextlib.contextmanager
def _small_tmpfs(folder: Path, size: str = "64k") -> Iterator[Path]:
    folder.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("name", ["o.nii", "o.nii.gz", "o.mha", "o.nrrd", "o.mhd", "series", "o.png"])
def test_a_full_disk_is_an_error(name: str, tmp_path: Path) -> None:
    shape = (400, 400) if name.endswith(".png") else (40, 64, 64)
    image = Image.from_array(np.random.default_rng(0).random(shape).astype(np.float32))
    with _small_tmpfs(tmp_path / "disk") as disk:
        with pytest.raises(InputError, match="no space left on device") as caught:
            write_image(image, disk / name)
        assert str(disk / name) in str(caught.value)
        assert not list(disk.iterdir())


@pytest.mark.parametrize("suffix", [".h5", ".tfm", ".txt"])
def test_a_full_disk_transform_is_an_error(suffix: str, tmp_path: Path) -> None:
    with _small_tmpfs(tmp_path / "disk") as disk:
        (disk / "fill").write_bytes(b"\0" * (62 * 1024))
        with pytest.raises(InputError, match="no space left on device"):
            write_transform(sitk.Euler3DTransform(), disk / f"t{suffix}")
        assert [p.name for p in disk.iterdir()] == ["fill"]


def test_fuse_to_a_full_disk_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with _small_tmpfs(tmp_path / "disk") as disk:
        code = main(
            ["fuse", str(SAMPLE / "spm_T1.nii.gz"), str(SAMPLE / "spm_PET.nii.gz"), "--method", "average"]
            + ["--device", "cpu", "-o", str(disk / "fused.nii.gz")]
        )
        _one_error_line(capsys.readouterr().err, "fused.nii.gz", "no space left on device")
        assert code == 2 and not list(disk.iterdir())
