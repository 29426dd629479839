"""The parameter node wrapper the module's tests run on behaves as Slicer's does.

By default these run on the project's stand-in (:mod:`slicer_parameter_stand_in`); with
``SLICER_SOURCE_DIR`` set to a Slicer source checkout, on Slicer's own
``parameterNodeWrapper`` — the same assertions, so a difference between the two shows here.
The module's own parameter node is checked last: every node field must accept ``None`` (an
empty selector, a new scene), which Slicer refuses for a ``Union`` without ``None``.
"""

# no ``from __future__ import annotations``: the wrappers below read real annotations
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Optional, Union

import pytest
import slicer_stand_ins
from conftest import ROOT

SCRIPT = ROOT / "MedFusion" / "MedFusion.py"

pytest.importorskip("slicer")
_reason = slicer_stand_ins.pyside6_or_reason()
if _reason is not None:
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture()
def harness(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    yield from slicer_stand_ins.install(monkeypatch, tmp_path, SCRIPT)


@pytest.fixture()
def pnw(harness):
    """``slicer.parameterNodeWrapper`` as the harness installed it (stand-in or Slicer's)."""
    return sys.modules["slicer.parameterNodeWrapper"]


def _parameter_node(harness):
    return harness.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")


class TestNodeFields:
    def test_a_union_without_none_refuses_none_when_the_wrapper_is_made(self, harness, pnw) -> None:
        import slicer

        @pnw.parameterNodeWrapper
        class Strict:
            volume: Union[slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLVectorVolumeNode]  # noqa: UP007

        with pytest.raises(TypeError):  # the default, None, is written first
            Strict(_parameter_node(harness))

    def test_a_union_with_none_accepts_none_and_its_members_only(self, harness, pnw) -> None:
        import slicer

        @pnw.parameterNodeWrapper
        class Loose:
            volume: Union[slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLVectorVolumeNode, None]  # noqa: UP007
            lesion: Optional[slicer.vtkMRMLLabelMapVolumeNode]  # noqa: UP045

        wrapper = Loose(_parameter_node(harness))
        assert wrapper.volume is None and wrapper.lesion is None
        rgb = harness.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode")
        wrapper.volume = rgb
        assert wrapper.volume is rgb
        wrapper.volume = None
        assert wrapper.volume is None
        with pytest.raises(TypeError):
            wrapper.volume = harness.scene.AddNewNodeByClass("vtkMRMLModelNode")

    def test_a_single_node_class_accepts_none(self, harness, pnw) -> None:
        import slicer

        @pnw.parameterNodeWrapper
        class Single:
            volume: slicer.vtkMRMLScalarVolumeNode

        wrapper = Single(_parameter_node(harness))
        volume = harness.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        wrapper.volume = volume
        assert wrapper.volume is volume
        wrapper.volume = None
        assert wrapper.volume is None

    def test_setting_none_on_a_union_without_none_fails_and_keeps_the_value(self, harness, pnw) -> None:
        import slicer

        @pnw.parameterNodeWrapper
        class Strict:
            volume: Union[slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLVectorVolumeNode] = None  # noqa: UP007

        parameter_node = _parameter_node(harness)
        volume = harness.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")

        @pnw.parameterNodeWrapper
        class Loose:
            volume: Union[slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLVectorVolumeNode, None]  # noqa: UP007

        Loose(parameter_node).volume = volume  # a scene saved with a volume selected
        wrapper = Strict(parameter_node)
        assert wrapper.volume is volume
        with pytest.raises(TypeError):
            wrapper.volume = None
        assert wrapper.volume is volume


class TestValues:
    def test_typed_values_defaults_and_validators(self, harness, pnw) -> None:
        @pnw.parameterNodeWrapper
        class Params:
            mode: Annotated[str, pnw.Choice(["a", "b"])] = "a"
            opacity: Annotated[float, pnw.WithinRange(0.0, 1.0)] = 0.5
            show: bool = True
            count: int = 3
            text: str

        parameter_node = _parameter_node(harness)
        wrapper = Params(parameter_node)
        assert (wrapper.mode, wrapper.opacity, wrapper.show, wrapper.count, wrapper.text) == (
            "a",
            0.5,
            True,
            3,
            "",
        )
        wrapper.mode, wrapper.opacity, wrapper.show, wrapper.count = "b", 0.25, False, 7
        with pytest.raises(ValueError):
            wrapper.mode = "c"
        with pytest.raises(ValueError):
            wrapper.opacity = 1.5
        again = Params(parameter_node)  # the values live in the MRML node, not in the wrapper
        assert (again.mode, again.opacity, again.show, again.count) == ("b", 0.25, False, 7)
        assert parameter_node.GetParameterCount() >= 5

    def test_a_write_modifies_the_parameter_node(self, harness, pnw) -> None:
        import vtk

        @pnw.parameterNodeWrapper
        class Params:
            count: int = 0

        parameter_node = _parameter_node(harness)
        wrapper = Params(parameter_node)
        events = []
        wrapper.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *_: events.append(wrapper.count))
        wrapper.count = 4
        assert events and events[-1] == 4


