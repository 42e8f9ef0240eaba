"""The nurse's "Find on PACS" and "Export to USB" panels in Chromium, against a real Orthanc and a real service.

The service runs in this process (receiver on a real DICOM port, the kiosk app `appliance serve` builds, served by
werkzeug); Orthanc holds the real CT series. The panels are the shipped partials (``pacs_panel.html``,
``usb_export_panel.html``) on a page of the kiosk's base layout, as ``inbox.html`` / ``viewer.html`` include them.
The nurse signs in on the keypad, searches by patient ID, fetches the study (all 20 images arrive through the
receiver), and exports a finished case to the plugged-in stick until it says it is safe to remove.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from flask import render_template_string
from helpers.data import ROOT
from helpers.orthanc import start_orthanc
from helpers.print_case import make_case
from svc_helpers import PATIENT_ID, free_port, make_config, prepare_ct_series
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from appliance.commands.serve import create_web_app
from appliance.service.api_token import issue_api_token
from appliance.service.runtime import ApplianceService

pytestmark = [pytest.mark.serial]
CHROMIUM = Path("/usr/bin/chromium")
NURSE_PIN = "1111"
SCREENSHOTS = ROOT / "build" / "ui-screenshots"
PAGE = '{% extends "base.html" %}{% block main %}{% include "PARTIAL" %}{% endblock %}'
logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def kiosk(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[dict[str, Any]]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt install chromium)")
    tmp = tmp_path_factory.mktemp("kiosk")
    box_dicom, orthanc_dicom = free_port(), free_port()
    pacs = start_orthanc(tmp / "orthanc", orthanc_dicom, free_port(), {"box": ["EDGE3D", "127.0.0.1", box_dicom]})
    study_uid, files = prepare_ct_series(shared_data, tmp / "ct")
    pacs.load(files)
    (tmp / "media" / "KINGSTON").mkdir(parents=True)
    config = make_config(
        tmp / "data", dicom={"port": box_dicom, "allowed": [{"ae_title": "ORTHANC", "host": "127.0.0.1"}]},
        pacs={"nodes": [{"name": "PACS", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc_dicom}]},
        reconstruction={"auto": False}, ui={"pins": {"nurse": generate_password_hash(NURSE_PIN, "pbkdf2:sha256:1000")}},
        **{"import": {"watch_dir": str(tmp / "media")}},
    )  # fmt: skip
    svc = ApplianceService(config)
    svc.start(importer=False)
    app = create_web_app(config, svc, api_token=issue_api_token(svc.data_dir))
    app.add_url_rule("/test/find-on-pacs", "test_pacs",
                     lambda: render_template_string(PAGE.replace("PARTIAL", "pacs_panel.html")))  # fmt: skip
    app.add_url_rule("/test/case/<int:job_id>", "test_case", lambda job_id: render_template_string(
        PAGE.replace("PARTIAL", "usb_export_panel.html"), job_id=job_id))  # fmt: skip
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])  # fmt: skip
        yield {"svc": svc, "base": f"http://127.0.0.1:{server.server_port}", "browser": browser, "tmp": tmp,
               "study_uid": study_uid, "sops": {pydicom.dcmread(f).SOPInstanceUID for f in files}}  # fmt: skip
        browser.close()
    server.shutdown()
    svc.stop()
    pacs.stop()


def _wait(page: Any, expression: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := page.evaluate(expression)):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s} s for {expression}")
        time.sleep(0.1)
    return value


def _nurse_page(kiosk: dict[str, Any]) -> tuple[Any, list[str], list[str]]:
    context = kiosk["browser"].new_context(viewport={"width": 1280, "height": 800}, has_touch=True)
    outside: list[str] = []
    errors: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith((kiosk["base"], "data:", "blob:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{kiosk['base']}/login")
    page.click('.role-btn[data-role="nurse"]')
    for digit in NURSE_PIN:
        page.click(f'#keypad button[data-key="{digit}"]')
    page.click('#keypad button[data-key="ok"]')
    page.wait_for_url(lambda url: "/login" not in url)
    return page, outside, errors


@pytest.mark.req("REQ-FUNC-850", "REQ-FUNC-851", "REQ-OUT-861")
def test_nurse_finds_fetches_and_exports_to_usb(kiosk: dict[str, Any], shared_data: Path) -> None:
    svc = kiosk["svc"]
    page, outside, errors = _nurse_page(kiosk)
    page.goto(f"{kiosk['base']}/test/find-on-pacs")
    _wait(page, "!document.getElementById('pacs-panel').classList.contains('hidden')")
    page.fill('input[name="patient_id"]', PATIENT_ID)
    page.click("#pacs-search")
    _wait(page, "document.querySelectorAll('#pacs-results li').length === 1")
    assert "DOE JANE" in page.inner_text("#pacs-results li .who")
    page.click("#pacs-results li .retrieve")
    status = _wait(page, "(e => e.classList.contains('ok') && e.textContent)(document.querySelector('.fetch-status'))")
    assert "20" in status, status
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "find_on_pacs.png"))  # for the closing note
    assert svc.catalogue.study(kiosk["study_uid"]).n_instances == 20
    stored = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
              for p in (svc.data_dir / "studies" / kiosk["study_uid"]).rglob("*.dcm")}  # fmt: skip
    assert stored == kiosk["sops"]
    # the study's finished model, then "Export to USB" on its case page
    job_id = svc.request_reconstruction(kiosk["study_uid"], "ui:nurse")
    svc.catalogue.claim_job()
    out = svc.worker.final_dir(job_id)
    out.mkdir(parents=True)
    make_case(shared_data, out)
    svc.catalogue.update_job(job_id, state="done", output_dir=str(out), manifest_path=str(out / "manifest.json"))
    page.goto(f"{kiosk['base']}/test/case/{job_id}")
    _wait(page, "!document.getElementById('usb-export').classList.contains('hidden') && "
                "document.getElementById('usb-medium').options.length === 1")  # fmt: skip
    assert page.eval_on_selector_all('input[name="structure"]', "els => els.map(e => e.value)") == ["body", "bone"]
    page.uncheck('input[name="structure"][value="body"]')
    page.uncheck('input[name="format"][value="pdf"]')
    page.click("#usb-go")
    done = _wait(page, "(e => e.classList.contains('ok') && e.textContent)(document.getElementById('usb-status'))")
    assert "Safe to remove" in done, done
    page.screenshot(path=str(SCREENSHOTS / "export_to_usb.png"))
    folder = kiosk["tmp"] / "media" / "KINGSTON" / f"EDGE3D-job-{job_id}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"EDGE3D-job-{job_id}_bone.stl", f"EDGE3D-job-{job_id}.3mf", f"EDGE3D-job-{job_id}.amf", "SHA256SUMS"])
    assert svc.audit.records(action="export.usb")[-1].actor == "ui:nurse"
    assert outside == [] and errors == []
