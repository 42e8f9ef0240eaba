"""Contrast phases painted onto the real non-contrast CT: does bone stay bone and contrast stay out of it?

The reference vessels, spleen and kidneys of ``example_seg_fast_force_split.nii.gz`` are given arterial or
portal-venous values (their own texture halved, plus 10 HU noise) on ``example_ct.nii.gz``; ct-default runs on
each and bone / vessels_contrast are scored against the reference, with the share of each organ labelled bone.
A harsh test at 3 mm: the painted aorta lies on the vertebrae with no fat plane between. Prints a table; never
fails on the numbers.

    .venv/bin/python bench/contrast_paint.py [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

#: Requirements this benchmark verifies (read by `appliance trace`).
REQUIREMENTS = ("REQ-FUNC-153",)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # helpers.metrics: the metrics the accuracy tests use

from helpers.contrast import PHASES, paint_phase  # noqa: E402
from helpers.data import SHARED_DATA  # noqa: E402
from helpers.metrics import dice  # noqa: E402

from appliance.io.nifti import load_volume  # noqa: E402
from engines.presets import get_preset  # noqa: E402
from kernels.device import resolve_device  # noqa: E402

DATA = SHARED_DATA / "ct" / "totalsegmentator"
MAPPING = ROOT / "bench" / "totalsegmentator_to_ct_default.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="preset parameter override (repeatable), e.g. contrast_high_hu=600")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    options = {k: float(v) for k, _, v in (item.partition("=") for item in args.param)}
    ct = load_volume(DATA / "example_ct.nii.gz", "CT", "HU")
    ref = np.asarray(load_volume(DATA / "example_seg_fast_force_split.nii.gz", "SEG", "label").array)
    names = json.loads((DATA / "label_maps_from_map_to_binary.json").read_text())["total"]
    value_of = {name: int(v) for v, name in names.items()}
    rows = json.loads(MAPPING.read_text())["rows"]
    ref_ids = {r["structure"]: [value_of[n] for n in r["reference"] if n in value_of] for r in rows}
    vessels = np.isin(ref, ref_ids["vessels_contrast"])
    bone_ref = np.isin(ref, ref_ids["bone"])
    organs = ("spleen", "kidney_left", "liver")
    print(f"# contrast painted on {DATA.name}/example_ct.nii.gz, ct-default on {args.device}")
    print("\n| phase | bone Dice | vessels_contrast Dice | vessels labelled bone | "
          + " | ".join(f"{o} labelled bone" for o in organs) + " | warnings |")
    print("|---|---|---|---|" + "---|" * len(organs) + "---|")
    for phase in PHASES:
        painted = paint_phase(ct, ref, vessels, value_of, phase)
        result = get_preset("ct-default").run(painted, device, options=options)
        labels = result.labelmap.labels
        warned = sorted(f.code for f in result.findings if f.severity.value == "warning")
        bone = labels == 2
        print(f"| {phase} | {dice(bone, bone_ref):.3f} | {dice(labels == 6, vessels):.3f} | "
              f"{100 * bone[vessels].mean():.0f} % | "
              + " | ".join(f"{100 * bone[ref == value_of[o]].mean():.0f} %" for o in organs)
              + f" | {', '.join(warned) or 'none'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
