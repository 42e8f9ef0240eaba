"""The nurse's inbox in Chromium says which USB stick is safe to remove (the box released it after the import)
and which was kept because its import failed, with the reason (REQ-FUNC-1900, REQ-SAFE-1901). The import reports
are the service's own (appliance.service.importer); the VM test releases a real stick."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from ui_browser import Kiosk, login, new_page

from appliance.service.importer import ImportReport
from appliance.service.usb_release import StickRelease


def _report(device: str, age_s: float, stored: int, release: StickRelease) -> ImportReport:
    now = time.time()
    report = ImportReport(device, now - age_s - 5, now - age_s, stored=stored)
    report.release = release
    return report


@pytest.mark.req("REQ-FUNC-1900", "REQ-SAFE-1901")
def test_inbox_says_which_stick_is_safe_to_remove_and_which_failed(browser: Any, kiosk: Kiosk) -> None:
    released = _report("sda", 30, 8, StickRelease("sda", "released"))
    failed = _report("sdb", 5, 0, StickRelease("sdb", "kept", "the import failed: no DICOM images found on the medium"))
    failed.skip("README.TXT", "not a DICOM image file")
    earlier = _report("sdc", 3600, 1, StickRelease("sdc", "released"))  # an hour ago: no longer shown
    releasing = _report("sdd", 1, 4, StickRelease("sdd", "releasing"))
    kiosk.service.importer = SimpleNamespace(reports=[earlier, released, failed, releasing])
    context, page, watch = new_page(browser)
    try:
        login(page, kiosk.base, "nurse")
        page.wait_for_selector('#usb-sticks li[data-device="sdb"]')
        assert page.locator('#usb-sticks li[data-device="sda"]').inner_text() == (
            "USB stick sda: 8 images taken. Safe to remove.")  # fmt: skip
        kept = page.locator('#usb-sticks li[data-device="sdb"]')
        assert kept.get_attribute("role") == "alert" and "refusal" in (kept.get_attribute("class") or "")
        assert kept.inner_text() == ("USB stick sdb was NOT released: the import failed: no DICOM images found on "
                                     "the medium. Take it out, check it, and tell the service engineer.")  # fmt: skip
        assert "releasing the stick" in page.locator('#usb-sticks li[data-device="sdd"]').inner_text()
        assert page.locator('#usb-sticks li[data-device="sdc"]').count() == 0
        releasing.release = StickRelease("sdd", "released")  # the root helper unmounted it meanwhile
        page.wait_for_selector('#usb-sticks li[data-device="sdd"][data-state="released"]', timeout=10_000)
        watch.assert_clean(page)
    finally:
        context.close()
        kiosk.service.importer = None
