"""Every preset of the kiosk's picker, tapped by the nurse on a real study in the real served box (``slow``: each
preset that runs is a real reconstruction on the CPU). Whatever the registry lists (``auto``, ``ct-default``,
``mr-brain``, network packs as ``pack:NAME``), a tap ends in a model (done), a refusal with its reason, or the
API's refusal shown in the inbox; never in a failed job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from nurse_served import SAMPLE_CT, STORESCU, ServedBox, rewrite_study, start_box, storescu, wait_complete
from ui_browser import login, new_page, wait_js

from appliance.service.preset_choice import preset_names

pytestmark = [
    pytest.mark.slow,
    pytest.mark.serial,
    pytest.mark.skipif(not STORESCU.exists(), reason="dcmtk (storescu) is not installed"),
]
JOB_TIMEOUT_S = 900.0


def _js_card(uid: str) -> str:
    """JavaScript for a study's card element."""
    return "document.querySelector('article.study[data-study-uid=\"" + uid + "\"]')"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedBox, str]]:
    tmp = tmp_path_factory.mktemp("nurse-presets")
    served = start_box(tmp)
    try:
        uid, files = rewrite_study(sorted(SAMPLE_CT.iterdir())[6:14], tmp / "j2k", "ZHAO^LEI", decompress=False)
        storescu(served, files, jpeg2000=True)
        wait_complete(served, uid, len(files))
        yield served, uid
    finally:
        served.stop()


@pytest.fixture(scope="module")
def nurse_page(box: tuple[ServedBox, str], browser: Any) -> Iterator[Any]:
    served, _uid = box
    context, page, _watch = new_page(browser)
    login(page, served.base, "nurse")
    yield page
    context.close()


@pytest.mark.req("REQ-FUNC-800", "REQ-FUNC-801", "REQ-FUNC-802")
@pytest.mark.parametrize("preset", preset_names())
def test_each_preset_of_the_picker_ends_in_a_model_or_a_stated_refusal(
    preset: str, box: tuple[ServedBox, str], nurse_page: Any
) -> None:
    served, uid = box
    page = nurse_page
    page.goto(f"{served.base}/inbox")
    card = page.locator(f'article.study[data-study-uid="{uid}"]')
    card.wait_for()
    wait_js(page, f"{_js_card(uid)}.querySelector('.preset').options.length")
    assert card.locator(".preset option").evaluate_all("os => os.map(o => o.value)") == preset_names()
    wait_js(page, f"!{_js_card(uid)}.querySelector('.reconstruct').disabled", timeout_s=JOB_TIMEOUT_S)
    before = {j["id"] for j in served.api(f"/api/jobs?study={uid}")[1]["jobs"]}
    card.locator(".preset").select_option(preset)
    card.locator(".reconstruct").tap()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        error = page.locator("#inbox-error")
        if error.is_visible() and error.inner_text():  # refused by the API: no job, the reason on the screen
            assert repr(preset) in error.inner_text(), error.inner_text()
            assert {j["id"] for j in served.api(f"/api/jobs?study={uid}")[1]["jobs"]} == before
            return
        jobs = [j for j in served.api(f"/api/jobs?study={uid}")[1]["jobs"] if j["id"] not in before]
        if jobs and jobs[0]["state"] in ("done", "failed", "refused"):
            job = jobs[0]
            assert job["preset"] == preset and job["state"] != "failed", job.get("error")
            wait_js(page, f"{_js_card(uid)}.querySelector('.job').dataset.state === '{job['state']}'")
            if job["state"] == "refused":
                assert card.locator(".job-why").inner_text()
            else:
                assert card.locator(".open-case").is_visible()
            return
        time.sleep(1.0)
    raise AssertionError(f"preset {preset}: no outcome within {JOB_TIMEOUT_S} s")
