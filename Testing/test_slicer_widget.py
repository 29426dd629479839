"""The MedFusion module panel on real Qt widgets (PySide6) and a real MRML scene (issue 15).

See :mod:`slicer_stand_ins` for what is real and what stands in for the Slicer application, the
qMRML/CTK C++ widgets and Slicer's Python modules (parameter node wrapper, scripted-module
classes; set ``SLICER_SOURCE_DIR`` to run on Slicer's own). Each test names the issue item it
covers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import slicer_stand_ins
from conftest import ROOT
from helpers import mni_path

SCRIPT = ROOT / "MedFusion" / "MedFusion.py"

pytest.importorskip("slicer")
_reason = slicer_stand_ins.pyside6_or_reason()
if _reason is not None:
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture()
def harness(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    yield from slicer_stand_ins.install(monkeypatch, tmp_path, SCRIPT)


def _add_volume(harness, path: Path, name: str, **attributes: str):
    from MedFusionLib import mrml
    from MedFusionLib.io import read_image

    node = mrml.volume_node_from_image(read_image(path), harness.scene, name)
    for key, value in attributes.items():
        node.SetAttribute(key, value)
    return node


def _small_pair(harness):
    """The SPM T1 and PET (real data), cropped so that a job takes about a second."""
    from MedFusionLib import mrml
    from MedFusionLib.io import read_image

    nodes = []
    for name in ("spm_T1", "spm_PET"):
        image = read_image(mni_path(name))
        crop = image.with_array(np.ascontiguousarray(image.array[20:44, 20:60, 16:60]))
        nodes.append(mrml.volume_node_from_image(crop, harness.scene, name))
    return nodes


def _wait(harness, panel, *, timeout: float = 120.0) -> None:
    """Let the panel's QTimer poll the job until it is over, as the Qt event loop would."""
    deadline = time.monotonic() + timeout
    while panel._job is not None:
        harness.process_events(0.05)
        assert time.monotonic() < deadline, panel._job.stderr[-2000:] if panel._job else ""


class TestSetup:
    def test_panel_loads_and_binds_every_parameter_to_a_real_widget(self, harness) -> None:
        panel = harness.widget()
        qt = harness.qt
        assert type(panel.ui.methodComboBox) is qt.QComboBox
        assert type(panel.ui.registrationComboBox) is qt.QComboBox
        node = panel._parameterNode
        panel.ui.registrationComboBox.currentIndex = 3  # the user picks B-spline
        assert node.registration == "bspline"
        node.opacity = 0.25
        assert panel.ui.opacitySliderWidget.value == pytest.approx(0.25)
        node.showForeground = False
        assert panel.ui.showForegroundCheckBox.checked is False
        assert panel.ui.applyButton.enabled is False  # no volumes yet
        assert "Select two different input volumes" in panel.ui.applyButton.toolTip
        panel.cleanup()


class TestFloatEditors:
    """Item 1: every registered default and range is shown exactly; Apply sends what is shown."""

    def test_gff_defaults_survive_the_editor_and_the_engine_accepts_them(self, harness) -> None:
        from MedFusionLib.fusion import get_method

        panel = harness.widget()
        combo = panel.ui.methodComboBox
        combo.currentIndex = combo.findData("gff")  # the user picks gff
        assert panel._parameterNode.method == "gff"
        spec = get_method("gff")
        shown = panel._formParameters()
        assert shown == {p.name: p.default for p in spec.parameters}  # eps2 = 1e-6, not 0.0
        spec.resolve_parameters(shown)  # the engine refuses eps2 = 0
        eps2 = panel._parameterWidgets["eps2"][1]
        assert type(eps2) is harness.qt.QDoubleSpinBox
        assert eps2.minimum == 1e-12 and eps2.value == 1e-6
        assert float(eps2.textFromValue(eps2.value)) == 1e-6  # the text the user reads
        panel.cleanup()

    def test_every_float_parameter_of_every_method_is_represented_exactly(self, harness) -> None:
        panel = harness.widget()
        combo = panel.ui.methodComboBox
        checked = 0
        for name, method in panel._methods.items():
            combo.currentIndex = combo.findData(name)
            for spec in method.parameters:
                if spec.type != "float" or spec.choices is not None:
                    continue
                editor = panel._parameterWidgets[spec.name][1]
                assert (editor.value, editor.minimum, editor.maximum) == (spec.default, spec.min, spec.max), (
                    name,
                    spec.name,
                )
                checked += 1
        assert checked >= 20
        panel.cleanup()

    def test_a_stored_value_is_shown_and_sent_as_shown(self, harness) -> None:
        panel = harness.widget()
        node = panel._parameterNode
        node.methodParameters = json.dumps({"eps2": 3.5e-9})  # set from the Python console
        combo = panel.ui.methodComboBox
        node.method = "gff"
        combo.currentIndex = combo.findData("gff")
        editor = panel._parameterWidgets["eps2"][1]
        assert editor.value == 3.5e-9 and float(editor.textFromValue(editor.value)) == 3.5e-9
        editor.value = 0.1234567890123456  # more digits than the editor shows: it keeps what it shows
        assert panel._formParameters()["eps2"] == float(editor.textFromValue(editor.value))
        panel.cleanup()


