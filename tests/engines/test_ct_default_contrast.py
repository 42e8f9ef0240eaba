"""ct-default on an arterial-phase phantom: what a contrast CT puts above the bone thresholds must not become bone.

Measured on a real arterial-phase chest CT (TotalSegmentator's aorta-report sample), before this behaviour: the
heart (669 ml, chambers 250-650 HU) was labelled bone, as were the enhanced pulmonary vessels and the spleen, and a
pocket of colon gas mixed with stool was labelled lung. The phantom rebuilds each of those situations with a known
answer.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from appliance.core import Severity, Volume
from engines.presets import get_preset
from engines.presets.base import SegmentationResult

SPACING = (2.0, 2.0, 2.5)
SHAPE = (100, 80, 64)


def _ball(grid: tuple[np.ndarray, np.ndarray, np.ndarray], centre: tuple[float, float, float],
          radii: tuple[float, float, float]) -> np.ndarray:
    i, j, k = grid
    d2 = ((i - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 + ((k - centre[2]) / radii[2]) ** 2
    return np.asarray(d2 <= 1)


Grid = tuple[np.ndarray, np.ndarray, np.ndarray]
CX, CY = SHAPE[0] * SPACING[0] / 2, SHAPE[1] * SPACING[1] / 2


def _trunk() -> tuple[Grid, np.ndarray, np.ndarray]:
    """``(grid in patient mm, HU filled with air, body mask at 40 HU)``; axis i = left, j = posterior, k = up."""
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE, SPACING, strict=True)], indexing="ij")
    i, j, _ = grid
    hu = np.full(SHAPE, -1000.0)
    body = ((i - CX) / 95) ** 2 + ((j - CY) / 72) ** 2 <= 1
    hu[body] = 40.0
    return (grid[0], grid[1], grid[2]), hu, body


def _vertebra(hu: np.ndarray, grid: Grid, rng: np.random.Generator, dy: float, outer: float, inner: float,
              column: np.ndarray | bool = True) -> np.ndarray:
    """A vertebral column ``dy`` mm behind the centre: 850 HU cortex around a textured marrow (real trabecular bone
    is not smooth); returns its mask."""
    i, j, _ = grid
    spine = ((i - CX) ** 2 + (j - (CY + dy)) ** 2 <= outer**2) & column
    marrow = ((i - CX) ** 2 + (j - (CY + dy)) ** 2 <= inner**2) & column
    trabeculae = ndimage.gaussian_filter(rng.normal(0, 1, SHAPE), 0.8)
    hu[spine] = 850.0
    hu[marrow] = 230.0 + 120.0 * trabeculae[marrow] / trabeculae.std()
    return np.asarray(spine)


def _scan(hu: np.ndarray, rng: np.random.Generator) -> Volume:
    """``hu`` with ~25 HU of correlated noise as a CT volume centred on the patient."""
    hu = hu + ndimage.gaussian_filter(rng.normal(0, 1, SHAPE), 0.5) * 60.0
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-CX, -CY, -100.0)
    return Volume(np.rint(hu).astype(np.int16), affine, "CT", "HU")


def _arterial_phantom(contrast: bool) -> tuple[Volume, dict[str, np.ndarray]]:
    """Chest and upper abdomen with lungs, heart, spine, spleen and colon gas."""
    rng = np.random.default_rng(7)
    grid, hu, body = _trunk()
    i, j, k = grid
    cx, cy = CX, CY
    lung_l = _ball(grid, (cx + 50, cy, 110), (28, 45, 45))
    lung_r = _ball(grid, (cx - 50, cy, 110), (28, 45, 45))
    hu[lung_l | lung_r] = -850.0
    # enhanced pulmonary vessels: 2 mm radius tubes running cranio-caudally inside each lung
    lung_vessels = np.zeros(SHAPE, dtype=bool)
    for side in (1, -1):
        for dj in (-15, 0, 15):
            lung_vessels |= ((i - (cx + side * 50)) ** 2 + (j - (cy + dj)) ** 2 <= 2.0**2) & (lung_l | lung_r)
    hu[lung_vessels] = 300.0 if contrast else 40.0
    # heart: myocardium around a right (less enhanced) and a left (dense) chamber
    myocardium = _ball(grid, (cx, cy - 30, 100), (22, 18, 22))
    right = _ball(grid, (cx - 9, cy - 32, 100), (10, 12, 16))
    left = _ball(grid, (cx + 10, cy - 28, 100), (9, 11, 16))
    hu[myocardium] = 90.0 if contrast else 40.0
    hu[right] = 260.0 if contrast else 40.0
    hu[left] = 520.0 if contrast else 40.0
    spine = _vertebra(hu, grid, rng, 45.0, 14.0, 11.0, k > 5)
    # spleen enhancing in the arterial phase, below the left lung
    spleen = _ball(grid, (cx + 55, cy + 5, 35), (16, 20, 18))
    hu[spleen] = 175.0 if contrast else 50.0
    # colon gas mixed with stool, below the right lung
    colon = _ball(grid, (cx - 50, cy - 5, 35), (16, 16, 16))
    hu[colon] = np.where(rng.random(SHAPE) < 0.6, -1000.0, -600.0)[colon]
    truth = {"body": body, "chambers": left | right, "bone": spine, "spleen": spleen, "colon": colon,
             "lung_vessels": lung_vessels, "lungs": lung_l | lung_r}
    return _scan(hu, rng), truth


def _venous_vessel_on_spine() -> tuple[Volume, dict[str, np.ndarray]]:
    """Portal-venous blood (170 HU) in a vessel lying broadly on the front of a vertebra."""
    rng = np.random.default_rng(3)
    grid, hu, _ = _trunk()
    i, j, _ = grid
    spine = _vertebra(hu, grid, rng, 40.0, 16.0, 13.0)
    vessel = ((i - (CX + 8)) ** 2 + (j - (CY + 14)) ** 2 <= 14.0**2) & ~spine
    hu[vessel] = 170.0
    return _scan(hu, rng), {"bone": spine, "vessel": vessel}


def _mask(res: SegmentationResult, name: str) -> np.ndarray:
    """The structure's mask, empty when the preset did not produce it (no contrast: no vessels_contrast)."""
    lm = res.labelmap
    if name not in {s.name for s in lm.structures}:
        return np.zeros(lm.labels.shape, dtype=bool)
    return lm.mask(name)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module", params=[True, False], ids=["arterial", "plain"])
