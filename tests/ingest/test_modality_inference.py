"""NIfTI/NRRD without a modality: a CT in HU is recognised from its histogram (air, soft tissue, bone), an MR never
is, the inference is a finding; an explicit CT preset implies CT; ``segment --preset auto`` then runs on a NIfTI CT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.data import SHARED_DATA, require

from appliance.cli import main as cli_main
from appliance.commands.preset_modality import input_modality
from appliance.ingest import load_input
from appliance.ingest.modality import infer_modality

CT_NII = "ct/totalsegmentator/example_ct.nii.gz"
CT_SMALL_NII = "ct/totalsegmentator/example_ct_sm.nii.gz"
MR_T1_NII = "models/brainchop/public/t1_crop.nii.gz"
MR_NRRD = "labelled/pyradiomics/data/brain1_image.nrrd"
MR_BREAST_NRRD = "labelled/pyradiomics/data/breast1_image.nrrd"


@pytest.mark.req("REQ-ACQ-800")
@pytest.mark.parametrize("rel", [CT_NII, CT_SMALL_NII])
def test_real_nifti_ct_in_hu_is_inferred_as_ct(rel: str) -> None:
    volume, findings, series = load_input(require(SHARED_DATA / rel))
    assert series is None and volume.modality == "CT" and volume.units == "HU"
    (f,) = [f for f in findings if f.code == "modality_inferred"]
    assert f.requirement == "REQ-ACQ-800" and f.severity.value == "info"
    assert -1050 <= f.details["air_peak_hu"] <= -950 and -150 <= f.details["soft_tissue_peak_hu"] <= 100
    assert f.details["bone_fraction"] > 0.001


@pytest.mark.req("REQ-ACQ-800")
@pytest.mark.parametrize("rel", [MR_T1_NII, MR_NRRD, MR_BREAST_NRRD])
def test_real_mr_is_never_called_ct(rel: str) -> None:
    path = require(SHARED_DATA / rel)
    volume, findings, _ = load_input(path)
    assert volume.modality == "OT" and volume.units == "arbitrary"
    assert [f.code for f in findings] == ["modality_not_inferred"]
    assert path.name in findings[0].message and "--modality" in findings[0].message


@pytest.mark.req("REQ-ACQ-800")
def test_stated_modality_wins_and_a_shifted_ct_is_not_hu() -> None:
    path = require(SHARED_DATA / CT_SMALL_NII)
    volume, findings, _ = load_input(path, modality="CT")
    assert volume.modality == "CT" and findings == []  # stated: nothing inferred, nothing to record
    raw, _ = infer_modality(volume.array + 1024.0, "shifted.nii.gz")  # stored values without the HU intercept
    assert raw == "OT"
    assert infer_modality(np.full((8, 8, 8), np.nan, dtype=np.float32), "empty.nii")[0] == "OT"


@pytest.mark.req("REQ-ACQ-800")
def test_an_explicit_preset_implies_its_modality() -> None:
    nii = require(SHARED_DATA / CT_SMALL_NII)
    assert input_modality(nii, None, "ct-default") == "CT"
    assert input_modality(nii, None, "mr-brain") == "MR"
    assert input_modality(nii, None, "auto") is None
    assert input_modality(nii, "MR", "ct-default") == "MR"  # --modality is stated, it wins
    dicom = require(SHARED_DATA / "ct/totalsegmentator/example_ct_dicom")
    assert input_modality(dicom, None, "ct-default") is None  # DICOM states its own modality


@pytest.mark.req("REQ-ACQ-800")
@pytest.mark.parametrize("preset", ["auto", "ct-default"])
def test_segment_runs_on_a_nifti_ct_with_auto_and_ct_default(preset: str, tmp_path: Path) -> None:
    nii = require(SHARED_DATA / CT_SMALL_NII)
    assert cli_main(["segment", str(nii), "--preset", preset, "--device", "cpu", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "segment.json").read_text())
    assert record["input"]["modality"] == "CT" and record["input"]["units"] == "HU"
    assert record["preset"]["name"] == "ct-default"
    codes = [f["code"] for f in record.get("findings", [])]
    assert ("modality_inferred" in codes) == (preset == "auto"), codes
