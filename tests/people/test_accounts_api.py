"""Accounts on the service screen's API (the kiosk app, Flask test client): the service engineer lists, adds,
disables and re-PINs people with the same account book as ``appliance users``; bad input gets a 4xx naming the
field and changes nothing; every change is audited with the service person's actor, never the PIN; other roles
are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from werkzeug.security import generate_password_hash

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.people import USERS_FILE, AccountBook
from ui.app import create_app

PINS = {"nurse": "1111", "surgeon": "2222", "service": "3333"}
BASE = "http://127.0.0.1:8080"


def _app(data_dir: Path) -> Any:
    hashes = {role: generate_password_hash(pin, method="pbkdf2:sha256:1000") for role, pin in PINS.items()}
    return create_app({"TESTING": True, "UI_SERVICE_API": False, "storage": {"data_dir": str(data_dir)},
                       "ui": {"pins": hashes}})


def _signed_in(app: Any, role: str) -> Any:
    client = app.test_client()
    assert client.post("/auth/login", base_url=BASE, json={"role": role, "pin": PINS[role]}).status_code == 200
    return client


@pytest.mark.req("REQ-TRACE-1008", "REQ-FUNC-1423")
def test_service_engineer_manages_accounts_and_each_change_is_audited(tmp_path: Path) -> None:
    app = _app(tmp_path)
    client = _signed_in(app, "service")

    def post(path: str, body: Any) -> Any:
        return client.post(path, base_url=BASE, json=body)

    assert client.get("/ui/api/accounts", base_url=BASE).get_json()["accounts"] == []
    r = post("/ui/api/accounts", {"name": "li.wei", "role": "surgeon", "pin": "4711", "badge": "04A1B2C3D4"})
    assert r.status_code == 201 and r.get_json()["name"] == "li.wei" and r.get_json()["badge"] is True
    book = AccountBook(tmp_path)
    assert book.sign_in("4711", name="li.wei") is not None and book.by_badge("04A1B2C3D4") is not None
    added = book.account("li.wei")
    for body, status, field in (
        ({"name": "Li Wei", "role": "surgeon", "pin": "4711"}, 400, "name"),
        ({"name": "wang.fang", "role": "janitor", "pin": "4711"}, 400, "role"),
        ({"name": "wang.fang", "role": "nurse", "pin": "12"}, 400, "pin"),
        ({"name": "wang.fang", "role": "nurse", "pin": 4711}, 400, "pin"),
        ({"name": "wang.fang", "role": "nurse", "pin": "4711", "badge": "x"}, 400, "badge"),
        ({"name": "wang.fang", "role": "nurse", "pin": "4711", "badge": "04A1B2C3D4"}, 409, "badge"),
        ({"name": "li.wei", "role": "nurse", "pin": "4711"}, 409, "name"),
        ({"role": "nurse", "pin": "4711"}, 400, "name"),
    ):  # fmt: skip
        r = post("/ui/api/accounts", body)
        assert (r.status_code, r.get_json()["field"]) == (status, field), (body, r.get_json())
    assert client.post("/ui/api/accounts", base_url=BASE, data="[]", content_type="application/json").status_code == 400
    assert [a.name for a in book.accounts()] == ["li.wei"]  # nothing half-added
    assert post("/ui/api/accounts/li.wei/reset-pin", {"pin": "9"}).get_json()["field"] == "pin"
    assert post("/ui/api/accounts/nobody/reset-pin", {"pin": "1234"}).status_code == 404
    assert post("/ui/api/accounts/nobody/disable", {}).status_code == 404
    assert book.account("li.wei").pin_hash == added.pin_hash  # the refused reset changed nothing
    r = post("/ui/api/accounts/li.wei/disable", {})
    assert r.status_code == 200 and r.get_json()["enabled"] is False and not book.account("li.wei").enabled
    r = post("/ui/api/accounts/li.wei/reset-pin", {"pin": "8642"})
    assert r.status_code == 200 and r.get_json()["enabled"] is True
    assert book.sign_in("8642", name="li.wei") is not None
    log = AuditLog(tmp_path / AUDIT_FILENAME)
    changes = [(r.actor, r.action, r.details["name"]) for r in log.records() if r.action.startswith("user.")]
    assert changes == [("ui:service", "user.added", "li.wei"), ("ui:service", "user.disabled", "li.wei"),
                       ("ui:service", "user.pin_reset", "li.wei")]
    raw = (tmp_path / AUDIT_FILENAME).read_bytes() + (tmp_path / USERS_FILE).read_bytes()
    assert b"4711" not in raw and b"8642" not in raw and b"04A1B2C3D4" not in raw
    assert json.loads((tmp_path / USERS_FILE).read_text())[0]["role"] == "surgeon" and log.verify() == []


@pytest.mark.req("REQ-FUNC-1423")
def test_only_the_service_role_reaches_the_accounts(tmp_path: Path) -> None:
    app = _app(tmp_path)
    assert app.test_client().get("/ui/api/accounts", base_url=BASE).status_code == 401
    for role in ("nurse", "surgeon"):
        client = _signed_in(app, role)
        assert client.get("/ui/api/accounts", base_url=BASE).status_code == 403
        r = client.post("/ui/api/accounts", base_url=BASE, json={"name": "x.y", "role": "service", "pin": "1234"})
        assert r.status_code == 403
    assert AccountBook(tmp_path).accounts() == []
    page = _signed_in(app, "service").get("/service", base_url=BASE).get_data(as_text=True)
    assert 'id="accounts-table"' in page and "js/accounts.js" in page
