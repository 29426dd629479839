"""Run the MedFusion scripted module outside Slicer: real Qt widgets, real MRML, stand-ins for the rest.

What is real here:

- Qt widgets: PySide6 (``QComboBox``, ``QDoubleSpinBox``, ``QCheckBox``, ``QTableWidget``, the
  ``.ui`` loaded by ``QUiLoader``), behind :class:`PythonQtStyle`, a small adapter for PythonQt's
  property-style API (``widget.value = 3``, ``label.text``, ``widget.connect("clicked()", slot)``,
  ``widget.name``) so that MedFusion.py runs unchanged.
- MRML: ``slicer-core`` (scene, volume, display, composite and slice nodes, logics); the parameter
  node is a real ``vtkMRMLScriptedModuleNode``.
- ``slicer.util``: Slicer's own file from ``slicer-core`` (``loadUI``, ``childWidgetVariables``,
  ``VTKObservationMixin``, ``getNodesByClass``, ...).

Stand-ins, for what no PyPI package ships (``slicer-core`` has MRML and ``slicer.util`` only):

- ``slicer.parameterNodeWrapper``, ``slicer.ScriptedLoadableModule`` and ``slicer.i18n``: the
  project's own re-implementations in :mod:`slicer_parameter_stand_in` of the behaviour the
  module relies on (typed fields in the parameter node, ``None`` refused by a node field whose
  annotation does not allow it, widget binding, the singleton parameter node, ``tr``). When the
  environment variable ``SLICER_SOURCE_DIR`` names a Slicer source checkout, Slicer's own files
  (``Base/Python/slicer/parameterNodeWrapper/``, ``ScriptedLoadableModule.py``, ``i18n.py``) are
  loaded from there instead, and the same tests run on them.
- ``qMRMLNodeComboBox`` and ``qMRMLWidget`` (Slicer's C++ qMRML widgets): a ``QComboBox`` that
  lists the scene's nodes filtered as ``qMRMLSortFilterProxyModel`` does (``nodeTypes``,
  ``showChildNodeTypes``, ``hideChildNodeTypes``, hidden nodes, ``noneEnabled``) and a
  ``QWidget`` that passes its scene on through the ``.ui``'s ``mrmlSceneChanged`` connections.
- ``ctkSliderWidget`` and ``ctkCollapsibleButton`` (CTK's C++ widgets): a ``QDoubleSpinBox``
  with ``pageStep`` and a ``QWidget`` with ``text`` and ``collapsed``; other CTK names that
  Slicer's wrapper mentions are empty classes that nothing instantiates.
- ``slicer.app`` and ``slicer.modules`` (the application): temporary path, application logic,
  override cursor, module path; and the application's modal dialogs (``errorDisplay``,
  ``confirmOkCancelDisplay``, ...), which record their text instead of blocking.
"""

from __future__ import annotations

import os
import sys
import types
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SLICER_PYTHON_FILES = {  # module name -> path in a Slicer source checkout (SLICER_SOURCE_DIR)
    "slicer.i18n": "Base/Python/slicer/i18n.py",
    "slicer.parameterNodeWrapper": "Base/Python/slicer/parameterNodeWrapper/__init__.py",
    "slicer.ScriptedLoadableModule": "Base/Python/slicer/ScriptedLoadableModule.py",
}


_PROBE: list[str | None] = []