def phantom(request: pytest.FixtureRequest) -> tuple[bool, dict[str, np.ndarray], SegmentationResult]:
    vol, truth = _arterial_phantom(contrast=request.param)
    return request.param, truth, get_preset("ct-default").run(vol, "cpu")


@pytest.mark.req("REQ-FUNC-153")
def test_contrast_filled_heart_is_blood_pool_not_bone(
    phantom: tuple[bool, dict[str, np.ndarray], SegmentationResult],
) -> None:
    contrast, truth, res = phantom
    lm = res.labelmap
    names = {s.name for s in lm.structures}
    assert not np.logical_and(lm.mask("bone"), truth["chambers"]).any()
    if contrast:
        # chambers of different enhancement (260 and 520 HU) are one blood pool
        assert _mask(res, "vessels_contrast")[truth["chambers"]].mean() > 0.9
        assert any(f.code == "ct_contrast_detected" for f in res.findings)
    else:
        assert "vessels_contrast" not in names
        assert not any(f.code == "ct_contrast_detected" for f in res.findings)


@pytest.mark.req("REQ-FUNC-150", "REQ-FUNC-153")
def test_textured_bone_stays_bone_with_and_without_contrast(
    phantom: tuple[bool, dict[str, np.ndarray], SegmentationResult],
) -> None:
    _, truth, res = phantom
    bone = res.labelmap.mask("bone")
    assert _dice(bone, truth["bone"]) > 0.85
    assert not _mask(res, "vessels_contrast")[truth["bone"]].any()
    assert not any(f.code == "ct_bone_holds_soft_tissue" for f in res.findings)  # textured bone: no warning


