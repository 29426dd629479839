"""The module's slice-view picture for the README and Docs, made without the Slicer app or OpenGL.

Not a test: run it by hand (needs ``slicer-core`` and ``../shared/data``)::

    .venv/bin/python Testing/render_module_screenshot.py [--out Docs/images/module_slice_views.png]

It loads a real MR (SPM single-subject T1, Colin27) and PET template through Slicer's own
storage nodes, fuses them with :func:`MedFusionLib.mrml.fuse_volume_nodes` (rigid
registration, the default method) and shows the result as the module does
(:func:`MedFusionLib.mrml.show_fusion`: fused background, PET in PET-Heat at 40 % opacity),
then writes the blended Red, Yellow and Green views side by side.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import slicer

from MedFusionLib import mrml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mni"


def load(scene, path: Path, name: str):
    """A scalar volume node read by Slicer's archetype storage node (what Add Data uses)."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    if not storage.ReadData(node):
        raise SystemExit(f"Slicer could not read {path}")
    return node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "Docs" / "images" / "module_slice_views.png")
    parser.add_argument("--size", type=int, default=300, help="pixels per slice view (square)")
    args = parser.parse_args()
    with mrml.new_scene(view_size=(args.size, args.size)) as headless:
        mr = load(headless.scene, DATA / "spm_single_subj_T1.nii.gz", "MR T1")
        mr.SetAttribute("MedFusion.Modality", "MR")
        pet = load(headless.scene, DATA / "spm_PET.nii.gz", "PET")
        pet.SetAttribute("MedFusion.Modality", "PET")
        start = time.perf_counter()
        fused = mrml.fuse_volume_nodes(mr, pet, registration="rigid")
        print(f"fused {fused.GetName()!r} in {time.perf_counter() - start:.1f} s")
        mrml.show_fusion(fused, foreground=pet, opacity=0.4, foreground_lut="PET-Heat")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        path = mrml.render_slice_views_png(headless.scene, args.out, size=(args.size, args.size))
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
