"""The case screen's lesion panel and the correction loop in Chromium, the short path of the default run: the app
``appliance serve`` builds (``create_web_app``) over a real, started ``ApplianceService`` in this process, with one
finished job made from the real CT at half resolution (6 mm voxels, body and bone; helpers/print_case.py) so that
every edit re-meshes in a moment. Everything the page shows comes from the service's own routes; the process,
storescu and the full-resolution reconstruction are test_kiosk_review_e2e.py (slow).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh
from kiosk_review import (
    centre_of,
    margin_table,
    open_case,
    page_for,
    serving,
    show_slices,
    soft_tissue,
    tap_at,
    voxel,
    wait_message,
)
from ui_browser import PIN_HASHES, login, screenshot, wait_js

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.core import Mesh
from appliance.export.glb import write_glb
from appliance.service.runtime import ApplianceService

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "service"))
from review_case import finished_job_box  # noqa: E402
from svc_helpers import FakeReconstruct, make_config  # noqa: E402

pytestmark = [pytest.mark.serial]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[dict[str, Any]]:
    """The web app on 127.0.0.1 over a started service with one finished job (scene.glb, image, labels, meshes)."""
    tmp = tmp_path_factory.mktemp("kiosk-review-fast")
    services: list[ApplianceService] = []

    def factory() -> ApplianceService:
        cfg = make_config(tmp / "data", ui={"pins": dict(PIN_HASHES), "idle_lock_seconds": 600})
        services.append(ApplianceService(cfg, reconstruct=lambda: FakeReconstruct(), qa=lambda p: []))
        return services[0]

    box = finished_job_box(factory, tmp, shared_data)
    out = Path(box["svc"].catalogue.job(box["job"]).output_dir)
    structures = json.loads((out / "structures.json").read_text())
    meshes = []
    for s in structures:  # the scene the pipeline would have written next to the STL files
        tm = trimesh.load(out / "meshes" / f"{s['name']}.stl", force="mesh", process=False)
        meshes.append(Mesh(np.asarray(tm.vertices, float), np.asarray(tm.faces, np.int64), s["name"],
                           tuple(s["color"])))  # fmt: skip
    write_glb(meshes, out / "scene.glb")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"].update({"glb": "scene.glb", "image": "image.nii.gz"})
    (out / "manifest.json").write_text(json.dumps(manifest))
    try:
        with serving(box["app"]) as base:
            box["base"] = base
            yield box
    finally:
        for svc in services:
            svc.stop()


def _api(box: dict[str, Any], path: str) -> Any:
    r = box["client"].get(path, headers=box["headers"])
    assert r.status_code == 200, r.get_json()
    return r.get_json()


@pytest.mark.req("REQ-FUNC-1392", "REQ-FUNC-1393", "REQ-SAFE-1394", "REQ-HCI-1395")
def test_lesion_marked_at_10_mm_and_widened_in_place(browser: Any, served: dict[str, Any]) -> None:
    job, volume = served["job"], served["volume"]
    calm = soft_tissue(volume.array.astype(np.float32), size=3)
    context, page, watch = page_for(browser)
    login(page, served["base"], "surgeon")
    open_case(page, served["base"], job)
    assert page.locator("#revision-badge").inner_text() == "Revision 0 · automatic segmentation"
    show_slices(page)
    tapped = tap_at(page, centre_of(calm, volume.affine))
    assert calm[voxel(volume.affine, tapped)], tapped
    page.locator('.lesion-margin[data-mm="10"]').tap()
    page.locator("#lesion-mark").tap()
    wait_message(page, "#lesion-msg")
    assert page.locator("#revision-badge").inner_text() == "Revision 1 · by Surgeon"
    assert page.evaluate("window.viewer.opacity('lesion_1_margin_10mm')") < 1  # the shell, see-through
    (lesion,) = _api(served, f"/api/jobs/{job}/lesions")["lesions"]
    mt = lesion["margin_table"]
    expected = [(r["structure"], 10.0, r["min_distance_mm"], r["volume_within_ml"][0]) for r in mt["rows"]
                if r["category"] != "margin" and r["volume_within_ml"][0] > 0]
    shown = margin_table(page)
    assert shown == expected and shown, (shown, expected)
    row = page.locator(f'#margin-table tbody tr[data-structure="{shown[0][0]}"]').first
    row.tap()
    assert page.evaluate("window.viewer.highlighted") == shown[0][0] and row.get_attribute("aria-selected") == "true"
    row.tap()
    assert page.evaluate("window.viewer.highlighted") is None
    screenshot(page, "kiosk-fast-lesion-en")
    page.locator('.lesion-adjust[data-adjust="wider"]').tap()
    wait_message(page, "#lesion-msg")
    listed = _api(served, f"/api/jobs/{job}/revisions")
    current = next(r for r in listed["revisions"] if r["revision"] == listed["current"])
    assert (listed["current"], current["parent"]) == (2, 0)  # in place of the first attempt, not on top of it
    first = next(r for r in listed["revisions"] if r["revision"] == 1)["ops"][1]["window"]
    width = current["ops"][1]["window"]["max"] - current["ops"][1]["window"]["min"]
    assert width == pytest.approx((first["max"] - first["min"]) * 1.25, abs=0.2)
    assert [s["name"] for s in current["structures"] if s["category"] == "lesion"] == ["lesion_1"]
    watch.assert_clean(page)
    context.close()


@pytest.mark.req("REQ-FUNC-1391", "REQ-FUNC-1392", "REQ-FUNC-1396", "REQ-FUNC-1397", "REQ-TRACE-1398",
                 "REQ-HCI-1399")  # fmt: skip
def test_correction_requested_erased_by_the_engineer_then_approved(browser: Any, served: dict[str, Any]) -> None:
    job = served["job"]
    store = served["svc"].data_dir / "revisions" / f"job-{job}"
    surgeon_ctx, surgeon, watch_s = page_for(browser)
    login(surgeon, served["base"], "surgeon")
    open_case(surgeon, served["base"], job)
    base = int(surgeon.locator("#revision-badge").get_attribute("data-revision") or "-1")
    frozen = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(store.glob("rev-*/**/*")) if p.is_file()}
    row = surgeon.locator('.structure[data-structure="bone"]')
    state = _api(served, f"/api/jobs/{job}/revisions/{base}")["review"]["bone"]["state"]
    assert row.locator(".review-state").get_attribute("data-review-state") == state  # what the service says
    row.locator(".adjust").tap()
    surgeon.locator("#reject-btn").tap()
    assert "note" in surgeon.locator("#review-msg").inner_text()  # a correction request needs a note
    surgeon.locator('.quick-note[data-note-key="note.boundary"]').tap()
    surgeon.locator("#reject-btn").tap()
    wait_message(surgeon, "#review-msg")
    assert row.locator(".review-state").get_attribute("data-review-state") == "correction_requested"

    engineer_ctx, engineer, watch_e = page_for(browser)
    login(engineer, served["base"], "engineer")
    engineer.wait_for_url("**/worklist")
    wait_js(engineer, "document.getElementById('worklist').dataset.loaded === '1'")
    item = engineer.locator(f'.work-item[data-job-id="{job}"][data-structure="bone"]')
    assert "Boundary not right" in item.inner_text() and "Surgeon" in item.inner_text()
    engineer.locator("#lang-switch").tap()  # the engineer works in Chinese
    engineer.wait_for_selector('html[lang="zh-CN"]')
    wait_js(engineer, "document.getElementById('worklist').dataset.loaded === '1'")
    assert "骨骼" in item.inner_text() and "外科医生" in item.inner_text()
    assert engineer.locator("#worklist-title").inner_text() == "待修改"
    screenshot(engineer, "kiosk-worklist-zh-CN")
    item.tap()
    engineer.wait_for_url(f"**/cases/{job}?structure=bone")
    wait_js(engineer, "document.getElementById('case-viewer').dataset.loaded === '1'")
    assert engineer.locator("#editor-title").inner_text() == "骨骼"
    assert engineer.locator("#approve-btn").count() == 0 and engineer.locator("#lesion-panel").count() == 0
    engineer.locator('.edit-op[data-op="erase"]').tap()  # no slice view, no place: it says so, nothing sent
    assert engineer.locator("#edit-msg").inner_text() == "请先显示断层并点击要修改的位置。"
    vertices = "window.viewer.structures.get('bone').mesh.geometry.attributes.position.count"
    before = engineer.evaluate(vertices)
    show_slices(engineer)
    volume, labelmap = served["volume"], served["labelmap"]
    tapped = tap_at(engineer, centre_of(labelmap.labels == 2, volume.affine))
    assert labelmap.labels[voxel(volume.affine, tapped)] == 2
    engineer.locator('.brush-radius[data-mm="10"]').tap()
    engineer.locator('.edit-op[data-op="erase"]').tap()
    wait_message(engineer, "#edit-msg")
    assert engineer.locator("#revision-badge").inner_text() == f"版本 {base + 1} · 建模工程师"
    assert engineer.evaluate(vertices) != before  # the re-meshed bone was swapped in
    screenshot(engineer, "kiosk-edit-zh-CN")
    made = _api(served, f"/api/jobs/{job}/revisions/{base + 1}")
    assert (made["ops"], made["author"], made["parent"]) == (
        [{"op": "erase", "structure": "bone", "sphere": {"center_lps": tapped, "radius_mm": 10}}], "ui:engineer", base)
    assert made["review"]["bone"]["state"] == "corrected"
    watch_e.assert_clean(engineer)
    engineer_ctx.close()

    open_case(surgeon, served["base"], job)
    row = surgeon.locator('.structure[data-structure="bone"]')
    assert row.locator(".review-state").get_attribute("data-review-state") == "corrected"
    row.locator(".adjust").tap()
    surgeon.locator("#approve-btn").tap()
    wait_message(surgeon, "#review-msg")
    assert row.locator(".review-state").get_attribute("data-review-state") == "approved"
    surgeon.locator("#undo-btn").tap()  # undo/redo move the current revision; the decision stays with its revision
    wait_js(surgeon, f"document.getElementById('case-viewer').dataset.revision === '{base}'")
    assert row.locator(".review-state").get_attribute("data-review-state") == "correction_requested"
    surgeon.locator("#redo-btn").tap()
    wait_js(surgeon, f"document.getElementById('case-viewer').dataset.revision === '{base + 1}'")
    surgeon.locator("#lang-switch").tap()
    surgeon.wait_for_selector('html[lang="zh-CN"]')
    wait_js(surgeon, "document.getElementById('case-viewer').dataset.loaded === '1'")
    assert surgeon.locator('.structure[data-structure="bone"] .review-state').inner_text() == "已批准"
    assert surgeon.locator("#revision-badge").inner_text() == f"版本 {base + 1} · 建模工程师"
    assert surgeon.locator("#reject-btn").inner_text() == "要求修改"
    screenshot(surgeon, "kiosk-fast-review-zh-CN")
    watch_s.assert_clean(surgeon)
    surgeon_ctx.close()

    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in frozen} == frozen  # earlier revisions unchanged
    log = AuditLog(served["svc"].data_dir / AUDIT_FILENAME)
    actions = [(r.actor, r.action) for r in log.records()]
    for expected in [("ui:surgeon", "structure.correction_requested"), ("ui:engineer", "revision.created"),
                     ("ui:surgeon", "structure.approved"), ("ui:surgeon", "revision.undo")]:  # fmt: skip
        assert expected in actions, actions
    assert log.verify() == []
