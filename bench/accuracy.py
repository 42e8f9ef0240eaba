"""Accuracy of a preset against a reference label file: Dice, HD95 (mm) and mean surface distance per structure.

Default: ct-default on TotalSegmentator's example CT against its own segmentation, through the mapping in
``bench/totalsegmentator_to_ct_default.json`` (reference labels -> our structures). Prints a table; never fails
on the numbers (the default tests assert the targets).

    .venv/bin/python bench/accuracy.py [--ct CT.nii.gz --reference SEG.nii.gz --names MAP.json --task total]
                                       [--labels labels.nii.gz --structures structures.json] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

#: Requirements this benchmark verifies (read by `appliance trace`).
REQUIREMENTS = ("REQ-PERF-150", "REQ-PERF-151", "REQ-PERF-152")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # helpers.metrics: the metrics the accuracy tests use

from helpers.metrics import compare  # noqa: E402

from appliance.io.nifti import load_volume  # noqa: E402
from engines.labelmap_io import read_labelmap  # noqa: E402
from engines.presets import get_preset  # noqa: E402
from kernels.device import resolve_device  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ct" / "totalsegmentator"
MAPPING = ROOT / "bench" / "totalsegmentator_to_ct_default.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ct", type=Path, default=DATA / "example_ct.nii.gz")
    ap.add_argument("--reference", type=Path, default=DATA / "example_seg_fast_force_split.nii.gz")
    ap.add_argument("--names", type=Path, default=DATA / "label_maps_from_map_to_binary.json")
    ap.add_argument("--task", default="total")
    ap.add_argument("--mapping", type=Path, default=MAPPING)
    ap.add_argument("--preset", default="ct-default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--labels", type=Path, help="use these labels instead of running the preset")
    ap.add_argument("--structures", type=Path, help="structures.json for --labels")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)

    mapping = json.loads(args.mapping.read_text())
    ref = load_volume(args.reference, "SEG", "label")
    names_all = json.loads(args.names.read_text())
    ref_names = {name: int(value) for value, name in names_all[args.task].items()}
    if args.labels:
        lm = read_labelmap(args.labels, args.structures or args.labels.with_name("structures.json"))
        how = f"labels from {args.labels}"
    else:
        vol = load_volume(args.ct, "CT", "HU")
        t0 = time.perf_counter()
        lm = get_preset(args.preset).run(vol, device).labelmap
        how = f"{args.preset} on {args.device} in {time.perf_counter() - t0:.2f} s"
    if lm.shape != ref.shape or not np.allclose(lm.affine, ref.affine, atol=1e-3):
        print(f"reference grid {ref.shape} differs from ours {lm.shape}; resample one onto the other first")
        return 1
    ours_names = {s.name: s.label for s in lm.structures}
    rows = compare(lm.labels, ours_names, np.asarray(ref.array).astype(np.int32), ref_names, mapping["rows"],
                   lm.spacing)
    targets = mapping.get("targets", {})
    print(f"# {args.ct.name} vs {args.reference.name} ({how}); spacing "
          + " x ".join(f"{s:.2f}" for s in lm.spacing) + " mm")
    print("\n## Mapping (reference -> ours)")
    for row in mapping["rows"]:
        print(f"- {row['structure']}: ours {'+'.join(row['ours'])} <- reference {', '.join(row['reference'])}")
    print("\n| structure | Dice | HD95 (mm) | MSD (mm) | ours (ml) | reference (ml) | target Dice |")
    print("|---|---|---|---|---|---|---|")
    vox_ml = lm.voxel_volume_ml
    for r in rows:
        a = r.agreement

        def fmt(x: float) -> str:
            return "n/a" if math.isnan(x) else f"{x:.2f}"

        target = targets.get(r.structure)
        print(f"| {r.structure} | {a.dice:.4f} | {fmt(a.hd95_mm)} | {fmt(a.msd_mm)} | {a.voxels_ours * vox_ml:.1f} "
              f"| {a.voxels_reference * vox_ml:.1f} | {'' if target is None else f'>= {target:.2f}'} |")
    if mapping.get("notes"):
        print(f"\nNotes: {mapping['notes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
