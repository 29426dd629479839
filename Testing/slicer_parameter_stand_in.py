"""MedFusion's own stand-ins for three of Slicer's Python modules that no PyPI package ships.

``slicer-core`` (PyPI) brings MRML and ``slicer.util`` but not these parts of
``Base/Python/slicer`` in the Slicer application, so the module's tests use small
re-implementations of the behaviour ``MedFusion.py`` relies on, written for this project from
Slicer's documentation (Developer Guide > Parameter nodes, Scripted modules) and from reading
its source; no Slicer code is copied:

- :func:`parameterNodeWrapper` (``slicer.parameterNodeWrapper``): a class decorator turning
  annotated fields into typed properties stored in a real ``vtkMRMLScriptedModuleNode``;
  :class:`Choice`, :class:`WithinRange`, :class:`Minimum`, :class:`Maximum` validators;
  ``connectGui``/``disconnectGui`` binding widgets that carry the ``SlicerParameterName``
  dynamic property (set in the ``.ui``) to their fields in both directions.
- :class:`ScriptedLoadableModule`, :class:`ScriptedLoadableModuleWidget`,
  :class:`ScriptedLoadableModuleLogic`, :class:`ScriptedLoadableModuleTest`
  (``slicer.ScriptedLoadableModule``): the scripted-module base classes, as far as the module
  uses them (module name, resource paths, the singleton parameter node, ``delayDisplay``).
- :func:`tr` and :func:`translate` (``slicer.i18n``): hand the text to ``slicer.app.translate``.

The behaviour that matters for the bugs these tests are for, as in Slicer:

- A node field annotated with one MRML class accepts ``None``; a ``Union`` of node classes
  accepts ``None`` only when ``None`` is one of its members. Otherwise writing ``None`` (the
  default, written when the wrapper is made; or an empty selection) raises ``TypeError`` — in
  Slicer the module then fails to open. A value of another node class raises ``TypeError``.
- A node field bound to a ``qMRMLNodeComboBox`` sets the selector's ``nodeTypes`` to the classes
  of the annotation, replacing what the ``.ui`` says.
- A ``QComboBox`` bound to a field is refilled with the field's ``Choice`` values (required).
- A ``ctkSliderWidget`` needs a bounded field (``WithinRange``, or ``Minimum`` and ``Maximum``)
  and takes its range from it.
- A field whose value is not stored in the node yet (new node, or one reset by a scene close)
  reads as its default.

:func:`slicer_modules` returns the three modules; ``slicer_stand_ins.install`` puts them (or,
when ``SLICER_SOURCE_DIR`` names a Slicer source checkout, Slicer's own files from it) in
``sys.modules``.
"""

from __future__ import annotations

import os
import sys
import types
import typing
import unittest
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import vtk

PARAMETER_NAME_PROPERTY = "SlicerParameterName"
"""The dynamic Qt property (set in the ``.ui``) naming the field a widget edits."""


# --- validators ------------------------------------------------------------------------------
class Validator:
    """A check of a field's value, given as an ``Annotated`` extra; raises ``ValueError``."""

    def validate(self, value: Any) -> None:
        raise NotImplementedError


class Choice(Validator):
    def __init__(self, choices: Iterable[Any]) -> None:
        self.choices = list(choices)

    def validate(self, value: Any) -> None:
        if value not in self.choices:
            raise ValueError(f"{value!r} is not one of {self.choices}")


class WithinRange(Validator):
    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value: Any) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"{value!r} is outside [{self.minimum}, {self.maximum}]")


class Minimum(Validator):
    def __init__(self, minimum: float) -> None:
        self.minimum = minimum

    def validate(self, value: Any) -> None:
        if value < self.minimum:
            raise ValueError(f"{value!r} is below {self.minimum}")


class Maximum(Validator):
    def __init__(self, maximum: float) -> None:
        self.maximum = maximum

    def validate(self, value: Any) -> None:
        if value > self.maximum:
            raise ValueError(f"{value!r} is above {self.maximum}")


