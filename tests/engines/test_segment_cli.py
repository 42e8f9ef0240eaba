"""``appliance segment``: real NIfTI and DICOM CT in, labels.nii.gz + structures.json + segment.json out."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers.data import require

from appliance.cli import main
from engines.labelmap_io import read_labelmap
from kernels.device import cuda_available


@pytest.fixture(scope="module")
def ct_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ct = require(shared_data / "ct/totalsegmentator/example_ct.nii.gz")
    out = tmp_path_factory.mktemp("seg")
    rc = main(["segment", str(ct), "--modality", "CT", "--out", str(out), "--device", "cpu",
               "--seed", "112.9,-122.7,394.8", "--window", "30,70", "--max-radius", "30", "--margins", "5,10"])
    assert rc == 0
    return out


@pytest.mark.req("REQ-FUNC-170", "REQ-FUNC-154")
def test_segment_writes_the_three_files(ct_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lm = read_labelmap(ct_run / "labels.nii.gz", ct_run / "structures.json")
    names = [s.name for s in lm.structures]
    assert names[:4] == ["body", "bone", "lung_left", "lung_right"]
    assert names[-3:] == ["lesion", "lesion_margin_5mm", "lesion_margin_10mm"]
    rec = json.loads((ct_run / "segment.json").read_text())
    assert rec["preset"]["requested"] == "auto" and rec["preset"]["name"] == "ct-default"
    assert rec["preset"]["candidates"] == [] and "CT" in rec["preset"]["reason"]
    assert "CT" in rec["preset"]["reason"]
    assert rec["device"]["used"] == "cpu"
    assert rec["input"]["modality"] == "CT"


@pytest.mark.req("REQ-OUT-151", "REQ-FUNC-163")
def test_segment_json_records_provenance(ct_run: Path) -> None:
    rec = json.loads((ct_run / "segment.json").read_text())
    prov = rec["provenance"]
    assert prov["backend"] == "classical-numpy" and prov["device"] == "cpu"
    assert {"body", "bone", "lungs", "airway"} <= set(prov["timings_s"])
    assert {"preset", "lesion", "margins", "load"} <= set(prov["stage_timings_s"])
    codes = {f["code"]: f for f in rec["findings"]}
    assert codes["ct_no_trachea"]["requirement"] == "REQ-FUNC-152"  # abdomen CT: no trachea in view
    assert all(f["requirement"] for f in rec["findings"] if f["code"].startswith(("ct_", "lesion_")))
    margins = rec["margins"]
    assert [s["name"] for s in margins["shells"]] == ["lesion_margin_5mm", "lesion_margin_10mm"]
    dist = {row["structure"]: row["min_distance_mm"] for row in margins["distances"]}
    assert {"body", "bone", "lung_left", "lung_right"} <= set(dist)
    assert all(v >= 3.0 - 1e-6 for v in dist.values())  # 3 mm voxels: nearest neighbour centre is 3 mm away


@pytest.mark.req("REQ-OUT-150")
def test_labels_carry_the_source_ras_affine(ct_run: Path, shared_data: Path) -> None:
    img = nib.load(str(ct_run / "labels.nii.gz"))
    src = nib.load(str(require(shared_data / "ct/totalsegmentator/example_ct.nii.gz")))
    assert np.allclose(img.affine, src.affine, atol=1e-4)
    assert img.shape == src.shape


@pytest.mark.req("REQ-FUNC-170")
def test_bad_options_say_what_to_give(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ct = str(require(shared_data / "ct/totalsegmentator/example_ct.nii.gz"))
    assert main(["segment", ct, "--modality", "CT", "--out", str(tmp_path), "--seed", "1,2,3"]) == 1
    assert "--window" in capsys.readouterr().err
    assert main(["segment", ct, "--modality", "CT", "--out", str(tmp_path), "--margins", "5"]) == 1
    assert "needs a lesion" in capsys.readouterr().err
    assert main(["segment", ct, "--modality", "CT", "--out", str(tmp_path), "--seed", "1,2", "--window", "0,1"]) == 1
    assert "3 comma-separated" in capsys.readouterr().err
    if not cuda_available():
        assert main(["segment", ct, "--modality", "CT", "--out", str(tmp_path), "--device", "cuda"]) == 1
        assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "labels.nii.gz").exists()


@pytest.mark.req("REQ-FUNC-150", "REQ-FUNC-170")
def test_real_dicom_series(shared_data: Path, tmp_path: Path) -> None:
    dicom = require(shared_data / "ct/totalsegmentator/example_ct_dicom")
    assert main(["segment", str(dicom), "--preset", "ct-default", "--out", str(tmp_path), "--device", "cpu"]) == 0
    lm = read_labelmap(tmp_path / "labels.nii.gz", tmp_path / "structures.json")
    assert lm.shape == (512, 512, 20)
    # upper-abdomen slices (liver, spine, ribs, arms): bone and body, no lungs
    assert 50 < lm.volume_ml("bone") < 1500
    assert lm.volume_ml("body") > 1000
    assert "lung_left" not in {s.name for s in lm.structures}
    rec = json.loads((tmp_path / "segment.json").read_text())
    assert rec["input"]["spacing_mm"][2] == pytest.approx(2.0, abs=0.01)  # from positions, not SliceThickness


@pytest.mark.gpu
@pytest.mark.req("REQ-FUNC-155", "REQ-OUT-151")
def test_cuda_run_matches_cpu_and_is_recorded(shared_data: Path, tmp_path: Path, ct_run: Path) -> None:
    ct = require(shared_data / "ct/totalsegmentator/example_ct.nii.gz")
    out = tmp_path / "gpu"
    assert main(["segment", str(ct), "--modality", "CT", "--out", str(out), "--device", "cuda",
                 "--seed", "112.9,-122.7,394.8", "--window", "30,70", "--max-radius", "30", "--margins", "5,10"]) == 0
    rec = json.loads((out / "segment.json").read_text())
    assert rec["device"]["used"] == "cuda" and rec["provenance"]["backend"] == "classical-cupy"
    gpu = read_labelmap(out / "labels.nii.gz", out / "structures.json")
    cpu = read_labelmap(ct_run / "labels.nii.gz", ct_run / "structures.json")
    assert np.array_equal(gpu.labels, cpu.labels)
