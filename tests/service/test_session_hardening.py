"""Issue 18, findings 1-4, 11 and "Also", on the app ``appliance serve`` builds (``create_web_app``: kiosk UI +
JSON API over a real service and catalogue), through Flask's test client, and findings 1 and 4 once more on a
real ``appliance serve`` process over HTTP.

1. a locked screen ends the session on the server: a copied cookie is dead after lock, idle and re-login;
2. the PIN lockout is per role: a correct login of another role does not reset it;
3. the audit actor is the session's role or the API token, never the body's ``actor``;
4. state-changing requests from another origin (another port of 127.0.0.1 too) are refused;
11. bodies of the wrong shape or type answer 400 naming the field (never 500), format names and NUL paths too;
Also: no UID or path in the open ``/api/health``, no UID in the service screen's log tail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hardening_helpers import add_study, write_ct_slice
from pydicom.uid import generate_uid
from werkzeug.security import generate_password_hash

from appliance.commands.serve import create_web_app
from appliance.export import FORMATS as MESH_FORMATS
from appliance.service.api_token import issue_api_token, read_api_token
from appliance.service.runtime import ApplianceService

PINS = {"nurse": "1111", "surgeon": "2222", "service": "3333"}
HASHES = {role: generate_password_hash(pin, "pbkdf2:sha256:1000") for role, pin in PINS.items()}
#: Where the test client's requests go, and so this app's own origin.
BASE = "http://127.0.0.1:8080"


@pytest.fixture
def kiosk(service_factory: Callable[..., ApplianceService], tmp_path: Path) -> tuple[Any, ApplianceService, str]:
    """The served app over a (not started) service holding one study; lockout after 3 wrong PINs."""
    svc = service_factory(
        ui={"pins": dict(HASHES), "lockout_attempts": 3, "lockout_seconds": 60, "idle_lock_seconds": 60},
        reconstruction={"auto": False},
    )
    study_uid = add_study(svc, tmp_path / "src")
    return create_web_app(svc.config, svc, api_token=issue_api_token(svc.data_dir)), svc, study_uid


class _Browser:
    """A test client whose requests go to :data:`BASE` (so its cookies belong to 127.0.0.1)."""

    def __init__(self, app: Any) -> None:
        self.client = app.test_client()

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, base_url=BASE, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(path, base_url=BASE, **kw)

    def get_cookie(self, name: str) -> Any:
        return self.client.get_cookie(name, domain="127.0.0.1")

    def set_cookie(self, name: str, value: str) -> None:
        self.client.set_cookie(name, value, domain="127.0.0.1")


def _client(app: Any) -> _Browser:
    return _Browser(app)


def _login(client: Any, role: str, pin: str | None = None) -> Any:
    return client.post("/auth/login", json={"role": role, "pin": pin or PINS[role]})


def _copy_cookie(source: Any, app: Any) -> Any:
    """A second browser holding a copy of ``source``'s session cookie (what an attacker copied)."""
    name = app.config["SESSION_COOKIE_NAME"]
    cookie = source.get_cookie(name)
    assert cookie is not None
    thief = _client(app)
    thief.set_cookie(name, cookie.value)
    return thief


@pytest.mark.req("REQ-PRIV-650")
def test_copied_cookie_is_dead_after_lock(kiosk: tuple[Any, ApplianceService, str]) -> None:
    app, svc, study_uid = kiosk
    nurse = _client(app)
    assert _login(nurse, "nurse").status_code == 200
    thief = _copy_cookie(nurse, app)
    assert thief.get("/api/studies").status_code == 200  # the copy is a working copy while the session is open
    job_id = nurse.post(f"/api/studies/{study_uid}/reconstruct", json={}).get_json()["id"]
    events = thief.get(f"/api/jobs/{job_id}/events", buffered=False)  # a progress stream opened with the copy
    chunks = iter(events.response)
    assert b"event: job" in next(chunks) + next(chunks)
    assert nurse.post("/auth/lock", json={"reason": "manual"}).status_code == 200
    assert nurse.get("/api/studies").status_code == 401
    assert thief.get("/api/studies").status_code == 401  # the copy is dead too
    assert thief.post(f"/api/studies/{study_uid}/reconstruct", json={}).status_code == 401
    assert len(svc.catalogue.jobs()) == 1
    assert b"session ended" in next(chunks)  # the open stream ends with the session
    with pytest.raises(StopIteration):
        next(chunks)
    events.close()
    refresh = thief.post("/auth/activity")
    assert refresh.status_code == 401  # activity cannot refresh a dead session ...
    assert thief.get("/api/studies").status_code == 401  # ... nor does any cookie it sets
    assert thief.get("/inbox").status_code == 302


