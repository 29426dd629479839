"""One job description for every front end (issue 15): MedFusionLib.job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import mni_path

from MedFusionLib import job as job_module
from MedFusionLib.errors import InputError, ParameterError
from MedFusionLib.io import read_image
from MedFusionLib.job import FusionJob, run_job


def _crop(name: str):
    image = read_image(mni_path(name))
    return image.with_array(np.ascontiguousarray(image.array[20:44, 20:60, 16:60]))


class TestDescription:
    def test_mapping_round_trip_and_checks(self, tmp_path: Path) -> None:
        mapping = {
            "fixed": str(tmp_path / "a.nii.gz"),
            "moving": str(tmp_path / "b.nii.gz"),
            "output": str(tmp_path / "f.nrrd"),
            "transform": str(tmp_path / "t.h5"),
            "registration": "rigid",
            "method": "gff",
            "parameters": {"eps2": 1e-6},
            "colormap": "none",
            "window_fixed": [40, 400],
            "metrics": ["EN"],
        }
        job = FusionJob.from_mapping(mapping)
        assert job.window_fixed == (40.0, 400.0) and job.metrics == ("EN",) and job.colormap == "none"
        again = FusionJob.from_mapping(json.loads(json.dumps(job.to_mapping())))
        assert again == job

    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            ({"device": "tpu"}, "tpu"),
            ({"interpolation": "cubic"}, "interpolation"),
            ({"method": "gff", "parameters": {"eps2": 0.0}}, "eps2"),
            ({"window_moving": [1]}, "window_moving"),
            ({"metrics": 3}, "metrics"),
        ],
    )
    def test_bad_options_fail_before_reading_in_one_line(self, tmp_path: Path, change, expected) -> None:
        mapping = {"fixed": "missing_a.nii.gz", "moving": "missing_b.nii.gz", **change}
        with pytest.raises(ParameterError, match=expected) as raised:
            FusionJob.from_mapping(mapping)
        assert "\n" not in str(raised.value)

    def test_images_in_memory_cannot_go_to_a_job_file(self) -> None:
        job = FusionJob(fixed=_crop("spm_T1"), moving="b.nii.gz")
        with pytest.raises(ParameterError, match="image in memory"):
            job.to_mapping()


class TestRun:
    def test_files_in_files_out_with_registration_metrics_and_progress(self, tmp_path: Path) -> None:
        output, transform = tmp_path / "fused.nrrd", tmp_path / "t.tfm"
        events = []
        job = FusionJob(
            fixed=str(mni_path("spm_T1")),
            moving=str(mni_path("spm_PET")),
            output=str(output),
            transform=str(transform),
            registration="rigid",
            method="average",
            device="cpu",
            metrics=("EN",),
        )
        result = run_job(job, emit=lambda stage, progress, message: events.append((stage, progress)))
        stages = [stage for stage, _ in events]
        assert stages[0] == "reading" and {"registering", "fusing", "writing", "scoring"} <= set(stages)
        assert [p for _, p in events] == sorted(p for _, p in events)
        summary = result.summary()
        assert summary["output"] == str(output) and summary["transform"] == str(transform)
        assert summary["registration"]["type"] == "rigid" and "EN" in summary["metrics"]
        assert sitk.ReadImage(str(output)).GetSize() == sitk.ReadImage(str(mni_path("spm_T1"))).GetSize()
        assert transform.is_file()

    def test_images_in_memory_and_nothing_written(self, tmp_path: Path) -> None:
        t1, pet = _crop("spm_T1"), _crop("spm_PET")
        result = run_job(FusionJob(fixed=t1, moving=pet, method="average", device="cpu"))
        assert result.output is None and result.fusion.image.size == t1.size
        assert result.summary()["fixed"] == "fixed image" and list(tmp_path.iterdir()) == []

    def test_a_failure_after_writing_removes_the_outputs(self, tmp_path: Path, monkeypatch) -> None:
        output = tmp_path / "fused.nrrd"
        job = FusionJob(
            fixed=_crop("spm_T1"),
            moving=_crop("spm_PET"),
            output=str(output),
            method="average",
            metrics=("EN",),
        )

        def broken(*args, **kwargs):
            raise InputError("scoring failed")

        monkeypatch.setattr(job_module, "_score", broken)
        with pytest.raises(InputError, match="scoring failed"):
            run_job(job)
        assert list(tmp_path.iterdir()) == []


class TestEveryFrontEndRunsTheJob:
    """The CLI, the background process and the MRML bridge all go through run_job."""

    @pytest.fixture()
    def calls(self, monkeypatch):
        seen: list[FusionJob] = []
        real = job_module.run_job

        def recording(job, **kwargs):
            seen.append(job)
            return real(job, **kwargs)

        monkeypatch.setattr(job_module, "run_job", recording)
        import MedFusionLib.background as background
        import MedFusionLib.cli as cli

        monkeypatch.setattr(cli, "run_job", recording)
        monkeypatch.setattr(background, "run_job", recording)
        try:
            import MedFusionLib.mrml as mrml

            monkeypatch.setattr(mrml, "run_job", recording)
        except ImportError:
            pass
        return seen

    def test_cli_fuse(self, calls, tmp_path: Path) -> None:
        from MedFusionLib.cli import main

        out = tmp_path / "f.nii.gz"
        args = [
            "fuse",
            str(mni_path("spm_T1")),
            str(mni_path("spm_PET")),
            "-o",
            str(out),
            "--method",
            "weighted_average",
            "--set",
            "weight=0.25",
            "--device",
            "cpu",
        ]
        assert main(args) == 0
        assert len(calls) == 1 and calls[0].parameters == {"weight": 0.25} and out.is_file()

    def test_background_process_main(self, calls, tmp_path: Path, capsys) -> None:
        from MedFusionLib.background import main

        job_file = tmp_path / "job.json"
        job_file.write_text(
            json.dumps(
                {
                    "fixed": str(mni_path("spm_T1")),
                    "moving": str(mni_path("spm_PET")),
                    "output": str(tmp_path / "f.nrrd"),
                    "method": "average",
                    "device": "cpu",
                }
            )
        )
        assert main([str(job_file)]) == 0
        assert len(calls) == 1 and calls[0].method == "average"
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert lines[-1]["stage"] == "done" and "pid" in lines[0]

    def test_mrml_bridge(self, calls) -> None:
        pytest.importorskip("slicer")
        from MedFusionLib import mrml

        with mrml.new_scene() as headless:
            fixed = mrml.volume_node_from_image(_crop("spm_T1"), headless.scene, "T1")
            moving = mrml.volume_node_from_image(_crop("spm_PET"), headless.scene, "PET")
            output = mrml.fuse_volume_nodes(
                fixed, moving, method="average", registration="none", device="cpu"
            )
            assert output.GetAttribute("MedFusion.Method") == "average"
        assert len(calls) == 1 and calls[0].name_fixed == "T1"
