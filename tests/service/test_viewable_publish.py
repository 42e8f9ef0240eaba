"""Two-step publish (issue 17): a job is ``viewable`` once the models are written, ``done`` after the late exports.

A real, started service (the pipeline stood in by ``FakeReconstruct``, which writes the viewer's files, calls
``on_viewable`` and then holds its late exports until the test releases them, or fails them) and its whole API
(service, review, lesion, USB and PACS routes) through Flask's test client with the service token. The real
pipeline and Chromium are ``tests/ui/test_viewable_e2e.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from svc_helpers import FakeReconstruct, prepare_ct_series

from appliance.service.api import API_TOKEN_KEY, api_blueprint, issue_api_token
from appliance.service.catalogue import Catalogue
from appliance.service.print_lab_api import register_print_lab_api
from appliance.service.runtime import ApplianceService


def _client(svc: ApplianceService) -> Any:
    app = Flask("test")
    app.config["APPLIANCE_SERVICE"] = svc
    token = issue_api_token(svc.data_dir)
    app.config[API_TOKEN_KEY] = token
    app.register_blueprint(api_blueprint)
    register_print_lab_api(app)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def _wait_state(svc: ApplianceService, job_id: int, states: set[str], timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = svc.catalogue.job(job_id).state
        if state in states:
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {svc.catalogue.job(job_id)}")


def _job(service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path,
         behaviour: str) -> tuple[ApplianceService, FakeReconstruct, Any, int]:
    fake = FakeReconstruct(behaviour)
    svc = service_factory(fake, reconstruction={"auto": False})
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "src", n=3)
    for f in files:
        svc.store.store_file(f, "test")
    svc.monitor.tick(now=time.time() + 1)
    client = _client(svc)
    job_id = client.post(f"/api/studies/{study_uid}/reconstruct", json={"device": "cpu"}).get_json()["id"]
    svc.worker.start()
    svc.worker.wake()
    return svc, fake, client, job_id


def _audit_actions(svc: ApplianceService, job_id: int) -> list[tuple[str, dict[str, Any]]]:
    """The job's reconstruction records once the last one is written (just after the job's final state)."""
    deadline = time.monotonic() + 10
    while True:
        found = [(r.action, dict(r.details)) for r in svc.audit.records()
                 if r.action.startswith("reconstruction.") and r.details.get("job") == job_id]
        if (found and found[-1][0] == "reconstruction.finished") or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.req("REQ-FUNC-1890", "REQ-FUNC-1891")
def test_viewable_job_serves_the_models_and_names_what_waits_for_done(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc, fake, client, job_id = _job(service_factory, shared_data, tmp_path, "hold_viewable")
    try:
        _wait_state(svc, job_id, {"viewable"})
        job = client.get(f"/api/jobs/{job_id}").get_json()
        assert job["state"] == "viewable" and job["manifest"] is None and job["stage"] == "exports still being written"
        assert sorted(f["path"] for f in job["files"]) == ["meshes/body.glb", "scene.glb", "viewable.json"]
        assert client.get(f"/api/jobs/{job_id}/files/scene.glb").data == b"glTF-scene"
        assert client.get(f"/api/jobs/{job_id}/files/viewable.json").get_json()["state"] == "viewable"
        unfinished = Path(str(svc.catalogue.job(job_id).output_dir))
        (unfinished / "meshes" / "body.stl").write_bytes(b"late")  # a late export already on disk stays unserved
        for late in ("manifest.json", "report.html", "meshes/body.stl"):
            r = client.get(f"/api/jobs/{job_id}/files/{late}")
            assert r.status_code == 409 and "still being written" in r.get_json()["error"], (late, r.data)
        asked_early = {
            "DICOM/PACS export": client.post(f"/api/jobs/{job_id}/export", json={}),
            "USB export": client.post(f"/api/jobs/{job_id}/usb-export", json={"medium": "STICK"}),
            "report": client.get(f"/api/jobs/{job_id}/report"),
            "revisions": client.get(f"/api/jobs/{job_id}/revisions"),
            "approval": client.post(f"/api/jobs/{job_id}/structures/body/review", json={"decision": "approve"}),
        }
        for what, r in asked_early.items():
            assert r.status_code in (404, 409), (what, r.status_code, r.data)
            assert f"job {job_id}" in r.get_json()["error"] and "viewable" in r.get_json()["error"], (what, r.data)
        assert svc.catalogue.job(job_id).finished_at is None
        # the manifest written, the folder not yet published: the viewer's files still come, the manifest does not
        (unfinished / "viewable.json").replace(unfinished / "manifest.json")
        assert client.get(f"/api/jobs/{job_id}/files/meshes/body.glb").data == b"glTF-body"
        assert client.get(f"/api/jobs/{job_id}/files/manifest.json").status_code == 409
        (unfinished / "manifest.json").unlink()
    finally:
        fake.release.set()
    assert _wait_state(svc, job_id, {"done", "failed"}) == "done"
    done = client.get(f"/api/jobs/{job_id}").get_json()
    assert done["manifest"].endswith("manifest.json") and not unfinished.exists()
    assert sorted(f["path"] for f in done["files"]) == [
        "manifest.json", "meshes/body.glb", "meshes/body.stl", "report.html", "scene.glb"]
    actions = _audit_actions(svc, job_id)
    assert [a for a, _ in actions] == [
        "reconstruction.requested", "reconstruction.started", "reconstruction.viewable", "reconstruction.finished"]
    assert actions[-1][1]["state"] == "done"


@pytest.mark.req("REQ-SAFE-1892")
def test_a_late_export_failing_after_viewable_fails_the_job_by_name(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc, _, client, job_id = _job(service_factory, shared_data, tmp_path, "late_fail")
    assert _wait_state(svc, job_id, {"done", "failed"}) == "failed"
    job = client.get(f"/api/jobs/{job_id}").get_json()
    assert "No space left on device" in job["error"] and "body.3mf" in job["error"]
    assert job["files"] == [] and job["manifest"] is None and svc.catalogue.job(job_id).output_dir is None
    assert client.get(f"/api/jobs/{job_id}/files/scene.glb").status_code == 404
    assert not any(p.name.startswith(".tmp-job-") for p in svc.worker.outputs_dir.iterdir())
    assert not svc.worker.final_dir(job_id).exists()
    actions = _audit_actions(svc, job_id)
    assert [a for a, _ in actions] == [
        "reconstruction.requested", "reconstruction.started", "reconstruction.viewable", "reconstruction.finished"]
    assert actions[-1][1]["state"] == "failed" and actions[-1][1]["after_viewable"] is True


@pytest.mark.req("REQ-FUNC-1890")
def test_a_viewable_job_found_at_start_is_queued_again(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path / "c.sqlite3")
    with catalogue._tx() as c:  # a study row as the receiver makes it
        c.execute("INSERT INTO studies (study_uid, study_hash, first_received, last_received) VALUES "
                  "('1.2.3', 'h', 0, 0)")
    job_id = catalogue.add_job("1.2.3")
    catalogue.claim_job()
    catalogue.update_job(job_id, state="viewable", output_dir=str(tmp_path / ".tmp-job-1-1"))
    assert catalogue.recover() == [job_id]
    job = catalogue.job(job_id)
    assert job.state == "queued" and job.output_dir is None and job.to_dict()["manifest"] is None
