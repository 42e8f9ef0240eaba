"""The report's sections of a reviewed case, in English or Simplified Chinese (HTML report and PDF alike).

They are drawn from the manifest sections :mod:`appliance.service.case_export` adds (``export_basis``, ``review``,
``lesions``, ``measurements``); a manifest without them (a reconstruction that was never opened for review) gives
no section, so its report is as before. The override of the approved-revision rule is printed first, in red.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from appliance.export.report_text import LABELS, structure_name


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 1) -> str:
    return f"{value:,.{digits}f}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of already escaped cells (numbers right-aligned by the caller's ``<td class=num>``)."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def override_banner(manifest: Mapping[str, Any], language: str) -> str:
    """The red line saying unapproved structures were exported on override ('' without one)."""
    basis = manifest.get("export_basis")
    override = basis.get("override") if isinstance(basis, Mapping) else None
    if not isinstance(override, Mapping):
        return ""
    t = LABELS[language]
    text = t["override"].format(structures=", ".join(str(s) for s in override.get("structures", [])),
                                actor=override.get("actor", ""), at=override.get("at", ""),
                                reason=override.get("reason", ""))
    return f'<p class="bad override" id="override-unapproved">{_e(text)}</p>'


def _event(h: Mapping[str, Any], t: Mapping[str, str], language: str) -> str:
    kind = str(h.get("kind"))
    if kind == "revision":
        return _e(t["ev_revision"].format(revision=h.get("revision"), parent=h.get("parent"),
                                          reason=h.get("reason") or ", ".join(h.get("ops", []))))
    if kind == "decision":
        key = f"ev_{h.get('decision')}"
        text = t[key] if key in t else f"{h.get('decision')} {{structure}}"
        return _e(text.format(structure=structure_name(str(h.get("structure", "")), language)))
    return _e(t.get(f"ev_{kind}", kind).format(revision=h.get("revision")))


def _changes(h: Mapping[str, Any], language: str) -> str:
    change = h.get("volume_change_ml")
    if isinstance(change, Mapping):
        return "<br>".join(f"{_e(structure_name(str(k), language))}: {_num(v, 2)}" for k, v in change.items())
    return _num(change, 2)


def review_section(manifest: Mapping[str, Any], language: str) -> str:
    """Per structure the revision it is exported from and who approved it, then the review history."""
    review = manifest.get("review")
    if not isinstance(review, Mapping):
        return ""
    t = LABELS[language]
    found = manifest.get("export_basis")
    basis: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    rows = [[_e(structure_name(str(c.get("structure")), language)), f"<td class=num>{_e(c.get('revision'))}</td>",
             _e(t["approved"]) if c.get("approved") else f'<span class="bad">{_e(t["not_approved"])}</span>',
             _e(c.get("approved_by") or "–"), _e(c.get("approved_at") or "–")]
            for c in review.get("structures", [])]  # fmt: skip
    history = [[_e(h.get("at") or ""), _e(h.get("actor") or ""), _e(h.get("role") or ""), _event(h, t, language),
                f"<td class=num>{_e(h.get('revision'))}</td>", _e(h.get("note") or ""), _changes(h, language)]
               for h in review.get("history", [])]  # fmt: skip
    rule = f"<p class=note>{_e(t['rule'])}: {_e(basis.get('rule', ''))}</p>" if basis.get("rule") else ""
    return (f"<h2>{_e(t['case_review'])}</h2>{rule}"
            + _table([_e(t[k]) for k in ("structure", "exported_from", "state", "approved_by", "time")], rows)
            + f"<h2>{_e(t['history'])}</h2>"
            + _table([_e(t[k]) for k in ("time", "person", "role", "event", "revision", "note", "volume_change")],
                     history))


def _measure(lesion: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((m for m in lesion.get("measurements", []) if m.get("kind") == kind), {})


def _lesion(lesion: Mapping[str, Any], t: Mapping[str, str], language: str) -> str:
    recist = _measure(lesion, "axial_diameters")
    head = (f"<h3>{_e(structure_name(str(lesion.get('name')), language))} <code>{_e(lesion.get('name'))}</code>"
            f" · {_e(t['revision'])} {_e(lesion.get('revision', ''))}</h3>")
    facts = _table([_e(t["lesion_volume"]), _e(t["longest_diameter"]), _e(t["recist"])], [[
        f"<td class=num>{_num(_measure(lesion, 'lesion_volume').get('value'), 2)}</td>",
        f"<td class=num>{_num(_measure(lesion, 'longest_diameter').get('value'), 1)}</td>",
        f"<td class=num>{_num(recist.get('value'), 1)} / {_num(recist.get('perpendicular_mm'), 1)}</td>"]])
    table = lesion.get("margin_table")
    if not isinstance(table, Mapping):
        return head + facts
    margins = [float(m) for m in table.get("margins_mm", [])]
    rows = [[_e(structure_name(str(r.get("structure")), language)),
             f"<td class=num>{_num(r.get('min_distance_mm'), 1)}</td>",
             *(f"<td class=num>{_num(v, 2)}</td>" for v in r.get("volume_in_shell_ml", []))]
            for r in table.get("rows", [])]  # fmt: skip
    shells = [_e(t["in_shell"].format(mm=f"{m:g}")) for m in margins]
    out = head + facts + _table([_e(t["structure"]), _e(t["min_distance"]), *shells], rows)
    remnant = table.get("remnant")
    if isinstance(remnant, Mapping):
        title = t["remnant"].format(organ=structure_name(str(remnant.get("organ")), language),
                                    organ_ml=_num(remnant.get("organ_ml"), 1),
                                    lesion_ml=_num(remnant.get("lesion_ml"), 2))
        rows = [[f"<td class=num>{m:g}</td>", f"<td class=num>{_num(ml, 1)}</td>",
                 f"<td class=num>{_num(pc, 1)} %</td>"]
                for m, ml, pc in zip(margins, remnant.get("remnant_ml", []), remnant.get("remnant_percent", []),
                                     strict=False)]  # fmt: skip
        out += f"<p>{_e(title)}</p>" + _table([_e(t["margin"]), "ml", "%"], rows)
    return out


def lesions_section(manifest: Mapping[str, Any], language: str) -> str:
    """Each lesion: volume, diameters, margin table per shell and the remnant."""
    lesions = manifest.get("lesions")
    if not isinstance(lesions, list) or not lesions:
        return ""
    t = LABELS[language]
    return f"<h2>{_e(t['lesions'])}</h2>" + "".join(_lesion(x, t, language) for x in lesions if isinstance(x, Mapping))


def measurements_section(manifest: Mapping[str, Any], language: str) -> str:
    """Every measurement saved with the case, with its author, time and revision."""
    saved = manifest.get("measurements")
    if not isinstance(saved, list) or not saved:
        return ""
    t = LABELS[language]
    rows = []
    for m in saved:
        value = f"{_num(m.get('value'), 2)} {_e(m.get('unit', ''))}"
        if m.get("perpendicular_mm") is not None:
            value += f" / {_num(m.get('perpendicular_mm'), 2)} mm"
        rows.append([_e(m.get("measurement_id", "")), f"{_e(m.get('name') or '')} <code>{_e(m.get('kind'))}</code>",
                     f"<td class=num>{value}</td>",
                     _e(", ".join(structure_name(str(s), language) for s in m.get("structures", []))),
                     f"<td class=num>{_e(m.get('revision'))}</td>", _e(m.get("author", "")),
                     _e(m.get("recorded_at", ""))])  # fmt: skip
    head = [_e(t[k]) for k in ("measurement", "value", "structures_measured", "revision", "author", "time")]
    return f"<h2>{_e(t['measurements'])}</h2>" + _table(["#", *head], rows)


def case_sections_html(manifest: Mapping[str, Any], language: str = "en") -> str:
    """Review, lesions and measurements sections ('' for a manifest without them)."""
    return review_section(manifest, language) + lesions_section(manifest, language) + measurements_section(
        manifest, language)