def pyside6_or_reason() -> str | None:
    """``None`` when PySide6 can make widgets here (offscreen), else why not (for a skip).

    Probed once in a child process: a Qt platform plugin that cannot load (a missing system
    library such as libEGL, libfontconfig or libxkbcommon) aborts the process that tries.
    """
    import subprocess

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if not _PROBE:
        probe = subprocess.run(
            [sys.executable, "-c", "from PySide6 import QtWidgets, QtUiTools; QtWidgets.QApplication([])"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if probe.returncode == 0:
            _PROBE.append(None)
        else:
            lines = (probe.stderr or probe.stdout).strip().splitlines() or [f"exit status {probe.returncode}"]
            _PROBE.append(
                f"PySide6 cannot show widgets here ({lines[-1]}); install the test extra, or the system "
                "libraries Qt's offscreen platform needs (libEGL, libfontconfig, libxkbcommon)"
            )
    return _PROBE[0]


# --- PythonQt's property-style API on PySide6 ---------------------------------------------------
_PROPERTIES: dict[type, frozenset[str]] = {}


def _qt_properties(obj: Any) -> frozenset[str]:
    from PySide6 import QtCore

    cls = type(obj)
    names = _PROPERTIES.get(cls)
    if names is None:
        meta = QtCore.QObject.metaObject(obj)
        names = frozenset(meta.property(i).name() for i in range(meta.propertyCount()))
        _PROPERTIES[cls] = names
    return names


class PythonQtStyle:
    """Mixin: Qt properties read and written as attributes, string-signature ``connect``, ``name``.

    PythonQt (Slicer's Qt binding) exposes every Qt property as a Python attribute
    (``spinBox.value``, ``label.text``, ``button.enabled = False``) and ``objectName`` as
    ``name``; signals can be connected by signature (``button.connect("clicked(bool)", slot)``).
    """

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            from PySide6 import QtCore

            if name in _qt_properties(self):
                return QtCore.QObject.property(self, name)
            if name == "name":
                return QtCore.QObject.objectName(self)
            if name in ("connect", "disconnect"):  # shiboken would find QObject's static ones first
                return types.MethodType(getattr(PythonQtStyle, name), self)
        return super().__getattribute__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):
            from PySide6 import QtCore

            if name in _qt_properties(self):
                if isinstance(value, tuple):  # PythonQt takes a tuple for a QStringList
                    value = list(value)
                if not QtCore.QObject.setProperty(self, name, value):
                    raise TypeError(f"cannot set Qt property {name!r} of {type(self).__name__} to {value!r}")
                return
        super().__setattr__(name, value)

    def connect(self, signature: str, slot: Callable[..., Any]) -> bool:  # type: ignore[override]
        getattr(self, signature.split("(")[0]).connect(slot)
        return True

    def disconnect(self, signature: str, slot: Callable[..., Any]) -> bool:  # type: ignore[override]
        getattr(self, signature.split("(")[0]).disconnect(slot)
        return True


_ADAPTED: dict[str, type] = {}


def adapted(name: str) -> type:
    """The PythonQt-style subclass of a PySide6 class (one class per name, for ``type(w) is ...``)."""
    cls = _ADAPTED.get(name)
    if cls is None:
        from PySide6 import QtCore, QtWidgets

        base = getattr(QtWidgets, name, None) or getattr(QtCore, name)
        cls = type(name, (PythonQtStyle, base), {"__module__": "qt"})
        _ADAPTED[name] = cls
    return cls


_QT: list[types.ModuleType] = []
_APPLICATION: list[Any] = []


def make_qt_module() -> types.ModuleType:
    """A ``qt`` module: PySide6's names, the QObject classes adapted to PythonQt's API (made once)."""
    if _QT:
        return _QT[0]
    from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets

    module = types.ModuleType("qt")
    for source in (QtCore, QtGui, QtWidgets):
        for key in dir(source):  # PySide6 loads its names lazily: dir(), not vars()
            if not key.startswith("_"):
                setattr(module, key, getattr(source, key))

    def __getattr__(key: str) -> Any:  # PEP 562: adapt QObject classes on first use
        raise AttributeError(key)

    for key in dir(QtWidgets):
        value = getattr(QtWidgets, key)
        if isinstance(value, type) and issubclass(value, QtCore.QObject):
            setattr(module, key, adapted(key))
    module.QTimer = adapted("QTimer")
    module.QObject = adapted("QObject")
    module.QUiLoader = _make_loader(QtUiTools.QUiLoader)
    module.__getattr__ = __getattr__
    _QT.append(module)
    return module


# --- stand-ins for the qMRML and CTK widgets ----------------------------------------------------
def _make_stand_in_widgets() -> dict[str, type]:
    from PySide6 import QtCore, QtWidgets
    from PySide6.QtCore import Property, Signal

    class qMRMLWidget(PythonQtStyle, QtWidgets.QWidget):
        """Stand-in for Slicer's qMRMLWidget: holds a scene and announces it."""

        mrmlSceneChanged = Signal(object)

        def __init__(self, parent: Any = None) -> None:
            super().__init__(parent)
            self._scene = None

        def setMRMLScene(self, scene: Any) -> None:
            self._scene = scene
            self.mrmlSceneChanged.emit(scene)

        def mrmlScene(self) -> Any:
            return self._scene

    class qMRMLNodeComboBox(PythonQtStyle, QtWidgets.QComboBox):
        """Stand-in for qMRMLNodeComboBox, filtering as qMRMLSortFilterProxyModel does."""

        currentNodeChanged = Signal(object)
        currentNodeIDChanged = Signal(str)

        def __init__(self, parent: Any = None) -> None:
            super().__init__(parent)
            self._scene = None
            self._types: list[str] = []
            self._hide: list[str] = []
            self._showChild = True
            self._none = False
            self._flags = {"addEnabled": True, "removeEnabled": True, "renameEnabled": False}
            self._observers: list[int] = []
            self._current: str | None = None
            self.currentIndexChanged.connect(self._onIndexChanged)

        # properties set by the .ui and by the parameter node wrapper
        def _getTypes(self) -> list[str]:
            return list(self._types)

        def _setTypes(self, value: list[str]) -> None:
            self._types = [str(v) for v in value]
            self._refresh()

        nodeTypes = Property("QStringList", _getTypes, _setTypes)

        def _getHide(self) -> list[str]:
            return list(self._hide)

        def _setHide(self, value: list[str]) -> None:
            self._hide = [str(v) for v in value]
            self._refresh()

        hideChildNodeTypes = Property("QStringList", _getHide, _setHide)

        def _getShowChild(self) -> bool:
            return self._showChild

        def _setShowChild(self, value: bool) -> None:
            self._showChild = bool(value)
            self._refresh()

        showChildNodeTypes = Property(bool, _getShowChild, _setShowChild)

        def _getNone(self) -> bool:
            return self._none

        def _setNone(self, value: bool) -> None:
            self._none = bool(value)
            self._refresh()

        noneEnabled = Property(bool, _getNone, _setNone)
        addEnabled = Property(
            bool, lambda s: s._flags["addEnabled"], lambda s, v: s._flags.update(addEnabled=v)
        )
        removeEnabled = Property(
            bool, lambda s: s._flags["removeEnabled"], lambda s, v: s._flags.update(removeEnabled=v)
        )
        renameEnabled = Property(
            bool, lambda s: s._flags["renameEnabled"], lambda s, v: s._flags.update(renameEnabled=v)
        )

        # the scene
        def setMRMLScene(self, scene: Any) -> None:
            if self._scene is not None:
                for tag in self._observers:
                    self._scene.RemoveObserver(tag)
            self._observers = []
            self._scene = scene
            if scene is not None:
                for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent):
                    self._observers.append(scene.AddObserver(event, lambda *_: self._onSceneChanged()))
            self._refresh()

        def mrmlScene(self) -> Any:
            return self._scene

        def _onSceneChanged(self) -> None:
            try:
                self._refresh()
            except (RuntimeError, AttributeError):  # the widget was deleted before the scene
                pass

        def accepts(self, node: Any) -> bool:
            """qMRMLSortFilterProxyModel::filterAcceptsRow for the properties used here."""
            if node is None or node.GetHideFromEditors():
                return False
            if self._showChild:
                shown = any(node.IsA(t) for t in self._types)
            else:
                shown = node.GetClassName() in self._types
            return shown and not any(node.IsA(t) for t in self._hide)

        def nodes(self) -> list[Any]:
            """The nodes the combo box lists, in scene order."""
            if self._scene is None:
                return []
            collection = self._scene.GetNodes()
            found = [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]
            return [n for n in found if self.accepts(n)]

        def _refresh(self) -> None:
            nodes = self.nodes()
            ids = [n.GetID() for n in nodes]
            current = self._current if self._current in ids else None
            if current is None and not self._none and ids:
                current = ids[0]
            blocked = self.blockSignals(True)
            QtWidgets.QComboBox.clear(self)
            if self._none:
                QtWidgets.QComboBox.addItem(self, "None", "")
            for node in nodes:
                QtWidgets.QComboBox.addItem(self, node.GetName(), node.GetID())
            index = QtWidgets.QComboBox.findData(self, current or "")
            QtWidgets.QComboBox.setCurrentIndex(self, max(index, 0) if (current or self._none) else -1)
            self.blockSignals(blocked)
            self._setCurrent(current)

        def _onIndexChanged(self, index: int) -> None:
            data = QtWidgets.QComboBox.itemData(self, index) if index >= 0 else None
            self._setCurrent(data or None)

        def _setCurrent(self, node_id: str | None) -> None:
            if node_id == self._current:
                return
            self._current = node_id
            node = self.currentNode()
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(node_id or "")

        def currentNode(self) -> Any:
            if self._scene is None or not self._current:
                return None
            return self._scene.GetNodeByID(self._current)

        def currentNodeID(self) -> str:
            return self._current or ""

        def setCurrentNode(self, node: Any) -> None:
            node_id = node.GetID() if node is not None else None
            index = QtWidgets.QComboBox.findData(self, node_id or "")
            if node_id is not None and index < 0:
                return  # qMRMLNodeComboBox ignores a node it does not list
            QtWidgets.QComboBox.setCurrentIndex(self, index)
            self._setCurrent(node_id)

        def setCurrentNodeID(self, node_id: str) -> None:
            self.setCurrentNode(self._scene.GetNodeByID(node_id) if self._scene and node_id else None)

        def nodeCount(self) -> int:
            return len(self.nodes())

    class ctkSliderWidget(PythonQtStyle, QtWidgets.QDoubleSpinBox):
        """Stand-in for ctkSliderWidget (a spin box and slider): value, range, steps, decimals."""

        def __init__(self, parent: Any = None) -> None:
            super().__init__(parent)
            self._pageStep = 1.0

        pageStep = Property(float, lambda s: s._pageStep, lambda s, v: setattr(s, "_pageStep", float(v)))

    class ctkCollapsibleButton(PythonQtStyle, QtWidgets.QWidget):
        """Stand-in for ctkCollapsibleButton: a container with a title and a collapsed state."""

        def __init__(self, parent: Any = None) -> None:
            super().__init__(parent)
            self._text, self._collapsed = "", False

        text = Property(str, lambda s: s._text, lambda s, v: setattr(s, "_text", str(v)))
        collapsed = Property(bool, lambda s: s._collapsed, lambda s, v: setattr(s, "_collapsed", bool(v)))

    QtCore.QObject  # noqa: B018 - keep the import used for type checkers
    return {
        "qMRMLWidget": qMRMLWidget,
        "qMRMLNodeComboBox": qMRMLNodeComboBox,
        "ctkSliderWidget": ctkSliderWidget,
        "ctkCollapsibleButton": ctkCollapsibleButton,
    }


