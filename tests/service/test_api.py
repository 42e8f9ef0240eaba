"""The JSON API blueprint against a real service (pipeline stand-in), through Flask's test client."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask import Flask
from svc_helpers import FakeReconstruct, prepare_ct_series

from appliance.service.api import API_TOKEN_FILE, API_TOKEN_KEY, api_blueprint, issue_api_token, read_api_token
from appliance.service.runtime import ApplianceService


def _client(svc: ApplianceService, authenticated: bool = True) -> Any:
    """The API alone (as ``appliance serve`` builds it without the UI): bearer token from the data folder."""
    app = Flask("test")
    app.config["APPLIANCE_SERVICE"] = svc
    app.config[API_TOKEN_KEY] = issue_api_token(svc.data_dir)
    app.register_blueprint(api_blueprint)
    client = app.test_client()
    if authenticated:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {read_api_token(svc.data_dir)}"
    return client


def _schema(client: Any, name: str) -> dict[str, Any]:
    spec = client.get("/api/openapi.json").get_json()
    return {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}


@pytest.fixture
def served(service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path) -> Any:
    svc = service_factory(FakeReconstruct(), reconstruction={"auto": False})
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "src", n=3)
    for f in files:
        svc.store.store_file(f, "test")
    svc.monitor.tick(now=time.time() + 1)
    return svc, _client(svc), study_uid


@pytest.mark.req("REQ-FUNC-303")
def test_health_studies_and_openapi(served: Any) -> None:
    _svc, client, study_uid = served
    health = client.get("/api/health").get_json()
    assert health["status"] == "ok" and health["storage"]["stored_bytes"] > 0
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.") and "/api/jobs/{id}/events" in spec["paths"]
    studies = client.get("/api/studies").get_json()["studies"]
    assert [s["study_instance_uid"] for s in studies] == [study_uid]
    one = client.get(f"/api/studies/{study_uid}").get_json()
    jsonschema.validate(one, _schema(client, "Study"))
    assert one["n_instances"] == 3 and one["series"][0]["modality"] == "CT" and one["jobs"] == []
    assert client.get("/api/studies/1.2.3").status_code == 404


@pytest.mark.req("REQ-FUNC-303")
def test_reconstruct_job_events_and_files(served: Any) -> None:
    svc, client, study_uid = served
    r = client.post(f"/api/studies/{study_uid}/reconstruct", json={"actor": "nurse", "device": "cpu"})
    assert r.status_code == 202
    job = r.get_json()
    jsonschema.validate(job, _schema(client, "Job"))
    assert job["state"] == "queued" and job["study_instance_uid"] == study_uid and job["manifest"] is None
    assert client.get("/api/jobs").get_json()["jobs"][0]["id"] == job["id"]
    svc.worker.start()
    svc.worker.wake()
    events = client.get(f"/api/jobs/{job['id']}/events")
    assert events.mimetype == "text/event-stream"
    body = events.get_data(as_text=True)  # streams until the job is final
    states = [json.loads(line[6:])["state"] for line in body.splitlines() if line.startswith('data: {"')]
    assert states[-1] == "done" and "event: end" in body
    done = client.get(f"/api/jobs/{job['id']}").get_json()
    jsonschema.validate(done, _schema(client, "Job"))
    assert done["state"] == "done" and done["progress"] == 1.0 and done["manifest"].endswith("manifest.json")
    paths = sorted(f["path"] for f in done["files"])
    assert paths == ["manifest.json", "meshes/body.stl", "report.html"]
    assert client.get(f"/api/jobs/{job['id']}/files/meshes/body.stl").data == b"\0" * 84
    for bad in (
        "../appliance.sqlite3",
        "..%2F..%2Faudit.sqlite3",
        "/etc/passwd",
        "meshes/../../audit.sqlite3",
    ):
        assert client.get(f"/api/jobs/{job['id']}/files/{bad}", follow_redirects=True).status_code == 404, bad
    assert client.get("/api/jobs/999/files/x").status_code == 404
    assert client.get("/api/jobs/999").status_code == 404


@pytest.mark.req("REQ-FUNC-303")
def test_bad_requests(served: Any) -> None:
    _, client, study_uid = served
    assert client.post(f"/api/studies/{study_uid}/reconstruct", json={"device": "tpu"}).status_code == 400
    assert client.post(f"/api/studies/{study_uid}/reconstruct", json={"formats": "stl"}).status_code == 400
    assert client.post("/api/studies/9.9/reconstruct", json={}).status_code == 404


@pytest.mark.req("REQ-FUNC-303")
def test_symlink_in_outputs_not_served(served: Any, tmp_path: Path) -> None:
    svc, client, study_uid = served
    job_id = svc.request_reconstruction(study_uid, "ui:nurse")
    svc.worker.run(svc.catalogue.claim_job())
    secret = tmp_path / "outside.txt"
    secret.write_text("secret")
    (svc.worker.final_dir(job_id) / "link.txt").symlink_to(secret)
    assert client.get(f"/api/jobs/{job_id}/files/link.txt").status_code == 404
    assert "link.txt" not in [f["path"] for f in client.get(f"/api/jobs/{job_id}").get_json()["files"]]


@pytest.mark.req("REQ-FUNC-303")
def test_export_and_imports_endpoints(served: Any) -> None:
    svc, client, study_uid = served
    job_id = svc.request_reconstruction(study_uid, "ui:nurse")
    r = client.post(f"/api/jobs/{job_id}/export", json={"destination": "PACS"})
    assert r.status_code == 409 and "only finished reconstructions" in r.get_json()["error"]
    assert client.post(f"/api/jobs/{job_id}/export", json={"destination": 3}).status_code == 400
    assert client.get("/api/imports").get_json() == {"enabled": False, "imports": []}


@pytest.mark.req("REQ-PRIV-007")
def test_patient_data_needs_the_service_api_token(served: Any) -> None:
    svc, client, study_uid = served
    job_id = svc.request_reconstruction(study_uid, "test", device="cpu")
    svc.worker.run(svc.catalogue.claim_job())
    assert client.get(f"/api/jobs/{job_id}").get_json()["state"] == "done"
    anonymous = _client(svc, authenticated=False)  # issues a fresh token, as each start of `appliance serve`
    token_file = svc.data_dir / API_TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = read_api_token(svc.data_dir)
    assert len(token) >= 32 and token == anonymous.application.config[API_TOKEN_KEY]
    protected = ["/api/studies", f"/api/studies/{study_uid}", "/api/jobs", f"/api/jobs/{job_id}",
                 f"/api/jobs/{job_id}/files", f"/api/jobs/{job_id}/files/meshes/body.stl",
                 f"/api/jobs/{job_id}/events", "/api/imports"]  # fmt: skip
    for path in protected:
        r = anonymous.get(path)
        assert r.status_code == 401, path
        assert "Authorization: Bearer" in r.get_json()["error"] and "run/api_token" in r.get_json()["error"]
    assert anonymous.post(f"/api/studies/{study_uid}/reconstruct", json={}).status_code == 401
    assert anonymous.post(f"/api/jobs/{job_id}/export", json={}).status_code == 401
    assert len(svc.catalogue.jobs()) == 1  # the refused reconstruction queued nothing
    for path in ("/api/health", "/api/openapi.json"):
        assert anonymous.get(path).status_code == 200, path
    wrong = {"Authorization": "Bearer " + token[:-1] + ("A" if token[-1] != "A" else "B")}
    assert anonymous.get("/api/studies", headers=wrong).status_code == 401
    assert anonymous.get("/api/studies", headers={"Authorization": f"Basic {token}"}).status_code == 401
    right = {"Authorization": f"Bearer {token}"}
    studies = anonymous.get("/api/studies", headers=right)
    assert studies.status_code == 200 and studies.get_json()["studies"][0]["patient_name"] == "DOE^JANE"
    body = anonymous.get(f"/api/jobs/{job_id}/files/meshes/body.stl", headers=right)
    assert body.status_code == 200 and body.data == b"\0" * 84


@pytest.mark.req("REQ-PRIV-007")
def test_without_a_configured_token_every_bearer_is_refused(served: Any) -> None:
    svc, _client_with_token, _ = served
    app = Flask("no-token")
    app.config["APPLIANCE_SERVICE"] = svc
    app.register_blueprint(api_blueprint)
    client = app.test_client()
    assert client.get("/api/studies", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/api/studies", headers={"Authorization": "Bearer None"}).status_code == 401
    assert client.get("/api/health").status_code == 200
