"""Fill between slices, scissors and smoothing on phantoms with exact expected voxels: anisotropic grids, tilted
and permuted orientations, named refusals that leave the input untouched."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from appliance.core import Structure, StructureCategory
from appliance.review import InvalidOperation, apply_operations, parse_operations
from appliance.review.edit import EditResult
from appliance.review.workflow import volume_changes

STRUCTURES = (Structure(1, "liver", (221, 130, 101), StructureCategory.ORGAN),
              Structure(2, "aorta", (216, 101, 79), StructureCategory.VESSEL))


def _affine(spacing: tuple[float, float, float], theta: float = 0.0, permute: bool = False) -> np.ndarray:
    """Voxel -> LPS: scaled, rotated by ``theta`` about S and (``permute``) voxel axis 0 along S."""
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    axes = np.eye(3)[:, [2, 0, 1]] if permute else np.eye(3)  # permuted: i -> S, j -> L, k -> P
    aff = np.eye(4)
    aff[:3, :3] = rot @ axes @ np.diag(spacing)
    aff[:3, 3] = [-12.0, 7.0, 40.0]
    return aff


def _lps(aff: np.ndarray, ijk: tuple[float, float, float]) -> list[float]:
    return [float(v) for v in aff[:3, :3] @ np.asarray(ijk) + aff[:3, 3]]


def _apply(labels: np.ndarray, aff: np.ndarray, ops: list[dict[str, Any]]) -> EditResult:
    before = labels.copy()
    result = apply_operations(labels, STRUCTURES, aff, parse_operations(ops))
    assert np.array_equal(labels, before)  # the input is never modified
    return result


def _refused(labels: np.ndarray, aff: np.ndarray, ops: list[dict[str, Any]]) -> str:
    with pytest.raises(InvalidOperation) as err:
        apply_operations(labels, STRUCTURES, aff, parse_operations(ops))
    return err.value.field


def _centres(shape: tuple[int, ...], aff: np.ndarray) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return np.asarray(ijk @ aff[:3, :3].T + aff[:3, 3])


# -- fill between ----------------------------------------------------------------------------------------------

@pytest.mark.req("REQ-FUNC-1009")
@pytest.mark.parametrize("permute", [False, True])
def test_fill_between_copies_an_equal_outline_onto_the_empty_slices_only_in_the_range(permute: bool) -> None:
    """Same L-shaped outline on axial slices 2 and 7 (and 11, outside the range): slices 3-6 get exactly that outline
    (like painting, also an aorta voxel there), 8-10 stay empty; with voxel axis 0 along S the slice axis follows."""
    aff = _affine((0.7, 0.9, 2.5), theta=0.2, permute=permute)
    shape = (12, 20, 20) if permute else (20, 20, 12)
    labels = np.zeros(shape, dtype=np.uint8)
    outline = np.zeros((20, 20), dtype=bool)
    outline[4:14, 5:9] = True
    outline[10:14, 9:16] = True
    for k in (2, 7, 11):
        np.moveaxis(labels, 0 if permute else 2, 2)[:, :, k][outline] = 1
    np.moveaxis(labels, 0 if permute else 2, 2)[6, 6, 4] = 2  # another structure inside the outline on slice 4
    at = (lambda k: (k, 0, 0)) if permute else (lambda k: (0, 0, k))
    result = _apply(labels, aff, [{"op": "fill_between", "structure": "liver", "view": "axial",
                                   "from_lps": _lps(aff, at(1)), "to_lps": _lps(aff, at(8))}])
    out = np.moveaxis(result.labels, 0 if permute else 2, 2)
    for k in (3, 4, 5, 6):
        assert np.array_equal(out[:, :, k] == 1, outline)
    for k in (0, 1, 8, 9, 10):
        assert not np.any(out[:, :, k])  # the gap 7..11 was not asked for
    assert result.changed == {"liver", "aorta"}


@pytest.mark.req("REQ-FUNC-1009")
def test_fill_between_interpolates_the_shape_with_the_in_plane_spacing() -> None:
    """Square of half-width 2 voxels on slice 0 and 6 on slice 4 (1 mm in-plane, 3 mm slices): along the axes the
    interpolated half-widths are 3, 4, 5; every slice lies between the two squares."""
    aff = _affine((1.0, 1.0, 3.0))
    labels = np.zeros((21, 21, 5), dtype=np.uint8)
    labels[8:13, 8:13, 0] = 1
    labels[4:17, 4:17, 4] = 1
    result = _apply(labels, aff, [{"op": "fill_between", "structure": "liver", "view": "axial",
                                   "from_lps": _lps(aff, (0, 0, 0)), "to_lps": _lps(aff, (0, 0, 4))}])
    for k, half in ((1, 3), (2, 4), (3, 5)):
        row = np.flatnonzero(result.labels[:, 10, k] == 1)
        assert row.tolist() == list(range(10 - half, 11 + half))
        sl = result.labels[:, :, k] == 1
        assert np.all(sl[8:13, 8:13]) and not np.any(sl & ~(labels[:, :, 4] == 1))


@pytest.mark.req("REQ-SAFE-1011")
def test_fill_between_needs_two_drawn_slices_in_the_marked_range() -> None:
    aff = _affine((1.0, 1.0, 2.0))
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[3:6, 3:6, 2] = 1
    labels[3:6, 3:6, 8] = 1
    ops = [{"op": "fill_between", "structure": "liver", "view": "axial",
            "from_lps": _lps(aff, (0, 0, 0)), "to_lps": _lps(aff, (0, 0, 5))}]
    assert _refused(labels, aff, ops) == "ops[0].to_lps"
    ops[0]["view"] = "oblique"
    with pytest.raises(InvalidOperation) as err:
        parse_operations(ops)
    assert err.value.field == "ops[0].view"


# -- scissors --------------------------------------------------------------------------------------------------

def _scissors_case() -> tuple[np.ndarray, np.ndarray]:
    aff = _affine((0.7, 0.9, 2.0), theta=0.4)
    labels = np.zeros((40, 40, 14), dtype=np.uint8)
    labels[6:34, 6:34, 2:12] = 1
    labels[2:6, 2:6, 2:12] = 2
    return labels, aff


@pytest.mark.req("REQ-FUNC-1009")
@pytest.mark.parametrize("keep", [False, True])
def test_scissors_cut_along_a_tilted_view_direction_on_a_rotated_grid(keep: bool) -> None:
    """A rectangle drawn in the plane normal to a tilted view direction [1, 0, 1]: the liver voxels whose centres
    project inside it go (or stay, with keep), computed independently from in-plane coordinates."""
    labels, aff = _scissors_case()
    centre = np.asarray(_lps(aff, (20, 20, 7)))
    e1, e2 = np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, -1.0]) / np.sqrt(2)
    a, b = 6.3, 4.1  # half sides (mm) along e1, e2
    corners = [centre + 30.0 * np.array([1, 0, 1]) / np.sqrt(2) + sa * a * e1 + sb * b * e2
               for sa, sb in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    result = _apply(labels, aff, [{"op": "scissors", "structure": "liver", "keep": keep,
                                   "polygon_lps": [c.tolist() for c in corners], "view_direction": [2.0, 0.0, 2.0]}])
    rel = _centres(labels.shape, aff) - centre
    inside = (np.abs(rel @ e1) < a) & (np.abs(rel @ e2) < b)
    liver = labels == 1
    gone = liver & (~inside if keep else inside)
    assert 50 < gone.sum() < liver.sum()
    assert np.array_equal(result.labels == 1, liver & ~gone)
    assert np.array_equal(result.labels == 2, labels == 2)  # the aorta is never cut
    assert result.changed == {"liver"}


@pytest.mark.req("REQ-SAFE-1011")
@pytest.mark.parametrize(("op", "field"), [
    ({"polygon_lps": [[0, 0, 0], [5, 0, 0]]}, "ops[0].polygon_lps"),
    ({"polygon_lps": [[0, 0, 0], [5, 0, 0], [10, 0, 0]]}, "ops[0].polygon_lps"),  # a line seen from above
    ({"view_direction": [0, 0, 0]}, "ops[0].view_direction"),
    ({"view_direction": [0, 0]}, "ops[0].view_direction"),
    ({"keep": "yes"}, "ops[0].keep"),
    ({"polygon_lps": [[500, 500, 0], [510, 500, 0], [510, 510, 0]]}, "ops[0].polygon_lps"),  # misses the liver
])  # fmt: skip
def test_scissors_refusals_name_the_field(op: dict[str, Any], field: str) -> None:
    labels, aff = _scissors_case()
    base: dict[str, Any] = {"op": "scissors", "structure": "liver", "view_direction": [0, 0, 1],
                            "polygon_lps": [[-20, 0, 0], [20, 0, 0], [20, 30, 0]]}
    assert _refused(labels, aff, [{**base, **op}]) == field


# -- smooth ----------------------------------------------------------------------------------------------------

@pytest.mark.req("REQ-FUNC-1009")
def test_median_smooth_removes_a_spike_and_fills_a_pit_of_a_box_exactly() -> None:
    """Median over a 1 mm ball on a 1 x 1 x 2.5 mm grid (an in-plane cross of 5 voxels): a box keeps every voxel,
    a one-voxel spike goes, a one-voxel pit is filled; an aorta voxel beside the box stays."""
    aff = _affine((1.0, 1.0, 2.5), theta=0.3)
    labels = np.zeros((20, 20, 8), dtype=np.uint8)
    labels[5:12, 5:12, 2:6] = 1
    box = labels == 1
    labels[12, 8, 3] = 1  # spike
    labels[8, 8, 4] = 0  # pit
    labels[4, 8, 3] = 2
    result = _apply(labels, aff, [{"op": "smooth", "structure": "liver", "method": "median", "radius_mm": 1.0}])
    assert np.array_equal(result.labels == 1, box)
    assert result.labels[4, 8, 3] == 2 and result.changed == {"liver"}
    sizes = volume_changes(labels, STRUCTURES, result.labels, result.structures, result.changed, 2.5 / 1000)
    assert sizes == {"liver": {"before": round(box.sum() * 0.0025, 3), "after": round(box.sum() * 0.0025, 3),
                               "change": 0.0}}


@pytest.mark.req("REQ-FUNC-1009")
def test_gaussian_smooth_keeps_a_flat_slab_and_removes_a_spike() -> None:
    """A slab across the whole volume (the edges extend outwards) with a spike on top: Gaussian sigma 1 mm on a
    0.8 x 0.8 x 2.5 mm grid, threshold 0.5, gives back exactly the slab; the volume change is the spike's."""
    aff = _affine((0.8, 0.8, 2.5))
    labels = np.zeros((16, 16, 10), dtype=np.uint8)
    labels[:, :, 3:7] = 1
    slab = labels == 1
    labels[8, 8, 7] = 1
    result = _apply(labels, aff, [{"op": "smooth", "structure": "liver", "sigma_mm": 1.0}])
    assert np.array_equal(result.labels == 1, slab)
    voxel_ml = 0.8 * 0.8 * 2.5 / 1000
    change = volume_changes(labels, STRUCTURES, result.labels, result.structures, result.changed, voxel_ml)
    assert change["liver"]["before"] == round((slab.sum() + 1) * voxel_ml, 3)
    assert change["liver"]["after"] == round(slab.sum() * voxel_ml, 3)


@pytest.mark.req("REQ-SAFE-1011")
@pytest.mark.parametrize(("op", "field"), [
    ({"method": "mean", "sigma_mm": 1}, "ops[0].method"),
    ({"method": "gaussian"}, "ops[0].sigma_mm"),
    ({"method": "gaussian", "sigma_mm": 0}, "ops[0].sigma_mm"),
    ({"method": "gaussian", "sigma_mm": 25}, "ops[0].sigma_mm"),
    ({"method": "median", "radius_mm": 0.5}, "ops[0].radius_mm"),  # reaches no neighbour on a 1 mm grid
    ({"structure": "spleen", "method": "median", "radius_mm": 2}, "ops[0].structure"),
])  # fmt: skip
def test_smooth_refusals_name_the_field(op: dict[str, Any], field: str) -> None:
    aff = _affine((1.0, 1.0, 1.0))
    labels = np.zeros((8, 8, 8), dtype=np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    assert _refused(labels, aff, [{"op": "smooth", "structure": "liver", **op}]) == field
