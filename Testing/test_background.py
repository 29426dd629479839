"""The background job: a separate process that reports JSON progress lines (MedFusionLib.background)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import mni_path

from MedFusionLib.background import EXIT_INPUT, BackgroundJob, check_job
from MedFusionLib.errors import InputError, ParameterError


def _run(
    job: dict, workdir: Path, *, timeout: float = 60.0, prepare: Callable[[], None] | None = None
) -> tuple[BackgroundJob, list[float]]:
    """Start ``job`` and poll it as a GUI timer would; returns the job and each poll's duration."""
    runner = BackgroundJob()
    runner.start(job, workdir, prepare=prepare)
    durations = []
    deadline = time.monotonic() + timeout
    while not runner.finished:
        start = time.perf_counter()
        runner.poll()
        durations.append(time.perf_counter() - start)
        assert time.monotonic() < deadline, f"job did not finish in {timeout} s: {runner.stderr[-2000:]}"
        time.sleep(0.05)
    runner.poll()
    return runner, durations


class TestJob:
    def test_fuses_a_real_pair_with_increasing_progress(self, tmp_path: Path) -> None:
        output = tmp_path / "out" / "fused.nii.gz"
        output.parent.mkdir()
        job = {
            "fixed": mni_path("spm_T1"),
            "moving": mni_path("spm_PET"),
            "output": output,
            "method": "average",
            "device": "cpu",
            "metrics": ["EN", "SSIM"],
        }
        runner, durations = _run(job, tmp_path / "work")
        assert runner.returncode == 0, runner.stderr
        stages = [event["stage"] for event in runner.events]
        assert stages[0] == "reading" and stages[-1] == "done"
        assert {"fusing", "writing", "scoring"} <= set(stages)
        progress = [event["progress"] for event in runner.events]
        assert progress == sorted(progress) and progress[-1] == 1.0
        assert all(set(event) >= {"stage", "progress", "message"} for event in runner.events)
        assert max(durations) < 0.5  # the GUI requirement: polling never blocks

        result = runner.result
        assert result["output"] == str(output) and result["method"] == "average"
        assert result["registration"] is None and result["transform"] is None
        assert set(result["metrics"]) >= {"EN", "SSIM"}
        fused = sitk.ReadImage(str(output))
        fixed = sitk.ReadImage(str(mni_path("spm_T1")))
        assert fused.GetSize() == fixed.GetSize()
        np.testing.assert_allclose(fused.GetSpacing(), fixed.GetSpacing())
        np.testing.assert_allclose(fused.GetOrigin(), fixed.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(fused.GetDirection(), fixed.GetDirection(), atol=1e-6)
        array = sitk.GetArrayViewFromImage(fused)
        assert 0.0 <= array.min() and array.max() <= 1.0 and array.std() > 0.01
        assert sorted(p.name for p in output.parent.iterdir()) == ["fused.nii.gz"]  # no temporary files

    def test_missing_input_is_an_input_error_and_writes_nothing(self, tmp_path: Path) -> None:
        missing = tmp_path / "no_such_pet.nii.gz"
        output = tmp_path / "fused.nii.gz"
        job = {
            "fixed": mni_path("spm_T1"),
            "moving": missing,
            "output": output,
            "registration": "rigid",
            "transform": tmp_path / "t.tfm",
        }
        runner, _ = _run(job, tmp_path / "work")
        assert runner.returncode == EXIT_INPUT
        last = runner.events[-1]
        assert (
            last["stage"] == "error" and str(missing) in last["message"] and last["exit_code"] == EXIT_INPUT
        )
        assert runner.error == last["message"] and runner.result is None
        assert "\n" not in last["message"]
        assert not output.exists() and not (tmp_path / "t.tfm").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]

    def test_unknown_parameter_is_an_input_error(self, tmp_path: Path) -> None:
        job = {
            "fixed": mni_path("spm_T1"),
            "moving": mni_path("spm_PET"),
            "output": tmp_path / "f.nii.gz",
            "method": "average",
            "parameters": {"no_such": 1},
        }
        runner, _ = _run(job, tmp_path / "work")
        assert runner.returncode == EXIT_INPUT and "no_such" in runner.error
        assert not (tmp_path / "f.nii.gz").exists()

    def test_cancel_ends_a_running_registration_and_leaves_no_output(self, tmp_path: Path) -> None:
        output = tmp_path / "fused.nrrd"
        transform = tmp_path / "t.tfm"
        job = {
            "fixed": mni_path("colin27_ch2_1mm"),
            "moving": mni_path("spm_PET"),
            "output": output,
            "transform": transform,
            "registration": "affine",
            "device": "cpu",
        }
        runner = BackgroundJob(kill_after=1.0)
        runner.start(job, tmp_path / "work")
        deadline = time.monotonic() + 30
        while not any(event["stage"] == "registering" for event in runner.events):
            runner.poll()
            assert not runner.finished, runner.stderr[-2000:]
            assert time.monotonic() < deadline, "registration did not start"
            time.sleep(0.05)
        time.sleep(0.5)
        start = time.monotonic()
        runner.cancel()
        assert time.monotonic() - start < 0.5  # never blocks the GUI thread
        while not runner.finished:
            runner.poll()
            assert time.monotonic() - start < 5.0, "the cancelled job is still running"
            time.sleep(0.05)
        runner.poll()
        assert not runner.running and runner.returncode != 0
        assert runner.cancelled and runner.error == "cancelled" and runner.result is None
        assert not output.exists() and not transform.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


