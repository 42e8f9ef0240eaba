"""The nurse's day on the real thing: ``appliance serve`` as a process, real CT slices sent with dcmtk ``storescu``
(one study uncompressed, one as JPEG 2000 with ``storescu -xv``), Chromium driving the kiosk: sign in with the
keypad, the preset picker (filled from ``GET /api/presets``, the engines' registry), make the model, progress to
done, open the case, lock; the audit trail checked at the end. The API refuses an unknown preset with 400.

No scripted service double here: every state shown is one the real service produced. Every preset of the picker
run to its end is ``test_nurse_presets_slow.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from nurse_served import SAMPLE_CT, STORESCU, ServedBox, rewrite_study, start_box, storescu, wait_complete
from ui_browser import login, new_page, screenshot, wait_js

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.service.preset_choice import preset_names

pytestmark = [
    pytest.mark.serial,
    pytest.mark.skipif(not STORESCU.exists(), reason="dcmtk (storescu) is not installed"),
]
JOB_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedBox, dict[str, str]]]:
    """One served box holding two real studies: ``plain`` (20 slices, sent uncompressed) and ``j2k`` (8 slices,
    JPEG 2000 lossless as scanned, sent with ``storescu -xv``)."""
    tmp = tmp_path_factory.mktemp("nurse-e2e")
    src = sorted(SAMPLE_CT.iterdir())
    served = start_box(tmp)
    try:
        plain_uid, plain = rewrite_study(src, tmp / "plain", "WANG^XIAOMING", decompress=True)
        j2k_uid, j2k = rewrite_study(src[6:14], tmp / "j2k", "LI^HUA", decompress=False)
        storescu(served, plain, jpeg2000=False)
        storescu(served, j2k, jpeg2000=True)
        wait_complete(served, plain_uid, len(plain))
        wait_complete(served, j2k_uid, len(j2k))
        yield served, {"plain": plain_uid, "j2k": j2k_uid}
    finally:
        served.stop()


def card(page: Any, uid: str) -> Any:
    return page.locator(f'article.study[data-study-uid="{uid}"]')


def wait_job_final(page: Any, uid: str, timeout_s: float = JOB_TIMEOUT_S) -> tuple[str, set[str]]:
    """The final state a study's card shows, and every percentage seen on the way."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = card(page, uid).locator(".job").get_attribute("data-state") or ""
        seen.add(card(page, uid).locator(".job-pct").inner_text())
        if state in ("done", "failed", "refused"):
            return state, seen
        time.sleep(0.5)
    raise AssertionError(f"no final state for {uid} within {timeout_s} s; seen {seen}")


@pytest.mark.req("REQ-FUNC-800", "REQ-FUNC-801")
def test_presets_come_from_the_registry_and_unknown_ones_are_refused(box: tuple[ServedBox, dict[str, str]]) -> None:
    served, uids = box
    status, listed = served.api("/api/presets")
    names = [p["name"] for p in listed["presets"]]
    assert status == 200 and names == preset_names() and listed["default"] == "auto"
    assert {"auto", "ct-default", "mr-brain"} <= set(names)
    ct = next(p for p in listed["presets"] if p["name"] == "ct-default")
    assert ct["modalities"] == ["CT"]
    for wrong in ("ct_default", "pack:no-such-network", ""):
        status, body = served.api(f"/api/studies/{uids['plain']}/reconstruct", {"preset": wrong, "actor": "nurse"})
        assert status == 400 and repr(wrong) in body["error"] and "ct-default" in body["error"], body
    assert served.api(f"/api/jobs?study={uids['plain']}")[1]["jobs"] == []  # refused before any job existed


@pytest.mark.req("REQ-ACQ-003", "REQ-FUNC-802")
def test_jpeg2000_sent_with_storescu_xv_is_stored_as_sent(box: tuple[ServedBox, dict[str, str]]) -> None:
    served, uids = box
    stored = sorted((served.data_dir / "studies" / uids["j2k"]).rglob("*.dcm"))
    assert len(stored) == 8
    syntaxes = {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in stored}
    assert syntaxes == {"1.2.840.10008.1.2.4.90"}  # JPEG 2000 lossless, never re-encoded on the way in
    status, study = served.api(f"/api/studies/{uids['j2k']}")
    assert status == 200 and study["series"][0]["modality"] == "CT"
    assert not [f for f in study["findings"] if f["severity"] in ("refusal", "error")], study["findings"]


