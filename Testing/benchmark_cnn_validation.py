"""Score fusion methods on the CNN validation split; writes ``Docs/benchmarks/cnn_validation/``.

Not a test: run it by hand on a quiet machine::

    .venv/bin/python Testing/benchmark_cnn_validation.py [--data ../shared/data] [--methods ...]

The split is what ``medfusion train dense_fusion_net`` never draws from: the axial slab of
the MNI templates (``MedFusionLib.cnn.data.VALIDATION_SLICES``), every anatomical template
(Colin27 T1, SPM T1, T2, PD) paired with the transmission (as CT), PET and SPECT templates,
and five held-out slices of the clinical MR in ``ct/`` paired with template slices; written
as 8-bit 256x256 PNGs laid out like the Harvard sets and scored with the same
``medfusion benchmark``. This split, not the Harvard evaluation images, is what the network's
recipe was chosen on (Docs/models.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from MedFusionLib.cli import main as medfusion  # noqa: E402
from MedFusionLib.cnn.data import TrainingVolumes, write_validation_set  # noqa: E402

METHODS = "dense_fusion_net,liu_cnn,maximum,average,laplacian_pyramid"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--out", default=str(ROOT / "Docs" / "benchmarks" / "cnn_validation"))
    args = parser.parse_args()
    volumes = TrainingVolumes.from_directory(args.data)
    folder = write_validation_set(volumes, args.data, ROOT / "build" / "mni_validation")
    return medfusion(["benchmark", str(folder), "--methods", args.methods, "--out", args.out])


if __name__ == "__main__":
    sys.exit(main())
