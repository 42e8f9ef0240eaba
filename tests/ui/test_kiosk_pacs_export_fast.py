"""Send to PACS from the case screen in Chromium, on the service's own routes, to a real Orthanc: with an
unapproved structure and a newer unapproved edit the screen names what is unapproved and sends only with a typed
reason; the PACS then holds bone's Encapsulated STL of the approved revision byte for byte (not the newer edit's);
the export and the override are audited with the surgeon as actor."""

from __future__ import annotations

import io
import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import trimesh
from helpers.orthanc import start_orthanc
from kiosk_review import open_case, page_for, serving, wait_message
from ui_browser import PIN_HASHES, login, screenshot, wait_js

from appliance.core import Mesh
from appliance.export.glb import write_glb
from appliance.review.store import RevisionStore
from appliance.service.export.stl import ENCAPSULATED_STL
from appliance.service.runtime import ApplianceService

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "service"))
from approved_case import approve, bone_point, erase_bone, reviewed_case_box  # noqa: E402
from svc_helpers import FakeReconstruct, free_port, make_config  # noqa: E402

pytestmark = [pytest.mark.serial]


@pytest.fixture
def pacs_case(tmp_path: Path, shared_data: Path) -> Iterator[dict[str, Any]]:
    """A reviewed case (bone approved at revision 1 and edited again in 2, body never approved) served on
    127.0.0.1, and a real Orthanc configured as the box's PACS destination."""
    dicom, http = free_port(), free_port()
    pacs = start_orthanc(tmp_path / "orthanc", dicom, http, {})
    services: list[ApplianceService] = []

    def factory(**sections: Any) -> ApplianceService:
        cfg = make_config(tmp_path / "data", ui={"pins": dict(PIN_HASHES), "idle_lock_seconds": 600}, **sections)
        services.append(ApplianceService(cfg, reconstruct=lambda: FakeReconstruct(), qa=lambda p: []))
        return services[-1]

    box = reviewed_case_box(factory, tmp_path, shared_data, export={"destinations": [
        {"name": "PACS", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": dicom}]})
    out: Path = box["out"]
    meshes = []
    for s in json.loads((out / "structures.json").read_text()):  # the scene the viewer loads
        tm = trimesh.load(out / "meshes" / f"{s['name']}.stl", force="mesh", process=False)
        meshes.append(Mesh(np.asarray(tm.vertices, float), np.asarray(tm.faces, np.int64), s["name"],
                           tuple(s["color"])))  # fmt: skip
    write_glb(meshes, out / "scene.glb")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["glb"] = "scene.glb"
    (out / "manifest.json").write_text(json.dumps(manifest))
    erase_bone(box, 0, bone_point(box))
    approve(box, "bone", 1)  # body is never approved
    erase_bone(box, 1, bone_point(box, 4000))  # a newer edit of bone nobody approved
    try:
        with serving(box["client"].application) as base:
            box.update(base=base, pacs=pacs, pacs_http=http)
            yield box
    finally:
        for svc in services:
            svc.stop()
        pacs.stop()


@pytest.mark.req("REQ-FUNC-1424")
def test_surgeon_sends_the_approved_model_to_pacs_from_the_case_screen(browser: Any,
                                                                        pacs_case: dict[str, Any]) -> None:
    box, job = pacs_case, pacs_case["job"]
    context, page, watch = page_for(browser)
    login(page, box["base"], "surgeon")
    open_case(page, box["base"], job)
    status = "#pacs-export-status"
    page.locator("#pacs-export-go").tap()
    wait_js(page, f"/\\b(ok|bad)\\b/.test(document.querySelector('{status}').className)", timeout_s=300)
    said = page.locator(status).inner_text()
    assert "Not sent: not approved yet" in said and "body" in said and "bone" not in said, said
    assert box["pacs"].rest("/instances") == []  # nothing was sent
    page.locator("#pacs-export-anyway").tap()
    assert "Type the reason first" in page.locator(status).inner_text()
    assert box["pacs"].rest("/instances") == []
    page.locator("#pacs-export-reason").fill("urgent: body outline checked on the screen")
    page.locator("#pacs-export-anyway").tap()
    text = wait_message(page, status, timeout_s=300)
    assert "recorded with your reason" in text
    watch.console_errors[:] = [e for e in watch.console_errors if "409" not in e]  # the refused first request
    received = {}
    for i in box["pacs"].rest("/instances"):
        with urllib.request.urlopen(f"http://127.0.0.1:{box['pacs_http']}/instances/{i}/file", timeout=30) as f:
            ds = pydicom.dcmread(io.BytesIO(f.read()))
        received[str(ds.SOPClassUID), str(getattr(ds, "DocumentTitle", ""))] = ds
    stl = received[ENCAPSULATED_STL, "Bone"]
    svc = box["svc"]
    store = RevisionStore(svc.data_dir / "revisions" / f"job-{job}")
    doc = bytes(stl.EncapsulatedDocument)[: stl.EncapsulatedDocumentLength]
    assert doc == (store.root / store.revision(1).meshes["bone"]).read_bytes()
    assert doc != (store.root / store.revision(2).meshes["bone"]).read_bytes()
    (record,) = [r for r in svc.audit.records(action="export") if r.action == "export"]
    assert record.details["revisions"] == {"body": 2, "bone": 1} and record.actor == "ui:surgeon"
    (override,) = svc.audit.records(action="export.override_unapproved")
    assert override.actor == "ui:surgeon" and override.details["structures"] == ["body"]
    assert override.details["reason"] == "urgent: body outline checked on the screen"
    assert svc.audit.verify() == []
    screenshot(page, "issue14-pacs-sent-en", "#pacs-export")
    watch.assert_clean(page)
    context.close()
