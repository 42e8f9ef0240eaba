"""Measurements on phantoms of known geometry (anisotropic voxels, oblique and sheared grids): exact to a voxel."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.lesion_phantoms import SPACING, ball, centres, ellipsoid, grid_affine, volume
from scipy.spatial.distance import cdist

from appliance.core import LabelMap, Structure, StructureCategory
from engines.errors import MeasurementError
from engines.measurements import (
    Measurement,
    MeasurementKind,
    angle,
    axial_diameters,
    lesion_volume,
    longest_diameter,
    point_distance,
    structure_distance,
)


def _labelmap(vol_affine: np.ndarray, shape: tuple[int, int, int], masks: dict[str, np.ndarray]) -> LabelMap:
    labels = np.zeros(shape, np.uint8)
    structures = []
    for i, (name, mask) in enumerate(masks.items(), start=1):
        labels[mask] = i
        structures.append(Structure(i, name, (200, 100, 50), StructureCategory.LESION if i == 1 else
                                    StructureCategory.VESSEL))
    return LabelMap(labels, vol_affine, structures)


@pytest.mark.req("REQ-FUNC-1070", "REQ-PERF-1080")
@pytest.mark.parametrize("rotation_deg", [0.0, 35.0])
def test_sphere_volume_and_diameters_exact_to_a_voxel(rotation_deg: float) -> None:
    shape = (48, 44, 30)
    vol = volume(shape, grid_affine(SPACING, rotation_deg))
    centre = vol.voxel_to_patient([[23.3, 21.6, 14.2]])[0]
    r = 9.0
    sphere = ball(vol, centre, r)
    lm = _labelmap(vol.affine, shape, {"tumour": sphere})
    # volume: voxel count x voxel volume, and within the boundary voxels of the analytic sphere
    v = lesion_volume(lm, "tumour")
    assert v.unit == "ml" and v.value == pytest.approx(sphere.sum() * np.prod(SPACING) / 1000, abs=1e-4)
    assert abs(v.value - 4 / 3 * math.pi * r**3 / 1000) < 0.03 * v.value
    d3 = longest_diameter(lm, "tumour")
    assert abs(d3.value - 2 * r) <= max(SPACING)  # exact to a voxel
    a, b = np.asarray(d3.points_lps)
    assert np.linalg.norm(a - centre) <= r and np.linalg.norm(b - centre) <= r
    ax = axial_diameters(lm, "tumour")
    assert abs(ax.value - 2 * r) <= max(SPACING) and ax.perpendicular_mm is not None
    assert abs(ax.perpendicular_mm - 2 * r) <= max(SPACING)
    p = np.asarray(ax.points_lps)
    long_dir, perp_dir = p[1] - p[0], p[3] - p[2]
    assert abs(long_dir @ perp_dir) <= math.sin(math.radians(5)) * np.linalg.norm(long_dir) * np.linalg.norm(perp_dir)


@pytest.mark.req("REQ-FUNC-1070", "REQ-PERF-1080")
def test_ellipsoid_recist_long_and_short_axis() -> None:
    shape = (50, 40, 24)
    affine = grid_affine((0.8, 0.8, 2.5))
    vol = volume(shape, affine)
    centre = vol.voxel_to_patient([[25, 20, 12]])[0]
    lm = _labelmap(affine, shape, {"tumour": ellipsoid(vol, centre, (15.0, 8.0, 12.0))})
    ax = axial_diameters(lm, "tumour")
    assert abs(ax.value - 30.0) <= 0.8 and ax.perpendicular_mm is not None
    assert abs(ax.perpendicular_mm - 16.0) <= 0.8
    assert ax.slice_index == 12  # the axial slice through the centre holds the longest section
    d3 = longest_diameter(lm, "tumour")
    assert abs(d3.value - 30.0) <= 0.8


@pytest.mark.req("REQ-FUNC-1071", "REQ-PERF-1080")
@pytest.mark.parametrize(("rotation_deg", "shear"), [(0.0, 0.0), (35.0, 0.0), (20.0, 0.33)])
def test_structure_distance_equals_brute_force(rotation_deg: float, shear: float) -> None:
    shape = (40, 36, 22)
    vol = volume(shape, grid_affine(SPACING, rotation_deg, shear))
    pos = centres(vol)
    tumour = ball(vol, vol.voxel_to_patient([[14, 18, 11]])[0], 6.0)
    vessel = ball(vol, vol.voxel_to_patient([[30, 18, 11]])[0], 4.0)
    lm = _labelmap(vol.affine, shape, {"tumour": tumour, "portal_vein": vessel})
    m = structure_distance(lm, "tumour", "portal_vein")
    oracle = cdist(pos[tumour], pos[vessel]).min()
    assert m.value == pytest.approx(oracle, abs=1e-3)
    assert m.unit == "mm" and m.structures == ("tumour", "portal_vein")
    assert math.dist(*m.points_lps) == pytest.approx(oracle, abs=2e-3)
    with pytest.raises(MeasurementError, match="no structure 'aorta'"):
        structure_distance(lm, "tumour", "aorta")
    with pytest.raises(MeasurementError, match="two different"):
        structure_distance(lm, "tumour", "tumour")


@pytest.mark.req("REQ-FUNC-1071")
def test_point_distance_and_angle_are_analytic() -> None:
    assert point_distance((0, 0, 0), (3, 4, 12)).value == 13.0
    assert angle((1, 0, 0), (0, 0, 0), (0, 2, 0)).value == pytest.approx(90.0)
    assert angle((1, 0, 0), (0, 0, 0), (0.5, math.sqrt(3) / 2, 0)).value == pytest.approx(60.0)
    assert angle((1, 0, 0), (0, 0, 0), (-4, 0, 0)).value == pytest.approx(180.0)
    with pytest.raises(MeasurementError, match="away from the vertex"):
        angle((0, 0, 0), (0, 0, 0), (1, 0, 0))
    with pytest.raises(MeasurementError, match="three numbers"):
        point_distance((0, 0), (1, 1, 1))
    with pytest.raises(MeasurementError, match="finite"):
        point_distance((0, 0, float("nan")), (1, 1, 1))


@pytest.mark.req("REQ-FUNC-1072")
def test_measurements_round_trip_with_author_and_time() -> None:
    shape = (30, 30, 12)
    vol = volume(shape, grid_affine())
    lm = _labelmap(vol.affine, shape, {"tumour": ball(vol, vol.voxel_to_patient([[15, 15, 6]])[0], 5.0)})
    records = [lesion_volume(lm, "tumour"), longest_diameter(lm, "tumour"), axial_diameters(lm, "tumour"),
               point_distance((1.25, 2, 3), (4, 5, 6)), angle((1, 0, 0), (0, 0, 0), (0, 1, 1))]
    for m in records:
        assert m.author is None and m.recorded_at is None  # left for the caller
        saved = m.authored("dr_li", "2026-12-03T06:10:00+00:00", "m1")
        assert saved.author == "dr_li" and saved.value == m.value
        again = Measurement.from_dict(saved.to_dict())
        assert again == saved and again.to_dict() == saved.to_dict()
    assert records[0].to_dict()["unit"] == "ml" and records[4].to_dict()["unit"] == "deg"
    with pytest.raises(MeasurementError, match="author"):
        records[0].authored(" ", "2026-12-03T06:10:00")
    with pytest.raises(MeasurementError, match="ISO 8601"):
        records[0].authored("dr_li", "yesterday")
    with pytest.raises(MeasurementError, match="kind must be one of"):
        Measurement.from_dict({"kind": "weight", "value": 1})
    with pytest.raises(MeasurementError, match="malformed point_distance"):
        Measurement.from_dict({"kind": "point_distance"})
    with pytest.raises(MeasurementError, match=">= 0"):
        Measurement(MeasurementKind.POINT_DISTANCE, -1.0)