# --- fields ----------------------------------------------------------------------------------
_SCALARS: dict[type, Any] = {str: "", int: 0, float: 0.0, bool: False}
_NO_DEFAULT = object()


def _is_node_class(value: Any) -> bool:
    import slicer

    return isinstance(value, type) and issubclass(value, slicer.vtkMRMLNode)


@dataclass
class Field:
    """One annotated field of a wrapper class: its type, checks and default."""

    name: str
    annotation: Any
    kind: type | None  # str, int, float or bool; None for a node field
    node_classes: tuple[type, ...]
    none_allowed: bool
    validators: list[Validator]
    default: Any

    @classmethod
    def from_annotation(cls, owner: str, name: str, annotation: Any, default: Any) -> Field:
        base, extras = annotation, ()
        if typing.get_origin(annotation) is typing.Annotated:
            base, *extras = typing.get_args(annotation)
        validators = [extra for extra in extras if isinstance(extra, Validator)]
        members = typing.get_args(base) if typing.get_origin(base) in (typing.Union, types.UnionType) else ()
        if members:
            classes = tuple(m for m in members if m is not type(None))
            if not all(_is_node_class(c) for c in classes):
                raise TypeError(f"{owner}.{name}: a Union must be of MRML node classes (and None)")
            field = cls(name, annotation, None, classes, type(None) in members, validators, None)
        elif _is_node_class(base):
            field = cls(name, annotation, None, (base,), True, validators, None)
        elif base in _SCALARS:
            field = cls(name, annotation, base, (), False, validators, _SCALARS[base])
        else:
            raise TypeError(f"{owner}.{name}: the stand-in does not handle the annotation {annotation!r}")
        if default is not _NO_DEFAULT:
            field.default = default
        return field

    def check(self, value: Any) -> None:
        """Raise ``TypeError``/``ValueError`` as Slicer does for a value the field cannot hold."""
        if self.kind is None:
            if value is None and not self.none_allowed:
                raise TypeError(
                    f"Unable to write None to parameter {self.name!r}: its annotation {self.annotation} "
                    "does not allow None (add None to the Union)"
                )
            if value is not None and not isinstance(value, self.node_classes):
                raise TypeError(f"Parameter {self.name!r} takes {self.node_classes}, not {type(value)}")
        else:
            if value is None:
                raise ValueError(f"Parameter {self.name!r} must not be None")
            accepted = (int, float) if self.kind is float else self.kind
            if not isinstance(value, accepted):
                raise TypeError(f"Parameter {self.name!r} takes {self.kind.__name__}, not {type(value)}")
        for validator in self.validators:
            validator.validate(value)

    # the value in the parameter node: a node reference, or a parameter string
    def stored(self, parameter_node: Any) -> bool:
        return bool(parameter_node.HasParameter(self.name))

    def write(self, parameter_node: Any, value: Any) -> None:
        self.check(value)
        was = parameter_node.StartModify()
        try:
            if self.kind is None:
                parameter_node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
                parameter_node.SetParameter(self.name, "")  # marks the field as stored
            elif self.kind is bool:
                parameter_node.SetParameter(self.name, "true" if value else "false")
            elif self.kind is float:
                parameter_node.SetParameter(self.name, repr(float(value)))
            else:
                parameter_node.SetParameter(self.name, str(value))
        finally:
            parameter_node.EndModify(was)

    def read(self, parameter_node: Any) -> Any:
        if not self.stored(parameter_node):
            return self.default
        if self.kind is None:
            return parameter_node.GetNodeReference(self.name)
        text = parameter_node.GetParameter(self.name)
        if self.kind is bool:
            return text == "true"
        return self.kind(text)


class _FieldProperty:
    def __init__(self, field: Field) -> None:
        self.field = field

    def __get__(self, wrapper: Any, owner: type | None = None) -> Any:
        if wrapper is None:
            return self
        return self.field.read(wrapper.parameterNode)

    def __set__(self, wrapper: Any, value: Any) -> None:
        self.field.write(wrapper.parameterNode, value)


