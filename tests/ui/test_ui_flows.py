"""Nurse, service and session flows in headless Chromium: inbox, reconstruct with live progress (SSE, a dropped
stream, polling fallback), refusal, language switch, touch-target sizes and axe-core, idle lock and PIN entry."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ui_browser import (
    STUDY_DONE,
    STUDY_OK,
    STUDY_REFUSED,
    Kiosk,
    Watch,
    login,
    new_page,
    screenshot,
    start_kiosk,
    wait_js,
)
from ui_service_double import ALARM

from appliance.audit import AuditLog
from ui.assets import UI_DIR
from ui.i18n import catalogue

AXE = UI_DIR / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="module")
def nurse(browser: Any, kiosk: Kiosk) -> Iterator[tuple[Any, Watch]]:
    context, page, watch = new_page(browser)
    login(page, kiosk.base, "nurse")
    page.wait_for_selector("article.study")
    yield page, watch
    context.close()


def card(page: Any, uid: str) -> Any:
    return page.locator(f'article.study[data-study-uid="{uid}"]')


def job_id_shown(page: Any, uid: str) -> str:
    return str(card(page, uid).locator(".job").get_attribute("data-job-id") or "")


def follow_job(page: Any, uid: str, previous: str = "", timeout_s: float = 30.0) -> list[tuple[str, str, int]]:
    """Sample (state, stage, percent) shown in a study's card until the job after ``previous`` is final."""
    seen: list[tuple[str, str, int]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = page.evaluate(
            """uid => { const c = document.querySelector(`article.study[data-study-uid="${uid}"]`);
            const j = c.querySelector('.job'); return [j.dataset.state || '', c.querySelector('.job-stage').textContent,
            Number(c.querySelector('.progress').getAttribute('aria-valuenow')), j.dataset.jobId || '']; }""",
            uid,
        )
        if s.pop() == previous:
            time.sleep(0.05)
            continue
        if not seen or tuple(s) != seen[-1]:
            seen.append(tuple(s))
        if s[0] in ("done", "failed", "refused"):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"job did not finish: {seen}")


@pytest.mark.req("REQ-HCI-010", "REQ-HCI-014", "REQ-PRIV-401", "REQ-SAFE-403")
def test_inbox_lists_studies_series_findings_and_usb_status(nurse: tuple[Any, Watch]) -> None:
    page, watch = nurse
    assert page.locator("article.study").count() == 3
    ok = card(page, STUDY_OK)
    assert ok.locator(".patient").inner_text() == "WANG XIAOMING"
    assert "CT Abdomen 1.0 mm — 3 images" in ok.locator(".series-list").inner_text()
    assert "network (scanner/PACS)" in ok.locator(".study-meta").inner_text()
    refused = card(page, STUDY_REFUSED)
    finding = refused.locator(".findings li.refusal")
    assert "Slices are missing between 40 mm and 52 mm" in finding.inner_text()
    assert "USB stick" in refused.locator(".study-meta").inner_text()
    assert card(page, STUDY_DONE).locator(".open-case").is_visible()
    status = page.locator("#import-status")
    assert "USB import: finished" in status.inner_text() and "20 files imported, 1 skipped" in status.inner_text()
    assert page.locator("#alarms li").inner_text() == ALARM
    screenshot(page, "inbox")
    watch.assert_clean(page)


@pytest.mark.req("REQ-HCI-011", "REQ-HCI-012")
def test_progress_shows_stages_survives_a_dropped_stream_and_ends_done(nurse: tuple[Any, Watch], kiosk: Kiosk) -> None:
    page, watch = nurse
    streams: list[str] = []

    def drop_first_stream(route: Any) -> None:
        streams.append(route.request.url)
        if len(streams) > 1:
            route.fallback()
            return
        job_id = int(re.search(r"/jobs/(\d+)/events", route.request.url).group(1))  # type: ignore[union-attr]
        job = kiosk.service.catalogue.job(job_id).to_dict()
        body = f"retry: 300\n\nevent: job\ndata: {json.dumps(job)}\n\n"  # one event, then the connection closes
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route("**/api/jobs/*/events", drop_first_stream)
    ok = card(page, STUDY_OK)
    assert ok.locator(".preset").input_value() == "auto"
    ok.locator(".reconstruct").tap()
    seen = follow_job(page, STUDY_OK)
    page.unroute("**/api/jobs/*/events")
    assert seen[-1] == ("done", "", 100)
    intermediate = [s for s in seen if s[0] == "running" and 0 < s[2] < 100]
    assert len({s[2] for s in intermediate}) >= 2, seen
    en = catalogue("en")
    assert {en["stage.segment"], en["stage.mesh"]} <= {s[1] for s in seen}, seen
    assert len(streams) >= 2  # the stream was dropped and the page reconnected
    assert ok.locator(".job-state").inner_text() == "Done" and ok.locator(".open-case").is_visible()
    screenshot(page, "inbox-job-done")
    job = kiosk.service.catalogue.jobs(study_uid=STUDY_OK)[0]
    assert (job.preset, job.requested_by) == ("auto", "ui:nurse")
    watch.assert_clean(page)