@pytest.mark.req("REQ-PRIV-650")
def test_copied_cookie_is_dead_after_idle_and_after_the_next_login(kiosk: tuple[Any, ApplianceService, str]) -> None:
    app, _svc, _study = kiosk
    surgeon = _client(app)
    assert _login(surgeon, "surgeon").status_code == 200
    thief = _copy_cookie(surgeon, app)
    assert _login(surgeon, "nurse").status_code == 200  # someone else signs in on the same screen
    assert thief.get("/api/studies").status_code == 401  # the surgeon's session ended with the new login
    assert surgeon.get("/api/studies").status_code == 200
    thief = _copy_cookie(surgeon, app)
    sessions = app.extensions["ui_sessions"]
    sessions.clock = lambda: time.monotonic() + 61  # idle past idle_lock_seconds
    for client in (surgeon, thief):
        assert client.post("/auth/activity").status_code == 401
        assert client.get("/api/studies").status_code == 401
    sessions.clock = time.monotonic
    assert surgeon.post("/auth/lock", json={"reason": "idle"}).status_code == 200  # the page's lock ends it
    assert thief.get("/api/studies").status_code == 401
    assert sessions.open_count() == 0


@pytest.mark.req("REQ-SAFE-651", "REQ-TRACE-400")
def test_pin_lockout_is_not_reset_by_another_roles_login(kiosk: tuple[Any, ApplianceService, str]) -> None:
    app, svc, _study = kiosk
    client = _client(app)
    service_answers = []
    for _group in range(3):  # two wrong service PINs, then the nurse signs in correctly, three times over
        service_answers += [_login(client, "service", pin).status_code for pin in ("0000", "0001")]
        assert _login(client, "nurse").status_code == 200  # the nurse's own role is not locked
    assert service_answers[:3] == [401, 401, 429]  # the third wrong service PIN in a row locks the service role
    assert _login(client, "service").status_code == 429  # even the right service PIN waits out the lockout
    assert _login(client, "surgeon").status_code == 200
    lockouts = svc.audit.records(action="login.lockout")
    assert [r.details["role"] for r in lockouts] == ["service"]


@pytest.mark.req("REQ-TRACE-652")
def test_audit_actor_comes_from_the_session_not_the_request_body(kiosk: tuple[Any, ApplianceService, str]) -> None:
    app, svc, study_uid = kiosk
    nurse = _client(app)
    assert _login(nurse, "nurse").status_code == 200
    r = nurse.post(f"/api/studies/{study_uid}/reconstruct", json={"actor": "surgeon:Dr.House"})
    assert r.status_code == 202 and r.get_json()["requested_by"] == "ui:nurse"
    tool = _client(app)
    token = {"Authorization": f"Bearer {read_api_token(svc.data_dir)}"}
    r = tool.post(f"/api/studies/{study_uid}/reconstruct", json={"actor": "surgeon:Dr.House"}, headers=token)
    assert r.status_code == 202 and r.get_json()["requested_by"] == "api:token"
    requested = svc.audit.records(action="reconstruction.requested")
    assert [rec.actor for rec in requested] == ["ui:nurse", "api:token"]
    assert not any("House" in json.dumps(rec.details) + rec.actor for rec in svc.audit.records())


@pytest.mark.req("REQ-SAFE-653")
def test_cross_origin_state_changes_are_refused(kiosk: tuple[Any, ApplianceService, str]) -> None:
    app, svc, study_uid = kiosk
    nurse = _client(app)
    assert _login(nurse, "nurse").status_code == 200
    reconstruct = f"/api/studies/{study_uid}/reconstruct"
    foreign = [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:8081"},  # same site (SameSite cookies go along), another origin
        {"Origin": "null"},  # a sandboxed frame or a data: page
        {"Sec-Fetch-Site": "same-site"},  # no Origin, but the browser says another origin of this site sent it
        {"Sec-Fetch-Site": "cross-site"},
    ]
    for headers in foreign:
        for path, body in ((reconstruct, {}), ("/auth/lock", {}), ("/ui/lang", {"lang": "en"}),
                           ("/auth/login", {"role": "nurse", "pin": PINS["nurse"]})):  # fmt: skip
            r = nurse.post(path, json=body, headers=headers)
            assert r.status_code == 403 and r.get_json()["error"] == "cross_site_request", (path, headers)
    assert svc.catalogue.jobs() == []
    assert nurse.get("/api/studies").status_code == 200  # the foreign lock did not end the session either
    own = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}
    assert nurse.post(reconstruct, json={}, headers=own).status_code == 202
    assert nurse.post("/auth/lock", json={}, headers=own).status_code == 200