@pytest.mark.req("REQ-FUNC-801", "REQ-FUNC-802", "REQ-HCI-800", "REQ-HCI-801", "REQ-HCI-802")
def test_nurse_signs_in_makes_the_model_opens_and_locks(box: tuple[ServedBox, dict[str, str]], browser: Any) -> None:
    served, uids = box
    context, page, watch = new_page(browser)
    login(page, served.base, "nurse")
    page.wait_for_url("**/inbox")
    study = card(page, uids["j2k"])  # the 8-slice study keeps the real reconstruction short
    study.wait_for()
    assert card(page, uids["plain"]).is_visible()
    assert "LI HUA" in study.locator(".patient").inner_text()
    assert page.locator("#pacs-panel").count() == 1  # the real inbox carries "Find on PACS" (hidden: no node here)
    # Before the model is made: the acquisition checks with their requirement IDs, and the series' thumbnail.
    coarse = study.locator('.findings li[data-code="slices_too_coarse"]')
    assert coarse.count() == 1 and "Requirement REQ-ACQ-801" in coarse.inner_text()
    assert "portal-venous" in study.locator('.findings li[data-code="contrast_phase"]').inner_text()
    thumb = study.locator("img.thumb")
    wait_js(page, f"[...document.querySelectorAll('article.study[data-study-uid=\"{uids['j2k']}\"] img.thumb')]"
                  ".some(i => i.complete && i.naturalWidth === 128)")  # fmt: skip
    assert thumb.count() == 1 and thumb.get_attribute("src", timeout=1000).endswith("/thumbnail.png")
    picker = study.locator(".preset")
    wait_js(page, f"document.querySelector('article.study[data-study-uid=\"{uids['j2k']}\"] .preset').options.length")
    options = picker.locator("option").evaluate_all("os => os.map(o => o.value)")
    assert options == preset_names() and picker.input_value() == "auto"
    labels = picker.locator("option").evaluate_all("os => os.map(o => o.textContent)")
    assert "CT body" in labels and "MR brain" in labels  # the catalogue's words for ct-default and mr-brain
    picker.select_option("mr-brain")  # an MR preset on this CT: the API refuses, the nurse reads why, no job
    study.locator(".reconstruct").tap()
    error = page.locator("#inbox-error")
    error.wait_for(state="visible")
    assert "'mr-brain' segments MR" in error.inner_text() and not study.locator(".reconstruct").is_disabled()
    assert served.api(f"/api/jobs?study={uids['j2k']}")[1]["jobs"] == []
    watch.console_errors[:] = [e for e in watch.console_errors if "409" not in e]  # the refused request itself
    picker.select_option("ct-default")
    study.locator(".reconstruct").tap()
    assert error.is_hidden()
    state, seen = wait_job_final(page, uids["j2k"])
    assert state == "done", study.locator(".job-why").inner_text()
    assert "100%" in seen
    screenshot(page, "nurse-e2e-done")
    jobs = served.api(f"/api/jobs?study={uids['j2k']}")[1]["jobs"]
    assert [(j["preset"], j["state"], j["requested_by"]) for j in jobs] == [("ct-default", "done", "ui:nurse")]
    study.locator(".open-case").tap()
    page.wait_for_url(f"**/cases/{jobs[0]['id']}")
    wait_js(page, "document.getElementById('case-viewer').dataset.loaded === '1'", timeout_s=60)
    assert page.locator("#usb-export").count() == 1  # the real viewer carries "Export to USB"
    page.locator("#lock-btn").tap()
    page.wait_for_url("**/login?locked=1")
    assert page.locator(".patient").count() == 0
    watch.assert_clean(page)
    context.close()

    log = AuditLog(served.data_dir / AUDIT_FILENAME)
    assert log.verify() == []
    actions = [(r.actor, r.action) for r in log.records()]
    for expected in [("ui:nurse", "login.success"), ("ui:nurse", "reconstruction.requested"),
                     ("service:worker", "reconstruction.finished"), ("ui:nurse", "session.locked")]:  # fmt: skip
        assert expected in actions, actions
    # the nurse's own records, in order (a job the box started by itself may be recorded before she signs in)
    order = [a for who, a in actions if who == "ui:nurse"]
    assert order.index("login.success") < order.index("reconstruction.requested") < order.index("session.locked")
    (requested,) = [r for r in log.records(action="reconstruction.requested") if r.actor == "ui:nurse"]
    assert requested.details["preset"] == "ct-default"



