"""MedFusion: register and fuse two volumes (CT, MR, PET, SPECT) in 3D Slicer.

A thin GUI and MRML layer over the Slicer-free engine ``MedFusionLib`` (installed beside this
file). Apply describes the work as one ``MedFusionLib.job.FusionJob``; the two inputs are copied,
written to a temporary folder on a worker thread, and ``MedFusionLib.background`` runs the job
in a separate process (``PythonSlicer``) that prints JSON progress lines, polled by a QTimer
every 150 ms. The result is added to the scene when the process is done (never when it was
cancelled). What the panel decides without Qt or Slicer is in ``MedFusionLib.slicer_support``.

Needs 3D Slicer 5.10 or later (Python 3.10+). This file itself parses on Python 3.9 so that an
older Slicer shows why the module cannot run instead of a syntax error.
"""

import json
import logging
import os
import shutil
import sys
from typing import Annotated, Optional, Union

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLVectorVolumeNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

REGISTRATIONS = ("none", "rigid", "affine", "bspline")
FOREGROUND_LUTS = ("PET-Heat", "PET-Rainbow2", "Grey")
MODALITIES = ("auto", "CT", "MR", "PET", "SPECT")
RECOMMENDED_METHOD = ""  # the method selector's "recommended for the pair" (method None in the engine)
POLL_INTERVAL_MS = 150


def _ensureLibOnPath() -> None:
    """MedFusionLib is installed beside this file (or one folder up in a source checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(folder, "MedFusionLib")) and folder not in sys.path:
            sys.path.insert(0, folder)
            break


_ensureLibOnPath()

from MedFusionLib import slicer_support  # noqa: E402 - standard library only; parses on Python 3.9
from MedFusionLib.slicer_support import (  # noqa: E402
    COLORMAP_AUTO,
    DEFAULT_METRICS,
    REQUIREMENTS,  # noqa: F401 - part of the module's interface (the console, the tests)
    SAMPLE_DATA_NOTICE,
)


def unsupportedReason() -> Optional[str]:  # noqa: UP045 - this file parses on Python 3.9
    """Why this Slicer cannot run MedFusion (its Python is older than 3.10), or None."""
    return slicer_support.unsupported_reason(_)


#
# MedFusion
#


class MedFusion(ScriptedLoadableModule):
    """Module description for Slicer's module system."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedFusion")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["MedFusion developers (MedFusion project)"]
        self.parent.helpText = _("""
Register and fuse two volumes of different modalities (MR, CT, PET, SPECT) into one image for
planning and review. The moving volume is registered to the fixed one with Mattes mutual
information (Mattes et al., IEEE TMI 22(1), 2003): rigid, affine, or B-spline free-form
deformation (Rueckert et al., IEEE TMI 18(8), 1999). Both are then fused on the fixed volume's
grid with a method of the MedFusion registry (pyramids, wavelets, guided and bilateral filters,
PCNN, CNNs; each method's citation is shown when it is selected), in colour when one volume is
a PET or SPECT and the other a CT or MR.
The work runs in a background process, on the GPU when there is one (CUDA or MPS).
Needs 3D Slicer {minimum} or later.
See the <a href="https://github.com/medfusion/SlicerMedFusion/blob/main/Docs/user-guide.md">user guide</a>.
""").format(minimum=slicer_support.MINIMUM_SLICER)
        self.parent.acknowledgementText = _("""
MedFusion is licensed under the Apache License 2.0. It is built on SimpleITK, PyTorch and
PyWavelets. Sample data: {notice}
This module follows the 3D Slicer scripted module template by Jean-Christophe Fillion-Robin
(Kitware) and Steve Pieper (Isomics), and the background-process pattern of SlicerMONAIAuto3DSeg.
""").format(notice=SAMPLE_DATA_NOTICE)
        if unsupportedReason() is None:
            slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data
#


def loadBundledSamples(scene=None) -> list:
    """Add the bundled T1 + PET pair to the scene (offline); each node carries its licence."""
    from MedFusionLib import mrml

    nodes = mrml.load_bundled_samples(scene or slicer.mrmlScene)
    logging.info("MedFusion: %s", SAMPLE_DATA_NOTICE)
    return nodes


def registerSampleData() -> None:
    """Add a MedFusion category to the Sample Data module (the bundled pair, no download)."""
    import SampleData

    iconsPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons")

    def loadBundled(source):
        nodes = loadBundledSamples()
        slicer.util.showStatusMessage(
            _("MedFusion sample data: GPL-2, see the module's acknowledgement."), 5000
        )
        return nodes

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="MedFusion",
        sampleName="MedFusionT1PET",
        thumbnailFileName=os.path.join(iconsPath, "MedFusion.png"),
        uris=[None, None],
        fileNames=["spm_T1.nii.gz", "spm_PET.nii.gz"],
        nodeNames=["MedFusionT1", "MedFusionPET"],
        checksums=[None, None],
        loadFiles=[False, False],
        customDownloader=loadBundled,
    )