_STAND_INS: dict[str, type] = {}


def stand_in_widgets() -> dict[str, type]:
    if not _STAND_INS:
        _STAND_INS.update(_make_stand_in_widgets())
    return _STAND_INS


def _make_loader(base: type) -> type:
    class QUiLoader(base):  # type: ignore[misc, valid-type]
        """QUiLoader making PythonQt-style widgets, stand-ins for the qMRML/CTK classes, and
        wiring the .ui's ``mrmlSceneChanged`` -> ``setMRMLScene`` connections (Python signals)."""

        def createWidget(self, className: str, parent: Any = None, name: str = "") -> Any:
            cls = stand_in_widgets().get(className) or _ADAPTED.get(className)
            if cls is None:
                try:
                    cls = adapted(className)
                except AttributeError:
                    return super().createWidget(className, parent, name)
            widget = cls(parent)
            widget.setObjectName(name)
            return widget

        def load(self, device: Any, parent: Any = None) -> Any:
            widget = super().load(device, parent) if parent is not None else super().load(device)
            path = device.fileName() if hasattr(device, "fileName") else ""
            if widget is not None and path:
                from PySide6 import QtCore

                by_name = {QtCore.QObject.objectName(w): w for w in widget.findChildren(QtCore.QObject)}
                by_name[QtCore.QObject.objectName(widget)] = widget
                for connection in ET.parse(path).getroot().iter("connection"):
                    sender = by_name.get(connection.findtext("sender"))
                    receiver = by_name.get(connection.findtext("receiver"))
                    signal = connection.findtext("signal").split("(")[0]
                    slot = connection.findtext("slot").split("(")[0]
                    if sender is not None and receiver is not None and signal == "mrmlSceneChanged":
                        getattr(sender, signal).connect(getattr(receiver, slot))
            return widget

    return QUiLoader


