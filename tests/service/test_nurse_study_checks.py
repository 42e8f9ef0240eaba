"""What the nurse sees of a study before the model is made, through the real service and its API: acquisition
suitability findings (with the configured limits), the inbox thumbnail, the preset list and the refusals of the
reconstruct endpoint (unknown preset 400, T1-only network on another MR weighting 409)."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from svc_helpers import FakeReconstruct, make_config, prepare_ct_series

from appliance.service.api import API_TOKEN_KEY, api_blueprint, issue_api_token, read_api_token
from appliance.service.monitor import ingest_qa
from appliance.service.preset_choice import preset_names
from appliance.service.runtime import ApplianceService

MR_T1 = Path("dicom-edge/dcm_qa_decubitus/In/HFS/3_t1_fl2d_sag")


def _service(tmp_path: Path, **reconstruction: Any) -> tuple[ApplianceService, Any]:
    from flask import Flask

    svc = ApplianceService(make_config(tmp_path / "data", reconstruction={"auto": False, **reconstruction}),
                           reconstruct=lambda: FakeReconstruct(), qa=ingest_qa)  # fmt: skip
    app = Flask("test")
    app.config["APPLIANCE_SERVICE"] = svc
    app.config[API_TOKEN_KEY] = issue_api_token(svc.data_dir)
    app.register_blueprint(api_blueprint)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {read_api_token(svc.data_dir)}"
    return svc, client


def _store(svc: ApplianceService, files: list[Path]) -> None:
    for f in files:
        assert svc.store.store_file(f, "test").outcome == "stored"
    svc.monitor.tick(now=time.time() + 5)


def _mr_study(shared_data: Path, out: Path, **tags: Any) -> tuple[str, list[Path]]:
    src = sorted(p for p in (shared_data / MR_T1).iterdir() if p.is_file())[:6]
    if not src:
        pytest.skip(f"{shared_data / MR_T1} is absent")
    out.mkdir(parents=True)
    study_uid, series_uid, files = generate_uid(), generate_uid(), []
    for i, path in enumerate(src):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(out / f"mr{i}.dcm")
        files.append(out / f"mr{i}.dcm")
    return study_uid, files


def _png_gray(data: bytes) -> np.ndarray:
    """The first channel of an 8-bit RGB PNG written without row filters (as :func:`encode_png` writes)."""
    width, height = _png_size(data)
    idat = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4:idat])
    rows = np.frombuffer(zlib.decompress(data[idat + 4: idat + 4 + length]), dtype=np.uint8).reshape(height, -1)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, 3)[:, :, 0]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


@pytest.mark.req("REQ-ACQ-801", "REQ-ACQ-804", "REQ-HCI-801")
def test_study_findings_carry_suitability_with_configured_limits(shared_data: Path, tmp_path: Path) -> None:
    svc, client = _service(tmp_path / "a")
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "src", n=20)
    _store(svc, files)
    study = client.get(f"/api/studies/{study_uid}").get_json()
    by_code = {f["code"]: f for f in study["findings"]}
    assert by_code["slices_too_coarse"]["requirement"] == "REQ-ACQ-801"
    assert by_code["slices_too_coarse"]["details"]["max_slice_spacing_mm"] == 1.5
    assert by_code["contrast_phase"]["details"]["phase"] == "portal-venous"
    assert client.get("/api/jobs").get_json()["jobs"] == []  # shown before any model is made
    loose, client2 = _service(tmp_path / "b", max_slice_spacing_mm=2.5, max_slice_thickness_mm=3.0)
    _store(loose, files)
    codes = {f["code"] for f in client2.get(f"/api/studies/{study_uid}").get_json()["findings"]}
    assert "slices_too_coarse" not in codes and "contrast_phase" in codes


@pytest.mark.req("REQ-HCI-802")
def test_inbox_thumbnail_is_the_middle_image_small_and_cached(shared_data: Path, tmp_path: Path) -> None:
    svc, client = _service(tmp_path)
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "src", n=9)
    _store(svc, files)
    (series,) = client.get("/api/studies").get_json()["studies"][0]["series"]
    url = series["thumbnail"]
    assert url == f"/api/studies/{study_uid}/series/{series['series_instance_uid']}/thumbnail.png"
    r = client.get(url)
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert _png_size(r.data) == (128, 128)  # 512 x 512 in 4 x 4 blocks
    cached = list((svc.data_dir / "thumbnails").glob("*.png"))
    assert len(cached) == 1 and cached[0].read_bytes() == r.data
    # Pixel for pixel the middle slice of the 9 (by position), 4 x 4 block means, soft-tissue window: nothing else.
    middle = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))[4]
    hu = middle.pixel_array.astype(np.float32) * float(middle.RescaleSlope) + float(middle.RescaleIntercept)
    expected = np.clip((hu.reshape(128, 4, 128, 4).mean(axis=(1, 3)) + 160) / 400 * 255 + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(_png_gray(r.data).astype(int) - expected).max() <= 1
    assert client.get(f"/api/studies/{study_uid}/series/1.2.3/thumbnail.png").status_code == 404
    assert client.get(f"/api/studies/{study_uid}/series/..%2F..%2Fx/thumbnail.png").status_code == 404
    unauthenticated = client.application.test_client()
    assert unauthenticated.get(url).status_code == 401  # patient images: same access rule as the studies


@pytest.mark.req("REQ-FUNC-800", "REQ-FUNC-801")
def test_reconstruct_accepts_every_listed_preset_and_refuses_others(shared_data: Path, tmp_path: Path) -> None:
    svc, client = _service(tmp_path)
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "src", n=3)
    _store(svc, files)
    listing = client.get("/api/presets").get_json()
    spec = client.get("/api/openapi.json").get_json()
    schema = spec["paths"]["/api/presets"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.validate(listing, schema)
    presets = listing["presets"]
    assert [p["name"] for p in presets] == preset_names()
    queued = 0
    for p in presets:
        r = client.post(f"/api/studies/{study_uid}/reconstruct", json={"preset": p["name"], "actor": "nurse"})
        if p["modalities"] and "CT" not in p["modalities"]:  # e.g. mr-brain on this CT: refused, not a failed job
            assert r.status_code == 409 and f"{p['name']!r} segments" in r.get_json()["error"], r.get_json()
        else:
            assert r.status_code == 202 and r.get_json()["preset"] == p["name"]
            queued += 1
    assert "mr-brain" in [p["name"] for p in presets] and queued < len(presets)
    bad = client.post(f"/api/studies/{study_uid}/reconstruct", json={"preset": "ct_default"})
    assert bad.status_code == 400 and "'ct_default'" in bad.get_json()["error"]
    assert len(svc.catalogue.jobs(study_uid=study_uid)) == queued


@pytest.mark.req("REQ-ACQ-805")
def test_t1_only_network_is_refused_on_a_flair_study(shared_data: Path, tmp_path: Path) -> None:
    svc, client = _service(tmp_path)
    flair_uid, flair = _mr_study(shared_data, tmp_path / "flair", RepetitionTime=9000, EchoTime=120,
                                 InversionTime=2500)  # fmt: skip
    t1_uid, t1 = _mr_study(shared_data, tmp_path / "t1")
    _store(svc, flair + t1)
    refused = client.post(f"/api/studies/{flair_uid}/reconstruct", json={"preset": "mr-brain", "actor": "nurse"})
    assert refused.status_code == 409 and "FLAIR" in refused.get_json()["error"]
    assert svc.catalogue.jobs(study_uid=flair_uid) == []
    ok = client.post(f"/api/studies/{t1_uid}/reconstruct", json={"preset": "mr-brain", "actor": "nurse"})
    assert ok.status_code == 202


@pytest.mark.req("REQ-ACQ-805")
def test_auto_refuses_a_flair_study_at_the_api_and_in_the_worker(shared_data: Path, tmp_path: Path) -> None:
    svc, client = _service(tmp_path)
    flair_uid, flair = _mr_study(shared_data, tmp_path / "flair", RepetitionTime=9000, EchoTime=120,
                                 InversionTime=2500)  # fmt: skip
    t1_uid, t1 = _mr_study(shared_data, tmp_path / "t1")
    _store(svc, flair + t1)
    for body in ({}, {"preset": "auto"}):  # no preset means auto
        refused = client.post(f"/api/studies/{flair_uid}/reconstruct", json=body)
        assert refused.status_code == 409, refused.get_json()
        assert "FLAIR-weighted MR" in refused.get_json()["error"] and "mr-brain" in refused.get_json()["error"]
    assert svc.catalogue.jobs(study_uid=flair_uid) == []
    assert client.post(f"/api/studies/{t1_uid}/reconstruct", json={}).status_code == 202
    # a job queued without the API (automatic reconstruction on arrival) meets the same rule in the worker
    job_id = svc.request_reconstruction(flair_uid, "auto")
    svc.worker.start()
    svc.worker.wake()
    deadline = time.monotonic() + 30
    while svc.catalogue.job(job_id).state not in ("done", "failed", "refused") and time.monotonic() < deadline:
        time.sleep(0.05)
    job = svc.catalogue.job(job_id)
    assert job.state == "refused" and "FLAIR-weighted MR" in str(job.error)
    assert [f["code"] for f in job.findings] == ["preset_unsuitable"]
    svc.worker.stop()


@pytest.mark.req("REQ-ACQ-806")
def test_a_network_made_for_another_body_region_is_refused_before_the_model_is_made() -> None:
    from types import SimpleNamespace

    from appliance.service.preset_choice import region_refusal

    chest_pack = SimpleNamespace(pack=SimpleNamespace(body_region="chest"))
    trunk_pack = SimpleNamespace(pack=SimpleNamespace(body_region="trunk"))
    abdomen = {"description": "CT ABDOMEN W CONTRAST", "series": [{"description": "Portal venous 2mm"}]}
    why = region_refusal("pack:lung-nodules", chest_pack, abdomen)
    assert why is not None and "made for chest" in why and "abdomen" in why
    assert region_refusal("pack:total", trunk_pack, abdomen) is None  # the trunk covers the abdomen
    assert region_refusal("pack:lung-nodules", chest_pack, {"description": "", "series": []}) is None  # says nothing
    assert region_refusal("mr-brain", SimpleNamespace(), abdomen) is None  # a preset without a pack region
