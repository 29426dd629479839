"""What the Slicer module decides without Qt or Slicer: requirements, editors, readout, texts.

``MedFusion/MedFusion.py`` is the panel (Qt widgets, the parameter node, the scene); the
decisions it takes that need neither Qt nor the Slicer application live here, so that they are
tested as plain functions:

- which required packages are missing or too old (:data:`REQUIREMENTS`, the same list as
  ``pyproject.toml``'s dependencies, which the extension does not ship);
- how a float parameter's editor shows its range, default and value exactly
  (:func:`float_editor`);
- which interpreter runs the background job (:func:`background_python`);
- which volumes the input selectors may pick automatically (:func:`input_candidates`);
- the colour-table and method choices, the quality readout rows and the status line of a
  finished job (:func:`colormap_choices`, :func:`recommendation_text`, :func:`readout_rows`,
  :func:`result_status`).

The user-facing texts are English; each function that makes them takes ``tr``, the module's
translation function (Slicer's ``slicer.i18n.tr``), and passes every text through it.

This module imports only the standard library at import time and parses on Python 3.9, so
that an old Slicer can import the module file and say why it cannot run it.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

MINIMUM_SLICER = "5.10"
MINIMUM_PYTHON = (3, 10)
"""The oldest Slicer the module runs in, and its Python (Slicer 5.6 and 5.8 have Python 3.9)."""

REQUIREMENTS = (
    "numpy>=1.24",
    "torch>=2.1",
    "SimpleITK>=2.3",
    "PyWavelets>=1.5",
    "tqdm>=4.60",
    "pillow>=10",
    "safetensors>=0.4",
    "pydicom>=3.0",
    "highdicom>=0.23",
    "pynetdicom>=2.1",
)
"""The engine's dependencies, as ``pyproject.toml`` lists them (a test keeps the two equal)."""

IMPORT_NAMES = {"PyWavelets": "pywt", "pillow": "PIL"}
"""Import names that differ from the distribution names of :data:`REQUIREMENTS`."""

INPUT_NODE_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode")
"""The node classes the input selectors list (not their subclasses, such as label maps)."""

DEFAULT_METRICS = ("EN", "SD", "MI", "SSIM", "VIF", "Qabf")
"""The metrics a job started from the panel scores."""

READOUT_NAMES = {"conspicuity_kept": "Conspicuity kept", "anatomy_kept": "Anatomy kept"}

COLORMAP_AUTO = "auto"
COLORMAP_NONE = "none"

SAMPLE_DATA_LICENSE = "GPL-2.0 (SPM, Wellcome Centre for Human Neuroimaging)"
SAMPLE_DATA_NOTICE = (
    "The MedFusion sample volumes (SPM T1, PET and SPECT) are from the SPM distribution, "
    "Wellcome Centre for Human Neuroimaging, licensed under the GNU General Public License "
    "version 2 (GPL-2); see MedFusionLib/sample_data/README.md and GPL-2.txt. The STS-019 CT, "
    "MR and PET volumes are under CC BY 3.0 (LICENSE-CC-BY-3.0.md)."
)


def _same(text: str) -> str:
    return text


Translate = Callable[[str], str]


# --- requirements ------------------------------------------------------------------------------
def unsupported_reason(tr: Translate = _same) -> str | None:
    """Why this Slicer cannot run MedFusion (its Python is older than :data:`MINIMUM_PYTHON`), or
    ``None``."""
    if sys.version_info[:2] >= MINIMUM_PYTHON:
        return None
    return tr(
        "MedFusion needs 3D Slicer {minimum} or later (Python {python} or later); this Slicer runs "
        "Python {version}. Install a current Slicer from https://download.slicer.org."
    ).format(
        minimum=MINIMUM_SLICER,
        python=".".join(map(str, MINIMUM_PYTHON)),
        version=".".join(map(str, sys.version_info[:3])),
    )


