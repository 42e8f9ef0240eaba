"""The report as PDF, in English and Simplified Chinese, made on the box by the kiosk's own Chromium.

Why Chromium: the box already ships it (the kiosk) with the CJK fonts (Debian ``fonts-noto-cjk``), its
``--print-to-pdf`` lays out and embeds (subsets) those fonts correctly, and the page is plain HTML, so no new
library and no second layout engine for CJK text are needed. The page has no script and no external resource
(pictures are ``data:`` URIs, a Content-Security-Policy forbids everything else) and Chromium runs headless with
networking disabled and host resolution mapped to nothing, so making a PDF cannot reach the network.

Content: case label, reconstruction time, input geometry, preset, device; the report's pictures (taken from
``report.html``, so both documents show the same images); the structures table (colour, volume, triangles, mesh
QA) with the review state (the approved revision of a reviewed case, else the audit trail's decisions); for a
reviewed case the review history, lesions and measurements (:mod:`appliance.export.report_case`) and the override
of the approved-revision rule; the findings; the versions. Nothing identifies the patient: it
all comes from the (already redacted) manifest and report. The HTML report is unchanged.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from appliance.export.common import atomic_write_bytes
from appliance.export.errors import PdfReportError
from appliance.export.report_case import case_sections_html, override_banner
from appliance.export.report_text import LABELS, LANGUAGES, structure_name

#: Where the kiosk's Chromium is (``APPLIANCE_CHROMIUM`` overrides); also looked up on PATH.
CHROMIUM_CANDIDATES: tuple[str, ...] = ("/usr/bin/chromium", "chromium", "chromium-browser")
#: Longest a PDF may take to print (s).
PRINT_TIMEOUT_S = 120.0
#: Flags: headless, no sandbox needs (service user or root), nothing that talks to the network.
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
    "--disable-extensions", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-domain-reliability", "--metrics-recording-only", "--no-pings",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--disable-dev-shm-usage",
    "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw",
)  # fmt: skip

_FIGURE = re.compile(
    r'<figure><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"><figcaption>(.*?)</figcaption></figure>'
)
_CAPTIONS_ZH = (("3D model", "三维模型"), ("anterior view", "前视图"), ("left lateral view", "左侧视图"),
                ("hidden", "已隐藏"), ("structure outlines", "结构轮廓"), ("Axial", "轴位"),
                ("Coronal", "冠状位"), ("Sagittal", "矢状位"), ("slice", "层面"))  # fmt: skip

_STYLE = """
@page{size:A4;margin:14mm}
body{font-family:"Noto Sans CJK SC","Noto Sans","DejaVu Sans","WenQuanYi Zen Hei",sans-serif;color:#1d2329;
font-size:10pt;margin:0}
h1{font-size:17pt;margin:0}h2{font-size:12.5pt;margin:14pt 0 4pt;border-bottom:1px solid #99a}
.sub{color:#444;margin:2pt 0 8pt}table{border-collapse:collapse;width:100%;margin:4pt 0}
th,td{border:1px solid #bbc;padding:2pt 5pt;text-align:left;vertical-align:top}th{background:#eef1f5}
td.num{text-align:right}.sw{display:inline-block;width:9pt;height:9pt;border:1px solid #555}
figure{display:inline-block;width:48%;margin:0 1% 6pt 0;vertical-align:top;break-inside:avoid}
figure img{width:100%}figcaption{font-size:8.5pt;color:#444}.approved{color:#11691f}.rejected{color:#b00020}
tr{break-inside:avoid}.note{color:#444;font-size:8.5pt}.bad{color:#b00020;font-weight:bold}
h3{font-size:10.5pt;margin:8pt 0 2pt}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def report_figures(report_html: str) -> list[tuple[str, bytes]]:
    """The (caption, PNG) pictures embedded in ``report.html``."""
    return [(html.unescape(cap), base64.b64decode(data)) for data, cap in _FIGURE.findall(report_html)]


def _caption(text: str, language: str) -> str:
    if language == "zh-CN":
        for en, zh in _CAPTIONS_ZH:
            text = text.replace(en, zh)
    return text


def latest_reviews(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last decision per structure from review records ``{structure, decision, actor, note}`` in order."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        out[str(r.get("structure", ""))] = dict(r)
    return out


def _num(value: Any, digits: int = 1) -> str:
    return f"{value:,.{digits}f}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def build_pdf_html(
    manifest: Mapping[str, Any], pictures: Sequence[tuple[str, bytes]], reviews: Mapping[str, Mapping[str, Any]],
    case_label: str, language: str,
) -> str:
    """The printable page of one language."""
    if language not in LANGUAGES:
        raise PdfReportError(f"no report language {language!r}; choose from {', '.join(LANGUAGES)}")
    t = LABELS[language]
    yes_no = {True: t["yes"], False: t["no"]}
    inp = manifest.get("input", {})
    prov = manifest.get("provenance", {})
    rows = []
    for s in manifest.get("structures", []):
        name = str(s.get("name", ""))
        r, g, b = [*s.get("color", [200, 200, 200]), 0, 0, 0][:3]
        review = reviews.get(name)
        if s.get("approved") is not None:  # a reviewed case: the state of the exported revision
            review = {"decision": "approved", "actor": s.get("approved_by")} if s.get("approved") else None
        state = str(review.get("decision")) if review else "not_reviewed"
        who = t["review_by"].format(actor=_e(review.get("actor", ""))) if review else ""
        note = f"<br><span class=note>{_e(review.get('note'))}</span>" if review and review.get("note") else ""
        rows.append(
            f"<tr><td>{_e(structure_name(name, language))}<br><span class=note>{_e(name)}</span></td>"
            f'<td><span class=sw style="background:rgb({int(r)},{int(g)},{int(b)})"></span></td>'
            f"<td class=num>{_num(s.get('volume_ml'))}</td><td class=num>{_num(s.get('triangles'), 0)}</td>"
            f"<td>{yes_no.get(s.get('watertight'), '–')}</td><td>{yes_no.get(s.get('manifold'), '–')}</td>"
            f"<td class=num>{_num(s.get('mean_distance_to_mask_mm'), 2)}</td>"
            f"<td class={_e(state)}>{_e(t.get(state, state))} {who}{note}</td></tr>"
        )
    findings = "".join(
        f"<tr><td>{_e(f.get('severity', ''))}</td><td>{_e(f.get('code', ''))}</td><td>{_e(f.get('message', ''))}"
        f"</td></tr>" for f in manifest.get("findings", [])
    )  # fmt: skip
    figures = "".join(
        f'<figure><img alt="" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        f"<figcaption>{_e(_caption(cap, language))}</figcaption></figure>" for cap, png in pictures
    )  # fmt: skip
    preset = prov.get("preset", {}).get("name") if isinstance(prov.get("preset"), dict) else manifest.get("preset")
    packs = prov.get("segmentation", {}).get("packs") if isinstance(prov.get("segmentation"), dict) else None
    versions = [(t["software"], manifest.get("appliance_version", "")), (t["backend"], manifest.get("backend", ""))]
    if packs:
        versions.append(("packs", json.dumps(packs, ensure_ascii=False)))
    geometry = f"{inp.get('modality', '')} {' × '.join(map(str, inp.get('shape', [])))}, " + " × ".join(
        f"{float(v):.3g}" for v in inp.get("spacing", [])) + " mm"  # fmt: skip
    return f"""<!doctype html><html lang="{_e(language)}"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{_e(t['title'])} {_e(case_label)}</title><style>{_STYLE}</style></head><body>
<h1>{_e(t['title'])} · {_e(case_label)}</h1><p class=sub>{_e(t['subtitle'])}</p>{override_banner(manifest, language)}
<table><tr><th>{_e(t['case'])}</th><td>{_e(case_label)}</td><th>{_e(t['created'])}</th>
<td>{_e(prov.get('created_utc', ''))}</td></tr>
<tr><th>{_e(t['input'])}</th><td>{_e(geometry)}</td><th>{_e(t['preset'])}</th><td>{_e(preset or '')}</td></tr>
<tr><th>{_e(t['device'])}</th><td colspan=3>{_e(manifest.get('device', ''))}</td></tr></table>
<h2>{_e(t['structures'])}</h2><table><tr><th>{_e(t['structure'])}</th><th>{_e(t['colour'])}</th>
<th>{_e(t['volume'])}</th><th>{_e(t['triangles'])}</th><th>{_e(t['watertight'])}</th><th>{_e(t['manifold'])}</th>
<th>{_e(t['distance'])}</th><th>{_e(t['review'])}</th></tr>{''.join(rows)}</table>
<p class=note>{_e(t['units'])}</p>
{case_sections_html(manifest, language)}
<h2>{_e(t['findings'])}</h2>{f'<table>{findings}</table>' if findings else f"<p>{_e(t['no_findings'])}</p>"}
<h2>{_e(t['pictures'])}</h2>{figures}
<h2>{_e(t['versions'])}</h2><table>{''.join(f'<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in versions)}
</table></body></html>"""


def find_chromium() -> str:
    """The Chromium binary; :class:`PdfReportError` saying what to install when there is none."""
    override = os.environ.get("APPLIANCE_CHROMIUM")
    for candidate in ((override,) if override else CHROMIUM_CANDIDATES):
        found = shutil.which(candidate)
        if found:
            return found
    raise PdfReportError("Chromium is needed to make the PDF report and was not found; install the Debian "
                         "package 'chromium' (the kiosk's browser) or set APPLIANCE_CHROMIUM")  # fmt: skip


def html_to_pdf(page: str, out: Path, timeout: float = PRINT_TIMEOUT_S) -> Path:
    """Print ``page`` to ``out`` with headless Chromium (no network); written atomically."""
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="appliance-pdf-") as tmp:
        src, pdf = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        src.write_text(page, encoding="utf-8")
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile", f"--print-to-pdf={pdf}", src.as_uri()]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                                 env={**os.environ, "HOME": tmp})  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise PdfReportError(f"Chromium did not print the report within {timeout:g} s") from exc
        data = pdf.read_bytes() if pdf.is_file() else b""
        if run.returncode != 0 or not data.startswith(b"%PDF-") or b"%%EOF" not in data[-1024:]:
            raise PdfReportError(f"Chromium could not print the report (exit {run.returncode}): {run.stderr[-800:]}")
    atomic_write_bytes(out, data)
    return out


def write_pdf_report(
    case_dir: Path, out: Path, case_label: str, language: str, reviews: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """The PDF report of a finished reconstruction folder (``manifest.json`` + ``report.html``) in ``language``."""
    try:
        manifest = json.loads((case_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PdfReportError(f"{case_dir} has no readable manifest.json: {exc}") from exc
    report = case_dir / "report.html"
    pictures = report_figures(report.read_text(encoding="utf-8")) if report.is_file() else []
    return html_to_pdf(build_pdf_html(manifest, pictures, latest_reviews(reviews), case_label, language), out)
