"""A TotalSegmentator-size case on the kiosk (issue 13, item 6): 117 named classes plus the phantom's own four
structures, listed by category, each group folded, show/hide per group, readable in en and zh-CN.

The scene is ui_phantom's case with one small sphere per class of TotalSegmentator's ``total`` task (the names come
from the shipped class map, as the imported pack set names them), so every name is one the terminology
table must know; the service is the tests' scripted one (the list is built from the GLB and the manifest alone).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ui_browser import Kiosk, Watch, login, new_page, screenshot, start_kiosk, wait_js
from ui_phantom import write_case

from appliance.core import terminology

pytestmark = pytest.mark.req("REQ-HCI-706")


def total_classes() -> list[str]:
    """The structure names of TotalSegmentator's 117 ``total`` classes as an imported pack set produces them."""
    from engines.nnunet.totalsegmentator import total_structures

    return [s.name for s in total_structures()]


@pytest.fixture(scope="module")
def many_kiosk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    folder = tmp_path_factory.mktemp("many-case")
    write_case(folder, extra_names=total_classes())
    k = start_kiosk(tmp_path_factory.mktemp("many-kiosk"), folder)
    yield k
    k.stop()


@pytest.fixture
def page(browser: Any, many_kiosk: Kiosk) -> Iterator[tuple[Any, Watch]]:
    context, pg, watch = new_page(browser)
    login(pg, many_kiosk.base, "surgeon")
    pg.goto(f"{many_kiosk.base}/cases/{many_kiosk.done_job}")
    wait_js(pg, "document.getElementById('case-viewer').dataset.loaded === '1'", timeout_s=90)
    yield pg, watch
    context.close()


def groups(pg: Any) -> dict[str, list[str]]:
    """Structures by the category group they are listed in, in screen order."""
    rows: list[list[Any]] = pg.eval_on_selector_all(
        ".structure-group",
        "gs => gs.map(g => [g.dataset.category, [...g.querySelectorAll('.structure')].map(r => r.dataset.structure)])",
    )
    return {category: names for category, names in rows}


def visible(pg: Any, names: list[str]) -> list[bool]:
    return [bool(v) for v in pg.evaluate("ns => ns.map(n => window.viewer.isVisible(n))", names)]


def test_many_structures_are_listed_by_category_with_show_hide_per_group(page: tuple[Any, Watch]) -> None:
    pg, watch = page
    names = total_classes()
    listed = groups(pg)
    assert sum(len(v) for v in listed.values()) == len(names) + 4  # 117 classes + the phantom's four
    order = list(terminology.CATEGORIES)
    assert list(listed) == sorted(listed, key=order.index)  # groups in the table's category order
    for name in names:  # every class in the group of its terminology category
        assert name in listed[terminology.category(name)], name
    assert {"organ", "vessel", "bone", "muscle"} <= set(listed)
    # folded until opened: no row of a group is on screen, then the vessels' rows are
    assert pg.locator(".structure-group .structure:visible").count() == 0
    vessels = pg.locator('.structure-group[data-category="vessel"]')
    vessels.locator(".group-fold").tap()
    assert vessels.locator(".group-fold").get_attribute("aria-expanded") == "true"
    assert vessels.locator(".structure:visible").count() == len(listed["vessel"])
    # one tap hides every bone, and only the bones; a second shows them again
    bones = pg.locator('.structure-group[data-category="bone"] .group-toggle')
    assert "· " + str(len(listed["bone"])) in bones.inner_text()
    bones.tap()
    assert bones.get_attribute("aria-pressed") == "false"
    assert not any(visible(pg, listed["bone"])) and all(visible(pg, listed["organ"]))
    screenshot(pg, "many-structures-grouped")
    bones.tap()
    assert all(visible(pg, listed["bone"]))
    # hiding the last visible vessel row by itself turns the vessels' group button off
    for row in vessels.locator(".structure .toggle").all():
        row.tap()
    assert vessels.locator(".group-toggle").get_attribute("aria-pressed") == "false"
    watch.assert_clean(pg)


def test_groups_read_in_chinese_and_keep_their_state_across_the_language_switch(page: tuple[Any, Watch]) -> None:
    pg, watch = page
    listed = groups(pg)
    pg.locator('.structure-group[data-category="muscle"] .group-toggle').tap()
    pg.locator("#lang-switch").tap()
    pg.wait_for_selector('html[lang="zh-CN"]')
    wait_js(pg, "document.getElementById('case-viewer').dataset.loaded === '1'", timeout_s=90)
    muscle = pg.locator('.structure-group[data-category="muscle"] .group-toggle')
    assert muscle.inner_text().startswith("肌肉") and muscle.get_attribute("aria-pressed") == "false"
    assert not any(visible(pg, listed["muscle"])) and all(visible(pg, listed["organ"]))
    shown = pg.eval_on_selector_all(".structure .label", "ls => ls.map(l => l.textContent)")
    named = {n: terminology.display_name(n, "zh-CN") for n in total_classes()}
    assert set(named.values()) <= set(shown)  # every class under its Chinese name
    assert not any(n.replace("_", " ") in shown for n in total_classes())  # no identifier shown as a name
    watch.assert_clean(pg)