def make_ctk_module() -> types.ModuleType:
    ctk = types.ModuleType("ctk")
    for key, cls in stand_in_widgets().items():
        if key.startswith("ctk"):
            setattr(ctk, key, cls)
    for key in (
        "ctkComboBox", "ctkDoubleSlider", "ctkDoubleSpinBox", "ctkPathLineEdit", "ctkDirectoryButton",
        "ctkColorPickerButton", "ctkCheckablePushButton", "ctkRangeWidget", "ctkDoubleRangeSlider",
        "ctkCheckBox",
    ):  # fmt: skip
        setattr(ctk, key, type(key, (), {}))  # named by the wrapper's type checks; never instantiated
    return ctk


# --- the application -----------------------------------------------------------------------
@dataclass
class Dialogs:
    """What the application's modal dialogs were asked to show (they do not block here)."""

    errors: list[str] = field(default_factory=list)
    confirmations: list[str] = field(default_factory=list)
    answers: list[bool] = field(default_factory=list)  # answers to confirmOkCancelDisplay, in order
    messages: list[str] = field(default_factory=list)  # delayDisplay (self-test progress)

    def confirm(self, text: str, *args: Any, **kwargs: Any) -> bool:
        self.confirmations.append(text)
        return self.answers.pop(0) if self.answers else False


