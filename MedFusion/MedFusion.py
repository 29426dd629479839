"""MedFusion: register and fuse two volumes (CT, MR, PET, SPECT) in 3D Slicer.

A thin GUI and MRML layer over the Slicer-free engine ``MedFusionLib`` (installed beside this
file). Heavy work never runs on the GUI thread: Apply copies the two inputs, writes the
copies to a temporary folder on a worker thread, then starts ``MedFusionLib.background`` as a
separate process (``PythonSlicer``), which prints JSON progress lines that a QTimer polls every
150 ms; the result is read back and added to the scene when the process is done.
"""

import json
import logging
import os
import shutil
import sys
import tempfile
from typing import Annotated, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
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
DEFAULT_METRICS = ("EN", "SD", "MI", "SSIM", "VIF", "Qabf")
MODALITIES = ("auto", "CT", "MR", "PET", "SPECT")
RECOMMENDED_METHOD = ""  # the method selector's "recommended for the pair" (method None in the engine)
COLORMAP_AUTO = "auto"
COLORMAP_NONE = "none"
READOUT_NAMES = {"conspicuity_kept": "Conspicuity kept", "anatomy_kept": "Anatomy kept"}
REQUIRED_MODULES = {
    "torch": "torch",
    "SimpleITK": "SimpleITK",
    "pywt": "PyWavelets",
    "PIL": "Pillow",
    "tqdm": "tqdm",
    "safetensors": "safetensors",
}
POLL_INTERVAL_MS = 150


def _ensureLibOnPath():
    """MedFusionLib is installed beside this file (or one folder up in a source checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(folder, "MedFusionLib")) and folder not in sys.path:
            sys.path.insert(0, folder)
            break


_ensureLibOnPath()


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
        self.parent.contributors = ["The MedFusion developers"]
        self.parent.helpText = _("""
Register and fuse two volumes of different modalities (MR, CT, PET, SPECT) into one image for
planning and review. The moving volume is registered to the fixed one with Mattes mutual
information (Mattes et al., IEEE TMI 22(1), 2003): rigid, affine, or B-spline free-form
deformation (Rueckert et al., IEEE TMI 18(8), 1999). Both are then fused on the fixed volume's
grid with a method of the MedFusion registry: pixel average, weighted average, maximum and PCA
(Naidu and Raol 2008); Laplacian (Burt and Adelson 1983), ratio and contrast (Toet 1989) and
gradient (Burt and Kolczynski 1993) pyramids; discrete (Li, Manjunath and Mitra 1995) and
stationary (Rockinger 1997) wavelets; guided filtering (Li, Kang and Hu, IEEE TIP 2013), cross
bilateral filter (Shreyamsha Kumar 2015), joint bilateral filter with local gradient energy
(Li et al. 2021); and the parameter-adaptive PCNN (Yin et al., IEEE TIM 2019). Each method's
full citation is shown when it is selected.
The work runs in a background process, on the GPU when there is one (CUDA or MPS).
See the <a href="https://github.com/medfusion/SlicerMedFusion/blob/main/Docs/user-guide.md">user guide</a>.
""")
        self.parent.acknowledgementText = _("""
MedFusion is built on SimpleITK, PyTorch and PyWavelets. The sample volumes bundled with the
engine are from the SPM distribution (Wellcome Centre for Human Neuroimaging, GPL-2).
This module follows the 3D Slicer scripted module template by Jean-Christophe Fillion-Robin
(Kitware) and Steve Pieper (Isomics), and the background-process pattern of SlicerMONAIAuto3DSeg.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data
#


