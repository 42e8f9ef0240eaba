"""The case screen's lesion panel and the correction loop on the real thing: ``appliance serve`` as a process, the
bundled CT (20 slices) sent with dcmtk ``storescu`` and reconstructed by the real pipeline (ct-default), Chromium
driving the kiosk by touch. No scripted service: every revision, review state and number shown is the service's.

(a) the surgeon taps a lesion on the slice view, picks 10 mm, marks it: the lesion and its shell are swapped into
    the 3D model (the shell see-through), the table shows the API's own numbers (GET lesions), a wider window
    re-runs it in place of the first attempt, the report opened from the case screen (the draft: nothing approved
    yet) has the table's numbers; (b) the loop: the surgeon requests a correction of ``bone`` with a
    note, the modelling engineer finds it on the worklist, removes an island and brush-erases, the surgeon approves
    and sends the model to a real Orthanc from the case screen (the others unapproved: with a reason), which then
    holds bone exactly as approved; earlier revisions stay byte for byte, the audit trail verifies. Screenshots (en
    and zh-CN) land in build/ui-screenshots/ (kiosk-*.png).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from helpers.orthanc import start_orthanc
from kiosk_report import report_matches_kiosk
from kiosk_review import (
    LOADED,
    centre_of,
    margin_table,
    open_case,
    page_for,
    show_slices,
    soft_tissue,
    tap_at,
    voxel,
    wait_message,
)
from nurse_served import SAMPLE_CT, STORESCU, ServedBox, free_port, rewrite_study, start_box, storescu, wait_complete
from scipy import ndimage
from ui_browser import login, screenshot, wait_js

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.io.nifti import load_volume
from appliance.service.export.stl import ENCAPSULATED_STL

pytestmark = [
    pytest.mark.slow,  # a full-resolution reconstruction and minutes of SwiftShader; the short path is _fast.py
    pytest.mark.serial,
    pytest.mark.skipif(not STORESCU.exists(), reason="dcmtk (storescu) is not installed"),
]
JOB_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def pacs_port() -> int:
    """The DICOM port of the PACS (Orthanc, started by the loop test) the box exports to."""
    return free_port()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pacs_port: int) -> Iterator[tuple[ServedBox, int]]:
    """A served box with the bundled CT sent by storescu and reconstructed (ct-default): (box, job id)."""
    tmp = tmp_path_factory.mktemp("kiosk-review")
    box = start_box(tmp, '[export]\ndestinations = [{name = "PACS", ae_title = "ORTHANC", host = "127.0.0.1", '
                         f"port = {pacs_port}}}]\n")
    try:
        uid, files = rewrite_study(sorted(SAMPLE_CT.iterdir()), tmp / "ct", "CHEN^JING", decompress=True)
        storescu(box, files, jpeg2000=False)
        wait_complete(box, uid, len(files))
        status, job = box.api(f"/api/studies/{uid}/reconstruct", {"preset": "ct-default"})
        assert status == 202, job
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while job["state"] not in ("done", "failed", "refused") and time.monotonic() < deadline:
            time.sleep(1)
            job = box.api(f"/api/jobs/{job['id']}")[1]
        assert job["state"] == "done", (job, box.log.read_text()[-3000:])
        yield box, int(job["id"])
    finally:
        box.stop()


def _lesions(box: ServedBox, job: int) -> Any:
    """GET lesions with the service token; it recomputes every margin table, which takes tens of seconds on a
    loaded 2-core box (longer than ServedBox.api waits)."""
    from appliance.service.api import read_api_token

    req = urllib.request.Request(f"{box.base}/api/jobs/{job}/lesions",
                                 headers={"Authorization": f"Bearer {read_api_token(box.data_dir)}"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


@pytest.mark.req("REQ-FUNC-1392", "REQ-FUNC-1393", "REQ-SAFE-1394", "REQ-HCI-1395", "REQ-HCI-1399", "REQ-FUNC-1550")
def test_surgeon_marks_a_lesion_with_a_10_mm_margin(browser: Any, served: tuple[ServedBox, int]) -> None:
    box, job = served
    out = box.data_dir / "outputs" / f"job-{job}"
    image = load_volume(out / "image.nii.gz", "CT", "HU")
    hu = image.array.astype(np.float32)
    calm = soft_tissue(hu)
    seed = centre_of(calm, image.affine)
    context, page, watch = page_for(browser)
    login(page, box.base, "surgeon")
    open_case(page, box.base, job)
    assert page.locator("#revision-badge").inner_text() == "Revision 0 · automatic segmentation"
    show_slices(page)
    tapped = tap_at(page, seed)
    assert calm[voxel(image.affine, tapped)], (seed, tapped)
    assert page.locator("#lesion-name").input_value() == "lesion_1"
    page.locator('.lesion-margin[data-mm="10"]').tap()
    page.locator("#lesion-mark").tap()
    wait_message(page, "#lesion-msg")
    assert page.locator("#revision-badge").inner_text() == "Revision 1 · by Surgeon"
    names = page.evaluate("[...window.viewer.structures.keys()]")
    assert "lesion_1" in names and "lesion_1_margin_10mm" in names
    assert page.evaluate("window.viewer.opacity('lesion_1_margin_10mm')") < 1  # the shell is see-through
    listed = _lesions(box, job)
    assert listed["revision"] == 1
    (lesion,) = listed["lesions"]
    mt = lesion["margin_table"]
    assert mt["margins_mm"] == [10.0]
    expected = [(r["structure"], 10.0, r["min_distance_mm"], r["volume_within_ml"][0]) for r in mt["rows"]
                if r["category"] != "margin" and r["volume_within_ml"][0] > 0]
    shown = margin_table(page)
    assert shown == expected and shown, (shown, expected)
    assert float(page.locator("#lesion-volume").get_attribute("data-ml") or "nan") == lesion["measurements"][0]["value"]
    first = page.evaluate("window.viewer.structures.get('lesion_1').mesh.geometry.attributes.position.count")
    page.locator(f'#margin-table tbody tr[data-structure="{shown[0][0]}"]').first.tap()  # tap a row: highlighted
    assert page.evaluate("window.viewer.highlighted") == shown[0][0]
    assert page.evaluate(f"window.viewer.opacity('lesion_1') < window.viewer.opacity('{shown[0][0]}')")
    page.locator(f'#margin-table tbody tr[data-structure="{shown[0][0]}"]').first.tap()
    screenshot(page, "kiosk-lesion-en")

    page.locator('.lesion-adjust[data-adjust="wider"]').tap()  # re-run in place of the first attempt
    wait_message(page, "#lesion-msg")
    revisions = box.api(f"/api/jobs/{job}/revisions")[1]
    current = next(r for r in revisions["revisions"] if r["revision"] == revisions["current"])
    assert (revisions["current"], current["parent"]) == (2, 0)  # one lesion on the chain, not a pile of attempts
    lo, hi = current["ops"][1]["window"]["min"], current["ops"][1]["window"]["max"]
    first_window = next(r for r in revisions["revisions"] if r["revision"] == 1)["ops"][1]["window"]
    assert hi - lo == pytest.approx((first_window["max"] - first_window["min"]) * 1.25, abs=0.2)
    assert [x["name"] for x in current["structures"] if x["category"] == "lesion"] == ["lesion_1"]
    assert page.evaluate("window.viewer.structures.get('lesion_1').mesh.geometry.attributes.position.count") != first
    (widened,) = _lesions(box, job)["lesions"]  # the report opened from the kiosk has the table's numbers
    report_matches_kiosk(page, watch, "lesion_1", "lesion 1", widened)
    open_case(page, box.base, job)

    page.locator("#lang-switch").tap()
    page.wait_for_selector('html[lang="zh-CN"]', timeout=60_000)
    wait_js(page, LOADED, timeout_s=120)
    assert page.locator("#revision-badge").inner_text().startswith("版本 2 ·")
    assert page.locator("#lesion-mark").inner_text() == "在此标记病灶"
    show_slices(page)
    screenshot(page, "kiosk-lesion-zh-CN")
    watch.assert_clean(page)
    context.close()


def _sha_ok(box: ServedBox, job: int, number: int) -> bool:
    """Whether every file of revision ``number`` still has the SHA-256 its record names."""
    root = box.data_dir / "revisions" / f"job-{job}"
    record = box.api(f"/api/jobs/{job}/revisions")[1]["revisions"]
    files = next(r for r in record if r["revision"] == number)["files"]
    folder = root / f"rev-{number:04d}"
    return all(hashlib.sha256((folder / f["path"]).read_bytes()).hexdigest() == f["sha256"] for f in files)


def _send_to_pacs(page: Any, box: ServedBox, job: int, orthanc: Any, approved: int, watch: Any) -> None:
    """The surgeon sends the model to the PACS from the case screen; unapproved structures need a reason. Orthanc
    then holds bone's Encapsulated STL of the approved revision, byte for byte."""
    status = "#pacs-export-status"
    done = f"/\\b(ok|bad)\\b/.test(document.querySelector('{status}').className)"
    page.locator("#pacs-export-go").tap()
    wait_js(page, done, timeout_s=600)
    if page.locator("#pacs-export-override").is_visible():
        assert "Not sent: not approved yet" in page.locator(status).inner_text()
        page.locator("#pacs-export-reason").fill("urgent: the other structures were checked on the screen")
        page.locator("#pacs-export-anyway").tap()
    wait_message(page, status, timeout_s=600)
    watch.console_errors[:] = [e for e in watch.console_errors if "409" not in e]  # the refused first request
    received = {}
    for i in orthanc.rest("/instances"):
        with urllib.request.urlopen(f"http://127.0.0.1:{orthanc.http}/instances/{i}/file", timeout=30) as f:
            ds = pydicom.dcmread(io.BytesIO(f.read()))
        received[str(ds.SOPClassUID), str(getattr(ds, "DocumentTitle", ""))] = ds
    stl = received[ENCAPSULATED_STL, "Bone"]
    store = box.data_dir / "revisions" / f"job-{job}"
    path = box.api(f"/api/jobs/{job}/revisions/{approved}")[1]["meshes"]["bone"]
    assert bytes(stl.EncapsulatedDocument)[: stl.EncapsulatedDocumentLength] == (store / path).read_bytes()
    (record,) = [r for r in AuditLog(box.data_dir / AUDIT_FILENAME).records() if r.action == "export"]
    assert record.details["revisions"]["bone"] == approved and record.actor == "ui:surgeon"


