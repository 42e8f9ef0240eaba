"""``report.html``: one self-contained page a surgeon or engineer reads after a reconstruction.

Sections: summary (input geometry, hashed identity, preset, device, backend), findings, structures table
(volume, surface area, triangles, mesh QA), for a reviewed case the review, lesions and measurements sections
(:mod:`appliance.export.report_case`, with the override of the approved-revision rule printed first), pictures
of the model (front and left views) and of slices with the structure outlines, timings per stage, output files
and provenance. Pictures are PNGs embedded as base64 data URIs; styles are inline; there is no script and no
external resource, so the file opens anywhere, offline.
Everything shown comes from the (already redacted) manifest; no patient data is added here.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from appliance.core import LabelMap, Mesh, StructureCategory, Volume, terminology
from appliance.export.common import PRODUCT, atomic_write_text
from appliance.export.image import IMAGE_KEY
from appliance.export.render import encode_png, render_model, render_slices
from appliance.export.report_case import case_sections_html, override_banner

REPORT_NAME = "report.html"

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2329;background:#fff}
h1{font-size:1.5em;margin-bottom:0}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccd}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
th,td{border:1px solid #ccd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.swatch{display:inline-block;width:.9em;height:.9em;border:1px solid #555;vertical-align:middle;margin-right:4px}
.ok{color:#11691f}.bad{color:#b00020;font-weight:bold}
.sev-warning{background:#fff4d6}.sev-refusal,.sev-error{background:#fde2e4}
figure{display:inline-block;margin:6px 10px 6px 0;vertical-align:top}
figcaption{font-size:.85em;color:#444;max-width:420px}
pre{background:#f6f8fa;padding:8px;font-size:.82em;overflow-x:auto}
.note{color:#444;font-size:.9em}h3{font-size:1em;margin:1em 0 .2em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return f"{value:,.{digits}f}"


def _flag(value: Any) -> str:
    if value is True:
        return '<span class="ok">yes</span>'
    if value is False:
        return '<span class="bad">no</span>'
    return "–"


def report_pictures(
    volume: Volume | None, labelmap: LabelMap | None, meshes: Sequence[Mesh]
) -> list[tuple[str, bytes]]:
    """(caption, PNG) pairs: the model from the front and from the left, then slices with outlines.

    Enclosing surfaces (category ``other``, e.g. the body outline) and margin shells are left out of the model
    pictures when anything else is there, since they would hide what they enclose.
    """
    pictures: list[tuple[str, bytes]] = []
    categories = {s.name: s.category for s in labelmap.structures} if labelmap is not None else {}
    hidden = (StructureCategory.MARGIN, StructureCategory.OTHER)
    inner = [m for m in meshes if categories.get(m.name) not in hidden]
    shown = inner or [m for m in meshes if categories.get(m.name) != StructureCategory.MARGIN]
    left_out = sorted({m.name for m in meshes} - {m.name for m in shown})
    note = f" ({', '.join(left_out)} hidden)" if left_out else ""
    if shown:
        for view in ("anterior", "left lateral"):
            pictures.append((f"3D model, {view} view{note}", encode_png(render_model(shown, view))))
    if volume is not None and labelmap is not None:
        for caption, image in render_slices(volume, labelmap):
            pictures.append((f"{caption}, structure outlines", encode_png(image)))
    return pictures


def _summary(manifest: Mapping[str, Any]) -> str:
    inp = manifest.get("input", {})
    prov = manifest.get("provenance", {})
    preset_reason = prov.get("preset", {}).get("reason") if isinstance(prov.get("preset"), Mapping) else None
    rows = [
        ("Software", f"{PRODUCT} {manifest.get('appliance_version', '')}"),
        ("Created (UTC)", prov.get("created_utc", "–")),
        ("Input", f"{inp.get('modality', '?')} volume {' x '.join(str(s) for s in inp.get('shape', []))} voxels, "
                  f"spacing {' x '.join(_num(s, 3) for s in inp.get('spacing', []))} mm"),
        ("Series identity (SHA-256)", str(inp.get("identity_hash", ""))[:16] + "…"),
        ("Preset", manifest.get("preset", "") + (f" ({preset_reason})" if preset_reason else "")),
        ("Device", f"{manifest.get('device', '')} ({prov.get('device', {}).get('name', '')})"
         if isinstance(prov.get("device"), Mapping) else manifest.get("device", "")),
        ("Backend", manifest.get("backend", "")),
        ("Coordinates", "meshes in millimetres, DICOM patient coordinates (LPS); they overlay the images"),
    ]
    files = manifest.get("files")
    image = files.get(IMAGE_KEY) if isinstance(files, Mapping) else None
    rows.append(("Image volume", f"{image} ({inp.get('units') or 'modality units'}, the grid and affine of the label "
                                 "map): the images the model was made from" if image else "not written by this run"))
    override = prov.get("override")
    if override:
        rows.append(("Override", '<span class="bad">refused input reconstructed on explicit override</span>'))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v if k == 'Override' else _e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _findings(manifest: Mapping[str, Any]) -> str:
    findings = manifest.get("findings", [])
    if not findings:
        return "<p>No findings.</p>"
    rows = "".join(
        f'<tr class="sev-{_e(f.get("severity", ""))}"><td>{_e(f.get("severity", ""))}</td>'
        f"<td>{_e(f.get('stage', ''))}</td><td><code>{_e(f.get('code', ''))}</code></td>"
        f"<td>{_e(f.get('message', ''))}</td><td>{_e(f.get('requirement') or '')}</td></tr>"
        for f in findings
    )
    return ("<table><tr><th>Severity</th><th>Stage</th><th>Code</th><th>Finding</th><th>Requirement</th></tr>"
            f"{rows}</table>")


def _structures(manifest: Mapping[str, Any]) -> str:
    structures = manifest.get("structures", [])
    if not structures:
        return "<p>No structure was segmented.</p>"
    head = ("<tr><th>Structure</th><th>SNOMED CT</th><th>Category</th><th>Label</th><th>Volume (ml, mask)</th>"
            "<th>Volume (ml, mesh)</th><th>Surface (cm²)</th><th>Triangles</th><th>Watertight</th>"
            "<th>Manifold</th><th>Mean / 95th pct distance to mask (mm)</th><th>Files</th></tr>")
    rows = []
    for s in structures:
        qa = s.get("qa", {}) if isinstance(s.get("qa"), Mapping) else {}
        r, g, b = (int(c) for c in s.get("color", (0, 0, 0)))
        files = " ".join(f'<a href="{_e(path)}">{_e(ext)}</a>' for ext, path in s.get("files", {}).items())
        area = s.get("surface_area_mm2")
        name = str(s.get("name", ""))
        code = terminology.snomed(name)
        snomed = f"{_e(code[0])} {_e(code[1])}" if code else _e(s.get("snomed") or "–")
        rows.append(
            f'<tr><td><span class="swatch" style="background:rgb({r},{g},{b})"></span>'
            f"{_e(terminology.display_name(name, 'en'))} <code>{_e(name)}</code></td><td>{snomed}</td>"
            f"<td>{_e(s.get('category', ''))}</td><td class=num>{_e(s.get('label'))}</td>"
            f"<td class=num>{_num(s.get('volume_ml'), 2)}</td><td class=num>{_num(qa.get('volume_ml'), 2)}</td>"
            f"<td class=num>{_num(area / 100.0 if isinstance(area, (int, float)) else None, 1)}</td>"
            f"<td class=num>{_num(s.get('triangles'), 0)}</td><td>{_flag(s.get('watertight'))}</td>"
            f"<td>{_flag(s.get('manifold'))}</td>"
            f"<td class=num>{_num(s.get('mean_distance_to_mask_mm'), 2)} / {_num(qa.get('p95_distance_mm'), 2)}</td>"
            f"<td>{files}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _timings(manifest: Mapping[str, Any]) -> str:
    timings = manifest.get("timings_s", {})
    rows = "".join(f"<tr><td>{_e(k)}</td><td class=num>{_num(v, 2)}</td></tr>" for k, v in timings.items())
    total = sum(v for v in timings.values() if isinstance(v, (int, float)))
    return (f"<table><tr><th>Stage</th><th>Seconds</th></tr>{rows}"
            f"<tr><th>total</th><th class=num>{_num(total, 2)}</th></tr></table>")


def build_report_html(manifest: Mapping[str, Any], pictures: Sequence[tuple[str, bytes]]) -> str:
    """The report page for ``manifest`` with the given (caption, PNG) pictures embedded."""
    figures = "".join(
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
        for caption, png in pictures
    )
    files = manifest.get("files", {})
    file_rows = "".join(f'<tr><td>{_e(k)}</td><td><a href="{_e(v)}">{_e(v)}</a></td></tr>' for k, v in files.items())
    provenance = json.dumps(manifest.get("provenance", {}), indent=2, sort_keys=True)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(PRODUCT)} reconstruction report</title><style>{_STYLE}</style></head>
<body>
<h1>3D reconstruction report</h1>
{override_banner(manifest, "en")}
<p class="note">Models are in millimetres in the patient coordinates of the source images. Check every model
against the images before it is used for planning or printing.</p>
<h2>Summary</h2>{_summary(manifest)}
<h2>Findings</h2>{_findings(manifest)}
<h2>Structures</h2>{_structures(manifest)}
{case_sections_html(manifest, "en")}
<h2>Pictures</h2>{figures or "<p>No pictures.</p>"}
<h2>Timings</h2>{_timings(manifest)}
<h2>Files</h2><table><tr><th>Output</th><th>Path</th></tr>{file_rows}</table>
<h2>Provenance</h2><pre>{_e(provenance)}</pre>
</body></html>
"""


def write_report(path: Path, manifest: Mapping[str, Any], pictures: Sequence[tuple[str, bytes]]) -> Path:
    """Write the report atomically at ``path``."""
    return atomic_write_text(Path(path), build_report_html(manifest, pictures))