@pytest.mark.req("REQ-HCI-011", "REQ-HCI-012")
def test_polling_takes_over_when_events_are_unavailable(nurse: tuple[Any, Watch], kiosk: Kiosk) -> None:
    page, watch = nurse
    polls: list[str] = []
    page.route("**/api/jobs/*/events", lambda route: route.abort())
    page.on("request", lambda r: polls.append(r.url) if re.search(r"/api/jobs/\d+$", r.url) else None)
    ok = card(page, STUDY_OK)
    ok.locator(".preset").select_option("ct-default")
    previous = job_id_shown(page, STUDY_OK)
    ok.locator(".reconstruct").tap()
    seen = follow_job(page, STUDY_OK, previous)
    page.unroute("**/api/jobs/*/events")
    assert seen[-1] == ("done", "", 100)
    assert any(0 < s[2] < 100 for s in seen) and len(polls) >= 2  # polled every 1.5 s while running
    assert kiosk.service.catalogue.jobs(study_uid=STUDY_OK)[0].preset == "ct-default"
    watch.console_errors.clear()  # the aborted event streams are logged by Chromium as failed loads
    watch.assert_clean(page)


@pytest.mark.req("REQ-HCI-013")
def test_refused_series_says_why(nurse: tuple[Any, Watch]) -> None:
    page, watch = nurse
    refused = card(page, STUDY_REFUSED)
    refused.locator(".reconstruct").tap()
    seen = follow_job(page, STUDY_REFUSED)
    assert seen[-1][0] == "refused"
    why = refused.locator(".job-why")
    assert why.is_visible()
    assert why.inner_text().startswith("Not reconstructed because:") and "Slices are missing" in why.inner_text()
    assert refused.locator(".job-state").inner_text() == "Refused" and not refused.locator(".open-case").is_visible()
    screenshot(page, "inbox-refused")
    watch.assert_clean(page)


def _labels(page: Any) -> dict[str, str]:
    return dict(
        page.evaluate(
            """[...document.querySelectorAll('[data-i18n]')]
            .map((e, i) => [`${i}:${e.dataset.i18n}`, e.textContent.trim()])
            .concat([...document.querySelectorAll('[data-i18n-aria]')].map((e, i) => [`a${i}:${e.dataset.i18nAria}`,
            e.getAttribute('aria-label')]))"""
        )
    )


@pytest.mark.req("REQ-HCI-004", "REQ-PRIV-401")
def test_language_switch_changes_every_label_and_uses_the_shipped_cjk_font(browser: Any, kiosk: Kiosk) -> None:
    context, page, watch = new_page(browser)
    fonts: list[str] = []
    page.on("request", lambda r: fonts.append(r.url) if "/fonts/" in r.url else None)
    login(page, kiosk.base, "surgeon")
    ready = {
        "/inbox": "document.querySelectorAll('article.study').length === 3",
        f"/cases/{kiosk.done_job}": "document.getElementById('case-viewer').dataset.loaded === '1'",
    }
    for url, loaded in ready.items():
        page.goto(kiosk.base + url)
        wait_js(page, loaded)
        english = _labels(page)
        assert len(english) > 10
        page.locator("#lang-switch").tap()
        page.wait_for_selector('html[lang="zh-CN"]')
        wait_js(page, loaded)
        chinese = _labels(page)
        assert chinese.keys() == english.keys()
        same = {k: v for k, v in chinese.items() if not v or v == english[k]}
        assert not same, f"labels not translated: {same}"
        assert page.evaluate(
            "document.fonts.ready.then(() => document.fonts.check('20px \"Noto Sans CJK SC Kiosk\"', '收件箱'))"
        )
        screenshot(page, f"zh-CN{url.replace('/', '-')}")
        page.locator("#lang-switch").tap()
        page.wait_for_selector('html[lang="en"]')
        wait_js(page, loaded)
        assert _labels(page) == english
    assert fonts and all(f.startswith(kiosk.base) for f in fonts)
    watch.assert_clean(page)
    context.close()


TARGETS_JS = (Path(__file__).resolve().parent / "ui_targets.js").read_text(encoding="utf-8")


