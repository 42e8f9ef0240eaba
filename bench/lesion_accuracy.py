"""Accuracy of seed growing on real tumours: Dice against the labels of ``labelled/pyradiomics``.

For every ``<case>_image.nrrd`` / ``<case>_label.nrrd`` pair, each connected part of the label is one lesion a
clinician would tap: the seed is its deepest voxel (largest distance in mm to the part's border), the window comes
from the modality's default preset (or ``--preset``) and the seed, as :func:`engines.lesion_growing.
start_seed_growing` gives it at the kiosk, with no adjustment. The grown lesions are compared with the label
(Dice, volumes, longest diameters). Prints a table (or JSON with ``--json``); never fails on the numbers (the
test ``tests/engines/test_lesion_accuracy.py`` asserts the floor).

    .venv/bin/python bench/lesion_accuracy.py [--data DIR] [--case brain1 ...] [--preset NAME] [--max-radius MM]
                                              [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

#: Requirements this benchmark verifies (read by `appliance trace`).
REQUIREMENTS = ("REQ-PERF-1081",)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # helpers.data: where the shared data lives

from helpers.data import SHARED_DATA  # noqa: E402

from appliance.core import LabelMap, Structure, StructureCategory, Volume  # noqa: E402
from appliance.io.nrrd import load_volume  # noqa: E402
from engines.lesion_growing import grow_lesion, start_seed_growing  # noqa: E402
from engines.measurements import longest_diameter  # noqa: E402

DATA = SHARED_DATA / "labelled" / "pyradiomics" / "data"


def deepest_voxel(part: np.ndarray, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """The voxel of ``part`` farthest (mm) from its border; the first in array order among ties."""
    depth = ndimage.distance_transform_edt(np.pad(part, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    flat = int(np.argmax(np.where(part, depth, -1.0)))
    i, j, k = np.unravel_index(flat, part.shape)
    return int(i), int(j), int(k)


def _diameter(mask: np.ndarray, image: Volume) -> float:
    lm = LabelMap(mask.astype(np.uint8), image.affine, [Structure(1, "lesion", (255, 220, 0),
                                                                  StructureCategory.LESION)])
    return longest_diameter(lm, "lesion").value


def evaluate_case(image_path: Path, label_path: Path, preset: str | None = None,
                  max_radius_mm: float | None = None) -> dict[str, Any]:
    """Seed-grow every labelled part of one case and compare with the label."""
    image = load_volume(image_path, "MR")
    truth = np.asarray(load_volume(label_path, "SEG", "label").array) != 0
    parts, n = ndimage.label(truth)
    grown = np.zeros(truth.shape, bool)
    seeds = []
    t0 = time.perf_counter()
    for part in range(1, n + 1):
        ijk = deepest_voxel(parts == part, image.spacing)
        seed = image.voxel_to_patient([ijk])[0]
        settings = start_seed_growing(image, (float(seed[0]), float(seed[1]), float(seed[2])), preset,
                                      max_radius_mm)
        lesion = grow_lesion(image, settings, f"lesion_{part}")
        grown |= lesion.mask
        seeds.append({"voxel": list(ijk), **settings.to_dict(), "findings": [f.code for f in lesion.findings]})
    seconds = time.perf_counter() - t0
    ml = float(abs(np.linalg.det(image.affine[:3, :3]))) / 1000.0
    dice = 2.0 * float((grown & truth).sum()) / float(grown.sum() + truth.sum())
    return {"case": image_path.name.removesuffix("_image.nrrd"), "parts": n, "dice": round(dice, 4),
            "volume_ml": round(float(grown.sum()) * ml, 3), "reference_ml": round(float(truth.sum()) * ml, 3),
            "diameter_mm": _diameter(grown, image), "reference_diameter_mm": _diameter(truth, image),
            "spacing_mm": [round(s, 4) for s in image.spacing], "seconds": round(seconds, 3), "seeds": seeds}


def cases(data: Path, names: list[str] | None) -> list[tuple[Path, Path]]:
    """(image, label) pairs in ``data``, all or those named."""
    found = sorted(p.name.removesuffix("_label.nrrd") for p in data.glob("*_label.nrrd"))
    wanted = names or found
    missing = [c for c in wanted if c not in found]
    if missing:
        raise SystemExit(f"no case {missing} in {data}; cases: {found}")
    return [(data / f"{c}_image.nrrd", data / f"{c}_label.nrrd") for c in wanted]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--case", action="append", help="case name (brain1, brain2, breast1); default: all")
    ap.add_argument("--preset", help="window preset (default: the modality's)")
    ap.add_argument("--max-radius", type=float, help="growth bound in mm (default: the preset's)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    results = [evaluate_case(img, lab, args.preset, args.max_radius) for img, lab in cases(args.data, args.case)]
    if args.json:
        sys.stdout.write(json.dumps(results, indent=1) + "\n")
        return 0
    sys.stdout.write(f"{'case':8} {'parts':>5} {'Dice':>6} {'ml':>8} {'ref ml':>8} {'diam mm':>8} {'ref mm':>8} "
                     f"{'s':>6}  window\n")
    for r in results:
        windows = "; ".join(f"{s['window'][0]:.0f}..{s['window'][1]:.0f}" for s in r["seeds"])
        sys.stdout.write(f"{r['case']:8} {r['parts']:5d} {r['dice']:6.3f} {r['volume_ml']:8.2f} "
                         f"{r['reference_ml']:8.2f} {r['diameter_mm']:8.1f} {r['reference_diameter_mm']:8.1f} "
                         f"{r['seconds']:6.2f}  {windows}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
