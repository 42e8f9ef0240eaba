"""The margin table (distance, volume per shell, remnant) against a brute-force patient-space computation."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.lesion_phantoms import SPACING, ball, centres, grid_affine, volume
from scipy.spatial.distance import cdist

from appliance.core import LabelMap, Structure, StructureCategory
from engines.errors import MarginError
from engines.margin_table import MarginTable, margin_table
from engines.margins import MarginReport, add_margins

SHAPE = (40, 36, 22)
TOL = 1e-6


def _case(rotation_deg: float = 30.0, shear: float = 0.0) -> tuple[LabelMap, np.ndarray]:
    """Liver (organ) holding a tumour (r = 5 mm); a portal vein (vessel) ball nearby; body elsewhere."""
    vol = volume(SHAPE, grid_affine(SPACING, rotation_deg, shear))
    labels = np.ones(SHAPE, np.uint8)
    centre = vol.voxel_to_patient([[17, 18, 11]])[0]
    labels[ball(vol, centre, 13.0)] = 2
    labels[ball(vol, vol.voxel_to_patient([[35, 18, 11]])[0], 4.0)] = 3
    labels[ball(vol, centre, 5.0)] = 4
    structures = [Structure(1, "body", (200, 200, 200), StructureCategory.OTHER),
                  Structure(2, "liver", (150, 60, 40), StructureCategory.ORGAN),
                  Structure(3, "portal_vein", (0, 80, 200), StructureCategory.VESSEL),
                  Structure(4, "tumour", (255, 220, 0), StructureCategory.LESION)]
    lm = LabelMap(labels, vol.affine, structures)
    pos = centres(vol)
    d = cdist(pos.reshape(-1, 3), pos[labels == 4]).min(axis=1).reshape(SHAPE)
    return lm, d


@pytest.mark.req("REQ-FUNC-1060", "REQ-FUNC-1061", "REQ-PERF-1080")
def test_table_equals_brute_force_on_an_oblique_anisotropic_grid() -> None:
    lm, d = _case()
    margins = (5.0, 10.0, 15.0, 20.0)
    table = margin_table(lm, "tumour", margins)
    assert table.margins_mm == margins
    ml = lm.voxel_volume_ml
    bounds = (0.0, *margins)
    for row in table.rows:
        label = lm.structure(row.structure).label
        own = lm.labels == label
        assert row.min_distance_mm == pytest.approx(d[own].min(), abs=1e-3)
        for i, outer in enumerate(margins):
            ring = own & (d > bounds[i] + TOL) & (d <= outer + TOL)
            assert row.volume_in_shell_ml[i] == pytest.approx(ring.sum() * ml, abs=1e-4)
            assert row.volume_within_ml[i] == pytest.approx((own & (d <= outer + TOL)).sum() * ml, abs=1e-4)
        assert row.within_margins_mm == tuple(m for m in margins if d[own].min() <= m + TOL)
    assert [r.structure for r in table.rows] == ["liver", "portal_vein", "body"]  # nearest first
    vein = table.row("portal_vein")
    gap = 18 * SPACING[0] - 4.0 - 5.0  # centres 18 voxels apart along axis 0, radii 4 and 5 mm: 3.6 mm
    assert gap <= vein.min_distance_mm <= gap + max(SPACING)  # exact to a voxel
    assert vein.within_margins_mm == margins and vein.volume_in_shell_ml[0] > 0
    remnant = table.remnant
    assert remnant is not None and remnant.organ == "liver" and remnant.chosen_by == "lesion_boundary"
    liver = lm.labels == 2
    for i, outer in enumerate(margins):
        left = (liver & (d > outer + TOL)).sum() * ml
        assert remnant.remnant_ml[i] == pytest.approx(left, abs=1e-4)
        assert remnant.remnant_percent[i] == pytest.approx(100 * left / ((liver.sum() + (lm.labels == 4).sum()) * ml),
                                                           abs=0.01)
    assert remnant.remnant_ml == tuple(sorted(remnant.remnant_ml, reverse=True))


@pytest.mark.req("REQ-FUNC-1060", "REQ-FUNC-1061", "REQ-OUT-1063")
def test_add_margins_reports_the_table_and_round_trips() -> None:
    lm, _ = _case(rotation_deg=0.0)
    _, report = add_margins(lm, "tumour", [10, 5], organ="liver")
    assert report.table == margin_table(lm, "tumour", [5, 10], organ="liver")
    assert report.table.remnant is not None and report.table.remnant.chosen_by == "user"
    for i, shell in enumerate(report.shells):  # touches come from the same table
        assert shell.touches == tuple(sorted(r.structure for r in report.table.rows if r.volume_in_shell_ml[i] > 0))
    data = report.to_dict()
    assert data["distances"][0]["structure"] == "liver" and "volume_in_shell_ml" in data["distances"][0]
    assert MarginReport.from_dict(data).to_dict() == data
    assert MarginTable.from_dict(data["table"]) == report.table
    with pytest.raises(MarginError, match="malformed margin report"):
        MarginReport.from_dict({**data, "overlay": "sideways"})
    with pytest.raises(MarginError, match="malformed margin table"):
        MarginTable.from_dict({"lesion": "tumour"})
    # no organ around the lesion: no remnant; a named organ that does not exist is refused
    no_organ = LabelMap(np.where(lm.labels == 2, 1, lm.labels).astype(np.uint8), lm.affine,
                        [s for s in lm.structures if s.name != "liver"])
    assert margin_table(no_organ, "tumour", [5]).remnant is None
    with pytest.raises(MarginError, match="no organ 'kidney'"):
        margin_table(lm, "tumour", [5], organ="kidney")
    with pytest.raises(MarginError, match="positive"):
        margin_table(lm, "tumour", [-5])
    with pytest.raises(MarginError, match="no lesion 'nodule'"):
        margin_table(lm, "nodule", [5])


@pytest.mark.req("REQ-SAFE-1062")
def test_sheared_grid_is_refused() -> None:
    lm, _ = _case(rotation_deg=10.0, shear=0.3)  # third axis leans by atan(0.3 * 0.9 / 1.5) = 10.2 degrees
    with pytest.raises(MarginError, match=r"sheared by 10\.2 degrees"):
        margin_table(lm, "tumour", [5])
    with pytest.raises(MarginError, match="resample"):
        add_margins(lm, "tumour", [5])
