"""DICOM export of a finished job: SEG (highdicom) + Encapsulated STL per structure, validated by dciodvfy, read
back by highdicom, and received by a real Orthanc on loopback.

The job's outputs are made here from the real CT (labels by HU thresholds, one marching-cubes STL per label) so
the test does not depend on the reconstruction pipeline; the export code reads them exactly as it reads the
pipeline's (labels.nii.gz, structures.json, meshes/<name>.stl, manifest.json).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from skimage.measure import marching_cubes
from svc_helpers import FakeReconstruct, free_port, prepare_ct_series

from appliance.core import Volume
from appliance.io.nifti import save_volume
from appliance.privacy.deidentify import deidentifier_for
from appliance.service.export.job_export import export_job
from appliance.service.export.sources import labels_on_sources, source_series
from appliance.service.export.stl import ENCAPSULATED_STL
from appliance.service.runtime import ApplianceService

STRUCTURES = [
    {"label": 1, "name": "body", "category": "other", "color": [241, 214, 145], "snomed": "38266002"},
    {"label": 2, "name": "bone", "category": "bone", "color": [241, 238, 222], "snomed": "272673000"},
]


def _volume_from(sources: list[pydicom.Dataset]) -> Volume:
    """HU volume [column, row, slice] with its LPS affine, from sorted single-frame slices."""
    first = sources[0]
    iop = np.asarray(first.ImageOrientationPatient, float)
    dr, dc = (float(x) for x in first.PixelSpacing)
    p0 = np.asarray(first.ImagePositionPatient, float)
    step = np.asarray(sources[1].ImagePositionPatient, float) - p0
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = iop[:3] * dc, iop[3:] * dr, step, p0
    hu = np.stack(
        [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in sources], axis=-1
    )
    return Volume(np.transpose(hu, (1, 0, 2)), affine, "CT", "HU")


def _binary_stl(verts: np.ndarray, faces: np.ndarray) -> bytes:
    tri = verts[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    rec = np.zeros(len(faces), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["n"], rec["v"] = normals, tri
    return b"EDGE3D mesh".ljust(80, b" ") + struct.pack("<I", len(faces)) + rec.tobytes()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("export")
    from svc_helpers import make_config

    orthanc_dicom = free_port()
    svc = ApplianceService(
        make_config(tmp / "data", export={"destinations": [
            {"name": "PACS", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc_dicom}]}),
        reconstruct=lambda: FakeReconstruct(), qa=lambda p: [],
    )  # fmt: skip
    study_uid, files = prepare_ct_series(shared_data, tmp / "ct", n=10)
    for f in files:
        svc.store.store_file(f, "test")
    job_id = svc.request_reconstruction(study_uid, "test")
    svc.catalogue.claim_job()
    out = svc.worker.final_dir(job_id)
    (out / "meshes").mkdir(parents=True)
    sources = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
    hu = _volume_from(sources)
    labels = np.where(hu.array > 150, 2, np.where(hu.array > -300, 1, 0)).astype(np.uint8)
    save_volume(Volume(labels, hu.affine, "SEG", "label"), out / "labels.nii.gz")
    for s in STRUCTURES:
        mask = np.pad(labels == s["label"], 1)
        verts, faces, _, _ = marching_cubes(mask.astype(np.float32), 0.5)
        verts = (verts - 1) @ hu.affine[:3, :3].T + hu.affine[:3, 3]
        (out / "meshes" / f"{s['name']}.stl").write_bytes(_binary_stl(verts, faces))
    (out / "structures.json").write_text(json.dumps(STRUCTURES))
    save_volume(hu, out / "image.nii.gz")
    (out / "manifest.json").write_text(json.dumps({"preset": "ct-default", "structures": STRUCTURES,
                                                   "files": {"labels": "labels.nii.gz", "image": "image.nii.gz"}}))
    svc.catalogue.update_job(
        job_id, state="done", output_dir=str(out), manifest_path=str(out / "manifest.json")
    )
    yield {"svc": svc, "job": job_id, "labels": labels, "hu": hu, "study_uid": study_uid, "files": files,
           "orthanc_dicom": orthanc_dicom}  # fmt: skip


@pytest.mark.req("REQ-FUNC-310", "REQ-FUNC-311", "REQ-PRIV-006")
def test_seg_and_stl_valid_and_read_back(exported: dict[str, Any]) -> None:
    svc, job_id = exported["svc"], exported["job"]
    result = export_job(svc.export_context, job_id, "ui:surgeon")
    by_modality: dict[str, list[Path]] = {}
    for f in result.files:
        by_modality.setdefault(pydicom.dcmread(f, stop_before_pixels=True).Modality, []).append(f)
    assert len(by_modality["SEG"]) == 1 and len(by_modality["M3D"]) == 2
    if shutil.which("dciodvfy"):
        for f in result.files:
            r = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True, check=False)
            errors = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]
            assert errors == [], f"{f.name}: {errors}"
    # the de-identified source, as it would be sent: SEG and STL must reference it consistently
    deid = deidentifier_for(svc.config.privacy, svc.secret)
    originals = source_series(svc.data_dir / "studies" / exported["study_uid"], exported["hu"])
    mapped = [deid.deidentify(d) for d in originals]
    seg = hd.seg.segread(by_modality["SEG"][0])
    assert seg.FrameOfReferenceUID == mapped[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == mapped[0].StudyInstanceUID != originals[0].StudyInstanceUID
    assert seg.Manufacturer == "OR Appliance Project" and seg.ManufacturerModelName == "EDGE3D"
    assert "DOE" not in str(seg.PatientName) and seg.PatientIdentityRemoved == "YES"
    expected = labels_on_sources(exported["hu"].__class__(exported["labels"], exported["hu"].affine, "SEG", "l"),
                                 originals)  # fmt: skip
    got = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[m.SOPInstanceUID for m in mapped], segment_numbers=[1, 2]
    )
    for n, name in enumerate(("body", "bone")):
        assert np.array_equal(got[..., n] > 0, expected == (n + 1)), name
    assert int((expected == 2).sum()) > 1000  # the real CT has bone
    for f in by_modality["M3D"]:
        stl = pydicom.dcmread(f)
        assert stl.SOPClassUID == ENCAPSULATED_STL and stl.MIMETypeOfEncapsulatedDocument == "model/stl"
        assert stl.FrameOfReferenceUID == mapped[0].FrameOfReferenceUID
        assert stl.Manufacturer == "OR Appliance Project" and stl.SoftwareVersions
        assert stl.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
        doc = bytes(stl.EncapsulatedDocument)[: stl.EncapsulatedDocumentLength]
        name = {"Body outline": "body", "Bone": "bone"}[stl.DocumentTitle]  # the terminology's display names
        original = (svc.worker.final_dir(job_id) / "meshes" / f"{name}.stl").read_bytes()
        assert doc == original
        assert stl.SourceInstanceSequence[0].ReferencedSOPInstanceUID in {m.SOPInstanceUID for m in mapped}
    (rec,) = svc.audit.records(action="export")
    assert rec.actor == "ui:surgeon" and rec.details["objects"] == ["SEG", "M3D", "M3D"]


@pytest.mark.req("REQ-OUT-704", "REQ-OUT-700")
def test_seg_describes_structures_from_the_terminology_and_checks_the_image_grid(exported: dict[str, Any]) -> None:
    svc, job_id = exported["svc"], exported["job"]
    from appliance.service.errors import DicomExportError
    from appliance.service.export.job_export import build_export

    seg = next(d for d in build_export(svc.export_context, job_id) if d.Modality == "SEG")
    described = [(d.SegmentLabel, d.SegmentedPropertyTypeCodeSequence[0].CodeValue,
                  d.SegmentedPropertyTypeCodeSequence[0].CodeMeaning, d.TrackingID) for d in seg.SegmentSequence]
    assert described == [("Body outline", "38266002", "Entire body", "body"), ("Bone", "272673000", "Bone", "bone")]
    out = svc.worker.final_dir(job_id)
    image = out / "image.nii.gz"
    kept = image.read_bytes()
    try:  # an image on another grid than the labels: the outputs were tampered with; nothing is exported
        hu = exported["hu"]
        save_volume(Volume(hu.array[:, :, :-1], hu.affine, "CT", "HU"), image)
        with pytest.raises(DicomExportError, match="not on the grid of its image volume"):
            build_export(svc.export_context, job_id)
    finally:
        image.write_bytes(kept)


@pytest.fixture
def orthanc(tmp_path: Path, exported: dict[str, Any]) -> Iterator[int]:
    binary = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if binary is None:
        pytest.skip("Orthanc is not installed (Debian package 'orthanc')")
    http = free_port()
    cfg = {
        "Name": "test-pacs", "StorageDirectory": str(tmp_path / "db"), "IndexDirectory": str(tmp_path / "db"),
        "DicomAet": "ORTHANC", "DicomPort": exported["orthanc_dicom"], "HttpPort": http,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": True, "Plugins": [], "UnknownSopClassAccepted": False,
    }  # fmt: skip
    (tmp_path / "orthanc.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([binary, str(tmp_path / "orthanc.json")], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "orthanc.log", "wb"))  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/system", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("Orthanc did not start: " + (tmp_path / "orthanc.log").read_text()[-2000:])
            time.sleep(0.2)
    yield http
    proc.terminate()
    proc.wait(15)


@pytest.mark.req("REQ-FUNC-312")
def test_cstore_to_real_orthanc(exported: dict[str, Any], orthanc: int) -> None:
    svc, job_id = exported["svc"], exported["job"]
    result = export_job(svc.export_context, job_id, "ui:surgeon", destination_name="PACS")
    assert result.statuses == [0, 0, 0]

    def get(path: str) -> Any:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{orthanc}{path}", timeout=10).read())

    instances = get("/instances")
    assert len(instances) == 3
    classes = sorted(get(f"/instances/{i}/simplified-tags")["SOPClassUID"] for i in instances)
    assert classes == sorted(["1.2.840.10008.5.1.4.1.1.66.4", ENCAPSULATED_STL, ENCAPSULATED_STL])
    names = {get(f"/instances/{i}/simplified-tags")["PatientName"] for i in instances}
    assert len(names) == 1 and "DOE" not in names.pop()  # one pseudonymous patient, de-identified
    assert svc.audit.records(action="export")[-1].details["statuses"] == ["0x0000"] * 3