def version_tuple(text: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``: the leading numbers of a version, for comparison."""
    numbers = []
    for piece in text.split("."):
        digits = ""
        for character in piece:
            if not character.isdigit():
                break
            digits += character
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)


def split_requirement(requirement: str) -> tuple[str, str]:
    """``"torch>=2.1"`` -> ``("torch", "2.1")`` (the only form :data:`REQUIREMENTS` uses)."""
    name, _, minimum = requirement.partition(">=")
    return name.strip(), minimum.strip()


def missing_requirements(requirements: Iterable[str] = REQUIREMENTS) -> list[str]:
    """The requirements that do not import, have no metadata, or are older than required."""
    missing = []
    for requirement in requirements:
        name, minimum = split_requirement(requirement)
        try:
            importlib.import_module(IMPORT_NAMES.get(name, name))
            installed = metadata.version(name)
        except Exception:  # noqa: BLE001 - ImportError, no metadata, or a broken install
            missing.append(requirement)
            continue
        if version_tuple(installed) < version_tuple(minimum):
            missing.append(requirement)
    return missing


def split_torch(requirements: Iterable[str]) -> tuple[str | None, list[str]]:
    """``(">=2.1", others)`` when torch is among ``requirements`` (it installs differently), else
    ``(None, requirements)``."""
    torch, others = None, []
    for requirement in requirements:
        name, minimum = split_requirement(requirement)
        if name == "torch":
            torch = f">={minimum}" if minimum else ""
        else:
            others.append(requirement)
    return torch, others


# --- the float editors ---------------------------------------------------------------------------
def float_decimals(*values: float | None) -> int:
    """The decimals a spin box needs to show each of ``values`` exactly (at least 1, at most 15).

    A ``QDoubleSpinBox`` rounds its minimum, maximum and value to its ``decimals``: with 4,
    1e-6 becomes 0.
    """
    needed = 1
    for value in values:
        if value is None or not math.isfinite(float(value)):
            continue
        decimals = 15
        for candidate in range(16):
            if float(f"{float(value):.{candidate}f}") == float(value):
                decimals = candidate
                break
        needed = max(needed, decimals)
    return needed


@dataclass(frozen=True)
class FloatEditor:
    """How a float parameter's spin box is set up: set ``decimals`` before the range."""

    decimals: int
    minimum: float
    maximum: float
    single_step: float


def float_editor(
    minimum: float | None, maximum: float | None, default: float, value: float, *, unbounded: float = 1e9
) -> FloatEditor:
    """Decimals, range and step that show the registered range, the default and ``value`` exactly.

    The step is the default's order of magnitude (``1e-6`` steps by ``1e-6``), never finer than
    the last decimal shown.
    """
    decimals = float_decimals(minimum, maximum, default, value)
    scale = abs(float(default)) or abs(float(value)) or 1.0
    return FloatEditor(
        decimals=decimals,
        minimum=float(minimum) if minimum is not None else -unbounded,
        maximum=float(maximum) if maximum is not None else unbounded,
        single_step=max(10.0**-decimals, 10.0 ** math.floor(math.log10(scale))),
    )


# --- the background interpreter ------------------------------------------------------------------
def background_python(
    executable: str | None, *, which: Callable[[str], str | None] = shutil.which
) -> str | None:
    """The interpreter for the background job, or ``None`` when there is none to use.

    ``PythonSlicer`` (on ``PATH`` or beside ``executable``) when there is one; otherwise
    ``executable`` itself only when it is a Python interpreter. Inside Slicer ``sys.executable``
    is the application, which cannot run a script: then ``None``.
    """
    suffix = ".exe" if os.name == "nt" else ""
    beside = os.path.join(os.path.dirname(executable or ""), "PythonSlicer" + suffix)
    found = which("PythonSlicer") or (beside if os.path.isfile(beside) else None)
    if found:
        return found
    if executable and os.path.basename(executable).lower().startswith("python"):
        return executable
    return None


# --- the scene -----------------------------------------------------------------------------------
def input_candidates(scene: Any) -> list[Any]:
    """Volumes an input selector shows and that are worth picking automatically, in scene order.

    Scalar and vector (RGB) volumes of exactly :data:`INPUT_NODE_CLASSES` (not label maps), not
    hidden from editors, neither a MedFusion result nor a display overlay.
    """
    if scene is None:
        return []
    nodes = scene.GetNodes()
    found = []
    for index in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(index)
        if node.GetClassName() not in INPUT_NODE_CLASSES or node.GetHideFromEditors():
            continue
        if node.GetAttribute("MedFusion.Method") or node.GetAttribute("MedFusion.OverlayOf"):
            continue
        found.append(node)
    return found


def pick_inputs(candidates: Sequence[Any], fixed: Any, moving: Any) -> tuple[Any, Any]:
    """The inputs to select: the given ones, and for an empty one the first candidate that is not
    the other input (``candidates`` from :func:`input_candidates`)."""
    if not fixed and candidates:
        fixed = candidates[0]
    if not moving:
        moving = next((node for node in candidates if node is not fixed), None)
    return fixed, moving


def display_state(output: Any, show_foreground: bool, foreground_lut: str, opacity: float) -> tuple | None:
    """What the slice views show of a result; the panel redraws only when this changes."""
    if output is None:
        return None
    return (output.GetID(), bool(show_foreground), foreground_lut, float(opacity))


def device_choices(tr: Translate = _same) -> tuple[list[tuple[str, str]], str]:
    """The device selector's ``(label, value)`` entries and a line saying what was detected.

    ``auto`` and ``cpu`` always; ``cuda`` and ``mps`` when torch sees them. Imports torch when
    it is installed (an import that fails or breaks only leaves the GPUs out).
    """
    choices, detected = [(tr("auto"), "auto")], []
    try:
        import torch

        if torch.cuda.is_available():
            choices.append((tr("CUDA GPU"), "cuda"))
            detected.append(f"CUDA: {torch.cuda.get_device_name(0)}")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            choices.append((tr("Apple GPU (MPS)"), "mps"))
            detected.append("Apple GPU (MPS)")
        detected.append(f"CPU ({os.cpu_count()} cores), torch {torch.__version__}")
    except Exception:  # noqa: BLE001 - not installed, or a broken install
        detected.append(tr("PyTorch is not installed yet (it is offered on Apply)"))
    choices.append((tr("CPU"), "cpu"))
    return choices, "; ".join(detected)


# --- the job ------------------------------------------------------------------------------------
def parameters_from_json(text: str | None) -> dict[str, Any]:
    """The method parameters stored in the parameter node (a JSON object); ``{}`` when unreadable."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def progress_update(events: Iterable[Mapping[str, Any]]) -> tuple[int | None, str | None]:
    """The progress bar's percent and the status line after a job's new ``events`` (``None``:
    unchanged). An error's message is left to the error dialog."""
    percent = status = None
    for event in events:
        if isinstance(event.get("progress"), (int, float)):
            percent = int(round(100 * event["progress"]))
        if event.get("message") and event.get("stage") != "error":
            status = f"{event.get('stage', '')}: {event['message']}"
    return percent, status


# --- texts ---------------------------------------------------------------------------------------
def colormap_choices(tr: Translate = _same) -> list[tuple[str, str, str]]:
    """The colour table selector's entries: ``(label, value, tooltip)``, the default first.

    Only ``auto`` and ``none`` when the engine's dependencies are missing (before installation).
    """
    choices = [
        (
            tr("auto (recommended)"),
            COLORMAP_AUTO,
            tr(
                "The table recommended for the pair when one volume is PET or SPECT and the other "
                "CT or MR; gray otherwise."
            ),
        )
    ]
    try:
        from .colormaps import describe_colormap, list_colormaps

        names = list_colormaps()
    except Exception:  # noqa: BLE001 - the engine's dependencies are missing or broken
        names = []
    choices += [(name, name, describe_colormap(name).summary) for name in names]
    choices.append((tr("none (gray)"), COLORMAP_NONE, tr("Gray fusion, whatever the modalities.")))
    return choices


def recommendation_text(tr: Translate = _same) -> str:
    """What "recommended for the pair" fuses with, for the method selector."""
    try:
        from .recommended import GRAY_METHOD, recommended
    except Exception:  # noqa: BLE001 - missing or broken dependencies
        return tr("The fusion recommended for the modality pair.")
    lines = [tr("The fusion recommended for the modality pair (set the modalities under Inputs):")]
    for anatomical in ("CT", "MR"):
        choice = recommended(anatomical, "PET")
        lines.append(
            tr("{anatomical} + PET or SPECT: {method}, colour table {colormap}").format(
                anatomical=anatomical, method=choice.method, colormap=choice.colormap
            )
        )
    lines.append(tr("other pairs: {method}, gray").format(method=GRAY_METHOD))
    return "\n".join(lines)


def readout_rows(
    result: Mapping[str, Any], metrics: Sequence[str] = DEFAULT_METRICS, tr: Translate = _same
) -> list[tuple[str, str, str]]:
    """The quality readout of a finished job: ``(name, value text, tooltip)`` rows.

    The grey-level ``metrics`` and the balance, then, when a lesion was given, conspicuity kept
    and anatomy kept (or why they could not be computed).
    """
    scores = result.get("metrics") or {}
    rows = []
    for name in [*metrics, "balance"]:
        if name in scores:
            value = scores[name]
            rows.append((name, "n/a" if value is None else f"{value:.4g}", ""))
    clinical = result.get("clinical")
    if not clinical:
        return rows
    if clinical.get("error"):
        return [*rows, (tr("Lesion readout"), tr("n/a"), clinical["error"])]
    notes = clinical.get("notes") or {}
    for key, name in READOUT_NAMES.items():
        value = clinical.get(key)
        tooltip = notes.get(key) or tr(
            "1.0: as in the PET alone (conspicuity) or the CT/MR alone (anatomy); "
            "{voxels} lesion voxels, colour table {colormap}."
        ).format(voxels=clinical.get("lesion_voxels"), colormap=clinical.get("colormap") or "none")
        rows.append((tr(name), tr("n/a") if value is None else f"{value:.2f}", tooltip))
    return rows


def result_status(result: Mapping[str, Any], tr: Translate = _same) -> str:
    """The status line of a finished job: method, time, device, colour, registration, warnings."""
    text = tr("Done: {method} in {seconds:.1f} s on {device}.").format(
        method=result["method"], seconds=float(result["seconds"]), device=result["device"]
    )
    if result.get("colormap"):
        text += " " + tr("Colour table {colormap}.").format(colormap=result["colormap"])
    else:
        text += " " + tr("Gray output.")
    registration = result.get("registration") or {}
    if registration:
        text += " " + tr("Registration {type} in {seconds:.1f} s.").format(
            type=registration["type"], seconds=float(registration["seconds"])
        )
        for warning in registration.get("warnings", []):
            text += " " + tr("Warning: {warning}").format(warning=warning)
    return text


# --- sample data ---------------------------------------------------------------------------------
def bundled_sample_paths() -> dict[str, str]:
    """The sample volumes shipped inside MedFusionLib (no download): ``{node name: path}``."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data")
    return {
        "MedFusionT1": os.path.join(folder, "spm_T1.nii.gz"),
        "MedFusionPET": os.path.join(folder, "spm_PET.nii.gz"),
    }


def safe_folder_name(name: str) -> str:
    """A volume name as a folder name: letters, digits, ``-``, ``_`` and ``.`` kept, the rest ``_``
    (at most 64 characters; ``MedFusion`` when nothing is left)."""
    kept = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")[:64]
    return kept or "MedFusion"
