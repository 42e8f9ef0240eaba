"""Core types validate eagerly and round-trip through their dict forms."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.core import Finding, LabelMap, Mesh, Severity, Structure, Volume


@pytest.mark.req("REQ-ACQ-001")
def test_volume_lps_ras_round_trip() -> None:
    aff = np.array([[0.5, 0, 0, -10], [0, 0.7, 0, 20], [0, 0, 2.0, 5], [0, 0, 0, 1]])
    v = Volume(np.zeros((4, 5, 6), np.int16), aff, "CT", "HU")
    assert v.spacing == pytest.approx((0.5, 0.7, 2.0))
    ras = v.ras_affine()
    assert ras[0, 0] == -0.5 and ras[0, 3] == 10.0 and ras[2, 3] == 5.0
    back = Volume.from_ras(v.array, ras)
    np.testing.assert_allclose(back.affine, aff)
    pts = v.voxel_to_patient([[1, 2, 3]])
    np.testing.assert_allclose(v.patient_to_voxel(pts), [[1, 2, 3]])


def test_volume_rejects_bad_geometry() -> None:
    with pytest.raises(ValueError, match="3-D"):
        Volume(np.zeros((4, 5)), np.eye(4))
    with pytest.raises(ValueError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1.0, 1.0, 0.0, 1.0]))


def test_finding_round_trip_and_validation() -> None:
    f = Finding("slice_gap", Severity.REFUSAL, "A slice is missing.", "REQ-ACQ-001", {"gap_mm": 4.0})
    assert f.blocks_reconstruction
    assert Finding.from_dict(f.to_dict()) == f
    with pytest.raises(ValueError):
        Finding("Bad Code", Severity.INFO, "x")


def test_labelmap_structures() -> None:
    v = Volume(np.zeros((3, 3, 3), np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))
    lab = np.zeros((3, 3, 3), np.uint8)
    lab[1, 1, 1] = 1
    s = Structure(1, "bone", (240, 230, 200), "bone")
    lm = LabelMap.on(v, lab, [s])
    assert lm.volume_ml("bone") == pytest.approx(8.0 / 1000)
    assert Structure.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="twice"):
        LabelMap.on(v, lab, [s, Structure(2, "bone", (1, 2, 3))])


def test_mesh_volume_of_unit_cube() -> None:
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], float)
    f = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                  [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])
    m = Mesh(v, f, "cube")
    assert m.signed_volume_mm3() == pytest.approx(1.0)
    assert m.area_mm2() == pytest.approx(6.0)