class TestPrepare:
    """Input files written on a worker thread before the process starts (the Slicer module's Apply)."""

    def _job(self, tmp_path: Path) -> dict:
        inputs = tmp_path / "inputs"
        return {
            "fixed": inputs / "t1.nii.gz",
            "moving": inputs / "pet.nii.gz",
            "output": tmp_path / "fused.nii.gz",
            "method": "average",
            "device": "cpu",
        }

    def test_start_returns_at_once_and_the_job_runs_once_the_inputs_exist(self, tmp_path: Path) -> None:
        job = self._job(tmp_path)

        def write_inputs() -> None:
            time.sleep(0.5)  # a slow write: start() must not wait for it
            job["fixed"].parent.mkdir()
            shutil.copy(mni_path("spm_T1"), job["fixed"])
            shutil.copy(mni_path("spm_PET"), job["moving"])

        begin = time.monotonic()
        runner = BackgroundJob()
        runner.start(job, tmp_path / "work", prepare=write_inputs)
        assert time.monotonic() - begin < 0.3 and runner.running and not runner.finished
        assert runner.process is None  # still preparing
        deadline = time.monotonic() + 60
        while not runner.finished:
            runner.poll()
            assert time.monotonic() < deadline, runner.stderr[-2000:]
            time.sleep(0.05)
        assert runner.returncode == 0 and runner.result["method"] == "average", runner.error
        assert job["output"].is_file()

    def test_a_failed_preparation_ends_the_job_with_its_reason(self, tmp_path: Path) -> None:
        job = self._job(tmp_path)

        def fail() -> None:
            raise InputError("cannot write inputs/t1.nii.gz: No space left on device")

        runner, _ = _run(job, tmp_path / "work", prepare=fail)
        assert runner.process is None and runner.returncode == EXIT_INPUT and not runner.running
        assert (
            runner.error == "preparing the job failed: cannot write inputs/t1.nii.gz: No space left on device"
        )
        assert [event["stage"] for event in runner.events] == ["error"]
        assert not job["output"].exists()

    def test_cancel_while_preparing_never_starts_the_process(self, tmp_path: Path) -> None:
        job = self._job(tmp_path)
        written = []

        def slow_write() -> None:
            time.sleep(1.0)
            written.append(True)

        runner = BackgroundJob()
        runner.start(job, tmp_path / "work", prepare=slow_write)
        begin = time.monotonic()
        runner.cancel()
        assert time.monotonic() - begin < 0.1  # does not wait for the preparation
        assert runner.wait(timeout=10) != 0
        assert written and runner.process is None and runner.finished
        assert runner.cancelled and runner.error == "cancelled" and not job["output"].exists()


