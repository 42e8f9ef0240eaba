"""ct-default on portal-venous contrast: a lumen the bone thresholds reach leaves bone, and a WARNING names it.

Measured on the demo's own sample (a portal-venous abdomen) before this behaviour: the aorta (lumen 140-160 HU,
above the 120 HU trabecular threshold, joined to the spine by its calcified wall) was 89 % bone, the calcified
costal cartilage 82 %, and no finding said so. The phantom rebuilds that situation with a known answer; the real
sample is scored against a bone reference made for it (tests/engines/data/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from appliance.core import Severity, Volume
from engines.presets import get_preset
from engines.presets.base import SegmentationResult

SPACING = (1.0, 1.0, 2.0)
SHAPE = (150, 130, 24)
DATA = Path(__file__).resolve().parent / "data"
DEMO = Path(__file__).resolve().parents[2] / "appliance" / "samples" / "ct_abdomen_20slices" / "dicom"


def _venous_aorta_on_spine(calcified: bool = True) -> tuple[Volume, dict[str, np.ndarray]]:
    """Trunk with a vertebra (cortex 850 HU around textured marrow) and an aorta lying on it.

    The aorta's lumen is portal-venous blood (150 HU, smooth, in the trabecular range); with ``calcified`` a
    600 HU crescent of wall calcification lies on its front, so that the cortex-seeded hysteresis reaches it
    from both sides. The liver enhances (110 HU), as it does in the portal-venous phase. Fat (-90 HU) surrounds
    the aorta away from the spine. Axis i = left, j = posterior, k = up.
    """
    rng = np.random.default_rng(11)
    i, j, _ = np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE, SPACING, strict=True)], indexing="ij")
    cx, cy = SHAPE[0] * SPACING[0] / 2, SHAPE[1] * SPACING[1] / 2
    hu = np.full(SHAPE, -1000.0)
    body = ((i - cx) / 70) ** 2 + ((j - cy) / 60) ** 2 <= 1
    hu[body] = 40.0
    liver = ((i - (cx - 35)) / 28) ** 2 + ((j - (cy - 10)) / 30) ** 2 <= 1  # portal-venous liver: 110 HU
    hu[liver] = 110.0
    vy = cy + 22.0
    spine = (i - cx) ** 2 + (j - vy) ** 2 <= 17.0**2
    marrow = (i - cx) ** 2 + (j - vy) ** 2 <= 14.0**2
    trabeculae = ndimage.gaussian_filter(rng.normal(0, 1, SHAPE), 0.8)
    hu[spine] = 850.0
    hu[marrow] = 240.0 + 120.0 * trabeculae[marrow] / trabeculae.std()
    ax, ay = cx + 9.0, vy - 17.0 - 11.0  # touching the vertebra's front, a little to the left
    around = ((i - ax) ** 2 + (j - ay) ** 2 <= 16.0**2) & ~spine
    hu[around] = -90.0
    aorta = ((i - ax) ** 2 + (j - ay) ** 2 <= 11.0**2) & ~spine
    hu[aorta] = 150.0
    if calcified:
        wall = aorta & ((i - ax) ** 2 + (j - ay) ** 2 >= 9.5**2) & (j < ay - 4.0)
        hu[wall] = 600.0
        aorta = aorta & ~wall
    else:
        wall = np.zeros_like(aorta)
    hu += ndimage.gaussian_filter(rng.normal(0, 1, SHAPE), 0.5) * 30.0
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-cx, -cy, -20.0)
    return Volume(np.rint(hu).astype(np.int16), affine, "CT", "HU"), {"bone": spine, "aorta": aorta, "wall": wall}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def venous() -> tuple[dict[str, np.ndarray], SegmentationResult]:
    vol, truth = _venous_aorta_on_spine()
    return truth, get_preset("ct-default").run(vol, "cpu")


@pytest.mark.req("REQ-FUNC-750")
def test_venous_aorta_on_calcified_wall_is_vessel_not_bone(
    venous: tuple[dict[str, np.ndarray], SegmentationResult],
) -> None:
    truth, res = venous
    lm = res.labelmap
    bone = lm.mask("bone")
    assert bone[truth["aorta"]].mean() < 0.05
    assert lm.mask("vessels_contrast")[truth["aorta"]].mean() > 0.8
    assert _dice(bone, truth["bone"]) > 0.9  # the textured vertebra stays whole


@pytest.mark.req("REQ-SAFE-750")
def test_released_region_is_named_with_its_volume_in_a_warning(
    venous: tuple[dict[str, np.ndarray], SegmentationResult],
) -> None:
    """Since session 6 most of the lumen leaves bone before the marrow closing (ct_bone_lumen_released,
    REQ-FUNC-1801) and the smooth-region release names the rest: together they name the aorta's volume."""
    truth, res = venous
    aorta_ml = float(truth["aorta"].sum()) * np.prod(SPACING) / 1000.0
    named = 0.0
    for code, requirement in (("ct_bone_smooth_region_released", "REQ-SAFE-750"),
                              ("ct_bone_lumen_released", "REQ-FUNC-1801")):
        found = [f for f in res.findings if f.code == code]
        assert len(found) == 1 and found[0].severity is Severity.WARNING and found[0].requirement == requirement
        regions = found[0].details["regions"]
        # the message names the volume and where it lies, and asks for a check on the images
        assert f"{regions[0]['ml']:.0f} ml at" in found[0].message and "images" in found[0].message
        named += sum(float(r["ml"]) for r in regions if r.get("vessel", True))
    assert 0.7 * aorta_ml < named < 1.5 * aorta_ml