class TestPythonVersion:
    """Item 2: Slicer 5.10+ (Python 3.10+) is required; older ones are refused with a message."""

    def test_module_file_parses_and_refuses_on_python_3_9(self, harness, monkeypatch) -> None:
        import subprocess
        import sys

        vermin = subprocess.run(
            [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", "--no-tips", "--violations"]
            + ["-t=3.9-", str(SCRIPT)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert vermin.returncode == 0, vermin.stdout + vermin.stderr
        monkeypatch.setattr(sys, "version_info", (3, 9, 10, "final", 0))
        reason = harness.module.unsupportedReason()
        assert "5.10" in reason and "3.9.10" in reason
        panel = harness.widget()
        assert panel.ui.statusLabel.text == reason and panel.ui.applyButton.enabled is False
        with pytest.raises(RuntimeError, match="5.10"):
            harness.module.MedFusionLogic()

    def test_minimum_version_is_declared_everywhere(self) -> None:
        cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
        assert 'Slicer_VERSION VERSION_LESS "5.10"' in cmake and "FATAL_ERROR" in cmake
        for path in (ROOT / "README.md", ROOT / "Docs" / "user-guide.md"):
            assert "Slicer 5.10 or later" in path.read_text(encoding="utf-8"), path


class TestApplyAndCancel:
    """Apply runs the job in the background; cancel and scene close add nothing (items 3, 4)."""

    def test_apply_adds_the_result_made_from_the_widgets_values(self, harness) -> None:
        fixed, moving = _small_pair(harness)
        panel = harness.widget()
        node = panel._parameterNode
        assert (node.fixedVolume, node.movingVolume) == (fixed, moving)
        node.registration = "none"
        node.device = "cpu"
        combo = panel.ui.methodComboBox
        combo.currentIndex = combo.findData("weighted_average")
        panel._parameterWidgets["weight"][1].value = 0.3
        assert panel.ui.applyButton.enabled
        panel.ui.applyButton.click()
        assert panel._job is not None and panel.ui.cancelButton.enabled and not panel.ui.applyButton.enabled
        assert panel._jobContext["spec"]["parameters"] == {"weight": 0.3}
        _wait(harness, panel)
        assert harness.dialogs.errors == []
        output = node.outputVolume
        assert output is not None and output.GetAttribute("MedFusion.Method") == "weighted_average"
        assert json.loads(output.GetAttribute("MedFusion.Parameters")) == {"weight": 0.3}
        assert panel.ui.outputSelector.currentNode() is output
        table = panel.ui.metricsTable
        names = [table.item(row, 0).text() for row in range(table.rowCount)]
        assert names == [*harness.module.DEFAULT_METRICS, "balance"]
        assert panel.ui.statusLabel.text.startswith("Done: weighted_average")
        panel.cleanup()

    def test_a_job_cancelled_after_its_process_finished_adds_nothing(self, harness) -> None:
        _small_pair(harness)
        panel = harness.widget()
        panel._parameterNode.registration = "none"
        panel._parameterNode.device = "cpu"
        before = harness.scene.GetNumberOfNodes()
        panel.ui.applyButton.click()
        job = panel._job
        deadline = time.monotonic() + 120
        while job.process is None or job.process.poll() is None:  # the Qt loop does not run: no poll
            assert time.monotonic() < deadline, job.stderr[-2000:]
            time.sleep(0.05)
        panel.ui.cancelButton.click()
        _wait(harness, panel)
        assert job.cancelled and panel.ui.statusLabel.text == "Cancelled; nothing was added to the scene."
        assert harness.scene.GetNumberOfNodes() == before and panel._parameterNode.outputVolume is None
        assert harness.dialogs.errors == []
        panel.cleanup()

    def test_closing_the_scene_during_a_job_cancels_it_quietly(self, harness) -> None:
        _small_pair(harness)
        panel = harness.widget()
        panel._parameterNode.registration = "rigid"
        panel.ui.applyButton.click()
        job = panel._job
        deadline = time.monotonic() + 60
        while job.pid is None:  # the job's interpreter is running
            job.poll()
            assert time.monotonic() < deadline, job.stderr[-2000:]
            time.sleep(0.05)
        harness.scene.Clear(0)  # File > Close Scene
        harness.process_events(1.0)
        assert panel._job is None and job.cancelled
        assert harness.dialogs.errors == []
        assert "scene was closed" in panel.ui.statusLabel.text
        assert not _alive(job.pid, deadline=time.monotonic() + 5)
        assert panel._parameterNode is not None  # a fresh one, for the new scene
        assert harness.scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0

    def test_cleanup_during_a_job_stops_it_and_never_raises(self, harness) -> None:
        _small_pair(harness)
        panel = harness.widget()
        panel._parameterNode.registration = "rigid"
        panel.ui.applyButton.click()
        job = panel._job
        deadline = time.monotonic() + 60
        while job.pid is None:
            job.poll()
            assert time.monotonic() < deadline, job.stderr[-2000:]
            time.sleep(0.05)
        panel.cleanup()
        panel.cleanup()  # twice: still no exception
        assert not _alive(job.pid, deadline=time.monotonic() + 5) and harness.dialogs.errors == []


def _alive(pid: int, *, deadline: float) -> bool:
    """Whether process ``pid`` is still running at ``deadline`` (polls until then)."""
    import os

    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:  # a zombie child of this test process counts as ended
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return True


class TestSelfTest:
    """Item 5: the module's self-test runs offline on the bundled data, or skips without torch."""

    def test_runs_offline_through_the_background_job(self, harness, monkeypatch) -> None:
        import socket
        import sys

        def no_network(*args, **kwargs):
            raise OSError("network access in the self-test")

        monkeypatch.setattr(socket.socket, "connect", no_network)
        monkeypatch.setitem(sys.modules, "SampleData", None)  # not needed: import fails if tried
        test = harness.module.MedFusionTest()
        test.runTest()
        assert "Test passed" in harness.dialogs.messages
        outputs = [
            n
            for n in (
                harness.scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                for i in range(harness.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
            )
            if n.GetAttribute("MedFusion.Method")
        ]
        assert len(outputs) == 1
        names = {
            n.GetName()
            for n in (
                outputs[0].GetScene().GetNodeByID(outputs[0].GetAttribute(k))
                for k in ("MedFusion.FixedNodeID", "MedFusion.MovingNodeID")
            )
        }
        assert names == {"MedFusionT1", "MedFusionPET"}

    def test_skips_with_a_message_without_torch(self, harness, monkeypatch) -> None:
        import unittest

        monkeypatch.setattr(
            harness.module.MedFusionLogic, "missingRequirements", staticmethod(lambda: ["torch>=2.1"])
        )
        with pytest.raises(unittest.SkipTest, match="torch>=2.1"):
            harness.module.MedFusionTest().test_MedFusion1()


class TestSelectors:
    """Item 6: RGB volumes are offered; auto-pick takes only inputs the selectors show."""

    def test_rgb_volumes_are_listed_and_only_real_inputs_are_picked(self, harness) -> None:
        import slicer

        from MedFusionLib import mrml
        from MedFusionLib.image import Image

        scene = harness.scene
        label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "mask")
        slicer.util.updateVolumeFromArray(label, np.ones((4, 4, 4), np.uint8))
        earlier = mrml.volume_node_from_image(
            Image.from_array(np.random.default_rng(0).random((4, 4, 4)).astype(np.float32)),
            scene,
            "earlier output",
        )
        earlier.SetAttribute("MedFusion.Method", "average")
        rgb = mrml.volume_node_from_image(
            Image.from_array(np.zeros((4, 4, 4, 3), np.uint8), rgb=True), scene, "photo"
        )
        t1 = _add_volume(harness, mni_path("spm_T1"), "T1")
        panel = harness.widget()
        fixedNames = [panel.ui.fixedSelector.itemText(i) for i in range(panel.ui.fixedSelector.count)]
        assert "photo" in fixedNames and "T1" in fixedNames and "mask" not in fixedNames
        outputNames = [panel.ui.outputSelector.itemText(i) for i in range(panel.ui.outputSelector.count)]
        assert "photo" in outputNames
        node = panel._parameterNode
        assert node.fixedVolume is rgb and node.movingVolume is t1  # not the label map, not the output
        node.outputVolume = rgb  # an RGB result is shown, not "None"
        assert panel.ui.outputSelector.currentNode() is rgb
        assert all(
            panel.ui.fixedSelector.accepts(n) for n in harness.module.MedFusionLogic.inputCandidates(scene)
        )
        panel.cleanup()


class TestDisplay:
    """Item 7: display settings act on the current result at once, with the result's own inputs."""

    def test_show_on_top_opacity_and_colours_update_the_views_now(self, harness) -> None:
        fixed, moving = _small_pair(harness)
        other = _add_volume(harness, ROOT / "MedFusionLib" / "sample_data" / "spm_SPECT.nii.gz", "other")
        panel = harness.widget()
        output = panel.logic.process(fixed, moving, method="average", registration="none", device="cpu")
        node = panel._parameterNode
        node.outputVolume = output
        node.movingVolume = other  # the selection changes after the fusion
        composites = [
            harness.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            for i in range(harness.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))
        ]
        node.showForeground = True
        node.opacity = 0.3
        for composite in composites:
            assert composite.GetBackgroundVolumeID() == output.GetID()
            overlay = harness.scene.GetNodeByID(composite.GetForegroundVolumeID())
            assert overlay.GetAttribute("MedFusion.OverlayOf") == moving.GetID()  # the job's moving volume
            assert composite.GetForegroundOpacity() == pytest.approx(0.3)
        node.foregroundLut = "PET-Rainbow2"
        overlay = harness.scene.GetNodeByID(composites[0].GetForegroundVolumeID())
        assert "Rainbow2" in overlay.GetDisplayNode().GetColorNodeID()
        panel.ui.showForegroundCheckBox.checked = False  # the user unticks "show moving on top"
        assert all(c.GetForegroundVolumeID() is None for c in composites)
        panel.cleanup()


class TestDependencies:
    """Item 8: one question at the first Apply, with versions; every failure is a message."""

    def test_no_prompt_on_open_one_prompt_on_apply_and_a_failed_install_is_a_message(
        self, harness, monkeypatch
    ) -> None:
        import sys
        import types

        _small_pair(harness)
        panel = harness.widget()
        harness.process_events(0.2)
        assert harness.dialogs.confirmations == []  # opening the module asks nothing
        monkeypatch.setattr(
            harness.module.MedFusionLogic, "missingRequirements", staticmethod(lambda: ["torch>=2.1"])
        )
        calls = []

        class PyTorchUtilsLogic:
            def installTorch(self, askConfirmation=True, torchVersionRequirement=None, **kwargs):
                calls.append((askConfirmation, torchVersionRequirement))
                raise ConnectionError("download.pytorch.org unreachable")

        monkeypatch.setitem(
            sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic)
        )
        harness.dialogs.answers = [True]
        panel.ui.applyButton.click()  # no exception escapes the slot
        assert len(harness.dialogs.confirmations) == 1 and "torch>=2.1" in harness.dialogs.confirmations[0]
        assert calls == [(False, ">=2.1")]  # the extension does not ask a second time
        assert (
            len(harness.dialogs.errors) == 1
            and "download.pytorch.org unreachable" in harness.dialogs.errors[0]
        )
        assert panel._job is None and panel.ui.applyButton.enabled
        panel.cleanup()

    def test_a_successful_install_goes_on_to_run_the_job(self, harness, monkeypatch) -> None:
        import slicer

        _small_pair(harness)
        panel = harness.widget()
        panel._parameterNode.registration = "none"
        missing = [["PyWavelets>=1.5"]]
        monkeypatch.setattr(
            harness.module.MedFusionLogic, "missingRequirements", staticmethod(lambda: missing[-1])
        )
        installed = []

        def pip_install(requirements):
            installed.append(list(requirements))
            missing.append([])

        monkeypatch.setattr(slicer.util, "pip_install", pip_install)
        harness.dialogs.answers = [True]
        panel.ui.applyButton.click()
        assert installed == [["PyWavelets>=1.5"]] and harness.dialogs.errors == []
        assert panel._job is not None  # Apply went on once the packages were there
        _wait(harness, panel)
        assert panel._parameterNode.outputVolume is not None

    def test_requirements_match_pyproject_and_old_versions_count_as_missing(
        self, harness, monkeypatch
    ) -> None:
        from importlib import metadata

        import tomllib

        pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        assert list(harness.module.REQUIREMENTS) == pyproject["project"]["dependencies"]
        logic = harness.module.MedFusionLogic
        assert logic.missingRequirements() == []
        real = metadata.version
        monkeypatch.setattr(metadata, "version", lambda name: "2.0.1" if name == "torch" else real(name))
        assert logic.missingRequirements() == ["torch>=2.1"]


class TestInterpreter:
    """Item 9: never run a job with the Slicer executable."""

    def test_the_slicer_executable_is_refused(self, harness, monkeypatch, tmp_path) -> None:
        import shutil
        import sys

        monkeypatch.setattr(shutil, "which", lambda name: None)
        monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "SlicerApp-real"))
        with pytest.raises(RuntimeError, match="PythonSlicer was not found"):
            harness.module.MedFusionLogic.pythonExecutable()
        beside = tmp_path / "bin" / "PythonSlicer"
        beside.parent.mkdir()
        beside.write_text("")
        assert harness.module.MedFusionLogic.pythonExecutable() == str(beside)


