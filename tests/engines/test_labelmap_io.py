"""labels.nii.gz + structures.json + segment.json: format, RAS affine, round trip, refusal of undescribed labels."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from appliance.core import Finding, LabelMap, Severity, Structure, StructureCategory, Volume
from engines.errors import LabelMapFileError
from engines.labelmap_io import read_labelmap, write_segmentation
from engines.presets.base import SegmentationResult


def _labelmap() -> LabelMap:
    affine = np.array([[0.0, 0.0, -2.5, 30.0], [0.8, 0.0, 0.0, -10.0], [0.0, -0.8, 0.0, 55.0], [0, 0, 0, 1]])
    labels = np.zeros((12, 10, 8), np.uint8)
    labels[2:6, 2:6, 1:4] = 1
    labels[6:9, 3:7, 4:7] = 7
    structures = (Structure(1, "bone", (241, 238, 222), StructureCategory.BONE, "272673000"),
                  Structure(7, "lung_left", (108, 178, 222), StructureCategory.ORGAN, "44029006"))
    vol = Volume(np.zeros(labels.shape, np.int16), affine, "CT", "HU")
    return LabelMap.on(vol, labels, structures)


@pytest.mark.req("REQ-OUT-150")
def test_round_trip_and_ras_affine(tmp_path: Path) -> None:
    lm = _labelmap()
    finding = Finding("ct_no_trachea", Severity.INFO, "No trachea was found.", "REQ-FUNC-152")
    paths = write_segmentation(SegmentationResult(lm, [finding], {"backend": "classical-numpy", "device": "cpu",
                                                                  "timings_s": {"bone": 0.1}}), tmp_path)
    assert {p.name for p in paths.values()} == {"labels.nii.gz", "structures.json", "segment.json"}
    img = nib.load(str(paths["labels"]))
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lm.affine
    assert np.allclose(img.affine, ras)
    assert img.get_data_dtype() == np.uint8
    structures = json.loads(paths["structures"].read_text())
    assert structures[0] == {"label": 1, "name": "bone", "color": [241, 238, 222], "category": "bone",
                             "snomed": "272673000"}
    back = read_labelmap(paths["labels"], paths["structures"])
    assert np.array_equal(back.labels, lm.labels)
    assert np.allclose(back.affine, lm.affine)
    assert back.structures == lm.structures


@pytest.mark.req("REQ-OUT-151")
def test_segment_json_provenance(tmp_path: Path) -> None:
    lm = _labelmap()
    finding = Finding("ct_no_trachea", Severity.INFO, "No trachea was found.", "REQ-FUNC-152")
    prov = {"backend": "classical-numpy", "device": "cpu", "timings_s": {"bone": 0.1},
            "packs": [{"name": "x", "version": "1", "sha256": "ab" * 32}]}
    paths = write_segmentation(SegmentationResult(lm, [finding], prov), tmp_path,
                               {"preset": {"name": "ct-default", "reason": "modality CT"}})
    rec = json.loads(paths["segment"].read_text())
    assert rec["software"]["version"]
    assert rec["provenance"]["backend"] == "classical-numpy"
    assert rec["provenance"]["packs"][0]["sha256"] == "ab" * 32
    assert rec["preset"]["reason"] == "modality CT"
    assert rec["findings"][0]["requirement"] == "REQ-FUNC-152"
    vols = {s["name"]: s["volume_ml"] for s in rec["structures"]}
    assert vols["bone"] == pytest.approx(4 * 4 * 3 * 0.8 * 0.8 * 2.5 / 1000, abs=1e-3)


@pytest.mark.req("REQ-OUT-150")
def test_undescribed_label_refused(tmp_path: Path) -> None:
    lm = _labelmap()
    paths = write_segmentation(SegmentationResult(lm), tmp_path)
    data = json.loads(paths["structures"].read_text())
    paths["structures"].write_text(json.dumps(data[:1]))
    with pytest.raises(LabelMapFileError, match=r"\[7\]"):
        read_labelmap(paths["labels"], paths["structures"])
    paths["structures"].write_text('{"not": "a list"}')
    with pytest.raises(LabelMapFileError, match="JSON list"):
        read_labelmap(paths["labels"], paths["structures"])