# --- widget bindings -------------------------------------------------------------------------
class _Binding:
    """One widget bound to one field: how to read and write it, and the signal it changes with."""

    def __init__(self, widget: Any, field: Field) -> None:
        self.widget, self.field = widget, field
        kind = type(widget).__name__  # Slicer matches the exact widget class, not subclasses
        bounds = self._bounds(field)
        if field.kind is None and kind == "qMRMLNodeComboBox":
            widget.nodeTypes = [c.__name__ for c in field.node_classes]  # the annotation wins
            self._get, self._set = widget.currentNode, widget.setCurrentNode
            self.signal = widget.currentNodeChanged
        elif field.kind is not None and kind in ("QComboBox", "ctkComboBox"):
            choices = next((v.choices for v in field.validators if isinstance(v, Choice)), None)
            if choices is None:
                raise RuntimeError(f"a combo box for {field.name!r} needs a Choice annotation")
            widget.clear()
            for choice in choices:
                widget.addItem(str(choice))

            def set_choice(value: Any) -> None:
                if value not in choices:
                    raise ValueError(f"{value!r} is not one of {choices}")
                widget.currentIndex = choices.index(value)

            self._get, self._set = (lambda: choices[widget.currentIndex]), set_choice
            self.signal = widget.currentIndexChanged
        elif field.kind is bool and kind in ("QCheckBox", "ctkCheckBox"):
            self._get, self._set = (lambda: bool(widget.checked)), (lambda v: setattr(widget, "checked", v))
            self.signal = widget.toggled
        elif field.kind in (int, float) and kind in (
            "QDoubleSpinBox", "ctkSliderWidget", "ctkDoubleSpinBox", "qMRMLSliderWidget", "QSpinBox"
        ):  # fmt: skip
            if kind in ("ctkSliderWidget", "qMRMLSliderWidget") and None in bounds:
                raise RuntimeError(f"a slider for {field.name!r} needs a bounded field")
            if field.kind is int and kind != "QSpinBox":
                widget.decimals = 0
            low, high = bounds
            if kind == "QSpinBox":
                widget.minimum = int(low) if low is not None else -(2**31)
                widget.maximum = int(high) if high is not None else 2**31 - 1
            else:
                widget.minimum = low if low is not None else float("-inf")
                widget.maximum = high if high is not None else float("inf")
            self._get = (lambda: int(widget.value)) if field.kind is int else (lambda: float(widget.value))
            self._set = lambda v: setattr(widget, "value", v)
            self.signal = widget.valueChanged
        elif field.kind is str and kind == "QLineEdit":
            self._get, self._set = (lambda: widget.text), (lambda v: setattr(widget, "text", v))
            self.signal = widget.textChanged
        else:
            raise RuntimeError(f"no binding of parameter {field.name!r} ({field.annotation}) to a {kind}")

    @staticmethod
    def _bounds(field: Field) -> tuple[Any, Any]:
        low = high = None
        for validator in field.validators:
            if isinstance(validator, WithinRange):
                low, high = validator.minimum, validator.maximum
            elif isinstance(validator, Minimum):
                low = validator.minimum
            elif isinstance(validator, Maximum):
                high = validator.maximum
        return low, high

    def read(self) -> Any:
        return self._get()

    def write(self, value: Any) -> None:
        self._set(value)


class _Connection:
    """The bindings made by one ``connectGui`` call, kept in step with the parameter node."""

    def __init__(self, wrapper: ParameterNodeWrapper, bindings: Mapping[str, _Binding]) -> None:
        self.wrapper, self.bindings = wrapper, dict(bindings)
        self.updating = False
        self.slots: dict[str, Callable[..., None]] = {}
        self.to_gui()
        for name, binding in self.bindings.items():
            self.slots[name] = self._slot(name, binding)
            binding.signal.connect(self.slots[name])
        self.tag = wrapper.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *_: self.to_gui())

    def _slot(self, name: str, binding: _Binding) -> Callable[..., None]:
        def changed(*_: Any) -> None:
            if not self.updating:
                self.wrapper.setValue(name, binding.read())

        return changed

    def to_gui(self) -> None:
        if self.updating:
            return
        self.updating = True
        try:
            for name, binding in self.bindings.items():
                binding.write(self.wrapper.getValue(name))
        finally:
            self.updating = False

    def close(self) -> None:
        self.wrapper.parameterNode.RemoveObserver(self.tag)
        for name, binding in self.bindings.items():
            binding.signal.disconnect(self.slots[name])


