"""The PDF report in English and Simplified Chinese, printed on the box by headless Chromium, from a real-CT case:
it opens as a PDF, holds the structure names in the report's language (and their identifiers), the review state,
the findings and the versions, uses no network, and leaves the HTML report as it was."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers.pdf_text import normalised, pdf_text
from helpers.print_case import make_case

from appliance.core import terminology
from appliance.export.errors import PdfReportError
from appliance.export.pdf_report import CHROMIUM_FLAGS, build_pdf_html, report_figures, write_pdf_report
from appliance.export.report_text import structure_name

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
                                reason="Chromium (Debian package 'chromium') is not installed")  # fmt: skip

REVIEWS = [{"structure": "bone", "decision": "rejected", "actor": "ui:surgeon", "note": "recheck pelvis"},
           {"structure": "bone", "decision": "approved", "actor": "ui:surgeon", "note": ""}]  # fmt: skip


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Any]:
    case = tmp_path_factory.mktemp("case")
    make_case(shared_data, case)
    before = hashlib.sha256((case / "report.html").read_bytes()).hexdigest()
    pdfs = {lang: write_pdf_report(case, case / f"report-{lang}.pdf", "EDGE3D-job-7", lang, REVIEWS)
            for lang in ("en", "zh-CN")}  # fmt: skip
    return {"case": case, "pdfs": pdfs, "html_sha256": before}


@pytest.mark.req("REQ-OUT-864")
def test_pdf_in_both_languages_names_the_structures(printed: dict[str, Any]) -> None:
    texts = {}
    for lang, pdf in printed["pdfs"].items():
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF") and len(data) > 50_000
        texts[lang] = normalised(pdf_text(data))
    for name in ("body", "bone"):
        english, chinese = terminology.display_name(name, "en"), terminology.display_name(name, "zh-CN")
        assert normalised(english) in texts["en"] and normalised(chinese) in texts["zh-CN"], name
        assert name in texts["en"] and name in texts["zh-CN"]  # the identifier the files carry
    assert normalised("3D model report · EDGE3D-job-7") in texts["en"]
    assert normalised("三维模型报告") in texts["zh-CN"]
    assert normalised("approved by ui:surgeon") in texts["en"] and normalised("已批准") in texts["zh-CN"]
    assert normalised("not reviewed") in texts["en"] and normalised("未审核") in texts["zh-CN"]  # body
    assert "ct_no_trachea" in texts["en"] and "ct_no_trachea" in texts["zh-CN"]  # findings
    assert normalised("Appliance software0.1.0") in texts["en"] and normalised("设备软件0.1.0") in texts["zh-CN"]
    assert normalised("三维模型, 前视图") in texts["zh-CN"]  # the report's pictures with translated captions


@pytest.mark.req("REQ-OUT-864")
def test_pdf_page_is_offline_and_html_report_unchanged(printed: dict[str, Any]) -> None:
    case = printed["case"]
    report = (case / "report.html").read_text(encoding="utf-8")
    assert hashlib.sha256(report.encode()).hexdigest() == printed["html_sha256"]
    pictures = report_figures(report)
    assert len(pictures) >= 4 and all(png.startswith(b"\x89PNG") for _, png in pictures)
    import json

    page = build_pdf_html(json.loads((case / "manifest.json").read_text()), pictures, {}, "EDGE3D-job-7", "zh-CN")
    assert "default-src 'none'" in page and "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == len(pictures)
    assert "--host-resolver-rules=MAP * ~NOTFOUND" in CHROMIUM_FLAGS


@pytest.mark.req("REQ-OUT-864")
def test_structure_names_and_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert structure_name("lung_left", "zh-CN") == "左肺" and structure_name("lung_left", "en") == "Left lung"
    # the report names structures exactly as the kiosk does (one terminology table)
    for identifier in ("lesion_margin_2p5mm", "liver", "vessels_contrast", "lesion_1_margin_10mm"):
        for language in ("en", "zh-CN"):
            assert structure_name(identifier, language) == terminology.display_name(identifier, language)
    assert structure_name("lesion_margin_2p5mm", "zh-CN") == "病灶（2.5 mm 安全边界）"
    assert structure_name("lesion_1_margin_10mm", "zh-CN") == "lesion 1（10 mm 安全边界）"
    assert structure_name("ctx_lh_insula", "zh-CN") == "左侧岛叶"  # brain parcels are named in the report too
    assert structure_name("phantom_box", "zh-CN") == "phantom box"  # unknown: shown, never dropped
    with pytest.raises(PdfReportError, match="no report language"):
        build_pdf_html({}, [], {}, "x", "fr")
    with pytest.raises(PdfReportError, match="no readable manifest"):
        write_pdf_report(tmp_path, tmp_path / "r.pdf", "x", "en")
    (tmp_path / "manifest.json").write_text("{}")
    monkeypatch.setenv("APPLIANCE_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(PdfReportError, match="install the Debian package 'chromium'"):
        write_pdf_report(tmp_path, tmp_path / "r.pdf", "x", "en")
    assert not (tmp_path / "r.pdf").exists()