class TestMetadata:
    """Item 10: what an extension reviewer checks."""

    def test_contributors_licence_screenshot_and_sample_data_notice(self, harness) -> None:
        import re

        from PIL import Image

        cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
        contributors = re.search(r'set\(EXTENSION_CONTRIBUTORS "([^"]*)"\)', cmake).group(1)
        assert all(re.fullmatch(r"[^(),]+ \([^()]+\)", c.strip()) for c in contributors.split(","))
        homepage = re.search(r'set\(EXTENSION_HOMEPAGE "([^"]*)"\)', cmake).group(1)
        assert homepage.endswith("Docs/user-guide.md")
        assert "Apache License 2.0" in (ROOT / "Docs" / "user-guide.md").read_text(encoding="utf-8")
        screenshot = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]*)"\)', cmake).group(1)
        path = ROOT / screenshot.split("/main/", 1)[1]
        with Image.open(path) as picture:  # the panel beside the slice views: wider than one view column
            assert picture.format == "PNG" and picture.width > 600 and picture.height > 600
        module = harness.module
        assert "GPL-2" in module.SAMPLE_DATA_NOTICE and module.SAMPLE_DATA_NOTICE in _acknowledgement(harness)
        nodes = module.loadBundledSamples()
        assert [n.GetName() for n in nodes] == ["MedFusionT1", "MedFusionPET"]
        assert all("GPL-2" in n.GetAttribute("MedFusion.License") for n in nodes)


def _acknowledgement(harness) -> str:
    import types

    parent = types.SimpleNamespace(path=str(SCRIPT))
    harness.module.MedFusion(parent)
    return parent.acknowledgementText
