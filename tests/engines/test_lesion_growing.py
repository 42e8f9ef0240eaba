"""Seed growing as the kiosk drives it: window presets per modality, wider/narrower and bigger/smaller taps,
several named lesions per label map."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.lesion_phantoms import ball, grid_affine, volume

from appliance.core import LabelMap, Structure, StructureCategory, Volume
from engines.errors import LesionError, UnknownWindowPreset
from engines.lesion_growing import (
    DEPTH_BOUND_FACTOR,
    RADIUS_LIMITS_MM,
    SeedGrowing,
    adjust_bound,
    adjust_window,
    default_window_preset,
    grow_lesion,
    seed_depth_mm,
    start_seed_growing,
    window_presets,
)
from engines.lesions import (
    Lesion,
    LesionRecord,
    add_lesion,
    describe_lesion,
    lesion_from_seed,
    lesion_names,
    mark_as_lesion,
    remove_lesion,
    replace_lesion,
)

SHAPE = (44, 40, 24)


def _ct_liver_with_tumour() -> tuple[Volume, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Liver (100 HU) holding a hypodense tumour (40 HU, r = 7 mm) on a rotated anisotropic grid."""
    vol = volume(SHAPE, grid_affine(rotation_deg=25.0))
    centre = vol.voxel_to_patient([[22, 20, 12]])[0]
    liver = ball(vol, centre, 14.0)
    tumour = ball(vol, centre, 7.0)
    hu = np.full(SHAPE, -80, np.int16)
    hu[liver] = 100
    hu[tumour] = 40
    seed = vol.voxel_to_patient([[23, 20, 12]])[0]
    return vol.with_array(hu), liver, tumour, (float(seed[0]), float(seed[1]), float(seed[2]))


@pytest.mark.req("REQ-FUNC-1050", "REQ-FUNC-1556")
def test_presets_per_modality_grow_the_phantom_lesions_exactly() -> None:
    assert [p.name for p in window_presets("CT")] == ["ct_soft_tissue_tumour", "ct_lung_nodule"]
    assert [p.name for p in window_presets("MR")] == ["mr_enhancing"]
    vol, _, tumour, seed = _ct_liver_with_tumour()
    assert default_window_preset(vol).name == "ct_soft_tissue_tumour"
    settings = start_seed_growing(vol, seed)
    assert settings.window == (0.0, 80.0) and settings.seed_value == 40.0
    assert np.array_equal(grow_lesion(vol, settings, "tumour").mask, tumour)
    # lung nodule: absolute window against aerated lung
    lung = vol.with_array(np.where(tumour, 30, -850).astype(np.int16))
    nodule = start_seed_growing(lung, seed, "ct_lung_nodule")
    assert nodule.window == (-500.0, 300.0)
    # the first bound: twice the seed's in-plane depth in the window (the 7 mm nodule, seed a voxel off centre),
    # below the preset's 20 mm
    depth = seed_depth_mm(lung, np.rint(lung.patient_to_voxel([seed])[0]).astype(int), nodule.window)
    assert 5.0 < depth <= 7.0 and nodule.max_radius_mm == pytest.approx(DEPTH_BOUND_FACTOR * depth)
    assert start_seed_growing(lung, seed, "ct_lung_nodule", max_radius_mm=20.0).max_radius_mm == 20.0
    assert np.array_equal(grow_lesion(lung, nodule).mask, tumour)
    # enhancing MR: bright lesion (900) in brain (500), window relative to the seed's neighbourhood
    mr = Volume(np.where(tumour, 900, 500).astype(np.int16), vol.affine, "MR")
    enh = start_seed_growing(mr, seed)
    assert enh.preset == "mr_enhancing" and enh.window == (630.0, 1800.0)
    grown = grow_lesion(mr, enh, "enhancing")
    assert np.array_equal(grown.mask, tumour) and grown.source["preset"] == "mr_enhancing"
    with pytest.raises(UnknownWindowPreset, match="ct_lung_nodule"):
        start_seed_growing(vol, seed, "liver_tumour")
    with pytest.raises(LesionError, match="is for MR"):
        start_seed_growing(vol, seed, "mr_enhancing")
    with pytest.raises(LesionError, match="outside the image"):
        start_seed_growing(vol, (1e4, 0.0, 0.0))