class TestGui:
    def test_widgets_follow_the_node_and_the_node_follows_the_widgets(self, harness, pnw) -> None:
        import slicer

        qt, stand_ins = harness.qt, slicer_stand_ins.stand_in_widgets()

        @pnw.parameterNodeWrapper
        class Params:
            mode: Annotated[str, pnw.Choice(["x", "y", "z"])] = "y"
            show: bool = False
            opacity: Annotated[float, pnw.WithinRange(0.0, 1.0)] = 0.5
            volume: Union[slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLVectorVolumeNode, None]  # noqa: UP007

        panel = stand_ins["qMRMLWidget"]()
        combo, check = qt.QComboBox(panel), qt.QCheckBox(panel)
        slider, selector = stand_ins["ctkSliderWidget"](panel), stand_ins["qMRMLNodeComboBox"](panel)
        selector.nodeTypes = ["vtkMRMLScalarVolumeNode"]  # what a .ui might say; the annotation wins
        selector.noneEnabled = True
        selector.setMRMLScene(harness.scene)
        for widget, name in ((combo, "mode"), (check, "show"), (slider, "opacity"), (selector, "volume")):
            widget.setProperty("SlicerParameterName", name)
        wrapper = Params(_parameter_node(harness))
        ui = types.SimpleNamespace(combo=combo, check=check, slider=slider, selector=selector)
        tag = wrapper.connectGui(ui)  # as the module passes slicer.util.childWidgetVariables(...)
        assert [combo.itemText(i) for i in range(combo.count)] == ["x", "y", "z"]
        assert combo.currentIndex == 1 and check.checked is False and slider.value == 0.5
        assert (slider.minimum, slider.maximum) == (0.0, 1.0)
        assert list(selector.nodeTypes) == ["vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"]
        rgb = harness.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
        combo.currentIndex = 2
        check.checked = True
        slider.value = 0.75
        selector.setCurrentNode(rgb)
        assert (wrapper.mode, wrapper.show, wrapper.opacity, wrapper.volume) == ("z", True, 0.75, rgb)
        wrapper.mode, wrapper.opacity = "x", 0.25
        assert combo.currentIndex == 0 and slider.value == 0.25
        wrapper.disconnectGui(tag)
        combo.currentIndex = 1
        assert wrapper.mode == "x"  # no longer bound
        selector.setMRMLScene(None)

    def test_a_combo_box_needs_choices_and_a_slider_needs_bounds(self, harness, pnw) -> None:
        qt, stand_ins = harness.qt, slicer_stand_ins.stand_in_widgets()

        @pnw.parameterNodeWrapper
        class Params:
            mode: str = "a"
            opacity: float = 0.5

        wrapper = Params(_parameter_node(harness))
        with pytest.raises(Exception):  # noqa: B017 - Slicer raises RuntimeError; any refusal will do
            wrapper.connectParametersToGui({"mode": qt.QComboBox()})
        with pytest.raises(Exception):  # noqa: B017
            wrapper.connectParametersToGui({"opacity": stand_ins["ctkSliderWidget"]()})


def _node_fields(parameter_node_class: type) -> dict[str, typing.Any]:
    import slicer

    def is_node(t: typing.Any) -> bool:
        return isinstance(t, type) and issubclass(t, slicer.vtkMRMLNode)

    return {
        name: annotation
        for name, annotation in vars(parameter_node_class)["__annotations__"].items()
        if is_node(annotation) or any(is_node(t) for t in typing.get_args(annotation))
    }


class TestModuleParameterNode:
    """The module's own parameter node: every node selector can be empty (regression)."""

    def test_every_node_field_accepts_none(self, harness) -> None:
        cls = harness.module.MedFusionParameterNode
        fields = _node_fields(cls)
        assert set(fields) == {"fixedVolume", "movingVolume", "lesion", "outputVolume"}
        node = harness.module.MedFusionLogic().getParameterNode()  # a Union without None fails here
        volume = harness.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        for name, annotation in fields.items():
            assert type(None) in typing.get_args(annotation), f"{name}: {annotation} does not allow None"
            if "Volume" in name:
                setattr(node, name, volume)
            setattr(node, name, None)  # the user picks "None", or a scene close empties it
            assert getattr(node, name) is None

    def test_the_lesion_selector_can_be_cleared_from_the_panel(self, harness) -> None:
        panel = harness.widget()
        lesion = harness.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "tumour")
        node = panel._parameterNode
        node.lesion = lesion
        assert panel.ui.lesionSelector.currentNode() is lesion
        panel.ui.lesionSelector.setCurrentNode(None)  # the user picks "None"
        assert node.lesion is None
        panel.cleanup()
