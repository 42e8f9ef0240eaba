"""ct-default on a synthetic chest phantom (known anatomy) and on the real TotalSegmentator CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.data import require
from scipy import ndimage

from appliance.core import Severity, StructureCategory, Volume
from appliance.io.nifti import load_volume
from engines.errors import CtInputError, NoPresetForVolume
from engines.presets import available_presets, choose_preset, get_preset
from engines.presets.base import SegmentationResult
from engines.presets.ct_default import STRUCTURES

SPACING = (2.0, 2.0, 2.5)
SHAPE = (100, 80, 72)


def _phantom(contrast: bool = False, seed: int = 0, joined: bool = False) -> tuple[Volume, dict[str, np.ndarray]]:
    """Chest phantom: array axis i = patient left (+x LPS), j = posterior (+y), k = superior (+z).

    Body (40 HU), lungs (-850 HU with vessels) left and right, trachea from the top to a carina at 2/3 height
    with two bronchi into the lungs, a spine (cortex 800 HU, textured marrow 250 +- 120 HU) and, with
    ``contrast``, an aorta (320 HU) in front of the spine.
    """
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE, SPACING, strict=True)], indexing="ij")
    cx, cy = SHAPE[0] * SPACING[0] / 2, SHAPE[1] * SPACING[1] / 2
    hu = np.full(SHAPE, -1000.0)
    body = ((i - cx) / 90) ** 2 + ((j - cy) / 70) ** 2 <= 1
    hu[body] = 40.0
    truth: dict[str, np.ndarray] = {}
    lung_l = ((i - (cx + 42)) / 30) ** 2 + ((j - cy) / 45) ** 2 + ((k - 80) / 70) ** 2 <= 1
    lung_r = ((i - (cx - 42)) / 30) ** 2 + ((j - cy) / 45) ** 2 + ((k - 80) / 70) ** 2 <= 1
    if joined:  # anterior junction: the lungs touch across the midline in front of the trachea
        bridge = (np.abs(i - cx) <= 24) & (j > cy - 38) & (j < cy - 30) & (np.abs(k - 80) < 25)
        lung_l = lung_l | (bridge & (i > cx))
        lung_r = lung_r | (bridge & (i <= cx))
    for lung in (lung_l, lung_r):
        hu[lung] = -850.0
    vessels = (np.abs(j - cy) < 2.5) & (np.abs(k - 70) < 2.5) & (lung_l | lung_r)
    hu[vessels] = 40.0
    trachea = (((i - cx) ** 2 + (j - (cy - 20)) ** 2) <= 8.0**2) & (k >= 120)
    bronchi = np.zeros(SHAPE, dtype=bool)
    for side in (1, -1):  # straight tubes from the carina (cx, cy-20, 120) to (cx+-42, cy-10, 95)
        a = np.array([cx, cy - 20, 120.0])
        b = np.array([cx + side * 42, cy - 10, 95.0])
        p = np.stack([i, j, k], axis=-1) - a
        d = b - a
        t = np.clip((p @ d) / (d @ d), 0, 1)
        dist = np.linalg.norm(p - t[..., None] * d, axis=-1)
        bronchi |= dist <= 5.0
    airway = trachea | bronchi
    hu[airway] = -1000.0
    spine = ((i - cx) ** 2 + (j - (cy + 45)) ** 2) <= 14.0**2
    marrow = ((i - cx) ** 2 + (j - (cy + 45)) ** 2) <= 10.0**2
    hu[spine] = 800.0
    trabeculae = ndimage.gaussian_filter(rng.normal(0, 1, SHAPE), 0.8)  # real marrow is textured, blood is not
    hu[marrow] = 250.0 + 120.0 * trabeculae[marrow] / trabeculae.std()
    aorta = ((i - (cx + 15)) ** 2 + (j - (cy + 22)) ** 2) <= 10.0**2
    if contrast:
        hu[aorta] = 320.0
    hu += rng.normal(0, 12, SHAPE)
    truth.update(body=body, lung_left=lung_l & ~airway, lung_right=lung_r & ~airway,  # vessels inside are lung
                 airway=airway & body, bone=spine, aorta=aorta, lung_vessels=vessels)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-cx, -cy, -90.0)
    return Volume(np.rint(hu).astype(np.int16), affine, "CT", "HU"), truth


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def phantom_result() -> tuple[Volume, dict[str, np.ndarray], SegmentationResult]:
    vol, truth = _phantom()
    return vol, truth, get_preset("ct-default").run(vol, "cpu")


@pytest.mark.req("REQ-FUNC-150")
def test_phantom_structures(phantom_result: tuple[Volume, dict[str, np.ndarray], SegmentationResult]) -> None:
    _, truth, res = phantom_result
    lm = res.labelmap
    names = {s.name for s in lm.structures}
    assert {"body", "bone", "lung_left", "lung_right", "airway"} <= names
    assert "vessels_contrast" not in names  # no contrast in this phantom
    assert _dice(lm.mask("lung_left"), truth["lung_left"]) > 0.95
    assert _dice(lm.mask("lung_right"), truth["lung_right"]) > 0.95
    assert _dice(lm.mask("bone"), truth["bone"]) > 0.9
    lungs = lm.mask("lung_left") | lm.mask("lung_right")
    assert lungs[truth["lung_vessels"]].mean() > 0.9  # vessels inside the lungs are lung, as in atlases
    assert lm.structure("bone").category is StructureCategory.BONE
    assert lm.structure("lung_left").snomed == "44029006"
    assert res.provenance["device"] == "cpu"
    assert set(res.provenance["timings_s"]) >= {"body", "bone", "airway", "lungs"}


@pytest.mark.req("REQ-FUNC-152")
def test_phantom_airway_grown_without_leak(
    phantom_result: tuple[Volume, dict[str, np.ndarray], SegmentationResult],
) -> None:
    _, truth, res = phantom_result
    airway = res.labelmap.mask("airway")
    assert _dice(airway, truth["airway"]) > 0.8
    # no leak: the airway holds (almost) nothing of the lung parenchyma
    parenchyma = (truth["lung_left"] | truth["lung_right"]) & ~truth["airway"]
    assert np.logical_and(airway, parenchyma).sum() < 0.05 * airway.sum()
    leak = [f for f in res.findings if f.code == "ct_airway_leak_stopped"]
    assert leak and leak[0].details["leak_at_hu"] <= -800  # the lungs (-850 HU) flooded at a later step
    # both bronchi reached: airway voxels on both sides of the midline below the carina
    lm = res.labelmap
    idx = np.argwhere(airway)
    x = lm.affine[0, 0] * idx[:, 0] + lm.affine[0, 3]
    low = idx[:, 2] * SPACING[2] < 110
    assert (x[low] > 20).any() and (x[low] < -20).any()


@pytest.mark.req("REQ-FUNC-151")
def test_mirrored_volume_keeps_left_lung_left(
    phantom_result: tuple[Volume, dict[str, np.ndarray], SegmentationResult],
) -> None:
    vol, _, res = phantom_result
    flip = vol.affine.copy()
    flip[:3, 0] = -flip[:3, 0]
    flip[:3, 3] = vol.affine[:3, 3] + vol.affine[:3, 0] * (vol.shape[0] - 1)
    mirrored = Volume(vol.array[::-1].copy(), flip, "CT", "HU")
    res2 = get_preset("ct-default").run(mirrored, "cpu")
    # same anatomy in patient space: flipping the labels back gives the same labels
    assert np.array_equal(res2.labelmap.labels[::-1], res.labelmap.labels)
    # and the structure called lung_left lies at positive LPS x (patient's left)
    idx = np.argwhere(res2.labelmap.mask("lung_left"))
    assert (mirrored.voxel_to_patient(idx)[:, 0] > 0).mean() > 0.99


@pytest.mark.req("REQ-FUNC-151")
def test_permuted_axes_give_same_anatomy(
    phantom_result: tuple[Volume, dict[str, np.ndarray], SegmentationResult],
) -> None:
    vol, _, res = phantom_result
    perm = (2, 0, 1)  # array axes (k, i, j): the axial axis is now axis 0
    aff = np.eye(4)
    aff[:3, :3] = vol.affine[:3, :3][:, perm]
    aff[:3, 3] = vol.affine[:3, 3]
    permuted = Volume(np.transpose(vol.array, perm).copy(), aff, "CT", "HU")
    res2 = get_preset("ct-default").run(permuted, "cpu")
    back = np.transpose(res2.labelmap.labels, np.argsort(perm))
    assert np.array_equal(back, res.labelmap.labels)


@pytest.mark.req("REQ-FUNC-151")
def test_lungs_joined_across_the_midline_are_split() -> None:
    vol, truth = _phantom(joined=True)
    assert ndimage.label(truth["lung_left"] | truth["lung_right"])[1] == 1  # really one air space
    lm = get_preset("ct-default").run(vol, "cpu").labelmap
    assert _dice(lm.mask("lung_left"), truth["lung_left"]) > 0.95
    assert _dice(lm.mask("lung_right"), truth["lung_right"]) > 0.95


@pytest.mark.req("REQ-FUNC-153")
def test_contrast_vessels_kept_out_of_bone() -> None:
    vol, truth = _phantom(contrast=True)
    res = get_preset("ct-default").run(vol, "cpu")
    lm = res.labelmap
    assert "vessels_contrast" in {s.name for s in lm.structures}
    assert _dice(lm.mask("vessels_contrast"), truth["aorta"]) > 0.8
    assert np.logical_and(lm.mask("bone"), truth["aorta"]).sum() == 0
    assert _dice(lm.mask("bone"), truth["bone"]) > 0.9
    assert any(f.code == "ct_contrast_detected" and f.requirement == "REQ-FUNC-153" for f in res.findings)


@pytest.mark.req("REQ-SAFE-150")
def test_refuses_non_ct_and_warns_without_air() -> None:
    vol, _ = _phantom()
    with pytest.raises(CtInputError, match="CT"):
        get_preset("ct-default").run(Volume(vol.array, vol.affine, "MR", "arbitrary"), "cpu")
    with pytest.raises(CtInputError, match="Hounsfield"):
        get_preset("ct-default").run(Volume(vol.array, vol.affine, "CT", "arbitrary"), "cpu")
    no_air = Volume(np.full((20, 20, 20), 40, np.int16), np.eye(4), "CT", "HU")
    res = get_preset("ct-default").run(no_air, "cpu")
    assert any(f.code == "ct_no_air" and f.severity is Severity.WARNING for f in res.findings)


@pytest.mark.req("REQ-FUNC-154")
def test_auto_chooses_from_modality() -> None:
    vol, _ = _phantom()
    name, reason = choose_preset(vol)
    assert name == "ct-default" and "CT" in reason
    assert "ct-default" in available_presets()
    with pytest.raises(NoPresetForVolume, match="ct-default"):
        choose_preset(Volume(vol.array, vol.affine, "US", "arbitrary"))
    with pytest.raises(NoPresetForVolume):
        choose_preset(Volume(vol.array, vol.affine, "CT", "arbitrary"))
    if "mr-brain" in available_presets():
        mr = Volume(vol.array, vol.affine, "MR", "arbitrary", {"body_part": "BRAIN"})
        assert choose_preset(mr)[0] == "mr-brain"
        name, reason = choose_preset(Volume(vol.array, vol.affine, "MR", "arbitrary", {"description": "AX T1 MPRAGE"}))
        assert name == "mr-brain" and "AX T1 MPRAGE" in reason
        with pytest.raises(NoPresetForVolume, match="not a brain"):
            choose_preset(Volume(vol.array, vol.affine, "MR", "arbitrary", {"body_part": "KNEE"}))


@pytest.mark.gpu
@pytest.mark.req("REQ-FUNC-155")
def test_gpu_labels_identical_to_cpu_oracle(shared_data: Path) -> None:
    for vol, _ in (_phantom(contrast=True), _phantom(joined=True)):
        cpu = get_preset("ct-default").run(vol, "cpu").labelmap.labels
        gpu_res = get_preset("ct-default").run(vol, "cuda")
        assert gpu_res.provenance["device"] == "cuda"
        assert np.array_equal(gpu_res.labelmap.labels, cpu)
    real = load_volume(require(shared_data / "ct/totalsegmentator/example_ct.nii.gz"), "CT", "HU")
    cpu_real = get_preset("ct-default").run(real, "cpu").labelmap.labels
    gpu_real = get_preset("ct-default").run(real, "cuda").labelmap.labels
    assert np.array_equal(gpu_real, cpu_real)


def test_structure_table_is_stable() -> None:
    assert [STRUCTURES[n].label for n in ("body", "bone", "lung_left", "lung_right", "airway")] == [1, 2, 3, 4, 5]


@pytest.mark.req("REQ-FUNC-155")
def test_ball_morphology_structuring_element_equals_edt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two exact implementations of ball morphology (small element / EDT) give the same voxels."""
    from engines.presets import ct_morphology as morph

    rng = np.random.default_rng(1)
    mask = ndimage.binary_opening(rng.random((30, 26, 14)) > 0.6)
    spacing = (0.9, 1.1, 3.0)
    for radius in (1.0, 2.0, 3.0):
        small = [f(mask, ndimage, radius, spacing) for f in (morph.dilate_ball, morph.erode_ball,
                                                             morph.closing_ball, morph.opening_ball)]
        monkeypatch.setattr(morph, "SMALL_BALL_VOXELS", 0)  # force the EDT path
        large = [f(mask, ndimage, radius, spacing) for f in (morph.dilate_ball, morph.erode_ball,
                                                             morph.closing_ball, morph.opening_ball)]
        monkeypatch.setattr(morph, "SMALL_BALL_VOXELS", 10**9)  # force the structuring-element path
        forced = [f(mask, ndimage, radius, spacing) for f in (morph.dilate_ball, morph.erode_ball,
                                                              morph.closing_ball, morph.opening_ball)]
        monkeypatch.undo()
        for a, b, c in zip(small, large, forced, strict=True):
            assert np.array_equal(a, b) and np.array_equal(b, c)