@pytest.mark.req("REQ-FUNC-1051", "REQ-OUT-1063")
def test_window_and_bound_taps_are_pure_and_regrow() -> None:
    vol, liver, tumour, seed = _ct_liver_with_tumour()
    s0 = start_seed_growing(vol, seed)
    wider = adjust_window(s0, 3)
    assert wider.window[1] - wider.window[0] == pytest.approx(80.0 * 1.25**3)
    assert s0.window == (0.0, 80.0)  # untouched: pure function
    assert adjust_window(wider, -3).window == pytest.approx(s0.window)
    # wide enough to take the liver: the lesion grows into it (bounded by the radius)
    leaky = grow_lesion(vol, adjust_window(s0, 4))
    assert leaky.mask.sum() > tumour.sum() and (leaky.mask & liver & ~tumour).any()
    # narrowing keeps the seed's value inside the window
    narrow = adjust_window(start_seed_growing(vol, seed, max_radius_mm=30.0), -30)
    assert narrow.window[0] <= narrow.seed_value <= narrow.window[1]
    assert np.array_equal(grow_lesion(vol, narrow).mask, tumour)  # all tumour voxels hold 40 exactly
    smaller = adjust_bound(s0, -1)
    assert smaller.max_radius_mm == s0.max_radius_mm - 5.0
    assert adjust_bound(s0, -100).max_radius_mm == RADIUS_LIMITS_MM[0]
    assert adjust_bound(s0, 100).max_radius_mm == RADIUS_LIMITS_MM[1]
    bounded = grow_lesion(vol, adjust_bound(s0, -100))
    assert bounded.mask.sum() < tumour.sum() and bounded.findings[0].code == "lesion_growth_bounded"
    assert SeedGrowing.from_dict(wider.to_dict()) == wider
    with pytest.raises(LesionError, match="malformed seed growing record"):
        SeedGrowing.from_dict({"seed_lps": [0, 0, 0]})
    with pytest.raises(LesionError, match="low <= high"):
        SeedGrowing((0.0, 0.0, 0.0), (5.0, 1.0), 10.0, 3.0)


@pytest.mark.req("REQ-FUNC-1052", "REQ-OUT-1063")
def test_several_named_lesions_overlap_refused_replace_and_remove() -> None:
    vol, liver, tumour, seed = _ct_liver_with_tumour()
    lm = LabelMap.on(vol, liver.astype(np.uint8), [Structure(1, "liver", (150, 60, 40), StructureCategory.ORGAN)])
    lm = add_lesion(lm, grow_lesion(vol, start_seed_growing(vol, seed), "tumour_1"))
    second = np.zeros(SHAPE, bool)
    second[2:5, 2:5, 2:5] = True
    lm = add_lesion(lm, Lesion(second, "tumour_2", {"kind": "file"}))
    assert lesion_names(lm) == ("tumour_1", "tumour_2")
    record = describe_lesion(lm, "tumour_1")
    assert record.voxels == int(tumour.sum()) and LesionRecord.from_dict(record.to_dict()) == record
    before = lm.labels.copy()
    with pytest.raises(LesionError, match="overlaps lesion 'tumour_1'"):
        add_lesion(lm, Lesion(tumour.copy(), "tumour_3"))
    assert np.array_equal(lm.labels, before)
    with pytest.raises(LesionError, match="already exists"):
        add_lesion(lm, Lesion(second, "liver"))
    with pytest.raises(LesionError, match="ASCII"):
        add_lesion(lm, Lesion(second, "tumour 3"))
    regrown = grow_lesion(vol, adjust_bound(start_seed_growing(vol, seed), -100), "tumour_1")
    lm2 = replace_lesion(lm, regrown)
    assert lesion_names(lm2) == ("tumour_2", "tumour_1")
    assert np.array_equal(lm2.mask("tumour_1"), regrown.mask)
    lm3 = remove_lesion(lm2, "tumour_2")
    assert lesion_names(lm3) == ("tumour_1",) and not (lm3.labels[second]).any()
    with pytest.raises(LesionError, match="no lesion 'tumour_9'"):
        remove_lesion(lm3, "tumour_9")


@pytest.mark.req("REQ-SAFE-1053")
def test_seed_growing_refuses_malformed_input_by_field() -> None:
    vol, _, _, seed = _ct_liver_with_tumour()
    with pytest.raises(LesionError, match="window must be two finite"):
        lesion_from_seed(vol, seed, (float("nan"), 10.0))
    with pytest.raises(LesionError, match="max_radius_mm must be a positive"):
        lesion_from_seed(vol, seed, (0.0, 80.0), max_radius_mm=0.0)
    with pytest.raises(LesionError, match="seed_lps must be three finite"):
        lesion_from_seed(vol, (0.0, float("inf"), 0.0), (0.0, 80.0))
    with pytest.raises(LesionError, match="lesion name"):
        lesion_from_seed(vol, seed, (0.0, 80.0), name="")


@pytest.mark.req("REQ-FUNC-1054")
def test_a_network_structure_taken_as_a_lesion_keeps_its_voxels() -> None:
    vol, liver, tumour, _ = _ct_liver_with_tumour()
    labels = liver.astype(np.uint8)
    labels[tumour] = 2
    lm = LabelMap.on(vol, labels, [Structure(1, "liver", (150, 60, 40), StructureCategory.ORGAN),
                                   Structure(2, "liver_tumor", (0, 255, 0), StructureCategory.ORGAN)])
    marked = mark_as_lesion(lm, "liver_tumor")
    assert lesion_names(marked) == ("liver_tumor",) and np.array_equal(marked.labels, lm.labels)
    assert marked.structure("liver_tumor").category is StructureCategory.LESION
    assert mark_as_lesion(marked, "liver_tumor") is marked
    with pytest.raises(LesionError, match="no structure 'kidney'"):
        mark_as_lesion(lm, "kidney")
