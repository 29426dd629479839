"""What can be checked of the Slicer module without the Slicer application.

The .ui, the CMake files, the catalog entry and the icon are checked as files; MedFusion.py is
compiled and parsed, and imported with small stand-ins for the Qt/application layer that
slicer-core lacks (``qt``, ``slicer.i18n``, ``slicer.parameterNodeWrapper``,
``slicer.ScriptedLoadableModule``) so that its logic runs on a real MRML scene.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import py_compile
import re
import sys
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from helpers import mni_path

MODULE_DIR = ROOT / "MedFusion"
SCRIPT = MODULE_DIR / "MedFusion.py"
UI = MODULE_DIR / "Resources" / "UI" / "MedFusion.ui"
ICON = MODULE_DIR / "Resources" / "Icons" / "MedFusion.png"
CATALOG = ROOT / "Resources" / "ExtensionsIndex" / "MedFusion.json"


def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


class TestFiles:
    def test_ui_parses_and_has_every_widget_the_script_uses(self) -> None:
        widgets = _ui_widgets()
        used = set(re.findall(r"self\.ui\.(\w+)", SCRIPT.read_text(encoding="utf-8")))
        assert used, "MedFusion.py uses no widgets"
        assert used <= set(widgets), f"missing in the .ui: {sorted(used - set(widgets))}"
        expected = {
            "fixedSelector": "qMRMLNodeComboBox",
            "movingSelector": "qMRMLNodeComboBox",
            "outputSelector": "qMRMLNodeComboBox",
            "registrationComboBox": "QComboBox",
            "methodComboBox": "QComboBox",
            "parametersFrame": "QWidget",
            "deviceComboBox": "QComboBox",
            "deviceLabel": "QLabel",
            "showForegroundCheckBox": "QCheckBox",
            "foregroundLutComboBox": "QComboBox",
            "opacitySliderWidget": "ctkSliderWidget",
            "applyButton": "QPushButton",
            "cancelButton": "QPushButton",
            "progressBar": "QProgressBar",
            "statusLabel": "QLabel",
            "metricsTable": "QTableWidget",
        }
        for name, cls in expected.items():
            assert widgets[name].get("class") == cls, name
        sections = {
            w.find("property/string").text
            for w in widgets.values()
            if w.get("class") == "ctkCollapsibleButton"
        }
        assert sections == {"Inputs", "Registration", "Fusion", "Device", "Output", "Display"}

    def test_ui_parameter_names_match_the_parameter_node(self) -> None:
        tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
        node_class = next(
            n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MedFusionParameterNode"
        )
        fields = {n.target.id for n in node_class.body if isinstance(n, ast.AnnAssign)}
        assert fields >= {
            "fixedVolume", "movingVolume", "registration", "method", "methodParameters", "device",
            "outputVolume", "showForeground", "foregroundLut", "opacity",
        }  # fmt: skip
        bound = {}
        for widget in _ui_widgets().values():
            for prop in widget.findall("property"):
                if prop.get("name") == "SlicerParameterName":
                    bound[widget.get("name")] = prop.find("string").text
        assert set(bound.values()) <= fields
        assert bound["fixedSelector"] == "fixedVolume" and bound["opacitySliderWidget"] == "opacity"
        combo_items = {
            w.get("name"): [i.find("property/string").text for i in w.findall("item")]
            for w in _ui_widgets().values()
            if w.get("class") == "QComboBox"
        }
        assert combo_items["registrationComboBox"] == ["none", "rigid", "affine", "bspline"]
        assert combo_items["foregroundLutComboBox"] == ["PET-Heat", "PET-Rainbow2", "Grey"]
        selector = _ui_widgets()["fixedSelector"]
        types_ = [s.text for s in selector.find("property[@name='nodeTypes']/stringlist")]
        assert types_ == ["vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"]

    def test_script_compiles_and_has_the_template_classes(self, tmp_path: Path) -> None:
        py_compile.compile(str(SCRIPT), cfile=str(tmp_path / "MedFusion.pyc"), doraise=True)
        tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
        classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        assert {
            "MedFusion",
            "MedFusionWidget",
            "MedFusionLogic",
            "MedFusionTest",
            "MedFusionParameterNode",
        } <= set(classes)
        methods = {f.name for f in classes["MedFusionWidget"].body if isinstance(f, ast.FunctionDef)}
        assert {
            "setup",
            "cleanup",
            "enter",
            "exit",
            "onApplyButton",
            "onCancelButton",
            "onPollJob",
        } <= methods
        assert {"checkDependencies", "initializeParameterNode", "setParameterNode"} <= methods
        tests = {f.name for f in classes["MedFusionTest"].body if isinstance(f, ast.FunctionDef)}
        assert {"setUp", "runTest", "test_MedFusion1"} <= tests
        decorators = [ast.unparse(d) for d in classes["MedFusionParameterNode"].decorator_list]
        assert decorators == ["parameterNodeWrapper"]

    def test_gui_thread_does_no_heavy_work(self) -> None:
        """The widget never calls the engine's heavy functions; only the logic's background job."""
        tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
        widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MedFusionWidget")
        source = ast.unparse(widget)
        for heavy in ("fuse_images", "fuse_volume_nodes", "register(", "compute_metrics", ".process("):
            assert heavy not in source, heavy
        assert "startJob" in source and "QTimer" in source and ".poll()" in source

    def test_cmake_files(self) -> None:
        top = (ROOT / "CMakeLists.txt").read_text()
        for needed in (
            "EXTENSION_HOMEPAGE",
            "EXTENSION_CATEGORY",
            "EXTENSION_CONTRIBUTORS",
            "EXTENSION_DESCRIPTION",
            "EXTENSION_ICONURL",
            "EXTENSION_SCREENSHOTURLS",
            'EXTENSION_DEPENDS "PyTorch"',
            "find_package(Slicer REQUIRED)",
            "include(${Slicer_USE_FILE})",
            "add_subdirectory(MedFusion)",
            "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
            "include(${Slicer_EXTENSION_CPACK})",
            "Docs/images/module_slice_views.png",
        ):
            assert needed in top, needed
        module = (MODULE_DIR / "CMakeLists.txt").read_text()
        for needed in (
            "slicerMacroBuildScriptedModule(",
            "WITH_GENERIC_TESTS",
            "Resources/Icons/${MODULE_NAME}.png",
            "Resources/UI/${MODULE_NAME}.ui",
            "ctkMacroCompilePythonScript(",
            "MedFusionLib/*.py",
            "MedFusionLib/data/*",
            "MedFusionLib/sample_data/*",
            "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}",
            "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)",
        ):
            assert needed in module, needed
        assert module.index("if(BUILD_TESTING)") < module.index("slicer_add_python_unittest")

    def test_catalog_entry(self) -> None:
        entry = json.loads(CATALOG.read_text())
        assert entry["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/")
        assert entry["scm_url"].startswith("https://github.com/") and entry["scm_revision"]
        assert entry["category"] == "Registration" and entry["build_dependencies"] == ["PyTorch"]
        assert entry["enabled"] is True and entry["tier"] in (1, 3, 5)

    def test_icon_is_a_128_pixel_png(self) -> None:
        from PIL import Image

        with Image.open(ICON) as icon:
            assert icon.format == "PNG" and icon.size == (128, 128)


# --- MedFusion.py imported with stand-ins for the application layer ------------------------------
def _stand_ins() -> dict[str, types.ModuleType]:
    """Minimal doubles for what slicer-core lacks: Qt and the scripted-module base classes."""
    import slicer

    qt = types.ModuleType("qt")
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text

    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.Choice = lambda choices: ("Choice", tuple(choices))
    wrapper.WithinRange = lambda low, high: ("WithinRange", low, high)

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModuleLogic:
        def getParameterNode(self):
            return slicer.vtkMRMLScriptedModuleNode()

    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleTest"):
        setattr(scripted, name, type(name, (), {}))
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    return {
        "qt": qt,
        "slicer.i18n": i18n,
        "slicer.parameterNodeWrapper": wrapper,
        "slicer.ScriptedLoadableModule": scripted,
    }


@pytest.fixture()
def module(monkeypatch: pytest.MonkeyPatch):
    slicer = pytest.importorskip("slicer")
    for name, double in _stand_ins().items():
        monkeypatch.setitem(sys.modules, name, double)
        if name.startswith("slicer."):
            monkeypatch.setattr(slicer, name.split(".", 1)[1], double, raising=False)
    spec = importlib.util.spec_from_file_location("MedFusion", SCRIPT)
    loaded = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "MedFusion", loaded)
    spec.loader.exec_module(loaded)
    return loaded


@pytest.fixture()
def scene_with_pair():
    pytest.importorskip("slicer")
    from MedFusionLib import mrml
    from MedFusionLib.io import read_image

    headless = mrml.new_scene()
    fixed = mrml.volume_node_from_image(read_image(mni_path("spm_T1")), headless.scene, "T1")
    moving = mrml.volume_node_from_image(read_image(mni_path("spm_PET")), headless.scene, "PET")
    return headless, fixed, moving


def _ijk_to_ras(node) -> np.ndarray:
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


class TestLogic:
    def test_process_fuses_on_the_fixed_grid_and_shows_it(self, module, scene_with_pair) -> None:
        import slicer

        headless, fixed, moving = scene_with_pair
        before = [slicer.util.arrayFromVolume(n).copy() for n in (fixed, moving)]
        assert module.MedFusionLogic.missingDependencies() == []
        output = module.MedFusionLogic().process(
            fixed, moving, method="average", registration="none", device="cpu"
        )
        assert output.GetImageData().GetDimensions() == fixed.GetImageData().GetDimensions()
        np.testing.assert_allclose(output.GetSpacing(), fixed.GetSpacing())
        np.testing.assert_allclose(_ijk_to_ras(output), _ijk_to_ras(fixed), atol=1e-6)
        assert output.GetAttribute("MedFusion.Method") == "average"
        composites = [
            headless.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            for i in range(headless.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))
        ]
        assert composites and all(c.GetBackgroundVolumeID() == output.GetID() for c in composites)
        for node, array in zip((fixed, moving), before, strict=True):
            np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)

    def test_background_job_round_trip_adds_volume_and_transform(
        self, module, scene_with_pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """What the GUI does on Apply, without Qt: write inputs, run the job, poll, load the result."""
        import slicer

        monkeypatch.setenv("TMPDIR", str(tmp_path))
        headless, fixed, moving = scene_with_pair
        logic = module.MedFusionLogic()
        context = logic.startJob(
            fixed, moving, method="average", parameters={}, registration="rigid", device="cpu", metrics=["EN"]
        )
        job = context["job"]
        deadline = time.monotonic() + 90
        while not job.finished:
            job.poll()
            assert time.monotonic() < deadline, job.stderr[-2000:]
            time.sleep(0.1)
        assert job.returncode == 0, job.error
        assert job.result["registration"]["type"] == "rigid" and "EN" in job.result["metrics"]
        output = logic.loadJobResult(context)
        assert output.GetAttribute("MedFusion.Registration") == "rigid"
        np.testing.assert_allclose(_ijk_to_ras(output), _ijk_to_ras(fixed), atol=1e-6)
        transform_id = output.GetAttribute("MedFusion.TransformNodeID")
        assert transform_id and headless.scene.GetNodeByID(transform_id) is not None
        assert moving.GetParentTransformNode() is None
        fused = slicer.util.arrayFromVolume(output)
        assert fused.shape == slicer.util.arrayFromVolume(fixed).shape and fused.std() > 0.01
        assert Path(context["workdir"]).is_dir()
        import shutil

        shutil.rmtree(context["workdir"])