@pytest.mark.req("REQ-FUNC-1391", "REQ-FUNC-1396", "REQ-FUNC-1397", "REQ-TRACE-1398", "REQ-PRIV-1390",
                 "REQ-FUNC-1424")  # fmt: skip
def test_correction_loop_surgeon_engineer_surgeon(browser: Any, served: tuple[ServedBox, int], pacs_port: int,
                                                   tmp_path: Path) -> None:
    orthanc = start_orthanc(tmp_path / "orthanc", pacs_port, free_port(), {})
    try:
        _correction_loop(browser, served, orthanc)
    finally:
        orthanc.stop()


def _correction_loop(browser: Any, served: tuple[ServedBox, int], orthanc: Any) -> None:
    box, job = served
    before = box.api(f"/api/jobs/{job}/revisions")[1]
    base = before["current"]
    store = box.data_dir / "revisions" / f"job-{job}"
    frozen = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(store.glob("rev-*/**/*")) if p.is_file()}
    surgeon_ctx, surgeon, watch_s = page_for(browser)
    login(surgeon, box.base, "surgeon")
    open_case(surgeon, box.base, job)
    row = surgeon.locator('.structure[data-structure="bone"]')
    state = box.api(f"/api/jobs/{job}/revisions/{base}")[1]["review"]["bone"]["state"]
    assert row.locator(".review-state").get_attribute("data-review-state") == state  # what the service says
    row.locator(".adjust").tap()
    surgeon.locator("#reject-btn").tap()  # a correction request needs a note
    assert "note" in surgeon.locator("#review-msg").inner_text()
    surgeon.locator('.quick-note[data-note-key="note.boundary"]').tap()
    surgeon.locator("#review-note").fill("Boundary not right: loose fragment at the spine")
    surgeon.locator("#reject-btn").tap()
    wait_message(surgeon, "#review-msg")
    assert row.locator(".review-state").get_attribute("data-review-state") == "correction_requested"
    screenshot(surgeon, "kiosk-review-requested-en")

    engineer_ctx, engineer, watch_e = page_for(browser)
    login(engineer, box.base, "engineer")
    engineer.wait_for_url("**/worklist")
    wait_js(engineer, "document.getElementById('worklist').dataset.loaded === '1'")
    item = engineer.locator(f'.work-item[data-job-id="{job}"][data-structure="bone"]')
    assert "loose fragment" in item.inner_text()
    screenshot(engineer, "kiosk-worklist-en")
    item.tap()
    engineer.wait_for_url(f"**/cases/{job}?structure=bone")
    wait_js(engineer, LOADED, timeout_s=120)
    assert engineer.locator("#editor-title").inner_text() == "Bone"  # the structure of the worklist item selected
    assert engineer.locator("#approve-btn").count() == 0 and engineer.locator("#lesion-panel").count() == 0
    show_slices(engineer)

    rev = box.api(f"/api/jobs/{job}/revisions/{base}")[1]
    labels = load_volume(store / f"rev-{base:04d}" / "labels.nii.gz", "SEG", "label")
    bone_label = next(s["label"] for s in rev["structures"] if s["name"] == "bone")
    bone = np.asarray(labels.array) == bone_label
    pieces, _ = ndimage.label(bone, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(pieces.ravel())[1:]
    island = int(np.argmin(np.where(sizes >= 30, sizes, sizes.max() + 1))) + 1
    tapped = tap_at(engineer, centre_of(pieces == island, labels.affine))
    assert pieces[voxel(labels.affine, tapped)] == island
    engineer.locator('.edit-op[data-op="remove_island"]').tap()
    wait_message(engineer, "#edit-msg")
    wait_js(engineer, f"document.getElementById('case-viewer').dataset.revision === '{base + 1}'")
    largest = int(np.argmax(sizes)) + 1
    tapped = tap_at(engineer, centre_of(pieces == largest, labels.affine))
    engineer.locator('.brush-radius[data-mm="2"]').tap()
    engineer.locator('.edit-op[data-op="erase"]').tap()
    wait_message(engineer, "#edit-msg")
    assert engineer.locator("#revision-badge").inner_text() == f"Revision {base + 2} · by Modelling engineer"
    screenshot(engineer, "kiosk-edit-en")
    revisions = box.api(f"/api/jobs/{job}/revisions")[1]
    made = [r for r in revisions["revisions"] if r["revision"] > base]
    assert [(r["ops"][0]["op"], r["author"], r["parent"]) for r in made] == [
        ("remove_island", "ui:engineer", base), ("erase", "ui:engineer", base + 1)]
    assert made[1]["ops"][0]["sphere"] == {"center_lps": tapped, "radius_mm": 2}
    after = load_volume(store / f"rev-{base + 2:04d}" / "labels.nii.gz", "SEG", "label")
    assert not (np.asarray(after.array)[pieces == island] == bone_label).any()  # the island is gone
    assert int((np.asarray(after.array) == bone_label).sum()) < int(bone.sum()) - int(sizes[island - 1])
    watch_e.assert_clean(engineer)
    engineer_ctx.close()

    open_case(surgeon, box.base, job)
    row = surgeon.locator('.structure[data-structure="bone"]')
    assert row.locator(".review-state").get_attribute("data-review-state") == "corrected"
    row.locator(".adjust").tap()
    surgeon.locator("#approve-btn").tap()
    wait_message(surgeon, "#review-msg")
    assert row.locator(".review-state").get_attribute("data-review-state") == "approved"
    screenshot(surgeon, "kiosk-review-approved-en")
    _send_to_pacs(surgeon, box, job, orthanc, base + 2, watch_s)
    screenshot(surgeon, "issue14-pacs-sent-en", "#pacs-export")
    surgeon.locator("#lang-switch").tap()
    surgeon.wait_for_selector('html[lang="zh-CN"]', timeout=60_000)
    wait_js(surgeon, LOADED, timeout_s=120)
    assert surgeon.locator('.structure[data-structure="bone"] .review-state').inner_text() == "已批准"
    screenshot(surgeon, "kiosk-review-approved-zh-CN")
    watch_s.assert_clean(surgeon)
    surgeon_ctx.close()

    detail = box.api(f"/api/jobs/{job}/revisions/{base + 2}")[1]
    assert detail["review"]["bone"]["state"] == "approved" and detail["review"]["bone"]["actor"] == "ui:surgeon"
    assert all(_sha_ok(box, job, r["revision"]) for r in box.api(f"/api/jobs/{job}/revisions")[1]["revisions"])
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in frozen} == frozen  # earlier revisions as they were
    log = AuditLog(box.data_dir / AUDIT_FILENAME)
    actions = [(r.actor, r.action) for r in log.records()]
    for expected in [("ui:surgeon", "structure.correction_requested"), ("ui:engineer", "revision.created"),
                     ("ui:surgeon", "structure.approved")]:  # fmt: skip
        assert expected in actions, actions
    verified = subprocess.run([sys.executable, "-m", "appliance.cli", "audit", "verify", "--data-dir",
                               str(box.data_dir)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