@pytest.mark.req("REQ-FUNC-155")
def test_order_independent_reductions() -> None:
    """label_max and ring_labels are defined without ties left to the implementation."""
    from engines.presets import ct_morphology as morph
    from engines.presets.ct_airway import label_max

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 6, 500)
    values = rng.integers(0, 1000, 500)
    expected = np.array([values[labels == k].max() if (labels == k).any() else 0 for k in range(8)])
    assert np.array_equal(label_max(labels, values, 7), expected)
    cores = np.zeros((30, 12, 12), bool)
    cores[5:8, 4:8, 4:8] = True
    cores[14:17, 4:8, 4:8] = True  # 6 voxels (6 mm) apart: their 1..4 mm rings meet in between
    lab, _ = ndimage.label(cores)
    ring = morph.ring_labels(lab, cores, ndimage, 1.0, 4.0, (1.0, 1.0, 1.0))
    assert set(np.unique(ring)) == {0, 1, 2}
    assert ring[11, 5, 5] == 2  # equidistant (3 mm from both): the larger label wins, on every device
    assert ring[9, 5, 5] == 2 and ring[12, 5, 5] == 2  # in the band both spread through: larger label
    assert ring[2, 5, 5] == 1 and ring[20, 5, 5] == 2
    assert not ring[cores].any() and ring[8, 5, 5] == 0  # the 1 mm rim next to a core is skipped
