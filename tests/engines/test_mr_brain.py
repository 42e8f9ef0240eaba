"""mr-brain: conform and back, the preset with small packs, and (slow) the real networks on the real T1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_packs_support import T1, make_pack

from appliance.core import StructureCategory, Volume
from appliance.io.nifti import load_volume
from engines.conform import conform, conformed_affine, unconform_labels
from engines.errors import MrBrainError
from engines.presets.base import get_preset
from engines.presets.mr_brain import MrBrainPreset


def _phantom() -> Volume:
    """A 'head' on an anisotropic, rotated grid: a bright core in a white ellipsoid in a grey shell."""
    shape = (70, 60, 48)
    ijk = np.indices(shape).astype(np.float32)
    c = (np.asarray(shape) - 1)[:, None, None, None] / 2
    r = np.sqrt((((ijk - c) / np.array([30, 25, 20])[:, None, None, None]) ** 2).sum(0))
    arr = np.where(r < 0.3, 250.0, np.where(r < 0.55, 200.0, np.where(r < 0.9, 120.0, 0.0))).astype(np.int16)
    theta = np.deg2rad(12)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.2, 1.1, 2.0])
    aff[:3, 3] = [-40, -30, -45]
    return Volume(arr, aff, "MR")


@pytest.mark.req("REQ-FUNC-109")
def test_conformed_t1_passes_unchanged(shared_data: Path) -> None:
    vol = load_volume(shared_data / T1, modality="MR")
    result = conform(vol)
    assert not result.resampled
    assert np.array_equal(result.array, np.asarray(vol.array, dtype=np.float32))
    labels = (result.array > 100).astype(np.uint16)
    assert unconform_labels(labels, result) is labels


@pytest.mark.req("REQ-FUNC-109")
def test_conform_and_back_keeps_geometry() -> None:
    vol = _phantom()
    result = conform(vol)
    assert result.resampled and result.array.shape == (256, 256, 256)
    assert 0 <= result.array.min() and result.array.max() == 255
    # LIA: i → left (+x LPS), j → inferior (-z), k → anterior (-y), 1 mm
    np.testing.assert_allclose(result.affine[:3, :3], [[1, 0, 0], [0, 0, -1], [0, -1, 0]])
    centre = vol.voxel_to_patient([(np.asarray(vol.shape) - 1) / 2])[0]
    np.testing.assert_allclose(result.affine[:3, :3] @ np.full(3, 127.5) + result.affine[:3, 3], centre)
    truth = (np.asarray(vol.array) >= 200).astype(np.uint16)
    seg = (result.array > 160).astype(np.uint16)  # 'segment' on the conformed grid
    back = unconform_labels(seg, result)
    assert back.shape == vol.shape
    dice = 2 * np.sum((back > 0) & (truth > 0)) / (np.sum(back > 0) + np.sum(truth > 0))
    assert dice > 0.9, dice
    np.testing.assert_allclose(conformed_affine(vol, orientation="RAS")[:3, :3], np.diag([-1, -1, 1]))


@pytest.mark.req("REQ-FUNC-107", "REQ-TRACE-100")
def test_preset_with_small_packs_returns_named_structures_on_the_input_grid(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    make_pack(packs / "mask", "t-mask", [("brain", "organ")], thresholds=[0.3],
              postprocessing=[{"step": "largest_component"}])
    # threshold networks: channel c wins above thresholds[c-1] (normalised intensity)
    make_pack(packs / "tissue", "t-tissue", [("grey_matter", "organ"), ("white_matter", "organ")],
              thresholds=[0.3, 0.65])
    make_pack(packs / "sub", "t-sub", [("cerebral_white_matter", "organ"), ("cerebral_cortex", "organ"),
                                        ("lateral_ventricle", "other")], thresholds=[0.3, 0.5, 0.9],
              preprocessing=[{"step": "mask_with_pack", "padding": 1}])
    vol = _phantom()
    seen: list[str] = []
    result = get_preset("mr-brain").run(
        vol, device="cpu", progress=lambda stage, frac: seen.append(stage),
        options={"packs_dirs": [str(packs)], "mask_pack": "t-mask", "tissue_pack": "t-tissue",
                 "subcortical_pack": "t-sub"})
    lm = result.labelmap
    assert lm.shape == vol.shape and np.allclose(lm.affine, vol.affine)
    names = [s.name for s in lm.structures]
    assert names == ["grey_matter", "white_matter", "lateral_ventricle"]
    assert "cerebral_cortex" not in names  # left to the tissue network
    assert lm.structure("lateral_ventricle").category == StructureCategory.OTHER
    assert lm.structure("white_matter").category == StructureCategory.ORGAN
    head = np.asarray(vol.array) > 0
    assert np.mean(lm.labels[~head] > 0) < 0.02  # only partial-volume voxels at the boundary
    core = np.asarray(vol.array) == 250
    assert np.mean(lm.mask("lateral_ventricle")[core]) > 0.8  # subcortical override of the tissue label
    assert np.mean(lm.mask("grey_matter")[np.asarray(vol.array) == 120]) > 0.8
    prov = result.provenance
    assert prov["backend"] == "onnxruntime" and prov["device"] == "cpu" and prov["reason"]
    assert [p["name"] for p in prov["packs"]] == ["t-mask", "t-tissue", "t-sub"]
    assert all(len(p["sha256"]) == 64 and p["version"] for p in prov["packs"])
    assert {"conform_s", "mask_s", "tissue_s", "subcortical_s", "unconform_s", "total_s"} <= set(prov["timings"])
    assert seen[0] == "conform" and seen[-1] == "done"


@pytest.mark.req("REQ-FUNC-107")
def test_refuses_ct_and_missing_packs(tmp_path: Path) -> None:
    ct = Volume(np.zeros((4, 4, 4), np.int16), np.eye(4), "CT", "HU")
    with pytest.raises(MrBrainError, match="ct-default"):
        MrBrainPreset().run(ct, device="cpu")
    from engines.errors import PackNotFound

    with pytest.raises(PackNotFound, match="no-such-pack"):
        MrBrainPreset().run(_phantom(), device="cpu", options={"mask_pack": "no-such-pack"})


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.req("REQ-FUNC-107")
def test_real_networks_on_real_t1(shared_data: Path) -> None:
    """The shipped brainchop packs on t1_crop.nii.gz (several minutes on 2 CPU cores)."""
    vol = load_volume(shared_data / T1, modality="MR")
    result = MrBrainPreset().run(vol, device="cpu")
    lm = result.labelmap
    volumes = {s.name: lm.volume_ml(s.name) for s in lm.structures}
    assert 350 < volumes["white_matter"] < 800 and 350 < volumes["grey_matter"] < 900
    for name in ("thalamus", "caudate", "putamen", "hippocampus", "lateral_ventricle", "brain_stem"):
        assert 1.0 < volumes[name] < 60.0, (name, volumes[name])
    assert 10 < volumes["thalamus"] < 30
