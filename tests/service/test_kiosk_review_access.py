"""Who may do what of the model review from the kiosk (issues 14 and 15), on the app ``appliance serve`` builds over
a real service with a finished job: the modelling engineer signs in with a PIN, lands on the worklist, opens the
case with the edit tools and edits through the API with the session's actor; only the surgeon approves and marks
lesions; the nurse views without tools; the service engineer still sees no patient data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from review_case import finished_job_box
from werkzeug.security import generate_password_hash

from appliance.audit import AuditLog
from appliance.service.runtime import ApplianceService

PINS = {"nurse": "1111", "surgeon": "2222", "engineer": "4444", "service": "3333"}
HASHES = {role: generate_password_hash(pin, "pbkdf2:sha256:1000") for role, pin in PINS.items()}
BASE = "http://127.0.0.1:8080"  # the requests' origin: the app refuses cross-site state changes


@pytest.fixture
def box(service_factory: Callable[..., ApplianceService], tmp_path: Path, shared_data: Path) -> dict[str, Any]:
    return finished_job_box(lambda: service_factory(ui={"pins": dict(HASHES), "idle_lock_seconds": 600}),
                            tmp_path, shared_data)


def _signed_in(app: Any, role: str) -> Any:
    client = app.test_client()
    r = client.post("/auth/login", json={"role": role, "pin": PINS[role]}, base_url=BASE)
    assert r.status_code == 200, r.get_json()
    return client


def _flags(html: str) -> dict[str, str]:
    return {k: html.split(f'data-{k}="', 1)[1][0] for k in ("revisions", "can-edit", "can-mark", "can-review")}


@pytest.mark.req("REQ-PRIV-1390", "REQ-FUNC-1391")
def test_engineer_edits_from_the_kiosk_and_only_the_surgeon_approves(box: dict[str, Any]) -> None:
    app, job, svc = box["app"], box["job"], box["svc"]
    engineer = _signed_in(app, "engineer")
    login = engineer.post("/auth/login", json={"role": "engineer", "pin": PINS["engineer"]}, base_url=BASE)
    assert login.get_json()["redirect"] == "/worklist"  # the engineer's home is the worklist
    assert engineer.get("/worklist", base_url=BASE).status_code == 200
    assert engineer.get("/inbox", base_url=BASE).status_code == 403  # no inbox: the worklist leads to the cases
    page = engineer.get(f"/cases/{job}", base_url=BASE).get_data(as_text=True)
    assert _flags(page) == {"revisions": "1", "can-edit": "1", "can-mark": "0", "can-review": "0"}
    assert 'id="edit-tools"' in page and 'id="lesion-panel"' not in page and "Back to worklist" in page
    listed = engineer.get(f"/api/jobs/{job}/revisions", base_url=BASE)
    assert listed.status_code == 200 and listed.get_json()["current"] == 0
    bone = next(s for s in listed.get_json()["revisions"][0]["structures"] if s["name"] == "bone")
    assert bone["label"] == 2
    aff = box["volume"].affine
    ijk = np.argwhere(box["labelmap"].labels == 2)[0]
    point = [float(v) for v in aff[:3, :3] @ ijk + aff[:3, 3]]
    r = engineer.post(f"/api/jobs/{job}/revisions", base_url=BASE, json={
        "base": 0, "reason": "brush erase at the kiosk",
        "ops": [{"op": "erase", "structure": "bone", "sphere": {"center_lps": point, "radius_mm": 2}}]})
    assert r.status_code == 201, r.get_json()
    assert (r.get_json()["author"], r.get_json()["role"]) == ("ui:engineer", "engineer")
    refused = engineer.post(f"/api/jobs/{job}/structures/bone/review", base_url=BASE,
                            json={"revision": 1, "decision": "approve", "note": ""})
    assert refused.status_code == 403 and "only a surgeon" in refused.get_json()["error"]

    surgeon = _signed_in(app, "surgeon")
    page = surgeon.get(f"/cases/{job}", base_url=BASE).get_data(as_text=True)
    assert _flags(page) == {"revisions": "1", "can-edit": "1", "can-mark": "1", "can-review": "1"}
    assert "Request correction" in page and "Back to inbox" in page
    ok = surgeon.post(f"/api/jobs/{job}/structures/bone/review", base_url=BASE,
                      json={"revision": 1, "decision": "approve", "note": ""})
    assert ok.status_code == 201 and ok.get_json()["actor"] == "ui:surgeon"
    assert surgeon.get("/worklist", base_url=BASE).status_code == 200

    nurse = _signed_in(app, "nurse")
    page = nurse.get(f"/cases/{job}", base_url=BASE).get_data(as_text=True)
    assert _flags(page) == {"revisions": "1", "can-edit": "0", "can-mark": "0", "can-review": "0"}
    assert nurse.get("/worklist", base_url=BASE).status_code == 403
    service = _signed_in(app, "service")
    assert service.get(f"/api/jobs/{job}/revisions", base_url=BASE).status_code == 403
    assert service.get(f"/cases/{job}", base_url=BASE).status_code == 403

    actions = [(r.actor, r.action) for r in AuditLog(svc.data_dir / "audit.sqlite3").records()]
    assert ("ui:engineer", "revision.created") in actions and ("ui:surgeon", "structure.approved") in actions
    assert ("ui:engineer", "structure.approved") not in actions
