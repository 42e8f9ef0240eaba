"""The in-plane brush: paint and erase limited to the crosshair's slice of a slice view (a disc of the ball), exact
on anisotropic, tilted and permuted grids; a bad slice view is refused by name and nothing is applied."""

from __future__ import annotations

import numpy as np
import pytest
from test_reshape_operations import _affine, _apply, _centres, _lps, _refused

SHAPE_AXIAL_LAST = (24, 24, 10)


@pytest.mark.req("REQ-FUNC-1601")
@pytest.mark.parametrize("permute", [False, True])
@pytest.mark.parametrize("view", ["axial", "coronal", "sagittal"])
def test_slice_brush_paints_the_ball_on_the_crosshair_slice_only(permute: bool, view: str) -> None:
    aff = _affine((0.7, 0.9, 2.5), theta=0.0 if view != "axial" else 0.3, permute=permute)
    shape = (10, 24, 24) if permute else SHAPE_AXIAL_LAST
    labels = np.zeros(shape, dtype=np.uint8)
    centre_ijk = (5, 12, 12) if permute else (12, 12, 5)
    centre = _lps(aff, centre_ijk)
    result = _apply(labels, aff, [{"op": "paint", "structure": "liver", "slice_view": view,
                                   "sphere": {"center_lps": centre, "radius_mm": 4.0}}])
    d = _centres(shape, aff) - np.asarray(centre)
    ball = np.einsum("...c,...c->...", d, d) <= 16.0 + 1e-9
    lps_row = {"sagittal": 0, "coronal": 1, "axial": 2}[view]
    axis = int(np.argmax(np.abs(aff[lps_row, :3] / np.linalg.norm(aff[:3, :3], axis=0))))
    expected = ball & (np.indices(shape)[axis] == centre_ijk[axis])
    assert np.array_equal(result.labels == 1, expected)
    assert expected.sum() > 1 and ball.sum() > expected.sum()  # a disc, not the whole ball

    whole = _apply(labels, aff, [{"op": "paint", "structure": "liver",
                                  "sphere": {"center_lps": centre, "radius_mm": 4.0}}])
    assert np.array_equal(whole.labels == 1, ball)  # without slice_view: the ball, as before


@pytest.mark.req("REQ-FUNC-1601")
def test_slice_brush_erases_only_the_structure_on_that_slice_and_refuses_a_bad_view() -> None:
    aff = _affine((0.8, 0.8, 3.0))
    labels = np.zeros(SHAPE_AXIAL_LAST, dtype=np.uint8)
    labels[6:18, 6:18, 3:8] = 1
    labels[12, 12, 5] = 2  # an aorta voxel inside the brush stays
    centre = _lps(aff, (12, 12, 5))
    result = _apply(labels, aff, [{"op": "erase", "structure": "liver", "slice_view": "axial",
                                   "sphere": {"center_lps": centre, "radius_mm": 3.0}}])
    changed = result.labels != labels
    assert changed.any() and set(np.flatnonzero(changed.any(axis=(0, 1)))) == {5}
    assert result.labels[12, 12, 5] == 2 and np.all(result.labels[changed] == 0)
    for bad in ("oblique", 3, ""):
        field = _refused(labels, aff, [{"op": "erase", "structure": "liver", "slice_view": bad,
                                        "sphere": {"center_lps": centre, "radius_mm": 3.0}}])
        assert field == "ops[0].slice_view"
