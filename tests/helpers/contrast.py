"""Contrast phases painted onto the real non-contrast CT (shared by the contrast tests and ``bench/contrast_paint.py``).

The reference vessels, spleen and kidneys of TotalSegmentator's segmentation of ``example_ct.nii.gz`` get arterial,
portal-venous or delayed values (delayed: the liver too): literature values, their own texture halved, plus 10 HU
noise (seeded).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
from helpers.data import ROOT, require

from appliance.core import Volume
from appliance.io.nifti import load_volume

#: TotalSegmentator's structures -> ct-default's (the mapping the accuracy benches and tests use).
MAPPING = ROOT / "bench" / "totalsegmentator_to_ct_default.json"

#: HU painted per phase (literature values for the arterial, portal-venous and delayed phases).
PHASES: dict[str, dict[str, float]] = {
    "none": {},
    "arterial": {"vessels": 280.0, "spleen": 150.0, "kidney_left": 200.0, "kidney_right": 200.0},
    "portal-venous": {"vessels": 170.0, "spleen": 120.0, "kidney_left": 170.0, "kidney_right": 170.0},
    "delayed": {"vessels": 130.0, "spleen": 100.0, "kidney_left": 130.0, "kidney_right": 130.0, "liver": 90.0},
}


def paint_phase(ct: Volume, reference: npt.NDArray[np.integer], vessels: npt.NDArray[np.bool_],
                value_of: dict[str, int], phase: str) -> Volume:
    """``ct`` with the ``vessels`` mask and the organs of ``reference`` (labels by ``value_of``) painted for
    ``phase`` (a key of :data:`PHASES`)."""
    rng = np.random.default_rng(0)
    hu = np.asarray(ct.array, dtype=np.float64).copy()
    for target, value in PHASES[phase].items():
        mask = vessels if target == "vessels" else reference == value_of[target]
        hu[mask] = value + 0.5 * (hu[mask] - np.median(hu[mask])) + rng.normal(0, 10, int(mask.sum()))
    return Volume(np.rint(hu).astype(np.int16), ct.affine, "CT", "HU")


def example_ct_reference(shared_data: Path) -> tuple[Volume, npt.NDArray[np.integer], dict[str, int]]:
    """The real example CT, TotalSegmentator's segmentation of it and its label values by name (skips the calling
    test when a file is absent)."""
    base = shared_data / "ct/totalsegmentator"
    ct = load_volume(require(base / "example_ct.nii.gz"), "CT", "HU")
    ref = np.asarray(load_volume(require(base / "example_seg_fast_force_split.nii.gz"), "SEG", "label").array)
    names = json.loads(require(base / "label_maps_from_map_to_binary.json").read_text())["total"]
    return ct, ref, {name: int(v) for v, name in names.items()}


def reference_mask(reference: npt.NDArray[np.integer], value_of: dict[str, int],
                   structure: str) -> npt.NDArray[np.bool_]:  # fmt: skip
    """The reference voxels of ct-default's ``structure`` (its TotalSegmentator structures in :data:`MAPPING`)."""
    rows = {r["structure"]: r for r in json.loads(MAPPING.read_text())["rows"]}
    return np.isin(reference, [value_of[n] for n in rows[structure]["reference"] if n in value_of])