@pytest.mark.req("REQ-FUNC-1760")
def test_calcified_wall_goes_to_the_vessel_not_bone(venous: tuple[dict[str, np.ndarray], SegmentationResult]) -> None:
    """The 600 HU crescent of wall calcification is a thin shell on the lumen: vessel, stated in an INFO finding."""
    truth, res = venous
    lm = res.labelmap
    assert lm.mask("bone")[truth["wall"]].mean() < 0.05
    assert lm.mask("vessels_contrast")[truth["wall"]].mean() > 0.8
    found = [f for f in res.findings if f.code == "ct_bone_calcifications_excluded"]
    wall_ml = float(truth["wall"].sum()) * np.prod(SPACING) / 1000.0
    assert len(found) == 1 and found[0].severity is Severity.INFO
    assert 0.7 * wall_ml <= found[0].details["vessel_wall_ml"] <= 2.0 * wall_ml


@pytest.mark.req("REQ-FUNC-750")
def test_textured_vertebra_alone_releases_nothing() -> None:
    """No lumen, no release, no warning: trabecular bone is textured and ringed by its cortex."""
    vol, truth = _venous_aorta_on_spine()
    arr = np.asarray(vol.array).copy()
    arr[truth["aorta"]] = 40
    res = get_preset("ct-default").run(Volume(arr, vol.affine, "CT", "HU"), "cpu")
    assert not any(f.code == "ct_bone_smooth_region_released" for f in res.findings)
    assert _dice(res.labelmap.mask("bone"), truth["bone"]) > 0.9


@pytest.mark.req("REQ-FUNC-750")
def test_release_runs_only_where_organs_enhance() -> None:
    """Only a contrast scan puts smooth tissue in the bone range, so the release is gated on enhanced organs
    (smooth-looking marrow from soft kernels or interpolated grids must stay bone on a plain scan)."""
    import scipy.ndimage as ndi

    from engines.presets import ct_morphology as morph
    from engines.presets.ct_contrast import local_texture
    from engines.presets.ct_geometry import GridGeometry
    from engines.presets.ct_lumen import enhanced_parenchyma_share
    from engines.presets.ct_parameters import CtDefaultParameters

    p = CtDefaultParameters()
    shares = []
    for liver_hu in (110.0, 55.0):
        vol, truth = _venous_aorta_on_spine()
        arr = np.asarray(vol.array).astype(np.float32)
        arr[(arr > 80) & (arr < 140) & ~truth["bone"] & ~truth["aorta"]] += liver_hu - 110.0
        hs = ndi.gaussian_filter(arr.astype(np.float64), sigma=[1.5 / s for s in SPACING], mode="nearest")
        body = arr > -500
        tex = local_texture(arr, hs, body, ndi)
        bone = morph.hysteresis(arr > p.bone_strong_hu, arr > p.bone_weak_hu, ndi)
        shares.append(enhanced_parenchyma_share(hs, tex, body, bone, GridGeometry(vol.affine, vol.shape), ndi, p))
    assert shares[0] >= p.contrast_parenchyma_share > shares[1]