@pytest.mark.req("REQ-SAFE-655")
def test_json_bodies_of_the_wrong_type_answer_400_naming_the_field(kiosk: tuple[Any, ApplianceService, str]) -> None:
    app, svc, study_uid = kiosk
    client = _client(app)
    shapes = ["[1]", '"nurse"', "3", "null", "{not json"]
    for path in ("/auth/login", "/auth/lock", "/ui/lang", "/auth/activity"):
        for text in shapes:
            r = client.post(path, data=text, content_type="application/json")
            assert r.status_code == 400 and r.get_json()["field"] == "body", (path, text)
    wrong_logins: list[tuple[dict[str, Any], str]] = [
        ({"role": 1, "pin": "1111"}, "role"), ({"role": "nurse", "pin": 1111}, "pin"),
        ({"role": ["nurse"], "pin": "1111"}, "role"),
    ]  # fmt: skip
    for body, field in wrong_logins:
        r = client.post("/auth/login", json=body)
        assert r.status_code == 400 and r.get_json()["field"] == field, body
    assert client.post("/auth/lock", json={"reason": 5}).get_json()["field"] == "reason"
    r = client.post("/ui/lang", json={"lang": ["en"]})
    assert r.status_code == 400 and r.get_json()["field"] == "lang"

    assert _login(client, "surgeon").status_code == 200
    reconstruct = f"/api/studies/{study_uid}/reconstruct"
    for text in shapes:
        r = client.post(reconstruct, data=text, content_type="application/json")
        assert r.status_code == 400 and r.get_json()["field"] == "body", text
        r = client.post("/api/jobs/1/export", data=text, content_type="application/json")
        assert r.status_code == 400 and r.get_json()["field"] == "body", text
        r = client.post("/ui/api/review", data=text, content_type="application/json")
        assert r.status_code == 400 and r.get_json()["field"] == "body", text
    wrong_fields: list[tuple[dict[str, Any], str]] = [
        ({"formats": ["../x"]}, "formats"), ({"formats": ["stl", "STL/.."]}, "formats"),
        ({"formats": "stl"}, "formats"), ({"device": 1}, "device"), ({"override": "yes"}, "override"),
        ({"preset": 7}, "preset"),
    ]  # fmt: skip
    for body, field in wrong_fields:
        r = client.post(reconstruct, json=body)
        assert r.status_code == 400 and r.get_json()["field"] == field, body
    assert client.post("/api/jobs/1/export", json={"destination": 3}).get_json()["field"] == "destination"
    assert svc.catalogue.jobs() == []
    r = client.post(reconstruct, json={"formats": ["stl", "glb"]})
    assert r.status_code == 202 and r.get_json()["formats"] == ["stl", "glb"]
    spec = client.get("/api/openapi.json").get_json()  # the document names the formats the API accepts
    declared = spec["paths"]["/api/studies/{uid}/reconstruct"]["post"]["requestBody"]["content"]["application/json"]
    assert tuple(declared["schema"]["properties"]["formats"]["items"]["enum"]) == MESH_FORMATS

    job_id = r.get_json()["id"]
    out = svc.data_dir / "outputs" / str(job_id)
    out.mkdir(parents=True)
    (out / "report.html").write_text("<p>report</p>")
    svc.catalogue.update_job(job_id, state="done", output_dir=str(out))
    assert client.get(f"/api/jobs/{job_id}/files/report.html").status_code == 200
    for path in ("report.html%00.png", "%00", "a/%00/b"):
        r = client.get(f"/api/jobs/{job_id}/files/{path}")
        assert r.status_code == 400 and r.get_json()["field"] == "path", path


