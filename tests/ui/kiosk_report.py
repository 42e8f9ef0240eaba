"""The case's report as the kiosk opens it (issue 15): the draft offered while structures are unapproved, its lesion
section read back (headings and table rows) and compared with the kiosk's margin table and ``GET lesions``."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from kiosk_review import margin_table
from ui_browser import Watch, wait_js


class _Tables(HTMLParser):
    """The report's ``<h3>`` headings and table rows (cell texts), in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[str, Any]] = []
        self._text: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("h3", "td", "th"):
            self._text = []
        elif tag == "tr":
            self._row = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "h3" and self._text is not None:
            self.items.append(("h3", "".join(self._text)))
            self._text = None
        elif tag in ("td", "th") and self._text is not None and self._row is not None:
            self._row.append("".join(self._text).strip())
            self._text = None
        elif tag == "tr" and self._row is not None:
            self.items.append(("tr", self._row))
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def lesion_rows(report_html: str, lesion: str) -> list[list[str]]:
    """The table rows of the report's section of ``lesion`` (from its heading to the next lesion's)."""
    parser = _Tables()
    parser.feed(report_html)
    rows: list[list[str]] | None = None
    for kind, value in parser.items:
        if kind == "h3":
            if rows is not None:
                break
            if re.search(rf"\b{re.escape(lesion)}\b", value):
                rows = []
        elif rows is not None:
            rows.append(value)
    assert rows, f"no section for {lesion} in the report"
    return rows


def kiosk_cells(page: Any) -> list[tuple[str, str, str]]:
    """The margin table as the surgeon reads it: (shown name, nearest mm, ml inside) per row."""
    return [tuple(r) for r in page.eval_on_selector_all(  # type: ignore[misc]
        "#margin-table tbody tr[data-structure]",
        "rs => rs.map(r => [r.cells[0].textContent, r.cells[2].textContent, r.cells[3].textContent])")]



def report_matches_kiosk(page: Any, watch: Watch, lesion: str, shown_name: str, listed: dict[str, Any]) -> str:
    """Tap Report on the case screen (nothing approved yet: the kiosk names the unapproved structures and offers
    the draft), open the draft and check its section of ``lesion`` against the kiosk's table (the very text of each
    cell) and against ``listed`` (the lesion as GET lesions gives it); returns the report's HTML."""
    api_rows = {r["structure"]: r for r in listed["margin_table"]["rows"]}
    shown, cells = margin_table(page), kiosk_cells(page)
    page.locator("#report-link").tap()
    wait_js(page, "!document.getElementById('report-draft').classList.contains('hidden')", timeout_s=300)
    assert shown_name in page.locator("#report-msg").inner_text()  # named as the kiosk names it
    refused = [e for e in watch.console_errors if "409" in e]
    assert len(refused) == 1, watch.console_errors  # the service's refusal, which the kiosk turned into the offer
    watch.console_errors.remove(refused[0])
    watch.assert_clean(page)
    with page.expect_navigation(timeout=300_000) as navigation:
        page.locator("#report-draft").tap()
    answer = navigation.value
    assert answer is not None and answer.status == 200
    report: str = answer.text()
    assert 'id="override-unapproved"' in report  # the draft says in red that it holds unapproved structures
    rows = lesion_rows(report, lesion)
    volume_ml = next(m["value"] for m in listed["measurements"] if m["kind"] == "lesion_volume")
    assert rows[1][0] == f"{volume_ml:,.2f}"  # the facts table: volume, longest diameter, RECIST
    assert page.locator("#lesion-volume").count() == 0  # the report page, not the case screen
    by_name = {r[0]: r for r in rows[2:] if len(r) == 3}  # structure, nearest mm, ml in the one shell
    for (name, nearest, ml), (s, _, _, _) in zip(cells, shown, strict=True):
        assert by_name[name][1:] == [nearest, ml], (name, by_name[name], nearest, ml)  # the kiosk's very text
        assert float(by_name[name][1]) == pytest.approx(api_rows[s]["min_distance_mm"], abs=0.05)
        assert float(by_name[name][2]) == pytest.approx(api_rows[s]["volume_in_shell_ml"][0], abs=0.005)
    return report
