"""The Slicer module's decisions that need neither Qt nor Slicer (:mod:`MedFusionLib.slicer_support`)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from importlib import metadata

import pytest
from conftest import ROOT

from MedFusionLib import slicer_support as support


class TestRequirements:
    def test_requirements_are_pyprojects_dependencies(self) -> None:
        import tomllib

        pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
        assert list(support.REQUIREMENTS) == pyproject["project"]["dependencies"]

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2.13.0+cpu", (2, 13, 0)),
            ("1.5", (1, 5)),
            ("10.0.0rc1", (10, 0, 0)),
            ("0.4.dev0", (0, 4)),
            ("", ()),
        ],
    )
    def test_version_tuple(self, text: str, expected: tuple[int, ...]) -> None:
        assert support.version_tuple(text) == expected

    def test_split_requirement_and_torch(self) -> None:
        assert support.split_requirement("torch>=2.1") == ("torch", "2.1")
        assert support.split_torch(["numpy>=1.24", "torch>=2.1", "tqdm>=4.60"]) == (
            ">=2.1",
            ["numpy>=1.24", "tqdm>=4.60"],
        )
        assert support.split_torch(["pillow>=10"]) == (None, ["pillow>=10"])

    def test_missing_too_old_and_uninstallable_requirements(self, monkeypatch) -> None:
        assert support.missing_requirements() == []  # the test environment has them all
        real = metadata.version
        monkeypatch.setattr(metadata, "version", lambda name: "2.0.1" if name == "torch" else real(name))
        assert support.missing_requirements() == ["torch>=2.1"]
        assert support.missing_requirements(["no-such-package-medfusion>=1"]) == [
            "no-such-package-medfusion>=1"
        ]
        assert support.missing_requirements(["PyWavelets>=1.5", "pillow>=10"]) == []  # import names differ

    def test_unsupported_reason_names_the_versions(self, monkeypatch) -> None:
        assert support.unsupported_reason() is None
        monkeypatch.setattr(sys, "version_info", (3, 9, 10, "final", 0))
        reason = support.unsupported_reason(lambda text: "[tr] " + text)  # every text goes through ``tr``
        assert "5.10" in reason and "3.9.10" in reason and reason.startswith("[tr] MedFusion needs")

    def test_module_side_parses_on_python_3_9(self) -> None:
        """MedFusion.py imports this module before it can refuse an old Slicer."""
        pytest.importorskip("vermin")
        paths = [ROOT / "MedFusionLib" / "slicer_support.py", ROOT / "MedFusionLib" / "__init__.py"]
        result = subprocess.run(
            [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", "--no-tips", "--violations"]
            + ["-t=3.9-", *map(str, paths)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


class TestFloatEditor:
    @pytest.mark.parametrize(
        ("values", "decimals"),
        [
            ((0.5,), 1),
            ((1e-6,), 6),
            ((3.5e-9,), 10),
            ((1e-12, 1e-6), 12),
            ((None, math.inf, 2.0), 1),
            ((0.1234,), 4),
        ],
    )
    def test_decimals_show_each_value_exactly(self, values, decimals) -> None:
        assert support.float_decimals(*values) == decimals
        for value in values:
            if value is not None and math.isfinite(value):
                assert round(value, decimals) == value

    def test_gff_eps2_range_default_and_step(self) -> None:
        editor = support.float_editor(1e-12, None, 1e-6, 1e-6)
        assert (editor.decimals, editor.minimum, editor.maximum) == (12, 1e-12, 1e9)
        assert editor.single_step == pytest.approx(1e-6)
        assert round(editor.minimum, editor.decimals) == 1e-12  # what QDoubleSpinBox keeps

    def test_step_is_the_defaults_magnitude_but_never_below_the_last_decimal(self) -> None:
        assert support.float_editor(0.0, 1.0, 0.5, 0.5).single_step == pytest.approx(0.1)
        assert support.float_editor(0.0, 100.0, 20.0, 20.0).single_step == pytest.approx(10.0)
        assert support.float_editor(None, None, 0.0, 0.0).single_step == pytest.approx(1.0)


class TestInterpreter:
    def test_python_slicer_on_path_or_beside_the_executable(self, tmp_path) -> None:
        assert support.background_python("/x/SlicerApp-real", which=lambda name: "/opt/PythonSlicer") == (
            "/opt/PythonSlicer"
        )
        beside = tmp_path / ("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
        beside.write_text("")
        assert support.background_python(str(tmp_path / "SlicerApp-real"), which=lambda name: None) == str(
            beside
        )

    def test_a_python_executable_is_used_and_the_slicer_application_is_refused(self) -> None:
        none = lambda name: None  # noqa: E731
        assert support.background_python("/usr/bin/python3.12", which=none) == "/usr/bin/python3.12"
        assert support.background_python("/opt/Slicer/bin/SlicerApp-real", which=none) is None
        assert support.background_python(None, which=none) is None


class _Node:
    def __init__(self, name: str, cls: str = "vtkMRMLScalarVolumeNode", hidden: bool = False, **attributes):
        self.name, self.cls, self.hidden, self.attributes = name, cls, hidden, attributes

    def GetClassName(self) -> str:
        return self.cls

    def GetHideFromEditors(self) -> bool:
        return self.hidden

    def GetAttribute(self, key: str):
        return self.attributes.get(key)

    def GetID(self) -> str:
        return self.name


class _Scene:
    def __init__(self, nodes):
        self.nodes = nodes

    def GetNodes(self):
        nodes = self.nodes

        class Collection:
            def GetNumberOfItems(self):
                return len(nodes)

            def GetItemAsObject(self, index):
                return nodes[index]

        return Collection()


class TestScene:
    def test_input_candidates_are_what_the_selectors_show_and_not_results(self) -> None:
        nodes = [
            _Node("label", "vtkMRMLLabelMapVolumeNode"),
            _Node("result", **{"MedFusion.Method": "average"}),
            _Node("overlay", hidden=True, **{"MedFusion.OverlayOf": "x"}),
            _Node("hidden", hidden=True),
            _Node("rgb", "vtkMRMLVectorVolumeNode"),
            _Node("t1"),
        ]
        assert [n.name for n in support.input_candidates(_Scene(nodes))] == ["rgb", "t1"]
        assert support.input_candidates(None) == []

    def test_input_candidates_on_a_real_scene(self) -> None:
        slicer = pytest.importorskip("slicer")
        scene = slicer.vtkMRMLScene()
        label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "mask")
        t1 = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T1")
        rgb = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo")
        assert support.input_candidates(scene) == [t1, rgb] and label not in support.input_candidates(scene)

    def test_pick_inputs_keeps_a_choice_and_never_picks_one_volume_twice(self) -> None:
        a, b, c = _Node("a"), _Node("b"), _Node("c")
        assert support.pick_inputs([a, b, c], None, None) == (a, b)
        assert support.pick_inputs([a, b, c], b, None) == (b, a)
        assert support.pick_inputs([a, b, c], None, c) == (a, c)
        assert support.pick_inputs([a], None, None) == (a, None)
        assert support.pick_inputs([], None, None) == (None, None)

    def test_display_state(self) -> None:
        assert support.display_state(None, True, "PET-Heat", 0.5) is None
        assert support.display_state(_Node("out"), 1, "Grey", 1) == ("out", True, "Grey", 1.0)


class TestJob:
    def test_parameters_from_json(self) -> None:
        assert support.parameters_from_json('{"eps2": 3.5e-09}') == {"eps2": 3.5e-9}
        assert support.parameters_from_json(None) == {} and support.parameters_from_json("") == {}
        assert support.parameters_from_json("not json") == {} and support.parameters_from_json("[1]") == {}

    def test_progress_update_keeps_the_last_progress_and_message_but_not_an_error(self) -> None:
        events = [
            {"stage": "reading", "progress": 0.1, "message": "fixed"},
            {"stage": "fusing", "progress": 0.55, "message": "slab 2/4"},
            {"stage": "error", "progress": 0.0, "message": "boom"},
        ]
        assert support.progress_update(events) == (0, "fusing: slab 2/4")
        assert support.progress_update(events[:2]) == (55, "fusing: slab 2/4")
        assert support.progress_update([]) == (None, None)


class TestTexts:
    def test_readout_rows(self) -> None:
        rows = support.readout_rows(
            {"metrics": {"EN": 6.5, "SSIM": None, "balance": 0.12345}, "clinical": None}
        )
        assert rows == [("EN", "6.5", ""), ("SSIM", "n/a", ""), ("balance", "0.1235", "")]
        rows = support.readout_rows({"clinical": {"error": "unknown modality"}})
        assert rows == [("Lesion readout", "n/a", "unknown modality")]
        rows = support.readout_rows(
            {
                "clinical": {
                    "conspicuity_kept": 0.91,
                    "anatomy_kept": None,
                    "lesion_voxels": 40,
                    "colormap": "hot",
                }
            }
        )
        assert rows[0][:2] == ("Conspicuity kept", "0.91") and "40 lesion voxels" in rows[0][2]
        assert rows[1][:2] == ("Anatomy kept", "n/a")

    def test_result_status(self) -> None:
        result = {
            "method": "average",
            "seconds": 1.25,
            "device": "cpu",
            "colormap": None,
            "registration": {"type": "rigid", "seconds": 3.0, "warnings": ["few samples"]},
        }
        assert support.result_status(result) == (
            "Done: average in 1.2 s on cpu. Gray output. Registration rigid in 3.0 s. Warning: few samples"
        )
        result.update(colormap="neutral_heat", registration=None)
        assert support.result_status(result) == "Done: average in 1.2 s on cpu. Colour table neutral_heat."

    def test_choices_and_recommendation(self) -> None:
        from MedFusionLib.colormaps import list_colormaps
        from MedFusionLib.recommended import GRAY_METHOD, recommended

        choices = support.colormap_choices()
        assert [value for _, value, _ in choices] == ["auto", *list_colormaps(), "none"]
        assert all(tip for _, _, tip in choices)
        text = support.recommendation_text()
        assert GRAY_METHOD in text and recommended("CT", "PET").method in text
        devices, description = support.device_choices()
        assert devices[0] == ("auto", "auto") and devices[-1] == ("CPU", "cpu") and "torch" in description

    def test_bundled_samples_exist(self) -> None:
        paths = support.bundled_sample_paths()
        assert list(paths) == ["MedFusionT1", "MedFusionPET"] and all(
            os.path.isfile(p) for p in paths.values()
        )
        assert "GPL-2" in support.SAMPLE_DATA_NOTICE and support.SAMPLE_DATA_LICENSE.startswith("GPL-2.0")
