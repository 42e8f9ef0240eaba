"""Named people at the kiosk login in a real browser against the real service (issue 14 item 1): `appliance serve`
as a child process, accounts made with the real `appliance users add` (PIN from standard input), Chromium driving
the login screen: the surgeon taps her name and types her PIN on the keypad; another time her badge reader types
the badge and Enter, then the PIN. The audit trail names her (`ui:surgeon:li.wei`) for both logins and for the
lock, and verifies."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from nurse_served import ROOT, ServedBox, start_box
from ui_browser import PINS, new_page, screenshot

from appliance.audit import AUDIT_FILENAME, AuditLog

pytestmark = [pytest.mark.req("REQ-TRACE-1435"), pytest.mark.serial]

PERSON, PIN, BADGE = "li.wei", "4711", "04A1B2C3D4"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBox]:
    tmp = tmp_path_factory.mktemp("named")
    box = start_box(tmp)
    add = subprocess.run([sys.executable, "-m", "appliance.cli", "users", "add", PERSON, "--role", "surgeon",
                          "--badge", BADGE, "--data-dir", str(box.data_dir)],
                         input=PIN + "\n", capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert add.returncode == 0, add.stderr
    yield box
    box.stop()


def _keypad(page: Any, pin: str) -> None:
    for digit in pin:
        page.click(f'#keypad button[data-key="{digit}"]')
    page.click('#keypad button[data-key="ok"]')


def test_a_surgeon_signs_in_by_name_and_by_badge_and_the_audit_names_her(served: ServedBox, browser: Any) -> None:
    context, page, watch = new_page(browser)
    page.goto(f"{served.base}/login")
    page.click('.role-btn[data-role="surgeon"]')
    assert page.locator('.people[data-people-role="surgeon"]').is_visible()
    _keypad(page, PIN)  # no name chosen yet: the page asks for it and sends nothing
    assert page.locator("#login-msg").is_visible() and "/login" in page.url
    page.click(f'.person-btn[data-person="{PERSON}"]')
    screenshot(page, "named-login-person")
    _keypad(page, PIN)
    page.wait_for_url(lambda url: "/login" not in url)
    page.click("#lock-btn")
    page.wait_for_url(lambda url: "/login" in url)
    page.keyboard.type(BADGE)  # what the USB badge reader types
    page.keyboard.press("Enter")
    assert page.locator("#badge-msg").is_visible()
    _keypad(page, PIN)
    page.wait_for_url(lambda url: "/login" not in url)
    watch.assert_clean(page)
    context.close()
    audit = AuditLog(served.data_dir / AUDIT_FILENAME)
    logins = [(r.actor, r.details.get("person")) for r in audit.records(action="login.success")]
    assert logins == [(f"ui:surgeon:{PERSON}", PERSON)] * 2
    assert [r.actor for r in audit.records(action="session.locked")] == [f"ui:surgeon:{PERSON}"]
    assert audit.records(action="login.failure") == []
    assert [r.actor for r in audit.records(action="user.added")] == ["cli:users"]
    assert audit.verify() == []


def test_the_surgeon_role_pin_no_longer_opens_the_kiosk(served: ServedBox) -> None:
    req = urllib.request.Request(f"{served.base}/auth/login", method="POST",
                                 data=json.dumps({"role": "surgeon", "pin": PINS["surgeon"]}).encode(),
                                 headers={"Content-Type": "application/json", "Origin": served.base})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=15)
    assert refused.value.code == 400 and json.loads(refused.value.read())["field"] == "person"