def _check_screen(page: Any, label: str) -> None:
    result = page.evaluate(TARGETS_JS)
    assert result["count"] > 0
    assert result["small"] == [], f"{label}: targets under 48 px (64 for primary): {result['small']}"
    assert result["close"] == [], f"{label}: targets closer than 8 px: {result['close']}"
    assert result["tiny"] == [], f"{label}: text under 18 px: {result['tiny']}"
    if not AXE.is_file():
        pytest.fail("ui/node_modules/axe-core is missing: run `bash tools/build_ui_vendor.sh` (npm ci)")
    page.evaluate(AXE.read_text(encoding="utf-8"))
    violations = page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v =>"
        " ({id: v.id, help: v.help, nodes: v.nodes.slice(0, 4).map(n => n.target.join(' '))})))"
    )
    assert violations == [], f"{label}: axe-core violations: {violations}"


@pytest.mark.req("REQ-HCI-001", "REQ-HCI-003", "REQ-HCI-005", "REQ-HCI-050", "REQ-PRIV-402")
def test_touch_targets_text_size_and_axe_on_every_screen(browser: Any, kiosk: Kiosk) -> None:
    context, page, watch = new_page(browser)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{kiosk.base}/login")
    _check_screen(page, "login")
    login(page, kiosk.base, "surgeon")
    page.wait_for_selector("article.study")
    _check_screen(page, "inbox")
    page.goto(f"{kiosk.base}/cases/{kiosk.done_job}")
    wait_js(page, "document.getElementById('case-viewer').dataset.loaded === '1'")
    page.locator('.structure[data-structure="phantom_box"] .adjust').tap()
    page.locator("#clip-btn").tap()
    page.locator("#measure-btn").tap()
    _check_screen(page, "viewer 3D with editor, clip and measure")
    page.locator("#mode-2d").tap()
    wait_js(page, "window.slices && window.slices.ready")
    _check_screen(page, "viewer slices")
    page.locator("#lock-btn").tap()
    page.wait_for_url("**/login?locked=1")
    requests.clear()
    login(page, kiosk.base, "service")
    wait_js(
        page,
        "document.querySelectorAll('#health div').length > 3 && document.querySelectorAll('#versions div').length > 3",
    )
    health = page.locator("#health").inner_text()
    assert "Processor" in health and "Memory" in health and "Graphics processor" in health
    assert "three@0.187.0" in page.locator("#versions").inner_text()
    assert page.locator("#update-status").inner_text().strip()
    assert "waiting" in page.locator("#queue").inner_text()
    _check_screen(page, "service")
    screenshot(page, "service")
    assert not [u for u in requests if "/api/studies" in u or "/api/jobs" in u]  # no patient data on this screen
    watch.assert_clean(page)
    context.close()


@pytest.mark.req("REQ-PRIV-400", "REQ-HCI-030", "REQ-TRACE-400")
def test_idle_lock_hides_patient_data_and_the_pin_unlocks(browser: Any, tmp_path: Path, case_dir: Path) -> None:
    k = start_kiosk(tmp_path, case_dir, ui={"idle_lock_seconds": 3})
    try:
        context, page, watch = new_page(browser)
        page.goto(f"{k.base}/login")
        page.click('.role-btn[data-role="nurse"]')
        for digit in "1234":
            page.click(f'#keypad button[data-key="{digit}"]')
        assert page.locator("#pin-display").inner_text() == "••••"
        page.click('#keypad button[data-key="ok"]')
        page.wait_for_selector("#login-msg:not(.hidden)")
        assert page.locator("#login-msg").inner_text() == "Wrong PIN. 2 tries left before sign-in is blocked."
        login(page, k.base, "nurse")
        page.wait_for_selector("article.study")
        assert "WANG XIAOMING" in page.content()
        page.wait_for_url("**/login?locked=1", timeout=10000)
        assert "WANG" not in page.content() and "XIAOMING" not in page.content()
        assert page.locator("#locked-msg").is_visible()
        assert page.request.get(f"{k.base}/inbox", max_redirects=0).status == 302
        login(page, k.base, "nurse")
        page.wait_for_selector("article.study")
        log = AuditLog(k.data_dir / "audit.sqlite3")
        actions = [
            (r.action, r.details.get("reason")) for r in log.records() if r.action.startswith(("login", "session"))
        ]
        assert actions == [
            ("login.failure", None),
            ("login.success", None),
            ("session.locked", "idle"),
            ("login.success", None),
        ]
        watch.console_errors[:] = [e for e in watch.console_errors if "401" not in e]  # the wrong PIN's answer
        watch.assert_clean(page)
        context.close()
    finally:
        k.stop()
