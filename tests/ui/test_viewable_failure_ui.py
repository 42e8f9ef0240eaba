"""The case screen of a ``viewable`` job whose late exports then fail (issue 17, two-step publish), in Chromium.

The kiosk app with the real JSON API and catalogue over the scripted service (tests/ui/ui_service_double.py); the
test plays the worker: the job is ``viewable`` with an unfinished folder holding what the pipeline writes first
(viewable.json, scene.glb, the image), then ``failed`` with the writer's error as the real worker records it. The
real pipeline and worker are tests/ui/test_viewable_e2e.py and tests/service/test_viewable_publish.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from ui_browser import STUDY_OK, Kiosk, login, new_page, screenshot, wait_js

from ui.i18n import translate

ERROR = "OSError: [Errno 28] No space left on device: 'meshes/bone.3mf'"


def _unfinished(case_dir: Path, folder: Path) -> Path:
    """The phantom case as the pipeline leaves it at "meshes viewable": no manifest, no report, viewable.json."""
    shutil.copytree(case_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").unlink()
    (folder / "report.html").unlink(missing_ok=True)
    viewable = {"state": "viewable", "input": manifest["input"], "structures": manifest["structures"],
                "findings": manifest.get("findings", []),
                "files": {k: v for k, v in manifest["files"].items() if k not in ("report", "manifest")}}
    (folder / "viewable.json").write_text(json.dumps(viewable))
    return folder


@pytest.mark.req("REQ-FUNC-1891", "REQ-SAFE-1892")
def test_a_late_export_failure_is_named_on_the_screen_showing_the_models(
    kiosk: Kiosk, case_dir: Path, browser: Any, tmp_path: Path
) -> None:
    catalogue = kiosk.service.catalogue
    job_id = catalogue.add_job(STUDY_OK, preset="ct-default", requested_by="test")
    folder = _unfinished(case_dir, tmp_path / ".tmp-job")
    catalogue.update_job(job_id, state="viewable", stage="exports still being written", progress=0.86,
                         output_dir=str(folder))
    context, page, watch = new_page(browser)
    login(page, kiosk.base, "surgeon")
    page.goto(f"{kiosk.base}/cases/{job_id}")
    wait_js(page, "document.getElementById('case-viewer').dataset.loaded === '1'", timeout_s=60)
    assert page.locator("#exports-pending").inner_text() == translate("en", "viewer.exports_pending")
    assert page.locator("#report-link").is_hidden() and page.locator("#approve-btn").count() == 0
    assert page.locator("#structures .structure").count() >= 2
    asked = page.evaluate("""async (id) => {
      const manifest = await fetch(`/api/jobs/${id}/files/manifest.json`);
      const review = await fetch('/ui/api/review', {method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({job_id: id, structure: 'bone', decision: 'approve', note: ''})});
      return [manifest.status, (await manifest.json()).error, review.status, (await review.json()).error];
    }""", job_id)
    assert asked[0] == 409 and "still being written" in asked[1], asked
    assert asked[2] == 409 and f"job {job_id} is not done" in asked[3], asked

    catalogue.update_job(job_id, state="failed", stage="failed", error=ERROR, output_dir=None)
    wait_js(page, "document.getElementById('case-viewer').dataset.exports === 'failed'", timeout_s=30)
    message = page.locator("#viewer-msg")
    assert message.is_visible() and message.inner_text() == translate("en", "viewer.exports_failed", error=ERROR)
    assert page.locator("#exports-pending").is_hidden() and page.locator("#report-link").is_hidden()
    screenshot(page, "viewable-then-failed")
    watch.console_errors[:] = [e for e in watch.console_errors if "409" not in e]  # the two refused requests
    watch.assert_clean(page)
    context.close()