#
# MedFusionParameterNode
#


@parameterNodeWrapper
class MedFusionParameterNode:
    """The module's state, saved with the scene.

    fixedVolume, movingVolume: the two inputs, scalar or vector (RGB) volumes; the output has
        the fixed volume's grid.
    fixedModality, movingModality: auto (the volume's MedFusion.Modality or DICOM.Modality
        attribute), CT, MR, PET or SPECT; they pick the recommended fusion.
    lesion: optional segmentation (its first segment) or label map of the lesion; when set, the
        readout shows conspicuity kept and anatomy kept.
    registration: none, rigid, affine or bspline.
    method: a MedFusionLib fusion method name, or empty for the fusion recommended for the
        modality pair; methodParameters: its parameters (JSON object).
    colormap: auto (the recommended colour table), a MedFusionLib table name, or none (gray).
    device: auto, cuda, mps or cpu.
    outputVolume: the fused volume (created on Apply when empty; an RGB volume for colour fusion).
    showForeground, foregroundLut, opacity: how the result's moving volume is shown over it;
        they take effect at once on the current result.
    """

    fixedVolume: Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, None]  # noqa: UP007 - the wrapper reads typing.Union
    movingVolume: Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, None]  # noqa: UP007
    fixedModality: Annotated[str, Choice(list(MODALITIES))] = "auto"
    movingModality: Annotated[str, Choice(list(MODALITIES))] = "auto"
    lesion: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]  # noqa: UP007
    registration: Annotated[str, Choice(list(REGISTRATIONS))] = "rigid"
    method: str = RECOMMENDED_METHOD
    methodParameters: str = "{}"
    colormap: str = COLORMAP_AUTO
    device: str = "auto"
    outputVolume: Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, None]  # noqa: UP007
    showForeground: bool = True
    foregroundLut: Annotated[str, Choice(list(FOREGROUND_LUTS))] = "PET-Heat"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5


#
# MedFusionWidget
#


def _fillComboBox(combo, entries) -> None:
    """Replace the items of ``combo`` by ``(label, value, toolTip)`` entries, without signals."""
    wasBlocked = combo.blockSignals(True)
    combo.clear()
    for label, value, toolTip in entries:
        combo.addItem(label, value)
        if toolTip:
            combo.setItemData(combo.count - 1, toolTip, qt.Qt.ToolTipRole)
    combo.blockSignals(wasBlocked)


class MedFusionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel; every computation goes to MedFusionLib in a background process."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._parameterWidgets = {}
        self._methods = {}
        self._job = None
        self._jobContext = None
        self._timer = None
        self._displayState = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedFusion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        reason = unsupportedReason()
        if reason is not None:  # Slicer older than 5.10: say why, and offer nothing that would fail
            self.ui.statusLabel.text = reason
            self.ui.applyButton.enabled = False
            self.ui.applyButton.toolTip = reason
            return
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedFusionLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.metricsTable.horizontalHeader().setStretchLastSection(True)
        self.ui.metricsTable.verticalHeader().setVisible(False)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.onMethodChanged)
        self.ui.colormapComboBox.connect("currentIndexChanged(int)", self.onColormapChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.resetParametersButton.connect("clicked(bool)", self.onResetParameters)

        self._addDicomButtons()
        self._fillColormaps()
        self._fillMethods()
        self._fillDevices()
        self.initializeParameterNode()

    def _addDicomButtons(self) -> None:
        """ "Export to DICOM" and "Send to PACS" under the panel: the result as a derived series in
        the fixed volume's DICOM study (``MedFusionLogic.exportDicom``)."""
        row = qt.QWidget()
        layout = qt.QHBoxLayout(row)
        self.exportDicomButton = qt.QPushButton(_("Export to DICOM..."))
        self.exportDicomButton.toolTip = _(
            "Write the result as a derived series in the fixed volume's DICOM study and frame of reference"
        )
        self.sendToPacsButton = qt.QPushButton(_("Send to PACS"))
        self.sendToPacsButton.toolTip = _(
            "Export the result to DICOM and store it on the PACS of Slicer's DICOM network settings"
        )
        layout.addWidget(self.exportDicomButton)
        layout.addWidget(self.sendToPacsButton)
        self.layout.addWidget(row)
        self.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        self.sendToPacsButton.connect("clicked(bool)", self.onSendToPacs)

    def _exportDicom(self, *, send) -> None:
        node = self._parameterNode
        output = None if node is None else node.outputVolume
        if output is None or not output.GetAttribute("MedFusion.FixedNodeID"):
            raise ValueError(_("Apply a fusion first: there is no MedFusion result to export"))
        folder = qt.QFileDialog.getExistingDirectory(None, _("Folder for the DICOM series"))
        if not folder:
            return
        target = os.path.join(folder, slicer_support.safe_folder_name(output.GetName()))
        files = self.logic.exportDicom(output, target, send=send)
        sent = _(", sent to {pacs}").format(pacs=send) if send else ""
        self.ui.statusLabel.text = _("{count} DICOM files written to {folder}{sent}").format(
            count=len(files), folder=target, sent=sent
        )

    def onExportDicom(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("DICOM export failed."), waitCursor=True):
            self._exportDicom(send=None)

    def onSendToPacs(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Sending to the PACS failed."), waitCursor=True):
            pacs = self.logic.pacsFromSettings()
            if not pacs:
                pacs = qt.QInputDialog.getText(
                    None, _("Send to PACS"), _("PACS as AE@HOST:PORT (set MedFusion/PACS to remember it):")
                )
            if pacs:
                self._exportDicom(send=str(pacs))

    def cleanup(self) -> None:
        """Stop a running job and drop every observer; never raises (the module is closing)."""
        try:
            self._stopJob(_("The module was closed; the fusion was cancelled."))
        except Exception:  # noqa: BLE001 - cleanup must not raise
            logging.exception("MedFusion: stopping the job during cleanup failed")
        try:
            self.setParameterNode(None)
        except Exception:  # noqa: BLE001
            logging.exception("MedFusion: disconnecting the parameter node failed")
        self.removeObservers()

    def enter(self) -> None:
        if self.logic is not None:
            self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self._stopJob(_("The scene was closed; the fusion was cancelled."))
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # --- parameter node -------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        """Connect the scene's parameter node; pick inputs the selectors show when none is set."""
        self.setParameterNode(self.logic.getParameterNode())
        node = self._parameterNode
        if not (node.fixedVolume and node.movingVolume):
            candidates = self.logic.inputCandidates(slicer.mrmlScene)
            fixed, moving = slicer_support.pick_inputs(candidates, node.fixedVolume, node.movingVolume)
            with slicer.util.NodeModify(node):
                node.fixedVolume, node.movingVolume = fixed, moving

    def _disconnectParameterNode(self) -> None:
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified
            )

    def setParameterNode(self, inputParameterNode) -> None:
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        self._displayState = None
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._updateMethodFromParameterNode()
            self._displayState = self._currentDisplayState()
        self._checkCanApply()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self._checkCanApply()
        self._updateDisplay()

    def _checkCanApply(self, caller=None, event=None) -> None:
        node = self._parameterNode
        running = self._job is not None
        ready = bool(
            node and node.fixedVolume and node.movingVolume and node.fixedVolume != node.movingVolume
        )
        self.ui.applyButton.enabled = ready and not running
        self.ui.cancelButton.enabled = running
        if not ready:
            self.ui.applyButton.toolTip = _("Select two different input volumes.")
        else:
            self.ui.applyButton.toolTip = _("Register and fuse in a background process.")

    # --- display of the current result ----------------------------------------------------
    def _currentDisplayState(self):
        node = self._parameterNode
        if node is None:
            return None
        return slicer_support.display_state(
            node.outputVolume, node.showForeground, node.foregroundLut, node.opacity
        )

    def _updateDisplay(self) -> None:
        """Apply show-on-top, foreground colours and opacity to the current result at once."""
        state = self._currentDisplayState()
        if state is None or state == self._displayState:
            return
        self._displayState = state
        output = self._parameterNode.outputVolume
        if not output.GetAttribute("MedFusion.Method"):
            return  # not a MedFusion result (yet): nothing of ours to show
        try:
            self._showOnViews(output, fit=False)
        except Exception as error:  # noqa: BLE001 - a display setting must never end in a traceback
            self.ui.statusLabel.text = _("Display not updated: {error}").format(error=error)

    def _showOnViews(self, output, *, fit: bool) -> None:
        node = self._parameterNode
        self.logic.showResult(
            output,
            showForeground=node.showForeground,
            foregroundLut=node.foregroundLut,
            opacity=node.opacity,
            fit=fit,
        )

    # --- methods and their parameter forms ------------------------------------------------
    def _fillMethods(self) -> None:
        """The method combo box from the registry ("recommended" only until torch is installed)."""
        self._methods = {}
        if self.logic.missingRequirements():
            self.ui.statusLabel.text = _(
                "Python packages are missing; they are offered for installation on Apply."
            )
        else:
            from MedFusionLib.fusion import list_methods

            self._methods = {m.name: m for m in list_methods() if 3 in m.dims}
        entries = [(_("recommended for the pair"), RECOMMENDED_METHOD, slicer_support.recommendation_text(_))]
        entries += [(m.name, m.name, f"{m.summary}\n\n{m.citation}") for m in self._methods.values()]
        _fillComboBox(self.ui.methodComboBox, entries)

    def _fillColormaps(self) -> None:
        """The colour table combo box: auto (recommended), every MedFusionLib table, none (gray)."""
        _fillComboBox(self.ui.colormapComboBox, slicer_support.colormap_choices(_))

    def onColormapChanged(self, index: int) -> None:
        value = self.ui.colormapComboBox.itemData(index)
        if value and self._parameterNode and value != self._parameterNode.colormap:
            self._parameterNode.colormap = value

    def _updateMethodFromParameterNode(self) -> None:
        node = self._parameterNode
        combo = self.ui.methodComboBox
        index = combo.findData(node.method)
        if index < 0 and not node.method and combo.count:
            index = 0  # "recommended for the pair"
        if index >= 0 and index != combo.currentIndex:
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = index
            combo.blockSignals(wasBlocked)
        self._buildParameterForm(node.method)
        colormapIndex = self.ui.colormapComboBox.findData(node.colormap or COLORMAP_AUTO)
        if colormapIndex >= 0 and colormapIndex != self.ui.colormapComboBox.currentIndex:
            self.ui.colormapComboBox.currentIndex = colormapIndex
        deviceIndex = self.ui.deviceComboBox.findData(node.device)
        if deviceIndex >= 0:
            self.ui.deviceComboBox.currentIndex = deviceIndex

    def onMethodChanged(self, index: int) -> None:
        if index < 0 or not self._parameterNode:
            return
        name = self.ui.methodComboBox.itemData(index) or RECOMMENDED_METHOD
        if name != self._parameterNode.method:
            self._parameterNode.methodParameters = "{}"
            self._parameterNode.method = name
        self._buildParameterForm(name)

    def _buildParameterForm(self, methodName: str) -> None:
        """One editor per parameter of the method, with the registry's range and default."""
        layout = self.ui.parametersFrame.layout()
        while layout.count():
            item = layout.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self._parameterWidgets = {}
        if not methodName:
            self.ui.methodDescriptionLabel.text = slicer_support.recommendation_text(_)
            layout.addRow(qt.QLabel(_("The recommended parameters are used.")))
            return
        method = self._methods.get(methodName)
        if method is None:
            self.ui.methodDescriptionLabel.text = ""
            return
        self.ui.methodDescriptionLabel.text = f"{method.summary}\n{method.citation}"
        stored = slicer_support.parameters_from_json(self._parameterNode.methodParameters)
        for spec in method.parameters:
            value = stored.get(spec.name, spec.default)
            widget, read = self._editorFor(spec, value)
            widget.toolTip = f"{spec.help}\nDefault: {spec.default}"
            layout.addRow(spec.name.replace("_", " ") + ":", widget)
            self._parameterWidgets[spec.name] = (spec, widget, read)
        if not method.parameters:
            layout.addRow(qt.QLabel(_("This method has no parameters.")))

    def _editorFor(self, spec, value):
        """An editor showing ``value``, the default and the range exactly (no rounding), and a
        function that reads the value it shows."""
        if spec.choices is not None:
            widget = qt.QComboBox()
            for choice in spec.choices:
                widget.addItem(str(choice), choice)
            widget.currentIndex = max(0, widget.findText(str(value)))
            widget.connect("currentIndexChanged(int)", lambda _i: self._storeParameters())
            return widget, lambda: spec.choices[widget.currentIndex]
        if spec.type == "bool":
            widget = qt.QCheckBox()
            widget.checked = bool(value)
            widget.connect("toggled(bool)", lambda _b: self._storeParameters())
            return widget, lambda: bool(widget.checked)
        if spec.type == "int":
            widget = qt.QSpinBox()
            widget.minimum = int(spec.min) if spec.min is not None else -(2**31)
            widget.maximum = int(spec.max) if spec.max is not None else 2**31 - 1
            widget.value = int(value)
            widget.connect("valueChanged(int)", lambda _v: self._storeParameters())
            return widget, lambda: int(widget.value)
        if spec.type == "float":
            widget = qt.QDoubleSpinBox()
            editor = slicer_support.float_editor(spec.min, spec.max, spec.default, value)
            widget.decimals = editor.decimals  # before the range: the range is rounded to it
            widget.minimum, widget.maximum = editor.minimum, editor.maximum
            widget.singleStep = editor.single_step
            widget.value = float(value)
            widget.connect("valueChanged(double)", lambda _v: self._storeParameters())
            return widget, lambda: float(widget.value)
        widget = qt.QLineEdit(str(value))
        widget.connect("editingFinished()", self._storeParameters)
        return widget, lambda: widget.text

    def _formParameters(self) -> dict:
        """The values the editors show (what Apply sends)."""
        return {name: read() for name, (_spec, _widget, read) in self._parameterWidgets.items()}

    def _storeParameters(self) -> None:
        if self._parameterNode:
            self._parameterNode.methodParameters = json.dumps(self._formParameters(), sort_keys=True)

    def onResetParameters(self) -> None:
        if self._parameterNode:
            self._parameterNode.methodParameters = "{}"
            self._buildParameterForm(self._parameterNode.method)

    # --- devices --------------------------------------------------------------------------
    def _fillDevices(self) -> None:
        choices, description = slicer_support.device_choices(_)
        _fillComboBox(self.ui.deviceComboBox, [(label, value, "") for label, value in choices])
        self.ui.deviceLabel.text = description

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"

    # --- dependencies ---------------------------------------------------------------------
    def ensureDependencies(self) -> bool:
        """Make sure the required packages are installed at the required versions.

        Asks once (one dialog, ours), installs torch through the PyTorch extension and the
        rest with pip, and turns every failure into a message; returns whether all is ready.
        """
        missing = self.logic.missingRequirements()
        if not missing:
            return True
        names = ", ".join(missing)
        if not slicer.util.confirmOkCancelDisplay(
            _(
                "MedFusion needs these Python packages, which are missing or too old: {names}.\n\n"
                "Install them now? PyTorch comes from the PyTorch extension (several hundred MB)."
            ).format(names=names),
            _("MedFusion: install dependencies"),
        ):
            self.ui.statusLabel.text = _("Not installed: {names}.").format(names=names)
            return False
        self.ui.statusLabel.text = _("Installing {names}...").format(names=names)
        try:
            self.logic.installRequirements(missing)
            still = self.logic.missingRequirements()
            if still:
                raise RuntimeError(
                    _("still missing after the installation: {names}").format(names=", ".join(still))
                )
        except Exception as error:  # noqa: BLE001 - every failure becomes a message, never a traceback
            self._showError(_("Installing the MedFusion dependencies failed: {error}").format(error=error))
            return False
        self._fillDevices()
        self._fillColormaps()
        self._fillMethods()
        if self._parameterNode is not None:
            self._updateMethodFromParameterNode()
        self.ui.statusLabel.text = _("Dependencies installed.")
        return True

    # --- running a job --------------------------------------------------------------------
    def onApplyButton(self) -> None:
        """Start the background job and return at once (dependencies are offered first)."""
        if self._job is not None or self._parameterNode is None:
            return
        if not self.ensureDependencies():
            return
        node = self._parameterNode
        try:
            self._storeParameters()
            self._jobContext = self.logic.startJob(
                node.fixedVolume,
                node.movingVolume,
                method=node.method or None,
                parameters=self._formParameters() if node.method else {},
                registration=node.registration,
                device=node.device,
                metrics=DEFAULT_METRICS,
                colormap=node.colormap or COLORMAP_AUTO,
                lesion=node.lesion,
                modalityFixed=None if node.fixedModality == "auto" else node.fixedModality,
                modalityMoving=None if node.movingModality == "auto" else node.movingModality,
            )
        except Exception as error:  # noqa: BLE001 - one message, and the panel stays usable
            self._showError(_("Failed to start the fusion: {error}").format(error=error))
            self._jobContext = None
            return
        self._job = self._jobContext["job"]
        self.ui.progressBar.visible = True
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Started: {method}, registration {registration}.").format(
            method=node.method or _("the recommended fusion"), registration=node.registration
        )
        self.ui.metricsTable.setRowCount(0)
        self._checkCanApply()
        self._timer.start()

    def onPollJob(self) -> None:
        """Called by the QTimer: read the new progress lines (never blocks)."""
        if self._job is None:
            self._timer.stop()
            return
        percent, status = slicer_support.progress_update(self._job.poll())
        if percent is not None:
            self.ui.progressBar.value = percent
        if status is not None:
            self.ui.statusLabel.text = status
        if not self._job.finished:
            return
        job, context = self._job, self._jobContext
        self._finishJob()
        if job.cancelled:  # whatever the process managed to write, a cancelled job adds nothing
            self.ui.statusLabel.text = _("Cancelled; nothing was added to the scene.")
        elif job.result is None:
            self._showError(_("Fusion failed: {error}").format(error=job.error), logTraceback=False)
        else:
            try:
                self._showResult(job.result, context)
            except Exception as error:  # noqa: BLE001 - the scene may have changed meanwhile
                self._showError(_("Failed to load the fusion result: {error}").format(error=error))
        shutil.rmtree(context["workdir"], ignore_errors=True)

    def _showError(self, message: str, *, logTraceback: bool = True) -> None:
        """One error dialog and the same text in the status line (the traceback goes to the log)."""
        if logTraceback:
            logging.exception("MedFusion: %s", message)
        slicer.util.errorDisplay(message)
        self.ui.statusLabel.text = message

    def _showResult(self, result: dict, context: dict) -> None:
        node = self._parameterNode
        if node is None:
            raise RuntimeError(_("the module has no parameter node (the scene was closed)"))
        output = self.logic.loadJobResult(context, outputVolume=node.outputVolume)
        # shown below with the views fitted; the parameter node's change must not show it again
        self._displayState = slicer_support.display_state(
            output, node.showForeground, node.foregroundLut, node.opacity
        )
        node.outputVolume = output
        self._showOnViews(output, fit=True)
        self._fillMetrics(result)
        self.ui.statusLabel.text = slicer_support.result_status(result, _)
        self.ui.progressBar.value = 100

    def _fillMetrics(self, result: dict) -> None:
        rows = slicer_support.readout_rows(result, DEFAULT_METRICS, _)
        table = self.ui.metricsTable
        table.setRowCount(len(rows))
        for row, (name, value, toolTip) in enumerate(rows):
            nameItem, valueItem = qt.QTableWidgetItem(name), qt.QTableWidgetItem(value)
            if toolTip:
                nameItem.setToolTip(toolTip)
                valueItem.setToolTip(toolTip)
            table.setItem(row, 0, nameItem)
            table.setItem(row, 1, valueItem)

    def onCancelButton(self) -> None:
        if self._job is None:
            return
        self._job.cancel()  # returns at once; the polling timer sees the process end
        self.ui.cancelButton.enabled = False
        self.ui.statusLabel.text = _("Cancelling...")

    def _stopJob(self, message: str) -> None:
        """Cancel a running job and forget it now (scene close, module cleanup); adds nothing."""
        if self._job is None:
            return
        job, context = self._job, self._jobContext
        job.cancel()
        try:  # the job's interpreter exits within 0.2 s of the cancel file; the tree is killed after 2 s
            job.wait(timeout=5)
        except Exception:  # noqa: BLE001 - never raise here (scene close, module cleanup)
            logging.warning("MedFusion: the cancelled job did not end within 5 s")
        self._finishJob()
        if context is not None:
            shutil.rmtree(context["workdir"], ignore_errors=True)
        self.ui.statusLabel.text = message

    def _finishJob(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._job = None
        self._jobContext = None
        self.ui.progressBar.visible = False
        self._checkCanApply()


#
# MedFusionLogic
#


class MedFusionLogic(ScriptedLoadableModuleLogic):
    """Thin glue between MRML nodes and MedFusionLib; usable from the Python console.

    ``process`` fuses synchronously (scripts, tests); ``startJob`` + ``loadJobResult`` run
    the same ``FusionJob`` in a background process for the GUI.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        reason = unsupportedReason()
        if reason is not None:
            raise RuntimeError(reason)

    def getParameterNode(self):
        return MedFusionParameterNode(super().getParameterNode())

    @staticmethod
    def missingRequirements() -> list:
        """The entries of ``REQUIREMENTS`` that do not import or are older than required."""
        return slicer_support.missing_requirements()

    @staticmethod
    def installRequirements(requirements) -> None:
        """Install ``requirements`` without asking again: torch through the PyTorch extension
        (it picks the build for this computer's GPU), the others with pip.

        Raises:
            RuntimeError: the PyTorch extension is missing or did not install torch.
        """
        torch, others = slicer_support.split_torch(requirements)
        if torch is not None:
            try:
                import PyTorchUtils
            except ImportError:
                raise RuntimeError(
                    _("install the PyTorch extension from the Extensions Manager and restart Slicer")
                ) from None
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            try:
                installed = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=torch)
            except TypeError:  # an older PyTorch extension without version requirements
                installed = torchLogic.installTorch(askConfirmation=False)
            if installed is None:
                raise RuntimeError(_("the PyTorch extension did not install PyTorch"))
        if others:
            slicer.util.pip_install(others)

    @staticmethod
    def inputCandidates(scene) -> list:
        """Volumes an input selector shows and that are worth picking automatically (not label
        maps, hidden nodes, MedFusion results or overlays)."""
        return slicer_support.input_candidates(scene)

    @staticmethod
    def readoutRows(result: dict) -> list:
        """The quality readout of a finished job: (name, value text, tooltip) rows."""
        return slicer_support.readout_rows(result, DEFAULT_METRICS, _)

    def process(
        self,
        fixed,
        moving,
        *,
        method=None,
        parameters=None,
        registration="rigid",
        device="auto",
        colormap=COLORMAP_AUTO,
        show=True,
    ):
        """Register and fuse two volume nodes now (blocks); returns the fused volume node.

        The inputs are not modified. The registration transform becomes a separate transform
        node; the output records method, parameters, colour table and registration in its
        attributes. ``method=None`` and ``colormap="auto"`` fuse as recommended for the pair.
        """
        from MedFusionLib import mrml

        if not fixed or not moving:
            raise ValueError("fixed and moving volumes are required")
        output = mrml.fuse_volume_nodes(
            fixed,
            moving,
            method=method,
            parameters=parameters,
            registration=registration,
            device=device,
            colormap=colormap,
        )
        if show:
            self.showResult(output, showForeground=False)
        return output

    @staticmethod
    def readout(fixed, moving, fused, lesion, *, modalityFixed=None, modalityMoving=None) -> dict:
        """Conspicuity kept and anatomy kept of ``fused`` for a lesion segmentation or label map (blocks)."""
        from MedFusionLib import mrml

        return mrml.clinical_readout(
            fixed, moving, fused, lesion, modality_fixed=modalityFixed, modality_moving=modalityMoving
        )

    @staticmethod
    def pacsFromSettings() -> Optional[str]:  # noqa: UP045 - this file parses on Python 3.9
        """The PACS to send to as ``AE@HOST:PORT``: the ``MedFusion/PACS`` setting, else the address and
        port Slicer's DICOM Send dialog remembers (``DICOM.sendAddress``, ``DICOM.sendPort``) with
        the AE title ``DICOM.sendAETitle`` or ``ANY-SCP``; ``None`` when nothing is set."""
        settings = qt.QSettings()
        explicit = settings.value("MedFusion/PACS")
        if explicit:
            return str(explicit)
        address, port = settings.value("DICOM.sendAddress"), settings.value("DICOM.sendPort")
        if not address or not port:
            return None
        title = settings.value("DICOM.sendAETitle") or "ANY-SCP"
        host = str(address).split("://")[-1].split("/")[0].rsplit(":", 1)[0]
        return f"{title}@{host}:{port}"

    @staticmethod
    def exportDicom(fusedNode, folder, *, send=None, fileForInstance=None) -> list:
        """Write a MedFusion result as a derived series in its fixed volume's DICOM study (and send it).

        The fixed and moving volumes are the nodes recorded on the result
        (``MedFusion.FixedNodeID``/``MovingNodeID``); their DICOM identity comes from Slicer's DICOM
        database (``slicer.dicomDatabase.fileForInstance`` unless ``fileForInstance`` is given).
        ``send`` is ``AE@HOST:PORT`` (see :meth:`pacsFromSettings`) or ``None``. Returns the files written.
        """
        from MedFusionLib import mrml

        scene = fusedNode.GetScene()
        fixed = scene.GetNodeByID(fusedNode.GetAttribute("MedFusion.FixedNodeID") or "")
        moving = scene.GetNodeByID(fusedNode.GetAttribute("MedFusion.MovingNodeID") or "")
        if fixed is None:
            raise ValueError(
                _("the fixed volume of {name} is no longer in the scene").format(name=fusedNode.GetName())
            )
        if fileForInstance is None:
            database = getattr(slicer, "dicomDatabase", None)
            if database is None:
                raise ValueError(
                    _("Slicer's DICOM database is not open: load the volumes from the DICOM module")
                )
            fileForInstance = database.fileForInstance
        return mrml.export_fusion_to_dicom(
            fusedNode, fixed, moving, folder, file_for_instance=fileForInstance, send=send
        )

    @staticmethod
    def showResult(output, *, showForeground=True, foregroundLut="PET-Heat", opacity=0.5, fit=True) -> None:
        """Show a MedFusion result with the moving volume it was made from (not the current selection);
        the moving volume goes on top of a gray result when ``showForeground``."""
        from MedFusionLib import mrml

        app = getattr(slicer, "app", None)  # absent outside the Slicer application (slicer-core)
        mrml.show_result(
            output,
            show_foreground=showForeground,
            foreground_lut=foregroundLut,
            opacity=opacity,
            application_logic=app.applicationLogic() if app is not None else None,
            fit=fit,
        )

    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's own Python interpreter for background work (``PythonSlicer``).

        Raises:
            RuntimeError: no ``PythonSlicer`` and ``sys.executable`` is not a Python interpreter
                (inside Slicer it is the application itself, which cannot run a script).
        """
        found = slicer_support.background_python(sys.executable)
        if found is None:
            raise RuntimeError(
                _(
                    "PythonSlicer was not found (not on PATH, not beside {executable}), and {executable} is "
                    "not a Python interpreter; reinstall Slicer or put its bin folder on PATH."
                ).format(executable=sys.executable or "sys.executable")
            )
        return found

    def startJob(
        self,
        fixed,
        moving,
        *,
        method,
        parameters,
        registration,
        device,
        metrics=DEFAULT_METRICS,
        colormap=COLORMAP_AUTO,
        lesion=None,
        modalityFixed=None,
        modalityMoving=None,
    ):
        """Start the ``FusionJob`` on two volume nodes in a background process; returns at once.

        ``method=None`` and ``colormap="auto"`` fuse as recommended for the modality pair
        (``modalityFixed``/``modalityMoving``, else the volumes' modality attributes). With a
        ``lesion`` the job also computes conspicuity kept and anatomy kept. See
        ``MedFusionLib.mrml.start_background_job`` (copies on this thread, writing on a worker).

        Returns a context dict: the ``BackgroundJob``, its work folder, the input nodes and the
        job's JSON form (``spec``).
        """
        from MedFusionLib import mrml

        if not fixed or not moving:
            raise ValueError(_("Select a fixed and a moving volume."))
        runner, job = mrml.start_background_job(
            fixed,
            moving,
            python=self.pythonExecutable(),
            temporary=slicer.app.temporaryPath if hasattr(slicer, "app") else None,
            lesion=lesion or None,
            registration=registration,
            method=method or None,
            parameters=parameters or {},
            colormap=colormap or COLORMAP_AUTO,
            device=device or "auto",
            metrics=tuple(metrics) if metrics else None,
            modality_fixed=modalityFixed,
            modality_moving=modalityMoving,
        )
        workdir = str(runner.workdir)
        logging.info("MedFusion: background job started in %s", workdir)
        return {"job": runner, "workdir": workdir, "fixed": fixed, "moving": moving, "spec": job.to_mapping()}

    def loadJobResult(self, context, *, outputVolume=None):
        """Add the finished job's fused volume and transform to the scene; returns the volume node.

        Raises:
            RuntimeError: the job was cancelled or failed (there is nothing to add).
        """
        from MedFusionLib import mrml

        job = context["job"]
        if job.cancelled or job.result is None:
            raise RuntimeError(_("the job was cancelled or failed; there is no result to add"))
        return mrml.add_job_result_nodes(job.result, context["fixed"], context["moving"], node=outputVolume)


#
# MedFusionTest
#


class MedFusionTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode > Reload and Test, or ctest), offline.

    Uses only what the extension ships (the bundled SPM T1 + PET pair) and runs the Apply path:
    the background process, progress polling, then the result in the scene. Skips, saying why,
    when PyTorch or the other required packages are not installed.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MedFusion1()

    def test_MedFusion1(self):
        """Bundled T1 + PET, rigid + average in a background job; geometry, display, unchanged inputs."""
        reason = unsupportedReason()
        if reason is not None:
            self.skipTest(reason)
        logic = MedFusionLogic()
        missing = logic.missingRequirements()
        if missing:
            self.skipTest(
                _("MedFusion's self-test needs {names}; install them from the module (Apply) first.").format(
                    names=", ".join(missing)
                )
            )
        import numpy as np

        self.delayDisplay("Loading the bundled sample volumes (GPL-2, SPM)")
        fixed, moving = loadBundledSamples()

        before = [slicer.util.arrayFromVolume(node).copy() for node in (fixed, moving)]

        self.delayDisplay("Fusing in the background process")
        context = logic.startJob(
            fixed, moving, method="average", parameters={}, registration="rigid", device="cpu", metrics=["EN"]
        )
        job = context["job"]
        job.wait(timeout=300, idle=slicer.app.processEvents)  # polls, keeping every event
        progress = [event["progress"] for event in job.events if "progress" in event]
        self.assertEqual(job.returncode, 0, f"{job.error}\n{job.stderr[-2000:]}")
        self.assertEqual(progress, sorted(progress))
        output = logic.loadJobResult(context)
        logic.showResult(output, showForeground=True, opacity=0.4)
        shutil.rmtree(context["workdir"], ignore_errors=True)

        self.assertEqual(output.GetImageData().GetDimensions(), fixed.GetImageData().GetDimensions())
        np.testing.assert_allclose(output.GetSpacing(), fixed.GetSpacing())
        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        output.GetIJKToRASMatrix(a)
        fixed.GetIJKToRASMatrix(b)
        np.testing.assert_allclose(
            slicer.util.arrayFromVTKMatrix(a), slicer.util.arrayFromVTKMatrix(b), atol=1e-6
        )
        self.assertEqual(output.GetAttribute("MedFusion.Method"), "average")
        self.assertEqual(output.GetAttribute("MedFusion.Registration"), "rigid")
        self.assertEqual(output.GetAttribute("MedFusion.MovingNodeID"), moving.GetID())
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            self.assertEqual(composite.GetBackgroundVolumeID(), output.GetID())
        for node, array in zip((fixed, moving), before):  # noqa: B905 - this file parses on Python 3.9
            np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
        self.assertIsNone(moving.GetParentTransformNode())
        self.assertGreater(float(slicer.util.arrayFromVolume(output).std()), 0.01)
        self.delayDisplay("Test passed")