def _demo_reference() -> np.ndarray:
    z = np.load(DATA / "ct_abdomen_20slices_bone.npz")
    shape = tuple(int(n) for n in z["shape"])
    return np.unpackbits(z["bone"])[: int(np.prod(shape))].reshape(shape).astype(bool)


@pytest.fixture(scope="module")
def demo() -> tuple[Volume, SegmentationResult]:
    from appliance.ingest import load_input

    vol = load_input(DEMO)[0]
    return vol, get_preset("ct-default").run(vol, "cpu")


@pytest.mark.req("REQ-PERF-750")
def test_demo_sample_bone_dice_target(demo: tuple[Volume, SegmentationResult]) -> None:
    """Target on the demo's portal-venous abdomen: measured 0.9236 since the lumen release of session 6, 0.921
    before it (0.9125 against the reference before its rib-head correction, tests/engines/data/README.md); 0.883
    (0.875) with the canal filled, the calcified aortic wall and the calcified costal cartilage in bone; 0.801
    before the smooth-region release."""
    vol, res = demo
    ref = _demo_reference()
    assert ref.shape == vol.shape
    assert _dice(res.labelmap.mask("bone"), ref) >= 0.90


@pytest.mark.req("REQ-SAFE-750", "REQ-FUNC-1801")
def test_demo_sample_aorta_is_released_and_warned(demo: tuple[Volume, SegmentationResult]) -> None:
    """The aorta (lumen 140-160 HU, about 16 ml over the 20 slices) leaves bone, named in a WARNING: since session
    6 as a lumen before the marrow closing (ct_bone_lumen_released, 12 ml), else by the smooth-region release."""
    _, res = demo
    warned = {f.code: f for f in res.findings if f.severity is Severity.WARNING}
    lumens = list(warned["ct_bone_lumen_released"].details["regions"]) if "ct_bone_lumen_released" in warned else []
    if "ct_bone_smooth_region_released" in warned:
        lumens += [r for r in warned["ct_bone_smooth_region_released"].details["regions"] if r["vessel"]]
    assert lumens and max(float(r["ml"]) for r in lumens) >= 10.0
    assert "vessels_contrast" in {s.name for s in res.labelmap.structures}


@pytest.mark.req("REQ-SAFE-1800")
def test_demo_sample_bone_raises_no_vessel_warning(demo: tuple[Volume, SegmentationResult]) -> None:
    """Bone is right on the demo sample (Dice >= 0.90 above): the aorta left bone, nothing in bone looks like a
    lumen, so ``ct_bone_may_hold_vessel`` stays silent (before the release its 16 ml aorta would have fired it)."""
    _, res = demo
    assert not any(f.code == "ct_bone_may_hold_vessel" for f in res.findings)


@pytest.mark.gpu
@pytest.mark.req("REQ-FUNC-750", "REQ-FUNC-155")
def test_gpu_release_identical_to_cpu_oracle() -> None:
    vol, _ = _venous_aorta_on_spine()
    cpu = get_preset("ct-default").run(vol, "cpu")
    gpu = get_preset("ct-default").run(vol, "cuda")
    assert np.array_equal(gpu.labelmap.labels, cpu.labelmap.labels)
    assert [f.details for f in gpu.findings] == [f.details for f in cpu.findings]