def registerSampleData():
    """Add a MedFusion category to the Sample Data module.

    The SPM T1 + PET pair ships inside MedFusionLib (no download); the CT-MR brain pair of
    Slicer's own sample data is the larger example used in the module test.
    """
    import SampleData

    iconsPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons")
    import MedFusionLib

    dataPath = os.path.join(os.path.dirname(MedFusionLib.__file__), "sample_data")

    def loadBundled(source):
        nodes = []
        for fileName, nodeName in zip(source.fileNames, source.nodeNames, strict=True):
            nodes.append(slicer.util.loadVolume(os.path.join(dataPath, fileName), {"name": nodeName}))
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

    fixedVolume, movingVolume: the two inputs (the output has the fixed volume's grid).
    fixedModality, movingModality: auto (the volume's MedFusion.Modality or DICOM.Modality
        attribute), CT, MR, PET or SPECT; they pick the recommended fusion.
    lesion: optional segmentation (its first segment) or label map of the lesion; when set, the
        readout shows conspicuity kept and anatomy kept.
    registration: none, rigid, affine or bspline.
    method: a MedFusionLib fusion method name, or empty for the fusion recommended for the
        modality pair; methodParameters: its parameters (JSON object).
    colormap: auto (the recommended colour table), a MedFusionLib table name, or none (gray).
    device: auto, cuda, mps or cpu.
    outputVolume: the fused volume (created on Apply when empty).
    showForeground, foregroundLut, opacity: how the moving volume is shown over the result.
    """

    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    fixedModality: Annotated[str, Choice(list(MODALITIES))] = "auto"
    movingModality: Annotated[str, Choice(list(MODALITIES))] = "auto"
    lesion: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]  # noqa: UP007 - the wrapper reads typing.Union
    registration: Annotated[str, Choice(list(REGISTRATIONS))] = "rigid"
    method: str = RECOMMENDED_METHOD
    methodParameters: str = "{}"
    colormap: str = COLORMAP_AUTO
    device: str = "auto"
    outputVolume: vtkMRMLScalarVolumeNode
    showForeground: bool = True
    foregroundLut: Annotated[str, Choice(list(FOREGROUND_LUTS))] = "PET-Heat"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5


#
# MedFusionWidget
#


class MedFusionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel; every computation goes to MedFusionLib in a background process."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._parameterWidgets = {}
        self._job = None
        self._jobContext = None
        self._timer = None
        self._dependenciesChecked = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedFusion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MedFusionLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.fixedSelector.setToolTip(_("Reference volume; the fused volume has its grid."))
        self.ui.metricsTable.horizontalHeader().setStretchLastSection(True)
        self.ui.metricsTable.verticalHeader().setVisible(False)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.onMethodChanged)
        self.ui.colormapComboBox.connect("currentIndexChanged(int)", self.onColormapChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.resetParametersButton.connect("clicked(bool)", self.onResetParameters)

        self._methods = {}
        self._fillColormaps()
        self._fillMethods()
        self._fillDevices()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._job is not None and not self._job.finished:
            self._job.cancel()
            self._job.wait(10)  # the module is closing: let the process end and clean up
        self._finishJob()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        if not self._dependenciesChecked:
            self._dependenciesChecked = True
            qt.QTimer.singleShot(0, lambda: self.checkDependencies(askConfirmation=True))

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # --- parameter node -------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        node = self._parameterNode
        if not node.fixedVolume or not node.movingVolume:
            volumes = [
                v
                for v in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                if not v.IsA("vtkMRMLLabelMapVolumeNode")
            ]
            if not node.fixedVolume and volumes:
                node.fixedVolume = volumes[0]
            if not node.movingVolume and len(volumes) > 1:
                node.movingVolume = next(v for v in volumes if v != node.fixedVolume)

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._updateMethodFromParameterNode()
            self._checkCanApply()

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

    # --- methods and their parameter forms ------------------------------------------------
    def _fillMethods(self) -> None:
        """The method combo box from the registry (empty until torch is installed)."""
        if self.logic.missingDependencies():
            self.ui.statusLabel.text = _("Python packages are missing; they are offered for installation.")
            return
        from MedFusionLib.fusion import list_methods

        self._methods = {m.name: m for m in list_methods() if 3 in m.dims}
        combo = self.ui.methodComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItem(_("recommended for the pair"), RECOMMENDED_METHOD)
        combo.setItemData(0, MedFusionLogic.recommendationText(), qt.Qt.ToolTipRole)
        for method in self._methods.values():
            combo.addItem(method.name, method.name)
            combo.setItemData(combo.count - 1, f"{method.summary}\n\n{method.citation}", qt.Qt.ToolTipRole)
        combo.blockSignals(wasBlocked)

    def _fillColormaps(self) -> None:
        """The colour table combo box: auto (recommended), every MedFusionLib table, none (gray)."""
        combo = self.ui.colormapComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for label, value, toolTip in MedFusionLogic.colormapChoices():
            combo.addItem(label, value)
            combo.setItemData(combo.count - 1, toolTip, qt.Qt.ToolTipRole)
        combo.blockSignals(wasBlocked)

    def onColormapChanged(self, index: int) -> None:
        value = self.ui.colormapComboBox.itemData(index)
        if value and self._parameterNode and value != self._parameterNode.colormap:
            self._parameterNode.colormap = value

    def _updateMethodFromParameterNode(self) -> None:
        node = self._parameterNode
        index = self.ui.methodComboBox.findData(node.method)
        if index < 0 and not node.method and self.ui.methodComboBox.count:
            index = 0  # "recommended for the pair"
        if index >= 0 and index != self.ui.methodComboBox.currentIndex:
            self.ui.methodComboBox.currentIndex = index
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

    def _storedParameters(self) -> dict:
        try:
            value = json.loads(self._parameterNode.methodParameters or "{}")
        except ValueError:
            value = {}
        return value if isinstance(value, dict) else {}

    def _buildParameterForm(self, methodName: str) -> None:
        """One editor per parameter of the method, with the registry's range and default."""
        layout = self.ui.parametersFrame.layout()
        while layout.count():
            item = layout.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self._parameterWidgets = {}
        if not methodName:
            self.ui.methodDescriptionLabel.text = MedFusionLogic.recommendationText()
            layout.addRow(qt.QLabel(_("The recommended parameters are used.")))
            return
        method = self._methods.get(methodName)
        if method is None:
            self.ui.methodDescriptionLabel.text = ""
            return
        self.ui.methodDescriptionLabel.text = f"{method.summary}\n{method.citation}"
        stored = self._storedParameters()
        for spec in method.parameters:
            value = stored.get(spec.name, spec.default)
            widget = self._editorFor(spec, value)
            widget.toolTip = f"{spec.help}\nDefault: {spec.default}"
            layout.addRow(spec.name.replace("_", " ") + ":", widget)
            self._parameterWidgets[spec.name] = (spec, widget)
        if not method.parameters:
            layout.addRow(qt.QLabel(_("This method has no parameters.")))

    def _editorFor(self, spec, value):
        if spec.choices is not None:
            widget = qt.QComboBox()
            for choice in spec.choices:
                widget.addItem(str(choice), choice)
            widget.currentIndex = max(0, widget.findText(str(value)))
            widget.connect("currentIndexChanged(int)", lambda _i: self._storeParameters())
        elif spec.type == "bool":
            widget = qt.QCheckBox()
            widget.checked = bool(value)
            widget.connect("toggled(bool)", lambda _b: self._storeParameters())
        elif spec.type == "int":
            widget = qt.QSpinBox()
            widget.minimum = int(spec.min) if spec.min is not None else -(2**31)
            widget.maximum = int(spec.max) if spec.max is not None else 2**31 - 1
            widget.value = int(value)
            widget.connect("valueChanged(int)", lambda _v: self._storeParameters())
        elif spec.type == "float":
            widget = qt.QDoubleSpinBox()
            widget.decimals = 4
            widget.minimum = float(spec.min) if spec.min is not None else -1e9
            widget.maximum = float(spec.max) if spec.max is not None else 1e9
            span = (
                (widget.maximum - widget.minimum) if spec.min is not None and spec.max is not None else 10.0
            )
            widget.singleStep = max(1e-4, span / 100.0)
            widget.value = float(value)
            widget.connect("valueChanged(double)", lambda _v: self._storeParameters())
        else:
            widget = qt.QLineEdit(str(value))
            widget.connect("editingFinished()", self._storeParameters)
        return widget

    def _formParameters(self) -> dict:
        values = {}
        for name, (spec, widget) in self._parameterWidgets.items():
            if spec.choices is not None:
                values[name] = spec.choices[widget.currentIndex]
            elif spec.type == "bool":
                values[name] = bool(widget.checked)
            elif spec.type == "int":
                values[name] = int(widget.value)
            elif spec.type == "float":
                values[name] = float(widget.value)
            else:
                values[name] = widget.text
        return values

    def _storeParameters(self) -> None:
        if self._parameterNode:
            self._parameterNode.methodParameters = json.dumps(self._formParameters(), sort_keys=True)

    def onResetParameters(self) -> None:
        if self._parameterNode:
            self._parameterNode.methodParameters = "{}"
            self._buildParameterForm(self._parameterNode.method)

    # --- devices --------------------------------------------------------------------------
    def _fillDevices(self) -> None:
        combo = self.ui.deviceComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItem(_("auto"), "auto")
        detected = []
        try:
            import torch

            if torch.cuda.is_available():
                combo.addItem(_("CUDA GPU"), "cuda")
                detected.append(f"CUDA: {torch.cuda.get_device_name(0)}")
            mps = getattr(torch.backends, "mps", None)
            if mps is not None and mps.is_available():
                combo.addItem(_("Apple GPU (MPS)"), "mps")
                detected.append("Apple GPU (MPS)")
            detected.append(f"CPU ({os.cpu_count()} cores), torch {torch.__version__}")
        except ImportError:
            detected.append(_("PyTorch is not installed yet (the CPU is used once it is)"))
        combo.addItem(_("CPU"), "cpu")
        combo.blockSignals(wasBlocked)
        self.ui.deviceLabel.text = "; ".join(detected)

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"

    # --- dependencies ---------------------------------------------------------------------
    def checkDependencies(self, askConfirmation: bool = True) -> bool:
        """Make sure torch, SimpleITK, PyWavelets, Pillow and tqdm import; offer to install them.

        Never installs silently: the user confirms first. torch comes from the PyTorch
        extension (it picks the build for this computer's GPU), the rest from pip.
        """
        missing = self.logic.missingDependencies()
        if not missing:
            return True
        names = ", ".join(REQUIRED_MODULES[m] for m in missing)
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _(
                "MedFusion needs these Python packages, which are not installed: {names}.\n\n"
                "Install them now? This downloads several hundred MB for PyTorch and may take a few minutes."
            ).format(names=names),
            _("MedFusion: install dependencies"),
        ):
            self.ui.statusLabel.text = _("Missing Python packages: {names}.").format(names=names)
            return False
        with slicer.util.tryWithErrorDisplay(
            _("Installing the MedFusion dependencies failed."), waitCursor=True
        ):
            if "torch" in missing:
                try:
                    import PyTorchUtils
                except ImportError:
                    raise RuntimeError(
                        _("Install the PyTorch extension from the Extensions Manager and restart Slicer.")
                    ) from None
                if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True) is None:
                    raise RuntimeError(_("PyTorch was not installed."))
            others = [REQUIRED_MODULES[m] for m in missing if m != "torch"]
            if others:
                slicer.util.pip_install(others)
        still = self.logic.missingDependencies()
        if not still:
            self._fillDevices()
            self._fillMethods()
            if self._parameterNode is not None:
                self._updateMethodFromParameterNode()
        self.ui.statusLabel.text = (
            "" if not still else _("Still missing: {names}").format(names=", ".join(still))
        )
        return not still

    # --- running a job --------------------------------------------------------------------
    def onApplyButton(self) -> None:
        """Write the inputs, start the background process and return at once."""
        if self._job is not None:
            return
        if not self.checkDependencies(askConfirmation=True):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the fusion."), waitCursor=True):
            node = self._parameterNode
            self._storeParameters()
            self._jobContext = self.logic.startJob(
                node.fixedVolume,
                node.movingVolume,
                method=node.method or None,
                parameters=self._storedParameters(),
                registration=node.registration,
                device=node.device,
                metrics=DEFAULT_METRICS,
                colormap=node.colormap or COLORMAP_AUTO,
                lesion=node.lesion,
                modalityFixed=None if node.fixedModality == "auto" else node.fixedModality,
                modalityMoving=None if node.movingModality == "auto" else node.movingModality,
            )
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
        for event in self._job.poll():
            if isinstance(event.get("progress"), (int, float)):
                self.ui.progressBar.value = int(round(100 * event["progress"]))
            if event.get("message"):
                self.ui.statusLabel.text = f"{event.get('stage', '')}: {event['message']}"
        if not self._job.finished:
            return
        job, context = self._job, self._jobContext
        self._timer.stop()
        try:
            if job.result is not None:
                with slicer.util.tryWithErrorDisplay(_("Failed to load the fusion result."), waitCursor=True):
                    self._showResult(job.result, context)
            elif job.cancelled:
                self.ui.statusLabel.text = _("Cancelled; nothing was added to the scene.")
            else:
                slicer.util.errorDisplay(_("Fusion failed: {error}").format(error=job.error))
                self.ui.statusLabel.text = _("Failed: {error}").format(error=job.error)
        finally:
            self._finishJob()

    def _showResult(self, result: dict, context: dict) -> None:
        node = self._parameterNode
        output = self.logic.loadJobResult(context, outputVolume=node.outputVolume)
        node.outputVolume = output
        colourFusion = bool(result.get("colormap"))  # the PET is already in the colours: no overlay
        self.logic.show(
            output,
            foreground=node.movingVolume if node.showForeground and not colourFusion else None,
            opacity=node.opacity,
            foregroundLut=node.foregroundLut,
        )
        self._fillMetrics(result)
        registration = result.get("registration") or {}
        text = _("Done: {method} in {seconds:.1f} s on {device}.").format(
            method=result["method"], seconds=float(result["seconds"]), device=result["device"]
        )
        text += " " + (
            _("Colour table {colormap}.").format(colormap=result["colormap"])
            if result.get("colormap")
            else _("Gray output.")
        )
        if registration:
            text += " " + _("Registration {type} in {seconds:.1f} s.").format(
                type=registration["type"], seconds=float(registration["seconds"])
            )
            for warning in registration.get("warnings", []):
                text += " " + _("Warning: {warning}").format(warning=warning)
        self.ui.statusLabel.text = text
        self.ui.progressBar.value = 100

    def _fillMetrics(self, result: dict) -> None:
        rows = MedFusionLogic.readoutRows(result)
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

    def _finishJob(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        if self._jobContext is not None:
            shutil.rmtree(self._jobContext["workdir"], ignore_errors=True)
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
    the same work in a background process for the GUI.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return MedFusionParameterNode(super().getParameterNode())

    @staticmethod
    def missingDependencies() -> list:
        import importlib

        missing = []
        for module in REQUIRED_MODULES:
            try:
                importlib.import_module(module)
            except ImportError:
                missing.append(module)
        return missing

    @staticmethod
    def colormapChoices() -> list:
        """The colour table selector's entries: (label, parameter value, tooltip), the default first."""
        choices = [
            (
                _("auto (recommended)"),
                COLORMAP_AUTO,
                _(
                    "The table recommended for the pair when one volume is PET or SPECT and the other CT or MR; gray otherwise."
                ),
            )
        ]
        try:
            from MedFusionLib.colormaps import describe_colormap, list_colormaps
        except ImportError:  # the engine's dependencies are not installed yet
            names = []
        else:
            names = list_colormaps()
        for name in names:
            choices.append((name, name, describe_colormap(name).summary))
        choices.append((_("none (gray)"), COLORMAP_NONE, _("Gray fusion, whatever the modalities.")))
        return choices

    @staticmethod
    def recommendationText() -> str:
        """What "recommended for the pair" fuses with, for the method selector."""
        try:
            from MedFusionLib.recommended import GRAY_METHOD, recommended
        except ImportError:
            return _("The fusion recommended for the modality pair.")
        lines = [_("The fusion recommended for the modality pair (set the modalities under Inputs):")]
        for anatomical in ("CT", "MR"):
            choice = recommended(anatomical, "PET")
            lines.append(
                _("{anatomical} + PET or SPECT: {method}, colour table {colormap}").format(
                    anatomical=anatomical, method=choice.method, colormap=choice.colormap
                )
            )
        lines.append(_("other pairs: {method}, gray").format(method=GRAY_METHOD))
        return "\n".join(lines)

    @staticmethod
    def readoutRows(result: dict) -> list:
        """The quality readout of a finished job: (name, value text, tooltip) rows.

        The grey-level metrics, then, when a lesion was given, conspicuity kept and anatomy kept
        (or why they could not be computed).
        """
        metrics = result.get("metrics") or {}
        rows = []
        for name in [*DEFAULT_METRICS, "balance"]:
            if name in metrics:
                value = metrics[name]
                rows.append((name, "n/a" if value is None else f"{value:.4g}", ""))
        clinical = result.get("clinical")
        if clinical:
            if clinical.get("error"):
                rows.append((_("Lesion readout"), _("n/a"), clinical["error"]))
            else:
                notes = clinical.get("notes") or {}
                for key, name in READOUT_NAMES.items():
                    value = clinical.get(key)
                    text = _("n/a") if value is None else f"{value:.2f}"
                    toolTip = notes.get(key) or _(
                        "1.0: as in the PET alone (conspicuity) or the CT/MR alone (anatomy); "
                        "{voxels} lesion voxels, colour table {colormap}."
                    ).format(
                        voxels=clinical.get("lesion_voxels"), colormap=clinical.get("colormap") or "none"
                    )
                    rows.append((name, text, toolTip))
        return rows

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
            self.show(output, foreground=None)
        return output

    @staticmethod
    def readout(fixed, moving, fused, lesion, *, modalityFixed=None, modalityMoving=None) -> dict:
        """Conspicuity kept and anatomy kept of ``fused`` for a lesion segmentation or label map (blocks)."""
        from MedFusionLib import mrml

        return mrml.clinical_readout(
            fixed, moving, fused, lesion, modality_fixed=modalityFixed, modality_moving=modalityMoving
        )

    @staticmethod
    def show(fused, *, foreground=None, opacity=0.5, foregroundLut="PET-Heat"):
        from MedFusionLib import mrml

        app = getattr(slicer, "app", None)  # absent outside the Slicer application (slicer-core)
        mrml.show_fusion(
            fused,
            foreground=foreground,
            opacity=opacity,
            foreground_lut=foregroundLut,
            application_logic=app.applicationLogic() if app is not None else None,
        )

    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's own interpreter for background work (``PythonSlicer``)."""
        return shutil.which("PythonSlicer") or sys.executable

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
        """Copy both volumes, write them to a temporary folder and start the background process.

        ``method=None`` and ``colormap="auto"`` fuse as recommended for the modality pair
        (``modalityFixed``/``modalityMoving``, else the volumes' modality attributes). With a
        ``lesion`` (segmentation: its first segment, exported on the fixed grid; or a label
        map), the job also computes conspicuity kept and anatomy kept.

        Only the copy of the voxels happens on the calling (GUI) thread: measured with
        slicer-core on a 2-core machine, 0.03-0.08 s for a 512x512x300 int16 CT. Writing the
        copies (uncompressed NRRD, 0.31-0.36 s each there; SimpleITK releases the GIL while
        it writes) runs on a worker thread, and the process starts when both are written.

        Returns a context dict with the :class:`MedFusionLib.background.BackgroundJob`.
        """
        from MedFusionLib import mrml
        from MedFusionLib.background import BackgroundJob
        from MedFusionLib.io import write_image

        if not fixed or not moving:
            raise ValueError(_("Select a fixed and a moving volume."))
        workdir = tempfile.mkdtemp(
            prefix="MedFusion-", dir=slicer.app.temporaryPath if hasattr(slicer, "app") else None
        )
        fixedPath = os.path.join(workdir, "fixed.nrrd")
        movingPath = os.path.join(workdir, "moving.nrrd")
        fixedImage = mrml.image_from_volume_node(fixed)  # copies: the scene may change meanwhile
        movingImage = mrml.image_from_volume_node(moving)
        lesionImage = mrml.lesion_image_from_node(lesion, fixed) if lesion else None
        lesionPath = os.path.join(workdir, "lesion.nrrd")

        def writeInputs() -> None:
            write_image(fixedImage, fixedPath, compress=False)
            write_image(movingImage, movingPath, compress=False)
            if lesionImage is not None:
                write_image(lesionImage, lesionPath, compress=False)

        job = {
            "fixed": fixedPath,
            "moving": movingPath,
            "output": os.path.join(workdir, "fused.nrrd"),
            "registration": registration,
            "method": method or None,
            "parameters": parameters or {},
            "colormap": colormap or COLORMAP_AUTO,
            "device": device or "auto",
            "metrics": list(metrics) if metrics else None,
            "modality_fixed": modalityFixed or fixedImage.modality,
            "modality_moving": modalityMoving or movingImage.modality,
        }
        if lesionImage is not None:
            job["lesion"] = lesionPath
        if registration != "none":
            job["transform"] = os.path.join(workdir, "transform.h5")
        runner = BackgroundJob(self.pythonExecutable())
        runner.start(job, workdir, prepare=writeInputs)
        logging.info("MedFusion: background job started in %s", workdir)
        return {"job": runner, "workdir": workdir, "fixed": fixed, "moving": moving, "spec": job}

    def loadJobResult(self, context, *, outputVolume=None):
        """Add the finished job's fused volume and transform to the scene; returns the volume node."""
        import SimpleITK as sitk

        from MedFusionLib import mrml
        from MedFusionLib.io import read_image
        from MedFusionLib.pipeline import FusionResult

        result = context["job"].result
        image = read_image(result["output"])
        transform = sitk.ReadTransform(result["transform"]) if result.get("transform") else None
        fusion = FusionResult(
            image=image,
            method=result["method"],
            parameters=result["parameters"],
            device=result["device"],
            seconds=float(result["seconds"]),
            colour_source=result.get("colour_source"),
            colormap=result.get("colormap"),
        )
        return mrml.add_fusion_result_nodes(
            fusion,
            context["fixed"],
            context["moving"],
            registration=context["spec"]["registration"],
            transform=transform,
            node=outputVolume,
        )


#
# MedFusionTest
#


class MedFusionTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode > Reload and Test, or ctest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MedFusion1()

    def test_MedFusion1(self):
        """CT-MR brain: rigid registration + default method; geometry, display, unchanged inputs."""
        import hashlib

        import numpy as np
        import SampleData

        self.delayDisplay("Loading CTMRBrain")
        nodes = SampleData.downloadSamples("CTMRBrain")
        byName = {node.GetName(): node for node in nodes}
        fixed, moving = byName["MRBrainT1"], byName["CTBrain"]

        def checksum(node):
            return hashlib.sha256(
                np.ascontiguousarray(slicer.util.arrayFromVolume(node)).tobytes()
            ).hexdigest()

        before = (checksum(fixed), checksum(moving))
        movingParent = moving.GetParentTransformNode()

        self.delayDisplay("Fusing")
        logic = MedFusionLogic()
        output = logic.process(fixed, moving, registration="rigid")

        self.assertEqual(output.GetImageData().GetDimensions(), fixed.GetImageData().GetDimensions())
        np.testing.assert_allclose(output.GetSpacing(), fixed.GetSpacing())
        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        output.GetIJKToRASMatrix(a)
        fixed.GetIJKToRASMatrix(b)
        np.testing.assert_allclose(
            slicer.util.arrayFromVTKMatrix(a), slicer.util.arrayFromVTKMatrix(b), atol=1e-6
        )
        self.assertTrue(output.GetAttribute("MedFusion.Method"))
        self.assertEqual(output.GetAttribute("MedFusion.Registration"), "rigid")
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            self.assertEqual(composite.GetBackgroundVolumeID(), output.GetID())
        self.assertEqual((checksum(fixed), checksum(moving)), before)
        self.assertIs(moving.GetParentTransformNode(), movingParent)
        fused = slicer.util.arrayFromVolume(output)
        self.assertGreater(float(fused.std()), 0.01)
        self.delayDisplay("Test passed")