# --- the wrapper -----------------------------------------------------------------------------
class ParameterNodeWrapper:
    """Base of the classes :func:`parameterNodeWrapper` makes: typed access to a parameter node."""

    allParameters: dict[str, Field] = {}

    def __init__(self, parameterNode: Any) -> None:
        if parameterNode is None:
            raise ValueError("a parameter node wrapper needs a vtkMRMLScriptedModuleNode")
        self.parameterNode = parameterNode
        self._connections: dict[int, _Connection] = {}
        was = parameterNode.StartModify()
        try:  # store each default that is not there yet (a None a field does not allow fails here)
            for field in self.allParameters.values():
                if not field.stored(parameterNode):
                    field.write(parameterNode, field.default)
        finally:
            parameterNode.EndModify(was)

    def _field(self, name: str) -> Field:
        if name not in self.allParameters:
            raise ValueError(f"no parameter {name!r}; the parameters are {sorted(self.allParameters)}")
        return self.allParameters[name]

    def getValue(self, name: str) -> Any:
        return self._field(name).read(self.parameterNode)

    def setValue(self, name: str, value: Any) -> None:
        self._field(name).write(self.parameterNode, value)

    def default(self, name: str) -> Any:
        return self._field(name).default

    # the parameter node's own VTK interface, as the wrapper forwards it
    def StartModify(self) -> int:
        return self.parameterNode.StartModify()

    def EndModify(self, wasModifying: int) -> int:
        return self.parameterNode.EndModify(wasModifying)

    def Modified(self) -> None:
        self.parameterNode.Modified()

    def AddObserver(self, event: Any, callback: Callable[..., Any], priority: float = 0.0) -> int:
        return self.parameterNode.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag: int) -> None:
        self.parameterNode.RemoveObserver(tag)

    # widgets
    def connectParametersToGui(self, widgets: Mapping[str, Any]) -> int:
        bindings = {name: _Binding(widget, self._field(name)) for name, widget in widgets.items()}
        tag = max(self._connections, default=-1) + 1
        self._connections[tag] = _Connection(self, bindings)
        return tag

    def connectGui(self, gui: Any) -> int:
        """Bind each widget of ``gui`` (a widget, or an object whose attributes are widgets) that has
        the ``SlicerParameterName`` property; returns a tag for :meth:`disconnectGui`."""
        if callable(getattr(gui, "isWidgetType", None)) and gui.isWidgetType():
            import qt

            candidates = gui.findChildren(qt.QWidget)
        else:
            candidates = list(vars(gui).values())
        widgets = {}
        for widget in candidates:
            name = widget.property(PARAMETER_NAME_PROPERTY) if hasattr(widget, "property") else None
            if name:
                widgets[str(name)] = widget
        return self.connectParametersToGui(widgets)

    def disconnectGui(self, tag: int | None) -> None:
        connection = self._connections.pop(tag, None) if tag is not None else None
        if connection is not None:
            connection.close()


_RESERVED = frozenset(vars(ParameterNodeWrapper)) | {"parameterNode"}


def parameterNodeWrapper(cls: type | None = None) -> Any:
    """Class decorator: ``cls``'s annotated fields become typed properties of a parameter node."""
    if cls is None:
        return parameterNodeWrapper
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {}
    for name, annotation in hints.items():
        if name in _RESERVED:
            raise ValueError(f"{cls.__name__}: {name!r} is reserved by the parameter node wrapper")
        default = vars(cls).get(name, _NO_DEFAULT)
        fields[name] = Field.from_annotation(cls.__name__, name, annotation, default)
    body = {k: v for k, v in vars(cls).items() if k not in fields and k not in ("__dict__", "__weakref__")}
    body.update({name: _FieldProperty(field) for name, field in fields.items()})
    body["allParameters"] = fields
    return type(cls.__name__, (ParameterNodeWrapper,), body)


