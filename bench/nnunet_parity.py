"""Parity of imported nnU-Net packs with nnU-Net's own ``nnUNetPredictor`` on real CT and MR: the proof table.

    .venv/bin/python bench/nnunet_parity.py                 # every configuration (a few minutes on 2 cores)
    .venv/bin/python bench/nnunet_parity.py --cases ct-aniso-plain-1fold-nomirror

Needs nnunetv2 + dynamic_network_architectures (dev dependencies) and ``../shared/data``. For each configuration
(random-weight model folders written the way nnU-Net writes them, see ``tests/helpers/nnunet_models.py``) it
imports the model as a pack, segments a crop of the real image with the pack (onnxruntime, CPU) and with
nnUNetPredictor (PyTorch, CPU, one thread), and prints the lowest per-class Dice, the share of identical voxels
and both times. The bar: Dice >= 0.99 and >= 99.5 % identical voxels. Never pass/fail; exits 1 below the bar.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers.nnunet_models import PARITY_CASES, ParityResult, run_parity_case  # noqa: E402


def _row(result: ParityResult) -> str:
    p = result.parity
    return (f"| {result.case} | {p.dice_min:.5f} | {100 * p.identical:.4f} | {result.ours_s:.1f} | "
            f"{result.nnunet_s:.1f} | {result.import_s:.1f} |")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parity cases and print the table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", help="configuration names (default: all)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("APPLIANCE_SHARED_DATA",
                                                                         ROOT.parent / "shared" / "data")))
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"real data not found at {args.data}")
        return 2
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    cases = [c for c in PARITY_CASES if not args.cases or c.spec.name in args.cases]
    print("| configuration | Dice min | identical voxels % | ours s (onnxruntime) | nnU-Net s (torch) | import s |")
    print("|---|---|---|---|---|---|")
    ok = True
    with tempfile.TemporaryDirectory(prefix="nnunet-parity-") as tmp:
        for case in cases:
            result = run_parity_case(case, args.data, Path(tmp) / case.spec.name)
            ok = ok and result.parity.dice_min >= 0.99 and result.parity.identical >= 0.995
            print(_row(result), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