class _ModuleManager:
    def connect(self, *args: Any) -> bool:
        return True

    def disconnect(self, *args: Any) -> bool:
        return True


class AppStandIn:
    """The parts of ``slicer.app`` the module and Slicer's Python files use."""

    def __init__(self, temporary: Path, application_logic: Any) -> None:
        self.temporaryPath = str(temporary)
        self._logic = application_logic
        self.startupSlots: list[Callable[[], Any]] = []

    def applicationLogic(self) -> Any:
        return self._logic

    def moduleManager(self) -> _ModuleManager:
        return _ModuleManager()

    def translate(self, context: str, text: str) -> str:
        return text

    def testingEnabled(self) -> bool:
        return False

    def setOverrideCursor(self, cursor: Any) -> None:
        pass

    def restoreOverrideCursor(self) -> None:
        pass

    def processEvents(self) -> None:
        from PySide6 import QtWidgets

        QtWidgets.QApplication.processEvents()

    def connect(self, signal: str, slot: Callable[[], Any]) -> bool:
        if signal.startswith("startupCompleted"):
            self.startupSlots.append(slot)
        return True


@dataclass
class Harness:
    """Everything a test needs: the module, its widget and logic classes, scene and dialogs."""

    module: types.ModuleType
    headless: Any
    dialogs: Dialogs
    app: AppStandIn
    qt: types.ModuleType
    panels: list[Any] = field(default_factory=list)

    @property
    def scene(self) -> Any:
        return self.headless.scene

    def widget(self) -> Any:
        """A module panel, set up and entered, as Slicer shows it."""
        parent = stand_in_widgets()["qMRMLWidget"]()
        parent.setLayout(self.qt.QVBoxLayout())
        parent.isEntered = True
        panel = self.module.MedFusionWidget(parent)
        panel.setup()
        panel.enter()
        self.panels.append(panel)
        return panel

    def process_events(self, seconds: float = 0.0) -> None:
        import time

        from PySide6 import QtWidgets

        end = time.monotonic() + seconds
        while True:
            QtWidgets.QApplication.processEvents()
            if time.monotonic() >= end:
                return
            time.sleep(0.02)


