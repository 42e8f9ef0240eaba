"""ct-default on contrast CT of any phase: where bone holds what it cannot tell from a vessel, a WARNING says so.

Before this behaviour, on the real 3 mm example CT with a portal-venous phase painted on its vessels (170 HU, the
range of trabecular bone; ``helpers.contrast``), 99.9 % of the vessels were labelled bone and no finding fired:
the contrast gates key on a blood pool much brighter than its ring or on enhancing parenchyma, neither of which
that phase shows. The warning ``ct_bone_may_hold_vessel`` is computed on the final bone whatever the gates said.
It must fire where vessels end in bone (both painted phases) and stay silent where bone is right (the native CT,
the demo's portal-venous sample in test_ct_default_lumen.py, the 1.5 mm noisy and 512x512x600 resamplings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.contrast import paint_phase
from helpers.data import require

from appliance.core import Severity, Volume
from appliance.io.nifti import load_volume
from engines.presets import get_preset
from engines.presets.base import SegmentationResult

MAPPING = Path(__file__).resolve().parents[2] / "bench" / "totalsegmentator_to_ct_default.json"
CODE = "ct_bone_may_hold_vessel"


@pytest.fixture(scope="module")
def example(shared_data: Path) -> tuple[Volume, np.ndarray, np.ndarray, dict[str, int]]:
    base = shared_data / "ct/totalsegmentator"
    ct = load_volume(require(base / "example_ct.nii.gz"), "CT", "HU")
    ref = np.asarray(load_volume(require(base / "example_seg_fast_force_split.nii.gz"), "SEG", "label").array)
    names = json.loads(require(base / "label_maps_from_map_to_binary.json").read_text())["total"]
    value_of = {name: int(v) for v, name in names.items()}
    rows = {r["structure"]: r for r in json.loads(MAPPING.read_text())["rows"]}
    vessels = np.isin(ref, [value_of[n] for n in rows["vessels_contrast"]["reference"] if n in value_of])
    return ct, ref, vessels, value_of


def _suspect(res: SegmentationResult) -> list[dict[str, Any]]:
    found = [f for f in res.findings if f.code == CODE]
    assert len(found) <= 1
    if not found:
        return []
    assert found[0].severity is Severity.WARNING and found[0].requirement == "REQ-SAFE-1800"
    for row in found[0].details["regions"]:  # every region is named: volume, position, slices, HU
        assert f"{row['ml']:.0f} ml at" in found[0].message
        assert f"slices {row['slices'][0]}-{row['slices'][1]}" in found[0].message
    assert "images" in found[0].message
    return list(found[0].details["regions"])


@pytest.mark.req("REQ-SAFE-1800")
@pytest.mark.parametrize("phase", ["portal-venous", "arterial"])
def test_vessels_left_in_bone_are_named_in_a_warning(
    example: tuple[Volume, np.ndarray, np.ndarray, dict[str, int]], phase: str,
) -> None:
    """Both painted phases leave vessel in bone (measured before: 99.9 % and 42 % of the vessels): the warning
    names a region that is mostly those vessels, with a volume of the order of the vessel voxels in bone."""
    ct, ref, vessels, value_of = example
    res = get_preset("ct-default").run(paint_phase(ct, ref, vessels, value_of, phase), "cpu")
    regions = _suspect(res)
    bone = res.labelmap.mask("bone")
    left_ml = float((bone & vessels).sum()) * res.labelmap.voxel_volume_ml
    assert regions, f"{left_ml:.0f} ml of vessel in bone and no {CODE} warning"
    flagged_ml = sum(float(r["ml"]) for r in regions)
    assert flagged_ml >= 0.5 * left_ml
    left = bone & vessels  # where the vessels in bone are: the largest region lies among them
    lps = (ct.affine @ np.c_[np.argwhere(left), np.ones(int(left.sum()))].T)[:3].T
    x = float(regions[0]["centre_lps_mm"][0])
    z_lo, z_hi = (float(v) for v in regions[0]["z_range_lps_mm"])
    assert abs(x - float(np.median(lps[:, 0]))) < 30.0
    inside = (lps[:, 2] >= z_lo - 3.0) & (lps[:, 2] <= z_hi + 3.0)
    assert inside.mean() > 0.5


@pytest.mark.req("REQ-SAFE-1800")
def test_native_ct_raises_no_vessel_warning(example: tuple[Volume, np.ndarray, np.ndarray, dict[str, int]]) -> None:
    ct, _, _, _ = example
    assert _suspect(get_preset("ct-default").run(ct, "cpu")) == []


@pytest.mark.slow
@pytest.mark.req("REQ-SAFE-1800")
def test_512x512x600_resampling_raises_no_vessel_warning(
    example: tuple[Volume, np.ndarray, np.ndarray, dict[str, int]],
) -> None:
    """The native CT linearly resampled to 512x512x600 (0.56-0.72 mm voxels, noise-free, smooth marrow)."""
    from scipy import ndimage

    ct, _, _, _ = example
    shape = (512, 512, 600)
    factors = [n / s for n, s in zip(shape, ct.shape, strict=True)]
    arr = ndimage.zoom(np.asarray(ct.array, dtype=np.float32), factors, order=1)[: shape[0], : shape[1], : shape[2]]
    aff = ct.affine.copy()
    aff[:3, :3] = ct.affine[:3, :3] / np.asarray(factors)
    assert _suspect(get_preset("ct-default").run(Volume(np.rint(arr).astype(np.int16), aff, "CT", "HU"), "cpu")) == []


@pytest.mark.req("REQ-SAFE-1800", "REQ-OUT-151")
def test_warning_reaches_segment_json(example: tuple[Volume, np.ndarray, np.ndarray, dict[str, int]],
                                      tmp_path: Path) -> None:
    """``appliance segment`` on the painted portal-venous CT (a NIfTI file as a user gives it) records the
    warning in segment.json, from where the report and the kiosk read every finding."""
    from appliance.cli import main
    from appliance.io.nifti import save_volume

    ct, ref, vessels, value_of = example
    painted = paint_phase(ct, ref, vessels, value_of, "portal-venous")
    src = save_volume(painted, tmp_path / "pv.nii.gz")
    assert main(["segment", str(src), "--modality", "CT", "--preset", "ct-default", "--out", str(tmp_path / "seg"),
                 "--device", "cpu"]) == 0
    rec = json.loads((tmp_path / "seg" / "segment.json").read_text())
    found = [f for f in rec["findings"] if f["code"] == CODE]
    assert len(found) == 1 and found[0]["severity"] == "warning" and found[0]["requirement"] == "REQ-SAFE-1800"
    assert found[0]["details"]["suspect_ml"] >= 10.0
