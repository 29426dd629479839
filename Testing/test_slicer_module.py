"""What can be checked of the Slicer module without the Slicer application.

The .ui, the CMake files, the catalog entry and the icon are checked as files; MedFusion.py is
compiled and parsed, and imported on real Qt widgets (PySide6) and a real MRML scene, with the
project's stand-ins for the qMRML/CTK widgets, the application, the parameter node wrapper and
the scripted-module classes (see ``slicer_stand_ins``).
"""

from __future__ import annotations

import ast
import json
import py_compile
import re
import time
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
            "fixedModalityComboBox": "QComboBox",
            "movingModalityComboBox": "QComboBox",
            "lesionSelector": "qMRMLNodeComboBox",
            "colormapComboBox": "QComboBox",
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
            "outputVolume", "showForeground", "foregroundLut", "opacity", "colormap", "lesion",
            "fixedModality", "movingModality",
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
        for name in ("fixedModalityComboBox", "movingModalityComboBox"):
            assert combo_items[name] == ["auto", "CT", "MR", "PET", "SPECT"]
        assert combo_items["colormapComboBox"] == []  # filled from the engine's tables
        assert "colormapComboBox" not in bound  # stored by the widget, like the method
        assert bound["lesionSelector"] == "lesion"
        selector = _ui_widgets()["fixedSelector"]
        types_ = [s.text for s in selector.find("property[@name='nodeTypes']/stringlist")]
        assert types_ == ["vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"]
        lesion = _ui_widgets()["lesionSelector"]
        types_ = [s.text for s in lesion.find("property[@name='nodeTypes']/stringlist")]
        assert types_ == ["vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"]
        assert lesion.find("property[@name='noneEnabled']/bool").text == "true"
        receivers = {c.find("receiver").text for c in ET.parse(UI).getroot().iter("connection")}
        assert "lesionSelector" in receivers

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
        assert {"ensureDependencies", "initializeParameterNode", "setParameterNode"} <= methods
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


