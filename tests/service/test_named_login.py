"""Named people at the kiosk login (issue 14 item 1), on the app `appliance serve` builds with a finished job on a
real CT: a surgeon signs in by name or badge + PIN and every record of the session names the person and the role
(login, revision, review decision, measurement, lock); the surgeon role PIN stops working once a surgeon account
exists while the nurse PIN (no nurse account) keeps working; a person's wrong PINs count towards the role's
lockout; a disabled account, an unknown badge and a person of another role are refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from review_case import finished_job_box
from werkzeug.security import generate_password_hash

from appliance.people import USERS_FILE, Account
from appliance.people.accounts import badge_hash
from appliance.review.store import RevisionStore
from appliance.service.runtime import ApplianceService

pytestmark = pytest.mark.req("REQ-TRACE-1435")

PINS = {"nurse": "1111", "surgeon": "2222"}
BASE = "http://127.0.0.1:8080"
BADGE = "04A1B2C3D4"


def _account(name: str, role: str, pin: str, badge: str | None = None, enabled: bool = True) -> dict[str, Any]:
    """An account as `appliance users add` writes it (cheap PIN hash: logins in tests stay fast)."""
    return asdict(Account(name, role, generate_password_hash(pin, "pbkdf2:sha256:1000"),
                          badge_hash(badge) if badge else None, enabled, "2026-12-03T08:00:00Z"))


@pytest.fixture
def box(service_factory: Callable[..., ApplianceService], tmp_path: Path, shared_data: Path) -> dict[str, Any]:
    hashes = {role: generate_password_hash(pin, "pbkdf2:sha256:1000") for role, pin in PINS.items()}
    made = finished_job_box(lambda: service_factory(ui={"pins": hashes, "lockout_attempts": 3}), tmp_path,
                            shared_data)
    accounts = [_account("li.wei", "surgeon", "4711", BADGE), _account("zhang.min", "surgeon", "5812"),
                _account("old.hand", "surgeon", "6913", enabled=False), _account("chen.jie", "engineer", "7014")]
    (made["svc"].data_dir / USERS_FILE).write_text(json.dumps(accounts), encoding="utf-8")
    return made


def _post(client: Any, path: str, body: Any) -> Any:
    return client.post(path, base_url=BASE, json=body)


def test_a_named_surgeon_signs_in_and_every_record_names_the_person(box: dict[str, Any]) -> None:
    app, svc, job = box["app"], box["svc"], box["job"]
    page = app.test_client().get("/login", base_url=BASE).get_data(as_text=True)
    assert 'data-person="li.wei"' in page and 'data-person="zhang.min"' in page
    assert 'data-person="old.hand"' not in page  # disabled
    assert 'data-person="chen.jie"' in page  # the modelling engineer signs in at the kiosk too (worklist, edits)
    client = app.test_client()
    r = _post(client, "/auth/login", {"role": "surgeon", "person": "li.wei", "pin": "4711"})
    assert r.status_code == 200 and r.get_json()["person"] == "li.wei"
    rev = _post(client, f"/api/jobs/{job}/revisions", {"base": 0, "reason": "trim", "ops": [
        {"op": "recolour", "structure": "bone", "color": [1, 2, 3]}]})
    assert rev.status_code == 201 and rev.get_json()["author"] == "ui:surgeon:li.wei"
    decision = _post(client, f"/api/jobs/{job}/structures/bone/review", {"revision": 1, "decision": "approve"})
    assert decision.status_code == 201 and (decision.get_json()["actor"], decision.get_json()["role"]) == (
        "ui:surgeon:li.wei", "surgeon")
    measured = _post(client, f"/api/jobs/{job}/measurements", {"kind": "lesion_volume", "structure": "bone"})
    assert (measured.get_json()["author"], measured.get_json()["role"]) == ("ui:surgeon:li.wei", "surgeon")
    store = RevisionStore(svc.data_dir / "revisions" / f"job-{job}")
    assert (store.revision(1).author, store.revision(1).role) == ("ui:surgeon:li.wei", "surgeon")
    assert _post(client, "/auth/lock", {"reason": "manual"}).status_code == 200
    actors = {(r.action, r.actor) for r in svc.audit.records()}
    for action in ("login.success", "revision.created", "structure.approved", "measurement.saved",
                   "session.locked"):
        assert (action, "ui:surgeon:li.wei") in actors, action
    assert svc.audit.verify() == []


def test_badge_login_and_the_role_pin_only_without_accounts(box: dict[str, Any]) -> None:
    app, svc = box["app"], box["svc"]
    client = app.test_client()
    r = _post(client, "/auth/login", {"role": "surgeon", "pin": PINS["surgeon"]})
    assert r.status_code == 400 and r.get_json()["field"] == "person"  # surgeons have accounts now
    assert _post(client, "/auth/login", {"role": "nurse", "pin": PINS["nurse"]}).status_code == 200  # nurses not
    assert _post(client, "/auth/login", {"badge": BADGE, "pin": "4711"}).status_code == 200
    assert client.get("/api/jobs", base_url=BASE).status_code == 200
    refused = [({"badge": "FFFF0000", "pin": "4711"}, 401), ({"badge": BADGE, "pin": "0000"}, 401),
               ({"role": "surgeon", "person": "old.hand", "pin": "6913"}, 401),
               ({"role": "nurse", "person": "li.wei", "pin": "4711"}, 401),
               ({"role": "surgeon", "person": 7, "pin": "4711"}, 400), ({"badge": "", "pin": "4711"}, 400)]
    for body, status in refused:
        assert _post(app.test_client(), "/auth/login", body).status_code == status, body
    successes = [(r.actor, r.details.get("person")) for r in svc.audit.records(action="login.success")]
    assert successes == [("ui:nurse", None), ("ui:surgeon:li.wei", "li.wei")]
    failures = svc.audit.records(action="login.failure")
    assert all(BADGE not in json.dumps(f.details) for f in failures)  # the badge string is never recorded
    (svc.data_dir / USERS_FILE).write_text("{damaged", encoding="utf-8")  # never a fallback to role PINs
    assert _post(app.test_client(), "/auth/login", {"role": "surgeon", "pin": PINS["surgeon"]}).status_code == 503


def test_a_persons_wrong_pins_lock_the_role_out(box: dict[str, Any]) -> None:
    app = box["app"]
    client = app.test_client()
    for pin in ("0001", "0002"):
        assert _post(client, "/auth/login", {"role": "surgeon", "person": "zhang.min", "pin": pin}).status_code == 401
    third = _post(client, "/auth/login", {"role": "surgeon", "person": "li.wei", "pin": "0003"})
    assert third.status_code == 429  # the third wrong surgeon PIN in a row, whoever it was for
    right = _post(client, "/auth/login", {"role": "surgeon", "person": "li.wei", "pin": "4711"})
    assert right.status_code == 429 and right.get_json()["error"] == "locked_out"
    assert _post(client, "/auth/login", {"role": "nurse", "pin": PINS["nurse"]}).status_code == 200
