"""`appliance inspect` and `appliance convert` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers.data import require

from appliance.cli import main

PHILIPS = Path("dicom-edge") / "dcm_qa_ct" / "In" / "Philips" / "S21610"
GE = Path("dicom-edge") / "dcm_qa_ct" / "In" / "GE"
KEYS = {"series_instance_uid", "modality", "description", "instances", "shape_xyz", "spacing_mm",
        "reconstructable", "findings"}


@pytest.mark.req("REQ-ACQ-017")
def test_inspect_json_lists_every_series(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = require(shared_data / PHILIPS)
    assert main(["inspect", str(folder), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data["series"], list) and len(data["series"]) >= 3
    for s in data["series"]:
        assert KEYS <= set(s)
        assert isinstance(s["reconstructable"], bool)
        for f in s["findings"]:
            assert {"code", "severity", "message"} <= set(f)
    codes = {f["code"] for s in data["series"] for f in s["findings"]}
    assert {"localizer_excluded", "secondary_capture_excluded", "gantry_tilt"} <= codes
    main_series = next(s for s in data["series"] if s["description"] == "STEREOTAXIS")
    assert main_series["instances"] == 54 and main_series["shape_xyz"] == [512, 512, 54]
    assert main_series["spacing_mm"][0] == pytest.approx(0.482421875)


@pytest.mark.req("REQ-ACQ-017")
def test_inspect_text(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = require(shared_data / GE)
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "CT" in out and "28 instance(s)" in out and "512x512x28" in out
    assert "gantry_tilt" in out and "NOT reconstructable" in out


@pytest.mark.req("REQ-ACQ-018", "REQ-ACQ-013")
def test_convert_refused_exit_2_then_override(shared_data: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = require(shared_data / GE)
    out = tmp_path / "ge.nii.gz"
    assert main(["convert", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "slice_gap" in err and "gantry_tilt" in err and "variable_spacing" in err
    assert not out.exists()
    assert main(["convert", str(folder), "--out", str(out), "--allow-gaps"]) == 0
    captured = capsys.readouterr()
    assert "override_applied" in captured.err and "wrote" in captured.out
    img = nib.load(str(out))
    rot = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-6)  # de-sheared: orthogonal RAS affine
    assert img.header["descrip"].tobytes().startswith(b"HU")


@pytest.mark.req("REQ-ACQ-018")
def test_convert_by_series_uid_and_unknown_uid(shared_data: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = require(shared_data / "dicom-edge" / "dcm_qa_decubitus" / "In")
    assert main(["inspect", str(folder), "--json"]) == 0
    uids = [s["series_instance_uid"] for s in json.loads(capsys.readouterr().out)["series"]]
    out = tmp_path / "second.nii.gz"
    assert main(["convert", str(folder), "--out", str(out), "--series", uids[1]]) == 0
    assert nib.load(str(out)).shape == (256, 256, 35)
    assert main(["convert", str(folder), "--out", str(out), "--series", "1.2.3.4"]) == 1
    assert "1.2.3.4" in capsys.readouterr().err