def isParameterNodeWrapper(value: Any) -> bool:
    cls = value if isinstance(value, type) else type(value)
    return issubclass(cls, ParameterNodeWrapper)


# --- scripted module base classes ------------------------------------------------------------
def _strip(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.endswith(suffix) else name


class ScriptedLoadableModule:
    """The module description; Slicer passes a ``parent`` that holds title, help, ``path``, ..."""

    def __init__(self, parent: Any) -> None:
        self.parent = parent
        self.moduleName = type(self).__name__
        parent.title = self.moduleName
        parent.categories, parent.dependencies, parent.contributors = [], [], []
        parent.helpText = parent.acknowledgementText = ""

    def resourcePath(self, filename: str) -> str:
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)


class ScriptedLoadableModuleWidget:
    """The module panel; ``parent`` is the panel's widget (one is made when none is given)."""

    def __init__(self, parent: Any = None) -> None:
        import qt
        import slicer

        self.moduleName = _strip(type(self).__name__, "Widget")
        self.developerMode = False
        if parent is None:
            parent = slicer.qMRMLWidget()
            parent.setLayout(qt.QVBoxLayout())
            parent.setMRMLScene(slicer.mrmlScene)
        self.parent = parent
        self.layout = parent.layout()

    def resourcePath(self, filename: str) -> str:
        import slicer

        return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

    def setup(self) -> None:
        """Slicer adds its developer section (Reload, Test) here in developer mode."""

    def cleanup(self) -> None:
        """Called when the module is unloaded."""


class ScriptedLoadableModuleLogic:
    """Module logic; keeps the module's one parameter node in ``slicer.mrmlScene``."""

    def __init__(self, parent: Any = None) -> None:
        self.moduleName = _strip(type(self).__name__, "Logic")  # one parameter node per scene

    def getParameterNode(self) -> Any:
        import slicer

        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = scene.AddNode(self.createParameterNode())
        elif node.GetAttribute("ModuleName") != self.moduleName:  # a scene close resets it
            node.SetAttribute("ModuleName", self.moduleName)
        return node

    def createParameterNode(self) -> Any:
        import slicer

        scene = slicer.mrmlScene
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)  # CreateNodeByClass hands over a reference; Python holds its own
        node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(scene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    """The module's self-test: a ``unittest.TestCase`` whose ``runTest`` Slicer calls."""

    def delayDisplay(self, message: str, requestedDelay: int | None = None, msec: int | None = None) -> None:
        import slicer

        slicer.util.delayDisplay(message, msec or requestedDelay or 100)


# --- translation -----------------------------------------------------------------------------
def translate(context: str, text: str) -> str:
    import slicer

    return slicer.app.translate(context, text)


def tr(text: str) -> str:
    """``translate`` with the calling file's name as the context (no translations here)."""
    caller = sys._getframe(1).f_code.co_filename
    return translate(os.path.splitext(os.path.basename(caller))[0], text)


# --- the modules -----------------------------------------------------------------------------
_EXPORTS = {
    "slicer.parameterNodeWrapper": (
        "parameterNodeWrapper", "isParameterNodeWrapper", "Validator", "Choice", "WithinRange",
        "Minimum", "Maximum", "PARAMETER_NAME_PROPERTY",
    ),
    "slicer.ScriptedLoadableModule": (
        "ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
        "ScriptedLoadableModuleTest",
    ),
    "slicer.i18n": ("tr", "translate"),
}  # fmt: skip


def slicer_modules() -> dict[str, types.ModuleType]:
    """``slicer.parameterNodeWrapper``, ``slicer.ScriptedLoadableModule`` and ``slicer.i18n``."""
    here = sys.modules[__name__]
    modules = {}
    for name, names in _EXPORTS.items():
        module = types.ModuleType(name, f"Stand-in for Slicer's {name} (see {__name__}).")
        for key in names:
            setattr(module, key, getattr(here, key))
        modules[name] = module
    return modules