def slicer_source_dir() -> Path | None:
    """The Slicer source checkout named by ``SLICER_SOURCE_DIR``, or ``None`` (use the stand-ins)."""
    value = os.environ.get("SLICER_SOURCE_DIR")
    if not value:
        return None
    root = Path(value)
    missing = [path for path in SLICER_PYTHON_FILES.values() if not (root / path).is_file()]
    if missing:
        raise RuntimeError(f"SLICER_SOURCE_DIR={value} is not a Slicer source checkout (no {missing[0]})")
    return root


def slicer_python_modules() -> dict[str, types.ModuleType]:
    """``slicer.i18n``, ``slicer.parameterNodeWrapper`` and ``slicer.ScriptedLoadableModule``.

    The project's stand-ins (:mod:`slicer_parameter_stand_in`), or, with ``SLICER_SOURCE_DIR``,
    Slicer's own files made into modules that are not run yet (``install`` runs them once they
    are in ``sys.modules``, in this order: each imports the ones before it).
    """
    import importlib.util

    root = slicer_source_dir()
    if root is None:
        import slicer_parameter_stand_in

        return slicer_parameter_stand_in.slicer_modules()
    modules = {}
    for name, relative in SLICER_PYTHON_FILES.items():
        path = root / relative
        package = [str(path.parent)] if path.name == "__init__.py" else None
        spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=package)
        modules[name] = importlib.util.module_from_spec(spec)
    return modules


def install(monkeypatch: Any, tmp_path: Path, script: Path) -> Iterator[Harness]:
    """Put the stand-ins in ``sys.modules`` and import ``script`` (MedFusion.py) as ``MedFusion``."""
    import importlib.util

    import slicer
    import slicer.util
    from PySide6 import QtWidgets

    from MedFusionLib import mrml

    if not _APPLICATION:  # one QApplication for the whole session, kept alive here
        _APPLICATION.append(QtWidgets.QApplication.instance() or QtWidgets.QApplication([]))
    qt = make_qt_module()
    ctk = make_ctk_module()
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "ctk", ctk)
    for key, cls in stand_in_widgets().items():
        if key.startswith("qMRML"):
            monkeypatch.setattr(slicer, key, cls, raising=False)
    for key in ("qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget", "qSlicerWidget"):
        monkeypatch.setattr(slicer, key, type(key, (), {}), raising=False)

    headless = mrml.new_scene()
    app = AppStandIn(tmp_path, headless.application_logic)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", headless.scene, raising=False)
    monkeypatch.setattr(
        slicer,
        "modules",
        types.SimpleNamespace(medfusion=types.SimpleNamespace(path=str(script))),
        raising=False,
    )
    dialogs = Dialogs()
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *a, **k: dialogs.errors.append(text))
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", dialogs.confirm)
    monkeypatch.setattr(slicer.util, "settingsValue", lambda key, default, **k: default)
    monkeypatch.setattr(slicer.util, "showStatusMessage", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(
        slicer.util, "delayDisplay", lambda message, *a, **k: dialogs.messages.append(message)
    )

    for name, module in slicer_python_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.setattr(slicer, name.split(".", 1)[1], module, raising=False)
        if getattr(module, "__spec__", None) is not None and module.__spec__.loader is not None:
            module.__spec__.loader.exec_module(module)  # Slicer's own file, run once it is importable

    spec = importlib.util.spec_from_file_location("MedFusion", script)
    medfusion = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "MedFusion", medfusion)
    spec.loader.exec_module(medfusion)
    harness = Harness(module=medfusion, headless=headless, dialogs=dialogs, app=app, qt=qt)
    try:
        yield harness
    finally:
        release(harness)


def release(harness: Harness) -> None:
    """Unload the panels as Slicer does, detach every node selector, then close the scene.

    The selectors observe the scene from Python; an observer left on a scene that outlives its
    widget would call into a deleted Qt object when the scene is cleared or collected.
    """
    import shiboken6
    from PySide6 import QtWidgets

    for panel in harness.panels:
        panel.cleanup()
        parent = panel.parent
        for selector in parent.findChildren(stand_in_widgets()["qMRMLNodeComboBox"]):
            selector.setMRMLScene(None)
        parent.setMRMLScene(None)
        shiboken6.delete(parent)
    harness.panels.clear()
    QtWidgets.QApplication.processEvents()
    harness.headless.close()