STS019 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sts" / "STS_019"


class TestColourJobs:
    """Method null means the recommended fusion; the colour table travels in the job (issue 13)."""

    def test_recommended_colour_fusion_with_the_lesion_readout(self, tmp_path: Path) -> None:
        from MedFusionLib.recommended import recommended

        output = tmp_path / "fused.nrrd"
        job = {
            "fixed": STS019 / "CT_image.nii.gz",
            "moving": STS019 / "PET_image.nii.gz",
            "output": output,
            "method": None,
            "modality_fixed": "CT",
            "modality_moving": "PET",
            "lesion": STS019 / "CT_mask.nii.gz",
            "device": "cpu",
        }
        runner, _ = _run(job, tmp_path / "work", timeout=120)
        assert runner.returncode == 0, runner.stderr
        choice = recommended("CT", "PET")
        result = runner.result
        assert result["recommended"] is True and result["method"] == choice.method
        assert result["colormap"] == choice.colormap and result["rgb"] is True
        assert any(
            "recommended for the pair" in e["message"] for e in runner.events if e["stage"] == "fusing"
        )
        assert sitk.ReadImage(str(output)).GetNumberOfComponentsPerPixel() == 3
        clinical = result["clinical"]
        assert clinical["colormap"] == choice.colormap and clinical["modalities"] == ["CT", "PET"]
        assert 0.6 < clinical["conspicuity_kept"] < 1.3 and 0.85 < clinical["anatomy_kept"] <= 1.0

    def test_gray_on_request_and_a_readout_that_cannot_be_made(self, tmp_path: Path) -> None:
        job = {
            "fixed": STS019 / "CT_image.nii.gz",
            "moving": STS019 / "PET_image.nii.gz",
            "output": tmp_path / "fused.nrrd",
            "colormap": "none",
            "lesion": STS019 / "CT_mask.nii.gz",  # no modalities given: the readout says why it is missing
            "device": "cpu",
        }
        runner, _ = _run(job, tmp_path / "work", timeout=120)
        assert runner.returncode == 0, runner.stderr
        assert runner.result["colormap"] is None and runner.result["rgb"] is False
        assert "unknown modality" in runner.result["clinical"]["error"]

    def test_a_table_for_a_pair_without_modalities_is_an_input_error(self, tmp_path: Path) -> None:
        job = {
            "fixed": STS019 / "CT_image.nii.gz",
            "moving": STS019 / "PET_image.nii.gz",
            "output": tmp_path / "fused.nrrd",
            "colormap": "inferno",
            "device": "cpu",
        }
        runner, _ = _run(job, tmp_path / "work", timeout=120)
        assert runner.returncode == EXIT_INPUT and "cannot colour-fuse" in runner.error
        assert not (tmp_path / "fused.nrrd").exists()


class TestCheckJob:
    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            ({"registration": "elastic"}, "unknown registration type"),
            ({"colour": 1}, "unknown job key"),
            ({"output": ""}, "no 'output'"),
            ({"transform": "t.mat", "registration": "rigid"}, "must end in"),
            ({"transform": "t.tfm"}, "registration is 'none'"),
            ({"parameters": [1, 2]}, "must be an object"),
            ({"colormap": "sunset"}, "unknown colour table 'sunset'"),
            ({"colormap": 3}, "colour table name"),
            ({"method": 3}, "method name or null"),
            ({"lesion": ["a"]}, "lesion must be a file path"),
        ],
    )
    def test_refuses_malformed_jobs(self, tmp_path: Path, change: dict, expected: str) -> None:
        job = {"fixed": "a.nii.gz", "moving": "b.nii.gz", "output": str(tmp_path / "f.nii.gz"), **change}
        if "transform" in change:
            job["transform"] = str(tmp_path / change["transform"])
        with pytest.raises(ParameterError, match=expected):
            check_job(job)

    def test_job_file_round_trips_paths(self, tmp_path: Path) -> None:
        runner = BackgroundJob(python="/bin/true")
        job_file = runner.start(
            {"fixed": tmp_path / "a.nii.gz", "moving": "b", "output": "c.nii.gz"}, tmp_path
        )
        runner.wait(10)
        assert json.loads(job_file.read_text())["fixed"] == str(tmp_path / "a.nii.gz")
        assert runner.finished and runner.returncode == 0 and runner.result is None


