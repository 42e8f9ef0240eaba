"""Where reference structures end up: the share of each reference mask that a preset gives to each of its labels.

For scans whose reference is a set of single-structure masks rather than a full label map (for example the
arterial-phase chest CT of TotalSegmentator's aorta report, with ``heart``, ``aorta`` and ``vertebrae_T12``):
it shows whether the heart became ``vessels_contrast`` or ``bone``. Masks on other grids (a cropped box) are
brought onto the CT's grid through both affines (nearest neighbour). Prints a table; never fails on the numbers.

    .venv/bin/python bench/label_confusion.py --ct CT.nii.gz --mask heart=heart.nii.gz --mask aorta=aorta.nii.gz \
        [--preset ct-default] [--device cpu]

The arterial-phase sample is in the TotalSegmentator source distribution (Apache-2.0), not shipped here:
``pip download --no-deps --no-binary :all: totalsegmentator==2.18.0``, then
``tests/reference_files/aorta_report/example_ct.nii.gz`` with masks from ``aorta_report/test_result/models/`` and
``pulmonary_report/models/heart.nii.gz``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

#: Requirements this benchmark verifies (read by `appliance trace`).
REQUIREMENTS = ("REQ-FUNC-153",)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.core import Volume  # noqa: E402
from appliance.io.nifti import load_volume  # noqa: E402
from engines.presets import get_preset  # noqa: E402
from kernels.device import resolve_device  # noqa: E402


def mask_on_grid(mask: Volume, grid: Volume) -> npt.NDArray[np.bool_]:
    """``mask`` (non-zero voxels) sampled at the voxel centres of ``grid`` (nearest neighbour, outside = False)."""
    grid_to_mask = np.linalg.inv(mask.affine) @ grid.affine
    values = (np.asarray(mask.array) > 0).astype(np.uint8)
    out = ndimage.affine_transform(values, grid_to_mask[:3, :3], offset=grid_to_mask[:3, 3],
                                   output_shape=grid.shape, order=0, mode="constant", cval=0)
    return np.asarray(out > 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ct", type=Path, required=True)
    ap.add_argument("--mask", action="append", default=[], metavar="NAME=PATH", help="reference mask (repeatable)")
    ap.add_argument("--preset", default="ct-default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="preset parameter override (repeatable), e.g. contrast_high_hu=600")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    options = {k: float(v) for k, _, v in (item.partition("=") for item in args.param)}
    masks: dict[str, Path] = {}
    for item in args.mask:
        name, sep, path = item.partition("=")
        if not sep:
            ap.error(f"--mask needs NAME=PATH, got {item!r}")
        masks[name] = Path(path)

    ct = load_volume(args.ct, "CT", "HU")
    t0 = time.perf_counter()
    result = get_preset(args.preset).run(ct, device, options=options)
    seconds = time.perf_counter() - t0
    lm = result.labelmap
    names = {s.label: s.name for s in lm.structures}
    columns = ["(none)", *names.values()]
    vox_ml = lm.voxel_volume_ml
    print(f"# {args.ct.name}: {args.preset} on {args.device} in {seconds:.1f} s; "
          + ", ".join(f"{n} {np.count_nonzero(lm.labels == v) * vox_ml:.0f} ml" for v, n in names.items()))
    print("\n| reference | ml | " + " | ".join(f"% {c}" for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for name, path in masks.items():
        ref = mask_on_grid(load_volume(path, "SEG", "label"), ct)
        total = int(np.count_nonzero(ref))
        got = lm.labels[ref]
        shares = [np.count_nonzero(got == 0)] + [np.count_nonzero(got == v) for v in names]
        print(f"| {name} | {total * vox_ml:.0f} | "
              + " | ".join(f"{100.0 * s / max(total, 1):.1f}" for s in shares) + " |")
    for f in result.findings:
        print(f"- finding {f.code}: {f.message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