def _soft_tissue_seed(image: Any) -> tuple[list[float], float]:
    """A voxel well inside soft tissue (20..60 HU, its 5x5 in-plane neighbourhood too): LPS mm and its HU."""
    import numpy as np
    from scipy import ndimage

    hu = image.array.astype(np.float32)
    calm = (ndimage.minimum_filter(hu, (5, 5, 1)) > 20) & (ndimage.maximum_filter(hu, (5, 5, 1)) < 60)
    ijk = np.argwhere(calm)[int(calm.sum()) // 2]
    return [float(v) for v in image.affine[:3, :3] @ ijk + image.affine[:3, 3]], float(hu[tuple(ijk)])


@pytest.mark.req("REQ-FUNC-1090", "REQ-TRACE-1002")
def test_a_lesion_is_marked_on_a_job_of_the_real_service(box: tuple[ServedBox, dict[str, str]]) -> None:
    """Over HTTP on the served box: a real reconstruction, then bad lesion requests (each a named 400 or a 409,
    nothing written), two requests racing on one base (one wins), the lesion with its margin table, and an audit
    trail that verifies."""
    import subprocess
    import sys
    import threading

    from appliance.io.nifti import load_volume

    served, uids = box
    status, job = served.api(f"/api/studies/{uids['plain']}/reconstruct", {"preset": "ct-default"})
    assert status == 202, job
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while job["state"] not in ("done", "failed", "refused") and time.monotonic() < deadline:
        time.sleep(1)
        job = served.api(f"/api/jobs/{job['id']}")[1]
    assert job["state"] == "done", job
    lesions = f"/api/jobs/{job['id']}/lesions"
    seed, hu = _soft_tissue_seed(load_volume(served.data_dir / "outputs" / f"job-{job['id']}" / "image.nii.gz",
                                             "CT", "HU"))  # fmt: skip
    good = {"seed_lps": seed, "window": [hu - 15, hu + 15], "max_radius_mm": 10, "margins_mm": [5, 10], "base": 0}
    for bad, code, field in (({**good, "seed_lps": "here"}, 400, "seed_lps"),
                             ({**good, "margins_mm": [-5]}, 400, "ops[2].margins_mm[0]"),
                             ({**good, "seed_lps": [1e6, 0, 0]}, 400, "ops[1].seed_lps"),
                             ({"from_structure": "liver"}, 400, "from_structure"),
                             ({**good, "base": 4}, 409, None)):  # fmt: skip
        status, answer = served.api(lesions, bad)
        assert (status, answer.get("field")) == (code, field), answer
    assert [r["revision"] for r in served.api(f"/api/jobs/{job['id']}/revisions")[1]["revisions"]] == [0]
    results: list[tuple[int, Any]] = []
    racers = [threading.Thread(target=lambda: results.append(served.api(lesions, good))) for _ in range(2)]
    for t in racers:
        t.start()
    for t in racers:
        t.join(120)
    assert sorted(s for s, _ in results) == [201, 409], results
    created = next(a for s, a in results if s == 201)
    assert created["lesion"] == "lesion" and created["margins_mm"] == [5, 10] and created["margin_table"]["rows"]
    status, listed = served.api(lesions)
    assert status == 200 and listed["revision"] == 1 and listed["lesions"][0]["margin_table"] == created["margin_table"]
    log = AuditLog(served.data_dir / AUDIT_FILENAME)
    (record,) = log.records(action="lesion.created")
    assert record.actor == "api:token" and record.details["revision"] == 1
    verified = subprocess.run([sys.executable, "-m", "appliance.cli", "audit", "verify", "--data-dir",
                               str(served.data_dir)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
