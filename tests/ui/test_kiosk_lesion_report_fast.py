"""The lesion at the kiosk up to the report, in Chromium over the in-process service of test_kiosk_review_fast.py
(the same half-resolution real CT): the surgeon names the lesion on the on-screen keyboard, marks it with a 10 mm
margin, opens the report from the case screen (the draft, since nothing is approved yet) and reads the same numbers
as the kiosk's table and ``GET lesions``; then takes a network's lesion class (a structure of category lesion) as
a lesion from the panel's structure choice, and a lesion label file brought on USB with the study ("lesion from USB
label"). The served-process twin is test_kiosk_review_e2e.py (slow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kiosk_report import report_matches_kiosk
from kiosk_review import centre_of, margin_table, open_case, page_for, show_slices, soft_tissue, tap_at, wait_message
from test_kiosk_review_fast import served  # noqa: F401  (the module's served box, made afresh for this module)
from ui_browser import login, screenshot, wait_js

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.core import Volume
from appliance.io.nifti import save_volume
from appliance.service.usb_labels import USB_LABELS_DIR, UsbLabelStore

pytestmark = [pytest.mark.serial]


def _api(box: dict[str, Any], path: str, body: dict[str, Any] | None = None) -> Any:
    client = box["client"]
    r = client.get(path, headers=box["headers"]) if body is None else client.post(path, json=body,
                                                                                   headers=box["headers"])
    assert r.status_code in (200, 201), r.get_json()
    return r.get_json()


@pytest.mark.req("REQ-FUNC-1550", "REQ-HCI-1552", "REQ-SAFE-1433")
def test_lesion_named_on_the_keyboard_and_reported_with_the_kiosk_numbers(browser: Any, served: Any) -> None:  # noqa: F811
    job, volume = served["job"], served["volume"]
    calm = soft_tissue(volume.array.astype(np.float32), size=3)
    context, page, watch = page_for(browser)
    login(page, served["base"], "surgeon")
    open_case(page, served["base"], job)
    show_slices(page)
    tap_at(page, centre_of(calm, volume.affine))
    page.locator("#lesion-name").tap()  # the on-screen keyboard comes up
    assert page.locator("#lesion-name-keyboard").is_visible()
    for _ in range(len(page.locator("#lesion-name").input_value())):
        page.locator('#lesion-name-keyboard .key[data-key="backspace"]').tap()
    for key in ["t", "u", "m", "o", "r", "space", "a", "7"]:
        page.locator(f'#lesion-name-keyboard .key[data-key="{key}"]').tap()
    assert page.locator("#lesion-name").input_value() == "tumor_a7"
    screenshot(page, "issue15-keyboard-en")
    page.locator('#lesion-name-keyboard .key[data-key="done"]').tap()
    assert not page.locator("#lesion-name-keyboard").is_visible()
    page.locator('.lesion-margin[data-mm="10"]').tap()
    page.locator("#lesion-mark").tap()
    wait_message(page, "#lesion-msg")
    (lesion,) = _api(served, f"/api/jobs/{job}/lesions")["lesions"]
    assert lesion["name"] == "tumor_a7" and lesion["margin_table"]["margins_mm"] == [10.0]
    assert "tumor_a7" in page.locator("#lesion-volume").inner_text()
    api_rows = {r["structure"]: r for r in lesion["margin_table"]["rows"]}
    shown = margin_table(page)
    assert shown and [(s, mm) for s, mm, _, _ in shown] == [(s, 10.0) for s, _, _, _ in shown]
    for s, _, nearest, ml in shown:  # the kiosk shows the API's numbers
        assert (nearest, ml) == (api_rows[s]["min_distance_mm"], api_rows[s]["volume_within_ml"][0])
    page.locator("#margin-table").scroll_into_view_if_needed()
    screenshot(page, "issue15-lesion-table-en")
    report_matches_kiosk(page, watch, "tumor_a7", "tumor a7", lesion)
    actions = [(r.actor, r.action, r.details.get("export")) for r in AuditLog(served["svc"].data_dir / AUDIT_FILENAME)
               .records()]  # fmt: skip
    assert ("ui:surgeon", "export.override_unapproved", "report") in actions
    watch.assert_clean(page)
    context.close()


@pytest.mark.req("REQ-FUNC-1551", "REQ-HCI-1552", "REQ-FUNC-1553", "REQ-FUNC-1555")
def test_network_lesion_class_and_usb_label_taken_as_lesions_at_the_kiosk(browser: Any, served: Any,  # noqa: F811
                                                                          tmp_path: Path) -> None:
    job, volume = served["job"], served["volume"]
    calm = soft_tissue(volume.array.astype(np.float32), size=3)
    listed = _api(served, f"/api/jobs/{job}/revisions")
    first = np.asarray(centre_of(calm, volume.affine))  # where the first test's lesion is: the cyst lies elsewhere
    ijk = np.indices(calm.shape).reshape(3, -1).T
    lps = ijk @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    far = (np.linalg.norm(lps - first, axis=1) > 60).reshape(calm.shape)
    centre = centre_of(calm & far, volume.affine)
    elsewhere = far & (np.linalg.norm(lps - np.asarray(centre), axis=1) > 45).reshape(calm.shape)
    usb_centre = np.asarray(centre_of(calm & elsewhere, volume.affine))  # a label file brought on the study's stick
    drawn = (np.linalg.norm(lps - usb_centre, axis=1) <= 10).reshape(calm.shape).astype(np.uint8)
    save_volume(Volume(drawn, volume.affine, "SEG", "label"), tmp_path / "drawn.nii.gz")
    kept = UsbLabelStore(served["svc"].data_dir / USB_LABELS_DIR).keep(
        (tmp_path / "drawn.nii.gz").read_bytes(), "drawn.nii.gz", "STICK", [served["svc"].catalogue.job(job).study_uid])
    made = _api(served, f"/api/jobs/{job}/revisions", {"base": listed["current"], "reason": "network class", "ops": [
        {"op": "new_structure", "name": "kidney_cyst_left", "color": [200, 200, 60], "category": "lesion"},
        {"op": "paint", "structure": "kidney_cyst_left", "sphere": {"center_lps": centre, "radius_mm": 14}}]})
    assert "kidney_cyst_left" in [s["name"] for s in made["structures"]]
    context, page, watch = page_for(browser)
    login(page, served["base"], "surgeon")
    open_case(page, served["base"], job)
    choice = page.locator("#lesion-source")
    assert choice.input_value() == "kidney_cyst_left"  # the lesion class is offered first
    assert choice.locator('optgroup[data-group="lesion.group_classes"] option').count() == 1
    assert choice.locator('option[value="tumor_a7"]').count() == 0  # a lesion with its shells is not offered again
    page.locator('.lesion-margin[data-mm="10"]').tap()
    page.locator("#lesion-take").tap()
    wait_message(page, "#lesion-msg")
    lesions = {x["name"]: x for x in _api(served, f"/api/jobs/{job}/lesions")["lesions"]}
    taken = lesions[page.locator("#lesion-name").input_value()]
    assert taken["margin_table"]["margins_mm"] == [10.0]
    detail = _api(served, f"/api/jobs/{job}/revisions/{made['revision'] + 1}")
    assert "kidney_cyst_left" not in [s["name"] for s in detail["structures"]]
    painted = next(m["value"] for m in taken["measurements"] if m["kind"] == "lesion_volume")
    assert painted == pytest.approx(4 / 3 * np.pi * 14**3 / 1000, rel=0.35)  # the cyst's voxels, now the lesion's
    expected = [(r["structure"], 10.0, r["min_distance_mm"], r["volume_within_ml"][0])
                for r in taken["margin_table"]["rows"] if r["category"] != "margin" and r["volume_within_ml"][0] > 0]
    assert margin_table(page) == expected
    page.locator("#margin-table").scroll_into_view_if_needed()
    screenshot(page, "issue15-from-structure-en")
    wait_js(page, f"!!document.querySelector('#lesion-source option[value=\"usb:{kept.label_id}\"]')")
    assert "drawn.nii.gz" in choice.locator(f'option[value="usb:{kept.label_id}"]').inner_text()
    choice.select_option(f"usb:{kept.label_id}")  # "lesion from USB label"
    page.locator("#lesion-take").tap()
    wait_message(page, "#lesion-msg")
    lesions = {x["name"]: x for x in _api(served, f"/api/jobs/{job}/lesions")["lesions"]}
    from_usb = lesions[page.locator("#lesion-name").input_value()]
    usb_ml = next(m["value"] for m in from_usb["measurements"] if m["kind"] == "lesion_volume")
    assert usb_ml == pytest.approx(drawn.sum() * abs(np.linalg.det(volume.affine[:3, :3])) / 1000, rel=1e-6)
    assert margin_table(page) == [(r["structure"], 10.0, r["min_distance_mm"], r["volume_within_ml"][0])
                                  for r in from_usb["margin_table"]["rows"]
                                  if r["category"] != "margin" and r["volume_within_ml"][0] > 0]
    page.locator("#margin-table").scroll_into_view_if_needed()
    screenshot(page, "issue15-usb-label-en")
    page.locator("#lang-switch").tap()
    page.wait_for_selector('html[lang="zh-CN"]', timeout=60_000)
    wait_js(page, "document.getElementById('case-viewer').dataset.loaded === '1'", timeout_s=120)
    assert page.locator("#lesion-take").inner_text() == "作为病灶"
    page.locator("#lesion-source").scroll_into_view_if_needed()
    screenshot(page, "issue15-lesion-source-zh-CN")
    page.locator("#lesion-name").tap()
    assert page.locator('#lesion-name-keyboard .key[data-key="space"]').inner_text() == "空格"
    screenshot(page, "issue15-keyboard-zh-CN")
    watch.assert_clean(page)
    context.close()
