"""Two-step publish on the real thing (issue 17): ``appliance serve`` as a process, the demo's real CT (20 slices)
sent with dcmtk ``storescu``, every mesh format asked for, Chromium driving the kiosk. The nurse taps "make the
model" in the inbox; a second tab holds the case screen from the moment the job exists. The models appear on the
case screen while the late exports (STL, OBJ, PLY, 3MF, report, manifest: about 4 s of this study's run) are still
being written, with the "exports still being written" banner and no report or export control; the inbox offers to
open the case saying so; once the job is done the case screen loads again with the report and the USB export. The
audit trail records requested, started, viewable and finished, in that order.

What the screens showed is read from the pages themselves: the inbox's job box through a MutationObserver the test
installs, the case screen's own record of each time it showed the models (``case-shown-<job>`` in sessionStorage).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from nurse_served import SAMPLE_CT, STORESCU, ServedBox, rewrite_study, start_box, storescu, wait_complete
from playwright.sync_api import Error as PlaywrightError
from ui_browser import login, new_page, screenshot, wait_js

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.export import FORMATS
from ui.i18n import translate

pytestmark = [
    pytest.mark.serial,
    pytest.mark.skipif(not STORESCU.exists(), reason="dcmtk (storescu) is not installed"),
]
JOB_TIMEOUT_S = 240.0

#: Records every change of the study card's job box (state, the Open button, the stage line), in the page.
_OBSERVE_INBOX = """uid => {
  const card = document.querySelector(`article.study[data-study-uid="${uid}"]`);
  const box = card.querySelector('.job');
  window.jobSeen = [];
  const note = () => window.jobSeen.push({
    state: box.dataset.state || '', open: !card.querySelector('.open-case').classList.contains('hidden'),
    stage: card.querySelector('.job-stage').textContent,
  });
  new MutationObserver(note).observe(card, { subtree: true, attributes: true, childList: true, characterData: true });
}"""


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedBox, str]]:
    tmp = tmp_path_factory.mktemp("viewable-e2e")
    served = start_box(tmp, formats=tuple(FORMATS))
    try:
        study_uid, files = rewrite_study(sorted(SAMPLE_CT.iterdir()), tmp / "study", "ZHAO^LEI", decompress=True)
        storescu(served, files, jpeg2000=False)
        wait_complete(served, study_uid, len(files))
        yield served, study_uid
    finally:
        served.stop()


@pytest.mark.req("REQ-FUNC-1890", "REQ-FUNC-1891")
def test_the_case_screen_shows_the_models_while_the_exports_are_written(
    box: tuple[ServedBox, str], browser: Any
) -> None:
    served, uid = box
    context, inbox, watch = new_page(browser)
    login(inbox, served.base, "nurse")
    inbox.wait_for_url("**/inbox")
    card = inbox.locator(f'article.study[data-study-uid="{uid}"]')
    card.wait_for()
    wait_js(inbox, f"document.querySelector('article.study[data-study-uid=\"{uid}\"] .preset').options.length")
    card.locator(".preset").select_option("ct-default")
    inbox.evaluate(_OBSERVE_INBOX, uid)
    card.locator(".reconstruct").tap()
    job_id = int(wait_js(inbox, f"document.querySelector('article.study[data-study-uid=\"{uid}\"] .job')"
                                ".dataset.jobId"))  # fmt: skip
    case = context.new_page()  # the case screen, opened while the job is still running: it follows the job
    case.goto(f"{served.base}/cases/{job_id}")
    assert case.locator("#usb-export").count() == 0 and case.locator("#report-link").is_hidden()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    shown: list[dict[str, Any]] = []
    asked_early: list[dict[str, tuple[int, Any]]] = []  # answers of the real service while the job was viewable
    while time.monotonic() < deadline and not any(s["state"] == "done" for s in shown):
        if len(asked_early) < 2 and served.api(f"/api/jobs/{job_id}")[1]["state"] == "viewable":
            answers = {
                "manifest": served.api(f"/api/jobs/{job_id}/files/manifest.json"),
                "DICOM export": served.api(f"/api/jobs/{job_id}/export", {}),
                "approval": served.api(f"/api/jobs/{job_id}/structures/body/review", {"decision": "approve"}),
            }
            if served.api(f"/api/jobs/{job_id}")[1]["state"] == "viewable":  # every answer given while viewable
                asked_early.append(answers)
        try:
            shown = json.loads(case.evaluate(f"sessionStorage.getItem('case-shown-{job_id}') || '[]'"))
            if len(shown) == 1 and shown[0]["state"] == "viewable" and case.locator("#exports-pending").is_visible():
                screenshot(case, "viewable-exports-pending")
        except PlaywrightError:  # the screen loads again when the job is done (its record survives in the tab)
            pass
        time.sleep(0.2)
    job = served.api(f"/api/jobs/{job_id}")[1]
    assert job["state"] == "done", job
    # the models were on screen before the job was done, saying the exports were still being written
    assert [s["state"] for s in shown] == ["viewable", "done"], shown
    # asked too early, the real service named the wait and changed nothing (the manifest, an export, an approval)
    assert asked_early, "no request reached the service while the job was viewable"
    for answers in asked_early:
        for what, (status, body) in answers.items():
            assert status in (404, 409), (what, status, body)
            assert f"job {job_id}" in body["error"] and "viewable" in body["error"], (what, body)
    early, final = shown
    pending = translate("en", "viewer.exports_pending")
    assert early["structures"] >= 2 and early["pending"] and early["pendingText"] == pending and not early["report"]
    assert final["structures"] == early["structures"] and not final["pending"] and final["report"]
    case.wait_for_function("document.getElementById('case-viewer').dataset.loaded === '1'")
    assert case.locator("#usb-export").count() == 1 and case.locator("#exports-pending").is_hidden()
    assert case.evaluate("document.getElementById('case-viewer').dataset.exports") == "done"
    # the inbox offered the case while its files were written, never called it done before it was
    wait_js(inbox, f"document.querySelector('article.study[data-study-uid=\"{uid}\"] .job').dataset.state === 'done'")
    seen = inbox.evaluate("window.jobSeen")
    states = [s["state"] for s in seen]
    viewable = [s for s in seen if s["state"] == "viewable"]
    assert viewable and all(s["open"] and s["stage"] == translate("en", "job.exports_pending") for s in viewable)
    assert states.index("viewable") < states.index("done") and "failed" not in states
    assert not any(s["open"] for s in seen if s["state"] in ("queued", "running"))
    watch.assert_clean(inbox)
    context.close()

    log = AuditLog(served.data_dir / AUDIT_FILENAME)
    assert log.verify() == []
    order = [r.action for r in log.records() if r.action.startswith("reconstruction.")
             and (r.details.get("job") == job_id or r.action == "reconstruction.requested")]
    assert order == ["reconstruction.requested", "reconstruction.started", "reconstruction.viewable",
                     "reconstruction.finished"], order
    (finished,) = log.records(action="reconstruction.finished")
    assert finished.details["state"] == "done"
