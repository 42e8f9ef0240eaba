"""ct-default: bone reaches no farther than trabecular bone does, and the closing gives back the surface it filled.

Two rules on the bone label (REQ-FUNC-1940, REQ-FUNC-1941), measured on the real example CT and the demo sample:
- ``ct_marrow.far_from_dense``: what the weak threshold (120 HU) joined to a bone more than 10 mm from any voxel
  above 200 HU, in a region that opens onto the bone's outside, is soft tissue. On the delayed phase painted on
  the example CT (blood 130 HU) the iliac vessels were 24 % bone (944 voxels) and bone Dice 0.8907.
- ``ct_marrow.peel_closing``: on grids finer than 1.5 mm the closing's additions next to the bone's outside are
  taken back (concavities its ball filled with voxels below the threshold).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.contrast import example_ct_reference, paint_phase, reference_mask
from helpers.metrics import dice

from appliance.core import Volume
from engines.presets import get_preset
from engines.presets.ct_parameters import CtDefaultParameters

DEMO = Path(__file__).resolve().parents[2] / "appliance" / "samples" / "ct_abdomen_20slices" / "dicom"
DATA = Path(__file__).resolve().parent / "data"
ILIAC = ("iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right")


@pytest.fixture(scope="module")
def example(shared_data: Path) -> tuple[Volume, np.ndarray, np.ndarray, dict[str, int]]:
    ct, ref, value_of = example_ct_reference(shared_data)
    return ct, ref, reference_mask(ref, value_of, "bone"), value_of


@pytest.mark.req("REQ-FUNC-1940")
def test_delayed_phase_vessels_far_from_dense_bone_leave_it(
    example: tuple[Volume, np.ndarray, np.ndarray, dict[str, int]],
) -> None:
    """Painted delayed phase: the iliac vessels the weak threshold joined to the sacrum and ilia leave bone, the
    hips stay whole (the rule judges only what opens onto the outside, never filled marrow)."""
    ct, ref, bone_ref, value_of = example
    vessels = reference_mask(ref, value_of, "vessels_contrast")
    painted = paint_phase(ct, ref, vessels, value_of, "delayed")
    preset = get_preset("ct-default")
    on = preset.run(painted, "cpu").labelmap.mask("bone")
    off = preset.run(painted, "cpu", options={"dense_reach_mm": 0.0}).labelmap.mask("bone")
    iliac = np.isin(ref, [value_of[n] for n in ILIAC])
    hips = np.isin(ref, [value_of["hip_left"], value_of["hip_right"]])
    assert off[iliac].mean() > 0.2  # measured 0.244 without the rule
    assert on[iliac].mean() < 0.05  # measured 0.027
    assert dice(on, bone_ref) >= 0.90 > dice(off, bone_ref)  # measured 0.9002 / 0.8907
    assert on[hips].mean() >= off[hips].mean() - 0.001  # measured 0.9638 both
    assert not (on & ~off).any()  # the rule only takes out


@pytest.mark.req("REQ-FUNC-1940")
def test_native_bone_is_never_far_from_dense_voxels(
    example: tuple[Volume, np.ndarray, np.ndarray, dict[str, int]],
) -> None:
    """Native 3 mm CT: 0.4 % of the reference bone lies farther than the reach from a voxel above 200 HU (fatty
    marrow, filled, never judged), so the rule takes out almost nothing there (1.2 ml, mostly psoas the threshold
    reached) and Dice does not drop."""
    from scipy import ndimage

    ct, _, bone_ref, _ = example
    p = CtDefaultParameters()
    hu = np.asarray(ct.array)
    spacing = tuple(float(v) for v in np.abs(np.diag(ct.affine)[:3]))
    far = ndimage.distance_transform_edt(hu <= p.bone_strong_hu, sampling=spacing) > p.dense_reach_mm
    assert far[bone_ref].mean() < 0.01  # measured 0.0042
    preset = get_preset("ct-default")
    on = preset.run(ct, "cpu").labelmap.mask("bone")
    off = preset.run(ct, "cpu", options={"dense_reach_mm": 0.0}).labelmap.mask("bone")
    assert 0 < np.count_nonzero(off & ~on) * 0.027 < 3.0  # ml; measured 1.2
    assert dice(on, bone_ref) >= dice(off, bone_ref)  # 0.9131 / 0.9127


@pytest.mark.req("REQ-FUNC-1941")
def test_peel_on_the_demo_sample_gives_back_the_closed_surface() -> None:
    """Demo sample (0.98 mm in-plane): the closing's additions next to the outside go (one 6-neighbour step):
    1837 voxels, median 85 HU (below the trabecular threshold; the later release steps then judge a slightly
    different bone, so a few denser voxels move as well), 21 % of them in the reviewed reference, and Dice against
    it rises (0.9236 -> 0.9278). On the 3 mm example CT the peel depth is under one voxel: nothing changes."""
    from appliance.ingest import load_input

    vol = load_input(DEMO)[0]
    z = np.load(DATA / "ct_abdomen_20slices_bone.npz")
    shape = tuple(int(n) for n in z["shape"])
    ref = np.unpackbits(z["bone"])[: int(np.prod(shape))].reshape(shape).astype(bool)
    preset = get_preset("ct-default")
    on = preset.run(vol, "cpu").labelmap.mask("bone")
    off = preset.run(vol, "cpu", options={"closing_peel_mm": 0.0}).labelmap.mask("bone")
    gone = off & ~on
    assert np.count_nonzero(gone) > 20 * np.count_nonzero(on & ~off)  # measured 1837 out, 27 in
    assert np.median(np.asarray(vol.array)[gone]) < CtDefaultParameters().bone_weak_hu  # measured 85 HU
    assert (gone & ref).sum() < 0.3 * gone.sum()  # measured 0.21
    assert dice(on, ref) >= dice(off, ref) + 0.003  # measured 0.9278 / 0.9236
