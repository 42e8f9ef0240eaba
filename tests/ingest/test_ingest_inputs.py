"""Input containers and formats: folder, zip, DICOMDIR, garbage files, NIfTI, NRRD; the reference CT vs dcm2niix."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
from helpers.data import require

from appliance.core import Severity
from appliance.core.volume import LPS_TO_RAS
from appliance.ingest import NoSeriesFound, load_input, scan
from appliance.io.nifti import save_volume

CT = Path("ct") / "totalsegmentator" / "example_ct_dicom"
HFS = Path("dicom-edge") / "dcm_qa_decubitus" / "In" / "HFS" / "3_t1_fl2d_sag"


@pytest.mark.req("REQ-ACQ-001", "REQ-ACQ-008", "REQ-SAFE-003", "REQ-ACQ-016")
def test_reference_ct_spacing_from_positions_and_hu(shared_data: Path) -> None:
    folder = require(shared_data / CT)
    result = scan(folder)
    assert len(result.series) == 1 and result.findings == []
    s = result.series[0]
    assert s.spacing_mm == pytest.approx((0.9765625, 0.9765625, 2.0))  # 2 mm apart although 3 mm thick
    vol, found, series = load_input(folder)
    assert series is not None and series.series_instance_uid == s.series.series_instance_uid
    assert vol.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert vol.units == "HU" and vol.array.dtype == np.int16
    assert int(vol.array.min()) == -1024 and 1000 < int(vol.array.max()) < 3100  # air to bone in HU
    assert found == []


@pytest.mark.req("REQ-ACQ-020")
def test_volume_metadata_for_traceability(shared_data: Path) -> None:
    folder = require(shared_data / HFS)
    vol, _, series = load_input(folder)
    assert series is not None
    md = vol.metadata
    for key in ("series_instance_uid", "study_instance_uid", "description", "modality", "source_files",
                "identity_hash", "sop_instance_uids", "frame_of_reference_uid"):
        assert key in md, key
    assert md["identity_hash"] == series.identity_hash()
    assert md["source_files"] == 35 and len(md["sop_instance_uids"]) == 35
    assert md["sop_instance_uids"] == [i.sop_instance_uid for i in series.instances]
    assert md["frame_of_reference_uid"].startswith("1.")
    # slice order: SOP UIDs follow increasing position along the slice normal
    normal = vol.direction[:, 2]
    d = [np.dot(np.asarray(i.position), normal) for i in series.instances]
    assert d == sorted(d)


@pytest.mark.req("REQ-ACQ-018", "REQ-ACQ-001")
@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix is not installed (apt-get install dcm2niix)")
def test_convert_equals_dcm2niix(shared_data: Path, tmp_path: Path) -> None:
    from appliance.cli import main

    folder = require(shared_data / CT)
    out = tmp_path / "ours.nii.gz"
    assert main(["convert", str(folder), "--out", str(out)]) == 0
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    subprocess.run(["dcm2niix", "-z", "n", "-f", "ref", "-o", str(ref_dir), str(folder)], check=True,
                   capture_output=True, timeout=120)
    ours = nib.as_closest_canonical(nib.load(str(out)))
    ref = nib.as_closest_canonical(nib.load(str(ref_dir / "ref.nii")))
    np.testing.assert_array_equal(np.asanyarray(ours.dataobj), np.asanyarray(ref.dataobj))
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)


@pytest.mark.req("REQ-ACQ-002")
def test_zip_input(shared_data: Path, tmp_path: Path) -> None:
    folder = require(shared_data / CT)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"usb/ct/{f.name}")
        zf.writestr("usb/readme.txt", "not dicom")
        zf.writestr("../escape.dcm", b"zip-slip attempt")
    result = scan(archive)
    assert len(result.series) == 1 and result.series[0].series.n_instances == 20
    assert {f.code for f in result.findings} == {"decode_failed"}  # readme + the unsafe path, both named
    assert any("escape.dcm" in f.message for f in result.findings)
    assert not (tmp_path.parent / "escape.dcm").exists()
    vol, _, _ = load_input(archive)
    assert vol.shape == (512, 512, 20)


@pytest.mark.req("REQ-ACQ-002")
def test_dicomdir_input(shared_data: Path, tmp_path: Path) -> None:
    from pydicom.fileset import FileSet

    folder = require(shared_data / HFS)
    fs = FileSet()
    for f in sorted(folder.iterdir()):
        fs.add(str(f))
    media = tmp_path / "usb"
    fs.write(str(media))
    assert (media / "DICOMDIR").is_file()
    for target in (media / "DICOMDIR", media):
        result = scan(target)
        assert len(result.series) == 1, target
        assert result.series[0].series.n_instances == 35
        assert result.series[0].reconstructable
    ref = load_input(folder)[0]
    vol = load_input(media / "DICOMDIR")[0]
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_allclose(vol.affine, ref.affine)


@pytest.mark.req("REQ-SAFE-001", "REQ-SAFE-002")
def test_garbage_never_crashes_and_each_file_is_named(shared_data: Path, tmp_path: Path) -> None:
    src = require(shared_data / HFS)
    real = sorted(src.iterdir())[0]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.dcm").write_bytes(b"")
    (bad / "noise.dcm").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (bad / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 300)
    data = real.read_bytes()
    (bad / "cut.dcm").write_bytes(data[: len(data) - 20000])
    result = scan(bad)
    named = {Path(f.details["file"]).name: f for f in result.findings}
    assert set(named) == {"empty.dcm", "noise.dcm", "fake.dcm", "cut.dcm"}
    assert named["cut.dcm"].code == "truncated_pixel_data"
    assert named["cut.dcm"].severity == Severity.ERROR
    for name, f in named.items():
        assert name in f.message
    with pytest.raises(NoSeriesFound):
        load_input(bad)


@pytest.mark.req("REQ-ACQ-014")
def test_nifti_input_gives_lps_volume(shared_data: Path) -> None:
    path = require(shared_data / "ct" / "totalsegmentator" / "example_ct.nii.gz")
    vol, found, series = load_input(path, modality="CT")
    img = nib.load(str(path))
    assert series is None and found == []
    np.testing.assert_allclose(vol.affine, LPS_TO_RAS @ img.affine)
    assert vol.shape == img.shape and vol.units == "HU"
    assert vol.metadata["source_format"] == "nifti" and len(vol.metadata["identity_hash"]) == 64


@pytest.mark.req("REQ-ACQ-014")
def test_nrrd_negative_y_direction_and_same_volume_as_nifti(shared_data: Path, tmp_path: Path) -> None:
    path = require(shared_data / "labelled" / "pyradiomics" / "data" / "brain1_image.nrrd")
    vol, _, _ = load_input(path)
    data, header = nrrd.read(str(path))
    # LPS space: voxel (0,1,0) is 0.78125 mm towards anterior (negative y) from the origin
    np.testing.assert_allclose(vol.voxel_to_patient([[0, 0, 0]])[0], header["space origin"])
    np.testing.assert_allclose(vol.voxel_to_patient([[0, 1, 0]])[0] - header["space origin"], [0, -0.78125, 0])
    np.testing.assert_allclose(vol.voxel_to_patient([[0, 0, 1]])[0] - header["space origin"], [0, 0, 6.5])
    np.testing.assert_array_equal(vol.array, data)
    again, _, _ = load_input(save_volume(vol, tmp_path / "brain1.nii.gz"))
    np.testing.assert_allclose(again.affine, vol.affine, atol=1e-5)
    np.testing.assert_array_equal(again.array, vol.array)
    # a RAS-space NRRD of the same data lands on the same LPS affine
    ras_header = {"space": "right-anterior-superior", "space directions": -header["space directions"] * [1, 1, -1],
                  "space origin": header["space origin"] * [-1, -1, 1]}
    ras_path = tmp_path / "brain1_ras.nrrd"
    nrrd.write(str(ras_path), data, ras_header)
    ras_vol, _, _ = load_input(ras_path)
    np.testing.assert_allclose(ras_vol.affine, vol.affine, atol=1e-9)


@pytest.mark.req("REQ-ACQ-016", "REQ-ACQ-002")
def test_largest_reconstructable_series_is_selected(shared_data: Path, tmp_path: Path) -> None:
    from appliance.ingest import select_series

    ct, mr = require(shared_data / CT), require(shared_data / HFS)
    mixed = tmp_path / "stick"
    for name, folder in (("ct", ct), ("mr", mr)):
        (mixed / name).mkdir(parents=True)
        for f in folder.iterdir():
            (mixed / name / f.name).symlink_to(f)
    result = scan(mixed)
    assert len(result.series) == 2 and all(s.reconstructable for s in result.series)
    chosen = select_series(result)
    assert chosen.series.modality == "CT" and chosen.shape_xyz == (512, 512, 20)  # 5.2 M voxels vs 2.3 M


@pytest.mark.req("REQ-ACQ-001")
def test_bare_series_loads_like_scanned(shared_data: Path) -> None:
    from appliance.ingest import load_volume

    scanned = scan(require(shared_data / HFS)).series[0]
    a, _ = load_volume(scanned)
    b, _ = load_volume(scanned.series)  # a core Series handed over without the scan result
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)
