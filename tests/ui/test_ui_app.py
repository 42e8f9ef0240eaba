"""The kiosk app without a browser (Flask test client): CSP, catalogues, vendoring, PINs, lockout, idle lock,
roles, review validation, service endpoints."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from appliance.audit import AuditLog
from appliance.commands.serve import create_web_app
from appliance.service.catalogue import JOB_STATES
from ui.app import create_app
from ui.assets import UI_DIR, VENDOR_DIR
from ui.auth import PinGate, hash_pin
from ui.errors import InvalidPin, UiConfigurationError
from ui.i18n import catalogue, check_catalogues
from ui.security import IMPORT_MAP
from ui.settings import UiSettings

PINS = {"nurse": "1111", "surgeon": "2222", "service": "3333"}
HASHES = {role: generate_password_hash(pin, method="pbkdf2:sha256:1000") for role, pin in PINS.items()}


def make_app(tmp_path: Path, **ui: Any) -> Any:
    cfg: dict[str, Any] = {"pins": dict(HASHES), "lockout_attempts": 3, "lockout_seconds": 60}
    cfg.update(ui)
    return create_app({"TESTING": True, "UI_SERVICE_API": False, "storage": {"data_dir": str(tmp_path)}, "ui": cfg})


def login(client: FlaskClient, role: str, pin: str | None = None) -> Any:
    return client.post("/auth/login", json={"role": role, "pin": pin or PINS[role]})


@pytest.mark.req("REQ-HCI-004")
def test_catalogues_have_the_same_keys_and_cover_every_key_the_pages_use() -> None:
    assert check_catalogues() == []
    en, zh = catalogue("en"), catalogue("zh-CN")
    used: set[str] = set()
    sources = [*UI_DIR.glob("templates/*.html"), *UI_DIR.glob("static/js/*.js")]
    namespaces = {k.split(".")[0] for k in en}
    for path in sources:
        for key in re.findall(
            r"""(?<!url_for\()["'`]([a-z0-9_]+\.[a-z0-9_.]+)["'`]""", path.read_text(encoding="utf-8")
        ):
            if key.split(".")[0] in namespaces and not key.endswith((".js", ".css", ".html", ".json", ".glb")):
                used.add(key)
    missing = sorted(k for k in used if k not in en)
    assert not missing, f"keys used by pages but absent from the catalogues: {missing}"
    assert len(used) > 100
    assert all(f"state.{s}" in en for s in JOB_STATES)  # the inbox shows every job state by name
    assert all(f"role.{r}" in en for r in ("nurse", "surgeon", "service"))
    cjk = re.compile(r"[\u4e00-\u9fff]")
    untranslated = [k for k, v in zh.items() if not cjk.search(v) and v == en[k] and k not in ("versions.python",)]
    assert untranslated == []


@pytest.mark.req("REQ-SAFE-400")
def test_every_response_carries_the_strict_csp_and_the_import_map_hash_matches(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    client = app.test_client()
    assert login(client, "surgeon").status_code == 200
    page = client.get("/cases/7")
    html = page.get_data(as_text=True)
    inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", html, re.S)
    import_maps = re.findall(r'<script type="importmap">(.*?)</script>', html, re.S)
    assert import_maps == [IMPORT_MAP]
    digest = base64.b64encode(hashlib.sha256(IMPORT_MAP.encode()).digest()).decode()
    for url in ("/login", "/inbox", "/cases/7", "/static/js/case.js", "/static/css/app.css"):
        csp = client.get(url).headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == f"'self' 'sha256-{digest}' 'wasm-unsafe-eval'"
        assert directives["style-src"] == "'self'" and directives["object-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'"
        assert "http" not in csp and "*" not in csp
    # the only inline scripts are the hashed import map and non-executable JSON data blocks
    assert all(s in import_maps or s.startswith("{") for s in inline)
    assert 'type="application/json" id="i18n-data"' in html
    assert not re.search(r"\sstyle=|\son[a-z]+=", html)  # no inline styles or handlers (the CSP would block them)


@pytest.mark.req("REQ-PRIV-401")
def test_pages_reference_no_external_resource() -> None:
    own = [*UI_DIR.glob("templates/*.html"), *UI_DIR.glob("static/js/*.js"), *UI_DIR.glob("static/css/*.css")]
    for path in own:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), f"{path.name} names an external URL"
    css = (UI_DIR / "static/css/app.css").read_text(encoding="utf-8")
    assert 'url("/static/vendor/fonts/' in css  # the CJK font is served by the appliance


@pytest.mark.req("REQ-SAFE-402")
def test_vendored_files_match_the_lock_and_are_what_the_app_serves(tmp_path: Path) -> None:
    manifest_path = VENDOR_DIR / "manifest.json"
    if not manifest_path.is_file():
        pytest.fail("ui/static/vendor is not built: run `bash tools/build_ui_vendor.sh`")
    manifest = json.loads(manifest_path.read_text())
    lock = json.loads((UI_DIR / "package-lock.json").read_text())
    package = json.loads((UI_DIR / "package.json").read_text())
    pinned = {**package["dependencies"], **package["devDependencies"]}
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in pinned.values())  # exact versions, no ranges
    client = make_app(tmp_path).test_client()
    served = {p.relative_to(VENDOR_DIR).as_posix() for p in VENDOR_DIR.rglob("*") if p.is_file()} - {"manifest.json"}
    assert served == {f["path"] for f in manifest["files"]}
    for f in manifest["files"]:
        data = (VENDOR_DIR / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f["path"]
        assert client.get(f"/static/vendor/{f['path']}").get_data() == data
        if f["path"].startswith("fonts/"):
            continue
        entry = lock["packages"][f"node_modules/{f['package']}"]
        assert entry["version"] == f["version"] == pinned[f["package"]]
        assert entry["integrity"].startswith("sha512-")  # npm ci checks every tarball against it
        source = UI_DIR / f["source"]
        if source.is_file():  # node_modules present (npm ci verified it against the lock's integrity)
            assert source.read_bytes() == data
    assert {"three@0.187.0", "@niivue/niivue@0.69.0"} <= set(manifest["packages"])


@pytest.mark.req("REQ-HCI-030", "REQ-PRIV-402", "REQ-TRACE-400")
def test_pins_are_hashed_roles_see_only_their_screens_and_logins_are_audited(tmp_path: Path) -> None:
    h = hash_pin("2468")
    assert "2468" not in h and h.startswith("pbkdf2:sha256:600000$") and h != hash_pin("2468")  # salted
    gate = PinGate(UiSettings(pin_hashes={"nurse": h}))
    assert gate.attempt("nurse", "2468").ok and not gate.attempt("nurse", "2469").ok
    with pytest.raises(InvalidPin, match="4 to 12 digits"):
        hash_pin("12")
    app = make_app(tmp_path)
    client = app.test_client()
    assert client.get("/inbox").status_code == 302
    assert login(client, "nurse", "9999").status_code == 401
    assert login(client, "nurse").get_json()["redirect"] == "/inbox"
    assert client.get("/inbox").status_code == 200
    assert client.get("/service").status_code == 403
    assert client.post("/ui/api/review", json={}).status_code == 403  # nurses do not approve structures
    assert login(client, "service").status_code == 200
    assert client.get("/inbox").status_code == 403 and client.get("/cases/1").status_code == 403
    assert "/api/studies" not in (UI_DIR / "static/js/service.js").read_text()  # the service screen reads no studies
    records = AuditLog(tmp_path / "audit.sqlite3").records(action="login")
    assert [(r.action, r.actor, r.details["role"]) for r in records] == [
        ("login.failure", "ui:kiosk", "nurse"), ("login.success", "ui:nurse", "nurse"),
        ("login.success", "ui:service", "service"),
    ]  # fmt: skip
    assert all(r.requirement == "REQ-TRACE-400" for r in records)


@pytest.mark.req("REQ-SAFE-401", "REQ-TRACE-400")
def test_lockout_after_repeated_wrong_pins(tmp_path: Path) -> None:
    client = make_app(tmp_path).test_client()
    answers = [login(client, "surgeon", "0000") for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 429]
    assert [a.get_json().get("attempts_left") for a in answers[:2]] == [2, 1]
    assert login(client, "surgeon").status_code == 429  # even the right PIN waits out the lockout
    assert login(client, "nurse").status_code == 200  # the lockout is per role (REQ-SAFE-651)
    log = AuditLog(tmp_path / "audit.sqlite3")
    assert [r.action for r in log.records(action="login")] == [
        "login.failure", "login.failure", "login.lockout", "login.refused_locked_out", "login.success"
    ]  # fmt: skip
    assert log.records(action="login.lockout")[0].requirement == "REQ-SAFE-401"
    now = [1000.0]
    gate = PinGate(UiSettings(pin_hashes={"nurse": HASHES["nurse"]}, lockout_attempts=2, lockout_seconds=30),
                   clock=lambda: now[0])  # fmt: skip
    assert not gate.attempt("nurse", "1").ok and gate.attempt("nurse", "2").locked_out
    now[0] += 29
    assert gate.attempt("nurse", "1111").locked_out
    now[0] += 2
    assert gate.attempt("nurse", "1111").ok
    assert not gate.attempt("surgeon", "1111").ok  # a role without a PIN hash cannot sign in


@pytest.mark.req("REQ-PRIV-400")
def test_idle_session_is_refused_by_the_server(tmp_path: Path) -> None:
    client = make_app(tmp_path, idle_lock_seconds=1).test_client()
    assert login(client, "surgeon").status_code == 200
    assert client.get("/inbox").status_code == 200
    time.sleep(1.3)
    assert client.get("/inbox").status_code == 302  # back to the PIN screen
    assert client.post("/auth/activity").status_code == 401  # activity does not revive a locked session
    assert client.post("/ui/api/review", json={"job_id": 1}).status_code == 401
    assert login(client, "surgeon").status_code == 200
    lock = client.post("/auth/lock", json={"reason": "idle"}).get_json()
    assert lock["redirect"] == "/login?locked=1" and client.get("/inbox").status_code == 302
    locks = AuditLog(tmp_path / "audit.sqlite3").records(action="session")
    assert [(r.action, r.details["reason"], r.requirement) for r in locks] == [
        ("session.locked", "idle", "REQ-PRIV-400")
    ]


@pytest.mark.req("REQ-HCI-040", "REQ-TRACE-401")
def test_review_requires_a_note_to_reject_and_a_valid_study_hash(tmp_path: Path) -> None:
    client = make_app(tmp_path).test_client()
    login(client, "surgeon")
    body = {"job_id": 4, "structure": "liver", "decision": "reject", "note": "", "study_hash": "ab" * 16}
    assert client.post("/ui/api/review", json=body).status_code == 400
    assert client.post("/ui/api/review", json={**body, "note": "x", "study_hash": "not-a-hash"}).status_code == 400
    assert client.post("/ui/api/review", json={**body, "decision": "maybe", "note": "x"}).status_code == 400
    ok = client.post("/ui/api/review", json={**body, "note": "boundary too wide"})
    assert ok.status_code == 200
    (rec,) = AuditLog(tmp_path / "audit.sqlite3").records(action="structure")
    assert (rec.actor, rec.action, rec.study_hash) == ("ui:surgeon", "structure.rejected", "ab" * 16)
    assert rec.details == {"job_id": 4, "structure": "liver", "note": "boundary too wide"}


@pytest.mark.req("REQ-HCI-050")
def test_service_endpoints_report_health_versions_logs_and_update(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "appliance.log").write_text("".join(f"line {n}\n" for n in range(500)), encoding="utf-8")
    client = make_app(tmp_path).test_client()
    login(client, "service")
    health = client.get("/ui/api/health").get_json()
    assert health["cpu_count"] >= 1 and health["memory_total_mb"] > 0 and health["disk_total_gb"] > 0
    assert isinstance(health["gpus"], list)
    versions = client.get("/ui/api/versions").get_json()
    assert versions["appliance"] and "flask" in versions["packages"]
    tail = client.get("/ui/api/logs?lines=50").get_json()
    assert tail["file"] == "appliance.log" and tail["lines"][-1] == "line 499" and len(tail["lines"]) == 50
    update = client.get("/ui/api/update").get_json()
    assert update["mechanism"] is True and update["repository"] == "" and update["can_check"] is False
    assert client.post("/ui/api/update/check").status_code == 409


@pytest.mark.req("REQ-HCI-050")
def test_update_check_drives_the_update_client_and_reports_its_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-usb-stick"
    app = create_app({"TESTING": True, "UI_SERVICE_API": False, "storage": {"data_dir": str(tmp_path)},
                      "ui": {"pins": dict(HASHES)}, "update": {"repository": str(missing),
                      "trusted_metadata_dir": str(tmp_path / "tuf")}})  # fmt: skip
    client = app.test_client()
    login(client, "service")
    assert client.get("/ui/api/update").get_json()["can_check"] is True
    answer = client.post("/ui/api/update/check")
    assert answer.status_code == 502 and answer.get_json()["error"]  # the update client's own message
    (rec,) = AuditLog(tmp_path / "audit.sqlite3").records(action="update")
    assert rec.action == "update.check_failed" and rec.actor == "ui:service"


def test_configuration_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(UiConfigurationError, match=r"ui\.pins\.doctor"):
        make_app(tmp_path, pins={"doctor": "x"})
    with pytest.raises(UiConfigurationError, match=r"ui\.language"):
        make_app(tmp_path, language="fr")


def test_language_switch_is_kept_in_the_session(tmp_path: Path) -> None:
    client = make_app(tmp_path).test_client()
    assert client.post("/ui/lang", json={"lang": "xx"}).status_code == 400
    assert client.post("/ui/lang", json={"lang": "zh-CN"}).status_code == 200
    page = client.get("/login").get_data(as_text=True)
    assert '<html lang="zh-CN">' in page and catalogue("zh-CN")["login.title"] in page


@pytest.mark.req("REQ-HCI-020", "REQ-HCI-030")
def test_demo_mode_publishes_an_output_folder_behind_the_demo_pin(tmp_path: Path) -> None:
    from ui_phantom import write_case

    from ui.demo import DEMO_PIN

    case = tmp_path / "out"
    write_case(case, sphere_subdivisions=1)
    client = create_app({"TESTING": True, "DEMO_OUTPUT_DIR": str(case)}).test_client()
    assert "Demo mode: the PIN is 0000." in client.get("/login").get_data(as_text=True)
    assert login(client, "surgeon", DEMO_PIN).status_code == 200
    (job,) = client.get("/api/jobs").get_json()["jobs"]
    assert job["state"] == "done" and client.get(f"/cases/{job['id']}").status_code == 200
    glb = client.get(f"/api/jobs/{job['id']}/files/scene.glb")
    assert glb.status_code == 200 and glb.get_data() == (case / "scene.glb").read_bytes()
    assert client.get("/api/studies").get_json()["studies"][0]["description"] == "Demo: bundled CT sample"


@pytest.mark.req("REQ-HCI-010", "REQ-HCI-030")
def test_appliance_serve_builds_the_kiosk_over_the_real_service(tmp_path: Path) -> None:
    from appliance.config import load_config
    from appliance.service.runtime import ApplianceService

    cfg = load_config(None, overrides={"storage": {"data_dir": str(tmp_path)}, "dicom": {"port": 0},
                                      "ui": {"pins": {"nurse": HASHES["nurse"]}, "language": "zh-CN"}})  # fmt: skip
    app = create_web_app(cfg, ApplianceService(cfg))
    client = app.test_client()
    assert app.config["UI_SERVICE_API_REGISTERED"] is True
    assert '<html lang="zh-CN">' in client.get("/login").get_data(as_text=True)
    assert client.get("/api/health").get_json()["status"] == "ok"
    assert "Content-Security-Policy" in client.get("/api/health").headers
    assert login(client, "nurse").status_code == 200 and client.get("/inbox").status_code == 200
    assert client.get("/api/studies").get_json() == {"studies": []}


@pytest.mark.req("REQ-PRIV-007")
def test_service_api_answers_unlocked_patient_data_roles_and_the_token_only(tmp_path: Path) -> None:
    from appliance.config import load_config
    from appliance.service.api import issue_api_token, read_api_token
    from appliance.service.runtime import ApplianceService

    cfg = load_config(None, overrides={"storage": {"data_dir": str(tmp_path)}, "dicom": {"port": 0},
                                      "ui": {"pins": dict(HASHES), "idle_lock_seconds": 60}})  # fmt: skip
    app = create_web_app(cfg, ApplianceService(cfg), api_token=issue_api_token(tmp_path))
    client = app.test_client()
    protected = ["/api/studies", "/api/jobs", "/api/jobs/1", "/api/jobs/1/files/report.html", "/api/imports"]
    for path in protected:  # logged out
        r = client.get(path)
        assert r.status_code == 401 and "log in on the kiosk" in r.get_json()["error"], path
    assert client.get("/api/health").status_code == 200 and client.get("/api/openapi.json").status_code == 200
    assert login(client, "nurse").status_code == 200
    assert client.get("/api/studies").get_json() == {"studies": []}
    assert client.get("/api/jobs/1").status_code == 404  # through the check, unknown job
    client.post("/auth/lock", json={"reason": "manual"})
    assert client.get("/api/studies").status_code == 401  # locked
    assert login(client, "surgeon").status_code == 200 and client.get("/api/jobs").status_code == 200
    sessions = app.extensions["ui_sessions"]  # idle past the lock time, the page's timer did not run
    sessions.clock = lambda: time.monotonic() + 61
    assert client.get("/api/jobs").status_code == 401
    assert login(client, "service").status_code == 200
    for path in protected:
        r = client.get(path)
        assert r.status_code == 403 and "no patient data" in r.get_json()["error"], path
    assert client.get("/api/health").status_code == 200  # the service screen's queue counts come from here
    token = {"Authorization": f"Bearer {read_api_token(tmp_path)}"}
    anonymous = app.test_client()
    assert anonymous.get("/api/studies", headers=token).status_code == 200
    assert anonymous.get("/api/studies", headers={"Authorization": "Bearer wrong"}).status_code == 401
