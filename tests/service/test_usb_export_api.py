"""The kiosk's "Export to USB" and "Find on PACS" routes in the app `appliance serve` builds (UI + API): the media
on the box, a finished job's export with the surgeon's review, refusals with reasons, and the access rule."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.print_case import make_case
from svc_helpers import claimed_job

from appliance.commands.serve import create_web_app
from appliance.service.api_token import issue_api_token
from appliance.service.pacs.api import pacs_api
from appliance.service.print_export import review_records
from appliance.service.print_export_api import usb_export_api
from appliance.service.runtime import ApplianceService


@pytest.fixture
def box(service_factory: Callable[..., ApplianceService], tmp_path: Path, shared_data: Path) -> dict[str, Any]:
    media = tmp_path / "media"
    (media / "KINGSTON").mkdir(parents=True)
    svc = service_factory(**{"import": {"watch_dir": str(media)}})
    svc.start(receiver=False, importer=False)
    study_uid, job_id, out = claimed_job(svc, shared_data, tmp_path, n=3)
    make_case(shared_data, out)
    svc.catalogue.update_job(job_id, state="done", output_dir=str(out), manifest_path=str(out / "manifest.json"))
    token = issue_api_token(svc.data_dir)
    client = create_web_app(svc.config, svc, api_token=token).test_client()
    headers = {"Authorization": f"Bearer {token}"}
    return {"svc": svc, "job": job_id, "media": media, "client": client, "headers": headers, "study": study_uid}


@pytest.mark.req("REQ-OUT-861", "REQ-TRACE-863", "REQ-SAFE-862")
def test_kiosk_exports_a_job_to_the_plugged_in_stick(box: dict[str, Any]) -> None:
    client, headers, svc, job = box["client"], box["headers"], box["svc"], box["job"]
    listed = client.get("/api/usb/media", headers=headers).get_json()
    assert listed["enabled"] is True and [m["name"] for m in listed["media"]] == ["KINGSTON"]
    assert listed["media"][0]["writable"] is True and listed["media"][0]["free_bytes"] > 0
    svc.audit.append("ui:surgeon", "structure.approved", svc.study_hash(box["study"]),
                     {"job_id": job, "structure": "bone", "note": ""})  # fmt: skip
    assert review_records(svc.audit, job) == [{"structure": "bone", "decision": "approved", "actor": "ui:surgeon",
                                               "note": "", "at": svc.audit.records()[-1].ts}]  # fmt: skip
    r = client.post(f"/api/jobs/{job}/usb-export", headers=headers,
                    json={"medium": "KINGSTON", "formats": ["stl", "amf"], "structures": ["bone"]})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["folder"] == f"EDGE3D-job-{job}" and body["safe_to_remove"] is True
    on_stick = sorted(p.name for p in (box["media"] / "KINGSTON" / body["folder"]).iterdir())
    assert on_stick == sorted(f["name"] for f in body["files"]) == sorted(
        [f"EDGE3D-job-{job}_bone.stl", f"EDGE3D-job-{job}.amf", "SHA256SUMS"])  # fmt: skip
    (record,) = svc.audit.records(action="export.usb")
    assert record.actor == "api:token" and record.study_hash == svc.study_hash(box["study"])  # the bearer, not a body
    assert record.details["medium"] == "KINGSTON" and record.details["structures"] == ["bone"]
    for payload, status in (
        ({"medium": "SANDISK"}, 409),  # not plugged in
        ({"medium": "../.."}, 409),
        ({"medium": "KINGSTON", "structures": ["liver"]}, 409),
        ({"medium": "KINGSTON", "formats": "stl"}, 400),
        ({"formats": ["stl"]}, 400),
    ):
        reply = client.post(f"/api/jobs/{job}/usb-export", headers=headers, json=payload)
        assert reply.status_code == status and reply.get_json()["error"], payload
    assert client.post("/api/jobs/999/usb-export", headers=headers, json={"medium": "KINGSTON"}).status_code == 404
    assert len(svc.audit.records(action="export.usb_failed")) == 1  # the unknown structure reached the exporter
    assert sorted(p.name for p in (box["media"] / "KINGSTON").iterdir()) == [f"EDGE3D-job-{job}"]


@pytest.mark.req("REQ-PRIV-007")
def test_print_lab_routes_need_the_kiosk_session_or_the_token(box: dict[str, Any]) -> None:
    client = box["client"]
    app = client.application
    rules = [r for r in app.url_map.iter_rules() if r.endpoint.split(".")[0] in (pacs_api.name, usb_export_api.name)]
    assert len(rules) == 8
    for rule in rules:
        url = re.sub(r"<(?:([^:<>]+):)?[^<>]+>", lambda m: "1" if m.group(1) == "int" else "x", rule.rule)
        for method in sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"}):
            reply = client.open(url, method=method, json={})
            assert reply.status_code == 401 and "api_token" in reply.get_json()["error"], (method, url)