# --- MedFusion.py imported on real Qt widgets and the stand-ins of slicer_stand_ins --------------
@pytest.fixture()
def harness(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    pytest.importorskip("slicer")
    import slicer_stand_ins

    reason = slicer_stand_ins.pyside6_or_reason()
    if reason is not None:
        pytest.skip(reason)
    yield from slicer_stand_ins.install(monkeypatch, tmp_path, SCRIPT)


@pytest.fixture()
def module(harness):
    return harness.module


@pytest.fixture()
def scene_with_pair(harness):
    from MedFusionLib import mrml
    from MedFusionLib.io import read_image

    headless = harness.headless  # the application's scene (slicer.mrmlScene); the harness closes it
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
        assert module.MedFusionLogic.missingRequirements() == []
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


# --- the widget's colour table, recommended method and readout, on the real panel ----------------
STS019 = ROOT.parent / "shared" / "data" / "sts" / "STS_019"


class TestColourAndReadout:
    def test_colour_table_entries_and_defaults(self, harness) -> None:
        from MedFusionLib.colormaps import list_colormaps

        panel = harness.widget()
        node = panel._parameterNode
        assert (node.colormap, node.method, node.fixedModality) == ("auto", "", "auto")
        combo = panel.ui.colormapComboBox
        items = [
            (combo.itemText(i), combo.itemData(i), combo.itemData(i, harness.qt.Qt.ToolTipRole))
            for i in range(combo.count)
        ]
        assert [data for _, data, _ in items] == ["auto", *list_colormaps(), "none"]
        assert items[0][0] == "auto (recommended)" and items[-1][0] == "none (gray)"
        assert combo.currentIndex == 0 and combo.findData("auto") == 0
        assert all(tip for _, _, tip in items)
        combo.currentIndex = combo.findData("none")  # the user picks gray
        assert node.colormap == "none"
        panel.cleanup()

    def test_method_selector_starts_with_the_recommended_fusion(self, harness) -> None:
        from MedFusionLib.recommended import GRAY_METHOD, recommended

        panel = harness.widget()
        combo = panel.ui.methodComboBox
        first = [combo.itemText(0), combo.itemData(0), combo.itemData(0, harness.qt.Qt.ToolTipRole)]
        assert first[:2] == ["recommended for the pair", ""] and combo.currentIndex == 0
        choice = recommended("CT", "PET")
        assert choice.method in first[2] and str(choice.colormap) in first[2] and GRAY_METHOD in first[2]
        assert combo.findData("laplacian_pyramid") > 0
        panel.cleanup()

    def test_job_carries_colormap_and_method_none_and_the_readout_shows_the_two_measures(
        self, harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Apply with the defaults and a label map of the tumour: the job, the result, the readout text."""
        import slicer

        from MedFusionLib import mrml
        from MedFusionLib.io import read_image
        from MedFusionLib.recommended import recommended

        monkeypatch.setenv("TMPDIR", str(tmp_path))
        module, headless = harness.module, harness.headless
        scene = headless.scene
        ct = mrml.volume_node_from_image(read_image(STS019 / "CT_image.nii.gz"), scene, "CT")
        pet = mrml.volume_node_from_image(read_image(STS019 / "PET_image.nii.gz"), scene, "PET")
        ct.SetAttribute("DICOM.Modality", "CT")
        mask = read_image(STS019 / "CT_mask.nii.gz")
        lesion = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "tumour")
        slicer.util.updateVolumeFromArray(lesion, np.ascontiguousarray(mask.array))
        lesion.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(mrml._ras_matrix_of(mask)))

        logic = module.MedFusionLogic()
        node = logic.getParameterNode()  # the defaults a new scene starts with
        context = logic.startJob(
            ct,
            pet,
            method=node.method or None,
            parameters={},
            registration="none",
            device="cpu",
            metrics=["EN"],
            colormap=node.colormap,
            lesion=lesion,
            modalityFixed=None,  # "auto": the CT's DICOM.Modality attribute
            modalityMoving="PET",  # the PET has no attribute: the user's choice
        )
        spec = context["spec"]
        assert spec["method"] is None and spec["colormap"] == "auto"
        assert (spec["modality_fixed"], spec["modality_moving"]) == ("CT", "PET")
        assert spec["lesion"].endswith("lesion.nrrd")
        job = context["job"]
        deadline = time.monotonic() + 120
        while not job.finished:
            job.poll()
            assert time.monotonic() < deadline, job.stderr[-2000:]
            time.sleep(0.1)
        assert job.returncode == 0, job.error
        result = job.result
        assert result["colormap"] == recommended("CT", "PET").colormap and result["recommended"]

        panel = harness.widget()
        panel._fillMetrics(result)
        table = panel.ui.metricsTable
        rows = {table.item(r, 0).text(): table.item(r, 1).text() for r in range(table.rowCount)}
        assert set(rows) == {"EN", "Conspicuity kept", "Anatomy kept"}
        assert rows["Conspicuity kept"] == f"{result['clinical']['conspicuity_kept']:.2f}"
        assert 0.6 < float(rows["Conspicuity kept"]) < 1.3 and 0.85 < float(rows["Anatomy kept"]) <= 1.0

        output = logic.loadJobResult(context)
        assert output.IsA("vtkMRMLVectorVolumeNode")
        assert output.GetAttribute("MedFusion.Colormap") == result["colormap"]
        # the same readout from the scene (what the logic offers the Python console)
        again = logic.readout(ct, pet, output, lesion, modalityMoving="PET")
        assert again["conspicuity_kept"] == pytest.approx(result["clinical"]["conspicuity_kept"], abs=0.01)
        import shutil

        shutil.rmtree(context["workdir"])

    def test_readout_without_lesion_and_when_it_cannot_be_made(self, module) -> None:
        rows = module.MedFusionLogic.readoutRows({"metrics": {"EN": 6.5, "SSIM": None}, "clinical": None})
        assert [(name, text) for name, text, _ in rows] == [("EN", "6.5"), ("SSIM", "n/a")]
        rows = module.MedFusionLogic.readoutRows({"metrics": None, "clinical": {"error": "unknown modality"}})
        assert rows == [("Lesion readout", "n/a", "unknown modality")]
        rows = module.MedFusionLogic.readoutRows(
            {
                "clinical": {
                    "conspicuity_kept": None,
                    "anatomy_kept": 0.97,
                    "notes": {"conspicuity_kept": "empty"},
                }
            }
        )
        assert rows[0] == ("Conspicuity kept", "n/a", "empty") and rows[1][:2] == ("Anatomy kept", "0.97")