@pytest.mark.req("REQ-FUNC-153")
def test_enhancing_spleen_is_neither_bone_nor_vessel(
    phantom: tuple[bool, dict[str, np.ndarray], SegmentationResult],
) -> None:
    _, truth, res = phantom
    lm = res.labelmap
    assert lm.mask("bone")[truth["spleen"]].mean() < 0.02
    assert _mask(res, "vessels_contrast")[truth["spleen"]].mean() < 0.02


@pytest.mark.req("REQ-FUNC-171")
def test_enhanced_lung_vessels_are_lung(phantom: tuple[bool, dict[str, np.ndarray], SegmentationResult]) -> None:
    _, truth, res = phantom
    lm = res.labelmap
    lungs = lm.mask("lung_left") | lm.mask("lung_right")
    assert lungs[truth["lung_vessels"]].mean() > 0.95
    assert not lm.mask("bone")[truth["lung_vessels"]].any()
    assert _dice(lungs, truth["lungs"]) > 0.95


@pytest.mark.req("REQ-FUNC-171")
def test_colon_gas_mixed_with_stool_is_not_lung(
    phantom: tuple[bool, dict[str, np.ndarray], SegmentationResult],
) -> None:
    _, truth, res = phantom
    lm = res.labelmap
    lungs = lm.mask("lung_left") | lm.mask("lung_right")
    assert not lungs[truth["colon"]].any()


@pytest.mark.req("REQ-SAFE-152", "REQ-FUNC-1801")
def test_venous_vessel_lying_on_the_spine_is_released_from_bone_and_warned() -> None:
    """Portal-venous blood (170 HU) in a vessel that lies broadly on a vertebra: too little brighter than its
    surroundings to be told from marrow by texture, so the bone first holds it; no cortex encloses it, so it is
    taken out again, and the finding says what happened. Since session 6 the lumen release takes such a vessel
    out before the closing (REQ-FUNC-1801, asserted at the end); this fallback is tested with it switched off."""
    vol, truth = _venous_vessel_on_spine()
    res = get_preset("ct-default").run(vol, "cpu", options={"lumen_max_area_mm2": 0.0})
    warned = [f for f in res.findings if f.code == "ct_bone_holds_soft_tissue"]
    assert warned and warned[0].severity is Severity.WARNING and warned[0].requirement == "REQ-SAFE-152"
    assert warned[0].details["smooth_share"] > 0.18 > warned[0].details["smooth_share_after"]
    assert warned[0].details["released_ml"] > 0 and "images" in warned[0].message
    bone = res.labelmap.mask("bone")
    assert bone[truth["vessel"]].mean() < 0.1  # the vessel left the bone...
    assert _dice(bone, truth["bone"]) > 0.85  # ...the vertebra stayed
    res = get_preset("ct-default").run(vol, "cpu")  # with the lumen release (the default)
    assert [f.severity for f in res.findings if f.code == "ct_bone_lumen_released"] == [Severity.WARNING]
    assert res.labelmap.mask("bone")[truth["vessel"]].mean() < 0.1
    assert _dice(res.labelmap.mask("bone"), truth["bone"]) > 0.85


@pytest.mark.gpu
@pytest.mark.req("REQ-FUNC-155")
def test_gpu_contrast_steps_identical_to_cpu_oracle() -> None:
    """Blood pool, parenchyma, bone cleaning, core splitting and the release step on CuPy give the CPU labels."""
    for vol, _ in (_arterial_phantom(True), _arterial_phantom(False), _venous_vessel_on_spine()):
        cpu = get_preset("ct-default").run(vol, "cpu")
        gpu = get_preset("ct-default").run(vol, "cuda")
        assert gpu.provenance["device"] == "cuda"
        assert np.array_equal(gpu.labelmap.labels, cpu.labelmap.labels)
        assert [f.code for f in gpu.findings] == [f.code for f in cpu.findings]
