"""The pure edit core: every operation on small synthetic label maps with known geometry, exact spheres on
anisotropic and oblique grids, and named refusals that leave the input untouched."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from appliance.core import Structure, StructureCategory, Volume
from appliance.review import InvalidOperation, apply_operations, parse_operations
from appliance.review.edit import EditResult, sphere_region
from appliance.review.operations import Sphere

SPACING = (0.8, 0.8, 2.5)
STRUCTURES = (Structure(1, "bone", (241, 238, 222), StructureCategory.BONE),
              Structure(2, "aorta", (216, 101, 79), StructureCategory.VESSEL))


def _affine(spacing: tuple[float, float, float] = SPACING) -> np.ndarray:
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = [-20.0, -30.0, 100.0]
    return aff


def _case() -> tuple[np.ndarray, np.ndarray, Volume]:
    """bone: two separate blocks; aorta: a block touching the big bone block; image: HU of each."""
    labels = np.zeros((40, 40, 16), dtype=np.uint8)
    labels[5:20, 5:20, 2:10] = 1
    labels[30:34, 30:34, 12:14] = 1  # small bone island
    labels[20:26, 5:20, 2:10] = 2
    hu = np.where(labels == 1, 700, np.where(labels == 2, 250, -50)).astype(np.int16)
    aff = _affine()
    return labels, aff, Volume(hu, aff, "CT", "HU")


def _lps(aff: np.ndarray, ijk: tuple[float, float, float]) -> list[float]:
    return [float(v) for v in aff[:3, :3] @ np.asarray(ijk) + aff[:3, 3]]


def _run(ops: list[dict[str, Any]], image: bool = True) -> tuple[np.ndarray, EditResult]:
    labels, aff, vol = _case()
    result = apply_operations(labels, STRUCTURES, aff, parse_operations(ops), vol if image else None)
    return labels, result


def test_sphere_is_exact_on_anisotropic_and_oblique_grids() -> None:
    for spacing in ((1.0, 1.0, 1.0), (0.7, 0.9, 3.0)):
        aff = _affine(spacing)
        theta = 0.4
        rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
        aff[:3, :3] = rot @ aff[:3, :3]
        centre = _lps(aff, (20.3, 18.7, 10.2))
        box, mask = sphere_region((40, 40, 24), aff, Sphere((centre[0], centre[1], centre[2]), 6.0))
        full = np.zeros((40, 40, 24), dtype=bool)
        full[box] = mask
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (40, 40, 24)], indexing="ij"), axis=-1).reshape(-1, 3)
        pos = ijk @ aff[:3, :3].T + aff[:3, 3]
        expected = (np.linalg.norm(pos - centre, axis=1) <= 6.0).reshape(40, 40, 24)
        assert np.array_equal(full, expected) and expected.sum() > 50


@pytest.mark.req("REQ-FUNC-1000")
def test_erase_sphere_removes_only_that_structure_inside_the_ball() -> None:
    labels, aff, _ = _case()
    centre = _lps(aff, (19, 12, 6))
    before = labels.copy()
    _, result = _run([{"op": "erase", "structure": "bone", "sphere": {"center_lps": centre, "radius_mm": 5.0}}])
    assert np.array_equal(labels, before)  # the input is never modified
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in labels.shape], indexing="ij"), axis=-1)
    inside = np.linalg.norm(ijk @ aff[:3, :3].T + aff[:3, 3] - centre, axis=-1) <= 5.0
    assert np.all(result.labels[inside & (before == 1)] == 0)
    assert np.array_equal(result.labels[inside & (before == 2)], before[inside & (before == 2)])  # aorta untouched
    assert np.array_equal(result.labels[~inside], before[~inside])
    assert result.changed == {"bone"} and result.removed == frozenset()


@pytest.mark.req("REQ-FUNC-1000")
def test_paint_takes_voxels_and_the_window_limits_it() -> None:
    labels, aff, _ = _case()
    sphere = {"center_lps": _lps(aff, (22, 12, 6)), "radius_mm": 4.0}
    _, plain = _run([{"op": "paint", "structure": "bone", "sphere": sphere}])
    _, windowed = _run([{"op": "paint", "structure": "bone", "sphere": sphere, "window": {"min": 200, "max": 300}}])
    assert plain.changed == {"bone", "aorta"}
    painted = (plain.labels == 1) & (labels != 1)
    assert np.any(labels[painted] == 0) and np.any(labels[painted] == 2)
    gained = (windowed.labels == 1) & (labels != 1)
    assert gained.any() and np.all(labels[gained] == 2)  # only the 250 HU voxels (aorta), never the -50 background


@pytest.mark.req("REQ-FUNC-1000")
def test_grow_from_seed_fills_the_connected_window_region() -> None:
    labels, aff, _ = _case()
    _, result = _run([{"op": "new_structure", "name": "aorta_fixed", "color": [200, 0, 0], "category": "vessel"},
                      {"op": "grow_from_seed", "structure": "aorta_fixed", "seed_lps": _lps(aff, (22, 10, 5)),
                       "window": {"min": 200, "max": 300}, "max_radius_mm": 100}])
    new = next(s for s in result.structures if s.name == "aorta_fixed")
    assert new.label == 3
    assert np.array_equal(result.labels == 3, labels == 2)
    assert result.changed == {"aorta_fixed", "aorta"}


@pytest.mark.req("REQ-FUNC-1000")
def test_keep_and_remove_island() -> None:
    labels, aff, _ = _case()
    _, removed = _run([{"op": "remove_island", "structure": "bone", "point_lps": _lps(aff, (31, 31, 12))}])
    assert not np.any(removed.labels[30:34, 30:34, 12:14]) and np.array_equal(removed.labels[:26], labels[:26])
    _, kept = _run([{"op": "keep_island", "structure": "bone", "point_lps": _lps(aff, (31, 31, 12))}])
    assert np.count_nonzero(kept.labels == 1) == 4 * 4 * 2 and np.array_equal(kept.labels == 2, labels == 2)


@pytest.mark.req("REQ-FUNC-1000")
def test_grow_and_shrink_by_mm_use_the_spacing_of_each_axis() -> None:
    labels, _, _ = _case()
    _, grown = _run([{"op": "grow", "structure": "aorta", "mm": 2.0}])
    # 2 mm is 2 voxels in-plane (0.8 mm) and 0 slices (2.5 mm); it grows into background only, never into bone
    assert np.all(grown.labels[26:28, 5:20, 2:10] == 2) and np.all(grown.labels[28, 5:20, 2:10] == 0)
    assert np.all(grown.labels[20:26, 5:20, 10] == 0) and np.array_equal(grown.labels == 1, labels == 1)
    _, shrunk = _run([{"op": "shrink", "structure": "bone", "mm": 1.0}])
    assert np.all(shrunk.labels[6:19, 6:19, 3:9] == 1) and np.all(shrunk.labels[5, 5:20, 2:10] == 0)


@pytest.mark.req("REQ-FUNC-1000")
def test_add_subtract_new_rename_recolour_delete() -> None:
    labels, _, _ = _case()
    _, added = _run([{"op": "add", "structure": "bone", "other": "aorta"}])
    assert np.array_equal(added.labels == 1, labels > 0) and added.changed == {"bone", "aorta"}
    _, gap = _run([{"op": "subtract", "structure": "bone", "other": "aorta", "margin_mm": 1.6}])
    assert np.all(gap.labels[18:20, 5:20, 2:10] == 0) and np.all(gap.labels[17, 5:20, 2:10] == 1)
    _, styled = _run([{"op": "rename", "structure": "aorta", "name": "aorta_abdominal"},
                      {"op": "recolour", "structure": "bone", "color": [1, 2, 3]}])
    assert [s.name for s in styled.structures] == ["bone", "aorta_abdominal"]
    assert styled.structures[0].color == (1, 2, 3) and np.array_equal(styled.labels, labels)
    assert styled.changed == frozenset() and styled.restyled == {"bone", "aorta_abdominal"}
    assert styled.removed == {"aorta"}
    _, deleted = _run([{"op": "delete", "structure": "aorta"}])
    assert not np.any(deleted.labels == 2) and [s.name for s in deleted.structures] == ["bone"]


@pytest.mark.req("REQ-SAFE-1001")
@pytest.mark.parametrize(("op", "field"), [
    ({"op": "erase", "structure": "liver", "sphere": {"center_lps": [0, 0, 110], "radius_mm": 3}},
     "ops[0].structure"),
    ({"op": "erase", "structure": "bone", "sphere": {"center_lps": [900, 0, 110], "radius_mm": 3}},
     "ops[0].sphere.center_lps"),
    ({"op": "erase", "structure": "bone", "sphere": {"center_lps": [0, 0, 110], "radius_mm": 0}},
     "ops[0].sphere.radius_mm"),
    ({"op": "erase", "structure": "bone", "sphere": {"center_lps": [0, 0, 110], "radius_mm": -2}},
     "ops[0].sphere.radius_mm"),
    ({"op": "erase", "structure": "bone", "sphere": {"center_lps": ["0", 0, 110], "radius_mm": 2}},
     "ops[0].sphere.center_lps[0]"),
    ({"op": "erase", "structure": "bone", "sphere": {"center_lps": [0, 0], "radius_mm": 2}},
     "ops[0].sphere.center_lps"),
    ({"op": "erase", "structure": 3, "sphere": {"center_lps": [0, 0, 110], "radius_mm": 2}}, "ops[0].structure"),
    ({"op": "explode", "structure": "bone"}, "ops[0].op"),
    ({"op": "paint", "structure": "bone", "sphere": {"center_lps": [0, 0, 110], "radius_mm": 2},
      "window": {"min": 300, "max": 100}}, "ops[0].window.max"),
    ({"op": "remove_island", "structure": "bone", "point_lps": [-19, -29, 101]}, "ops[0].point_lps"),
    ({"op": "grow", "structure": "bone", "mm": True}, "ops[0].mm"),
    ({"op": "new_structure", "name": "bone", "color": [1, 2, 3]}, "ops[0].name"),
    ({"op": "new_structure", "name": "a b", "color": [1, 2, 3]}, "ops[0].name"),
    ({"op": "recolour", "structure": "bone", "color": [1, 2, 300]}, "ops[0].color"),
    ({"op": "subtract", "structure": "bone", "other": "bone", "margin_mm": 1}, "ops[0].other"),
    ({"op": "grow_from_seed", "structure": "bone", "seed_lps": [-19, -29, 101], "window": {"min": 500, "max": 900}},
     "ops[0].seed_lps"),
])  # fmt: skip
def test_bad_operations_are_refused_naming_the_field(op: dict[str, Any], field: str) -> None:
    labels, aff, vol = _case()
    before = labels.copy()
    with pytest.raises(InvalidOperation) as caught:
        apply_operations(labels, STRUCTURES, aff, parse_operations([op]), vol)
    assert caught.value.field == field, str(caught.value)
    assert np.array_equal(labels, before)


@pytest.mark.req("REQ-SAFE-1001")
def test_a_bad_second_operation_refuses_the_whole_request() -> None:
    labels, aff, vol = _case()
    ops = parse_operations([{"op": "delete", "structure": "aorta"},
                            {"op": "rename", "structure": "aorta", "name": "x"}])
    with pytest.raises(InvalidOperation) as caught:
        apply_operations(labels, STRUCTURES, aff, ops, vol)
    assert caught.value.field == "ops[1].structure" and np.count_nonzero(labels == 2) == 6 * 15 * 8
    for bad in (None, [], {"op": "erase"}, [1]):
        with pytest.raises(InvalidOperation):
            parse_operations(bad)
    with pytest.raises(InvalidOperation) as caught:
        apply_operations(labels, STRUCTURES, aff, parse_operations(
            [{"op": "grow_from_seed", "structure": "bone", "seed_lps": [-19, -29, 101],
              "window": {"min": -100, "max": 0}}]), None)
    assert caught.value.field == "ops[0].window"