LAUNCHER = """#!{python}
# Like PythonSlicer (CTK AppLauncher): start the real interpreter as a child that shares this
# process's pipes, and wait. The child is put in its own session, so that signalling this
# launcher's process group does not reach it, as killing the launcher on Windows does not.
import subprocess, sys
sys.exit(subprocess.call([{python!r}, *sys.argv[1:]], start_new_session=True))
"""


class TestCancelBehindALauncher:
    """Issue 15 item 3: cancel stops the job's real interpreter even behind a launcher."""

    def test_cancel_reaches_the_interpreter_the_launcher_started(self, tmp_path: Path) -> None:
        import stat
        import sys

        launcher = tmp_path / "PythonSlicer"
        launcher.write_text(LAUNCHER.format(python=sys.executable))
        launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
        output = tmp_path / "fused.nrrd"
        job = {
            "fixed": mni_path("colin27_ch2_1mm"),
            "moving": mni_path("spm_PET"),
            "output": output,
            "registration": "affine",
            "device": "cpu",
        }
        runner = BackgroundJob(str(launcher), kill_after=1.0)
        runner.start(job, tmp_path / "work")
        deadline = time.monotonic() + 60
        while not any(event["stage"] == "registering" for event in runner.events):
            runner.poll()
            assert not runner.finished, runner.stderr[-2000:]
            assert time.monotonic() < deadline, "registration did not start"
            time.sleep(0.05)
        child = runner.pid
        assert child is not None and child != runner.process.pid  # the launcher's child reported itself
        runner.cancel()
        start = time.monotonic()
        while not runner.finished:
            runner.poll()
            assert time.monotonic() - start < 10.0, "the interpreter behind the launcher is still running"
            time.sleep(0.05)
        assert runner.cancelled and runner.error == "cancelled" and runner.result is None
        assert not _running(child) and not output.exists()


def _running(pid: int, *, wait: float = 5.0) -> bool:
    """Whether process ``pid`` still runs after up to ``wait`` seconds (a zombie has ended)."""
    import os

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        status = Path(f"/proc/{pid}/status")
        if status.exists() and "\nState:\tZ" in status.read_text():
            return False
        time.sleep(0.05)
    return True


class TestPrelaunch:
    """A process started before its job (the web app's spare): the engine is imported in advance."""

    def test_a_prelaunched_process_runs_the_job_it_is_given(self, tmp_path: Path) -> None:
        runner = BackgroundJob()
        runner.prelaunch(tmp_path)
        time.sleep(0.5)
        assert runner.running and not runner.poll()  # waiting: alive, nothing reported yet
        output = tmp_path / "fused.nrrd"
        job = {
            "fixed": mni_path("spm_T1"),
            "moving": mni_path("spm_PET"),
            "output": output,
            "method": "average",
        }
        runner.start(job, tmp_path)
        assert runner.wait(timeout=60) == 0, runner.stderr
        assert runner.result is not None and runner.result["method"] == "average"
        assert output.is_file() and not (tmp_path / ".job.json.partial").exists()
        with pytest.raises(RuntimeError):
            runner.start(job, tmp_path)  # one job per process

    def test_a_waiting_process_is_cancelled_and_takes_no_job_in_another_folder(self, tmp_path: Path) -> None:
        runner = BackgroundJob()
        runner.prelaunch(tmp_path / "a")
        with pytest.raises(RuntimeError):
            runner.start(
                {"fixed": "x", "moving": "y", "output": str(tmp_path / "b" / "o.nrrd")}, tmp_path / "b"
            )
        runner.cancel()
        assert runner.wait(timeout=10) != 0  # 3 from the watchdog, or -15 if still starting up
        assert runner.error == "cancelled" and not (tmp_path / "a" / "job.json").exists()
