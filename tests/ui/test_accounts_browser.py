"""The service screen's accounts in Chromium (the kiosk app over the scripted service): the service engineer adds
a surgeon with a badge, gives another a new PIN and disables one, in English and in Chinese; the account book the
CLI uses holds exactly that, and the page shows no PIN or badge."""

from __future__ import annotations

from typing import Any

import pytest
from ui_browser import Kiosk, login, new_page, screenshot, wait_js

from appliance.people import AccountBook

LOADED = "document.getElementById('accounts').dataset.loaded === '1'"


@pytest.mark.req("REQ-FUNC-1423", "REQ-TRACE-1008")
def test_service_engineer_adds_resets_and_disables_people(browser: Any, kiosk: Kiosk) -> None:
    context, page, watch = new_page(browser)
    login(page, kiosk.base, "service")
    page.goto(f"{kiosk.base}/service")
    wait_js(page, LOADED)
    for name, role, pin, badge in (("li.wei", "surgeon", "4711", "04A1B2C3D4"), ("chen.jie", "engineer", "7014", "")):
        page.fill("#account-name", name)
        page.select_option("#account-role", role)
        page.fill("#account-pin", pin)
        page.fill("#account-badge", badge)
        page.locator("#account-add-btn").tap()
        wait_js(page, f"document.querySelector('tr[data-account=\"{name}\"]') !== null")
        assert page.locator("#accounts-msg").inner_text() == f"{name} can sign in now."
    page.fill("#account-name", "Li Wei")  # refused, naming the field; nothing added
    page.fill("#account-pin", "1234")
    page.locator("#account-add-btn").tap()
    wait_js(page, "document.getElementById('accounts-msg').dataset.field === 'name'")
    assert page.locator("#accounts-msg").inner_text().startswith("Not changed: a name is")
    assert len(watch.console_errors) == 1 and "400" in watch.console_errors[0]  # the refused request itself
    watch.console_errors.clear()
    row = page.locator('tr[data-account="li.wei"]')
    assert "Surgeon" in row.inner_text() and "yes" in row.inner_text()
    screenshot(page, "issue14-accounts-en", "#accounts")
    row.locator(".account-new-pin").fill("8642")
    row.locator(".account-reset").tap()
    wait_js(page, "document.getElementById('accounts-msg').textContent.includes('new PIN')")
    page.locator('tr[data-account="chen.jie"] .account-disable').tap()
    wait_js(page, "document.querySelector('tr[data-account=\"chen.jie\"]').dataset.enabled === 'false'")
    book = AccountBook(kiosk.data_dir)
    assert [(a.name, a.role, a.enabled, a.badge_hash is not None) for a in book.accounts()] == [
        ("li.wei", "surgeon", True, True), ("chen.jie", "engineer", False, False)]
    assert book.sign_in("8642", name="li.wei") is not None
    assert "4711" not in page.content() and "04A1B2C3D4" not in page.content()
    page.locator("#lang-switch").tap()
    page.wait_for_selector('html[lang="zh-CN"]')
    wait_js(page, LOADED)
    assert page.locator("#accounts-title").inner_text() == "登录人员"
    assert "已停用" in page.locator('tr[data-account="chen.jie"]').inner_text()
    screenshot(page, "issue14-accounts-zh-CN", "#accounts")
    watch.assert_clean(page)
    context.close()
