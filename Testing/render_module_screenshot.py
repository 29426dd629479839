"""The module's screenshot for the README, the user guide and the extension's metadata.

Not a test: run it by hand (needs ``slicer-core``, ``PySide6`` and ``../shared/data``)::

    QT_QPA_PLATFORM=offscreen .venv/bin/python Testing/render_module_screenshot.py [--out Docs/images/module_slice_views.png]

What it shows, and how it is made without the Slicer application or OpenGL: the MedFusion
panel is the real ``MedFusion.py`` and ``.ui`` on real Qt widgets (PySide6, offscreen), with
the stand-ins of ``slicer_stand_ins`` for the qMRML node selectors and CTK widgets (so those
look like plain Qt widgets, not Slicer's) and for Slicer's parameter node wrapper (or Slicer's
own, from ``SLICER_SOURCE_DIR``). The
user's clicks are made on the panel: the SPM T1 (MR) and PET are loaded through Slicer's own
storage nodes, *Apply* runs the job in the background process as in Slicer, and the fused
volume is shown as the module shows it. Beside the panel, the Red, Yellow and Green slice views (top to bottom)
are drawn by ``vtkMRMLSliceLogic`` (:func:`MedFusionLib.mrml.render_slice_views_png`). It is a
composite of the two, not a screen capture of the Slicer application window.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import slicer  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slicer_stand_ins  # noqa: E402

from MedFusionLib import mrml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mni"


def load(scene, path: Path, name: str, modality: str):
    """A scalar volume node read by Slicer's archetype storage node (what Add Data uses)."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    if not storage.ReadData(node):
        raise SystemExit(f"Slicer could not read {path}")
    node.SetAttribute("MedFusion.Modality", modality)
    return node


def grab(widget) -> np.ndarray:
    """The widget's pixels (RGB), as Qt paints it."""
    from PySide6 import QtGui

    image = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
    width, height = image.width(), image.height()
    data = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes())
    return data.reshape(height, image.bytesPerLine())[:, : width * 3].reshape(height, width, 3).copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "Docs" / "images" / "module_slice_views.png")
    parser.add_argument("--size", type=int, default=300, help="pixels per slice view (square)")
    args = parser.parse_args()
    script = ROOT / "MedFusion" / "MedFusion.py"
    with pytest.MonkeyPatch.context() as monkeypatch, tempfile.TemporaryDirectory() as temporary:
        installed = slicer_stand_ins.install(monkeypatch, Path(temporary), script)
        harness = next(installed)
        try:
            load(harness.scene, DATA / "spm_single_subj_T1.nii.gz", "MR T1", "MR")
            load(harness.scene, DATA / "spm_PET.nii.gz", "PET", "PET")
            panel = harness.widget()
            panel.parent.resize(380, 900)
            node = panel._parameterNode
            node.registration = "rigid"
            start = time.perf_counter()
            panel.ui.applyButton.click()
            while panel._job is not None:
                harness.process_events(0.1)
            print(f"{panel.ui.statusLabel.text} ({time.perf_counter() - start:.1f} s)")
            if harness.dialogs.errors:
                raise SystemExit(harness.dialogs.errors[-1])
            for layout in ("Red", "Yellow", "Green"):
                harness.scene.GetNodeByID(f"vtkMRMLSliceNode{layout}").SetDimensions(args.size, args.size, 1)
            tiles = []
            with tempfile.TemporaryDirectory() as folder:
                for layout in ("Red", "Yellow", "Green"):  # stacked, as a column beside the panel
                    view = Path(folder) / f"{layout}.png"
                    mrml.render_slice_views_png(
                        harness.scene, view, size=(args.size, args.size), layouts=(layout,)
                    )
                    tiles += [
                        np.asarray(PILImage.open(view).convert("RGB")),
                        np.full((4, args.size, 3), 40, np.uint8),
                    ]
            row = np.concatenate(tiles[:-1], axis=0)
            harness.process_events(0.2)
            picture = grab(panel.parent)
        finally:
            installed.close()
    height = max(picture.shape[0], row.shape[0])

    def pad(array: np.ndarray) -> np.ndarray:
        out = np.full((height, array.shape[1], 3), 40, np.uint8)
        out[: array.shape[0]] = array
        return out

    gap = np.full((height, 6, 3), 40, np.uint8)
    composite = np.concatenate([pad(picture), gap, pad(row)], axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(composite).save(args.out, optimize=True)
    print(
        f"wrote {args.out} ({composite.shape[1]}x{composite.shape[0]}, {args.out.stat().st_size // 1024} KB)"
    )


if __name__ == "__main__":
    main()