@pytest.mark.req("REQ-PRIV-656")
def test_open_health_and_service_log_show_no_patient_or_instance_identifiers(
    kiosk: tuple[Any, ApplianceService, str], tmp_path: Path
) -> None:
    app, svc, study_uid = kiosk
    first = tmp_path / "dup" / "a.dcm"
    sop_uid = write_ct_slice(first, study_uid, generate_uid(), value=1)
    write_ct_slice(tmp_path / "dup" / "b.dcm", study_uid, generate_uid(), sop_uid=sop_uid, value=2)
    for f in ("a.dcm", "b.dcm"):  # one instance twice with different content: kept aside, alarm raised
        assert svc.store.store_file(tmp_path / "dup" / f, "test").outcome in ("stored", "duplicate")
    assert [a.code for a in svc.alarms] == ["duplicate_instance"]
    assert sop_uid in svc.alarms[0].message  # the alarm as raised names the place (the service's own log)
    text = _client(app).get("/api/health").get_data(as_text=True)  # no authentication
    health = json.loads(text)
    assert health["alarms"][0]["code"] == "duplicate_instance" and "kept aside" in health["alarms"][0]["message"]
    for identifier in (sop_uid, study_uid, str(svc.data_dir), "HARDENING"):
        assert identifier not in text

    logs = svc.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    series_uid = pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID
    (logs / "appliance.log").write_text(
        f"2026-12-03 01:00:00,000 INFO worker job 1 of study {study_uid} series {series_uid} done\n"
        f"2026-12-03 01:00:01,000 ERROR service ALARM duplicate_instance: kept aside at "
        f"{svc.data_dir}/duplicates/{sop_uid}/x.dcm\n"
    )
    service = _client(app)
    assert _login(service, "service").status_code == 200
    tail = service.get("/ui/api/logs").get_json()
    shown = "\n".join(tail["lines"])
    assert "worker job 1 of study <uid> series <uid> done" in shown
    for identifier in (study_uid, series_uid, sop_uid):
        assert identifier not in shown


# ----------------------------------------------------------------------------- the real `appliance serve`


@pytest.fixture
def appliance_serve(tmp_path: Path) -> Iterator[str]:
    """A real ``appliance serve`` (no receiver, no import) with a nurse PIN; yields its base URL."""
    data = tmp_path / "data"
    (data / "run").mkdir(parents=True)
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(f'[ui]\npins = {{nurse = "{HASHES["nurse"]}"}}\n')
    log = open(tmp_path / "serve.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "serve", "--data-dir", str(data), "--http-port", "0",
         "--dicom-port", "0", "--config", str(cfg)],
        stdout=log, stderr=log,
    )  # fmt: skip
    run_file = data / "run" / "serve.json"
    deadline = time.monotonic() + 60
    while not run_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("serve did not start: " + (tmp_path / "serve.log").read_text()[-3000:])
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{json.loads(run_file.read_text())['http_port']}"
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def _http(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


@pytest.mark.serial
@pytest.mark.req("REQ-PRIV-650", "REQ-SAFE-653")
def test_copied_cookie_is_dead_after_lock_on_appliance_serve(appliance_serve: str) -> None:
    base = appliance_serve
    own = {"Origin": base}
    status, headers = _http(f"{base}/auth/login", "POST", {"role": "nurse", "pin": PINS["nurse"]}, own)
    assert status == 200
    cookie = {"Cookie": headers["Set-Cookie"].split(";", 1)[0]}  # the browser's cookie, and the copy of it
    assert _http(f"{base}/api/studies", headers=cookie)[0] == 200
    other_port = f"http://127.0.0.1:{int(base.rsplit(':', 1)[1]) + 1}"  # same site, another origin
    for origin in ("http://evil.example", other_port):
        assert _http(f"{base}/auth/lock", "POST", {}, {**cookie, "Origin": origin})[0] == 403
    assert _http(f"{base}/api/studies", headers=cookie)[0] == 200  # foreign pages could not even lock it
    assert _http(f"{base}/auth/lock", "POST", {"reason": "manual"}, {**cookie, **own})[0] == 200
    assert _http(f"{base}/api/studies", headers=cookie)[0] == 401  # the copy taken before the lock is dead
    assert _http(f"{base}/auth/activity", "POST", {}, {**cookie, **own})[0] == 401
    assert _http(f"{base}/api/studies", headers=cookie)[0] == 401
