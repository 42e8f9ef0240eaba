"""Structures cut off by the edge of the imaged volume (issue 16 item 4: incomplete coverage): a WARNING naming
the structure and the side of the patient, never for structures that run through every scan range."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.data import require

from appliance.core import LabelMap, Structure
from appliance.core.labelmap import StructureCategory
from appliance.io.nifti import load_volume
from engines.coverage import MIN_CUT_AREA_MM2, cut_off_findings, cut_off_structures

pytestmark = pytest.mark.req("REQ-ACQ-806")

ORGAN, BONE = StructureCategory.ORGAN, StructureCategory.BONE


def labelmap(labels: np.ndarray, affine: np.ndarray, categories: dict[int, StructureCategory]) -> LabelMap:
    structures = [Structure(v, f"s{v}", (200, 100, 50), c, None) for v, c in categories.items()]
    return LabelMap(labels.astype(np.uint8), affine, structures)


def lps(spacing: tuple[float, float, float], flip_k: bool = False) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    if flip_k:  # slices stored from head to feet
        affine[2, 2] = -spacing[2]
    return affine


def test_an_organ_inside_the_volume_is_not_reported_one_cut_by_the_last_slice_is() -> None:
    labels = np.zeros((40, 40, 30), np.uint8)
    labels[10:30, 10:30, 5:20] = 1  # organ wholly inside
    labels[5:25, 5:25, 22:30] = 2  # organ running out of the top slice: 20 x 20 voxels of 1 x 1 mm
    labels[0:40, 0:3, 0:30] = 3  # bone along a whole face: never reported
    found = cut_off_structures(labelmap(labels, lps((1.0, 1.0, 2.5)), {1: ORGAN, 2: ORGAN, 3: BONE}))
    assert found == {"s2": {"head end": 400.0}}
    (finding,) = cut_off_findings(labelmap(labels, lps((1.0, 1.0, 2.5)), {1: ORGAN, 2: ORGAN, 3: BONE}))
    assert finding.code == "structure_cut_off" and finding.severity == "warning"
    assert "s2" in finding.message and "head end (4.0 cm²)" in finding.message
    assert finding.requirement == "REQ-ACQ-806"


def test_the_side_follows_the_affine_and_the_area_the_spacing() -> None:
    labels = np.zeros((20, 20, 10), np.uint8)
    labels[5:15, 5:15, 7:10] = 1  # 10 x 10 voxels on the last slice
    # slices stored head to feet: the last slice is the foot end; 0.8 x 0.8 mm pixels -> 64 mm², under the floor
    assert cut_off_structures(labelmap(labels, lps((0.8, 0.8, 3.0), flip_k=True), {1: ORGAN})) == {}
    assert 64.0 < MIN_CUT_AREA_MM2
    found = cut_off_structures(labelmap(labels, lps((1.5, 1.5, 3.0), flip_k=True), {1: ORGAN}))
    assert found == {"s1": {"foot end": 225.0}}
    labels[0:4, 5:15, 2:8] = 1  # and out of the first column along i (+x in LPS is the patient's left)
    found = cut_off_structures(labelmap(labels, lps((1.5, 1.5, 3.0), flip_k=True), {1: ORGAN}))
    assert found == {"s1": {"foot end": 225.0, "patient's right": 10 * 6 * 1.5 * 3.0}}


def test_lungs_of_a_real_abdomen_ct_are_cut_at_the_head_end_and_the_kidneys_are_not(shared_data: object) -> None:
    base = require(shared_data / "ct/totalsegmentator")  # type: ignore[operator]
    seg = load_volume(base / "example_seg_fast_force_split.nii.gz", "SEG", "label")
    names = json.loads((base / "label_maps_from_map_to_binary.json").read_text())["total"]
    wanted = {v: n for v, n in names.items() if n.startswith(("lung_", "kidney_"))}
    labels = np.where(np.isin(seg.array, [int(v) for v in wanted]), seg.array, 0).astype(np.uint8)
    structures = [Structure(int(v), n, (200, 100, 50), ORGAN, None) for v, n in wanted.items()
                  if (labels == int(v)).any()]  # fmt: skip
    found = cut_off_structures(LabelMap(labels, seg.affine, structures))
    lungs = {n for n in found if n.startswith("lung_")}
    assert lungs and all(set(found[n]) == {"head end"} for n in lungs), found
    assert not any(n.startswith("kidney_") for n in found), found
