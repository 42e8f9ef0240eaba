"""Structure terminology: display names per language, category and SNOMED CT code of every structure name.

The tables are package data under ``appliance/core/data/terminology/``, read with :mod:`importlib.resources`:

- ``structures.json``: per structure name (the identifier presets and model packs give a structure: ``lung_left``,
  ``ctx_lh_precuneus`` ...) its ``category`` (one of :data:`CATEGORIES`), SNOMED CT ``snomed`` code and
  ``snomed_meaning``, ``snomed_scope`` (``exact``, or ``enclosing`` when SNOMED CT (as shipped in the DICOM
  standard's code tables) has no concept for the structure itself and the code is that of the region holding it,
  e.g. the frontal lobe for a gyrus) and ``laterality`` (``left``/``right``/null); plus name ``patterns`` for
  structures made on the box (``<lesion>_margin_<mm>mm`` margin shells).
- ``<language>.json`` (``en``, ``zh-CN``): ``names`` (structure name -> display name) and the ``patterns``' text
  templates (``{base}``, ``{mm}``).

To add structures (e.g. a new model pack's classes): add one row per structure to ``structures.json`` and its name
to every language file; ``tests/test_terminology.py`` fails for any structure a shipped preset or pack can produce
that lacks a row or a name in some language, and for any SNOMED CT code it cannot find in the DICOM code tables.

The kiosk, the report and the DICOM export all ask :func:`display_name` / :func:`category` / :func:`snomed`, so a
structure has one name per language everywhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from appliance.core.errors import TerminologyError

#: Languages with a names table.
LANGUAGES: tuple[str, ...] = ("en", "zh-CN")
#: Display categories (coarser than the segmentation's StructureCategory, meant for grouping on screen).
CATEGORIES: tuple[str, ...] = ("organ", "vessel", "bone", "muscle", "nerve", "airway", "lesion", "body", "brain",
                               "other")
Laterality = Literal["left", "right"]
_DATA = ("data", "terminology")


@dataclass(frozen=True)
class Term:
    """One structure's entry: category, SNOMED CT code and meaning, scope of the code, laterality."""

    structure: str
    category: str
    snomed: str | None
    snomed_meaning: str | None
    snomed_scope: str
    laterality: Laterality | None


def _read(name: str) -> Any:
    resource = resources.files("appliance.core").joinpath(*_DATA, name)
    try:
        return json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TerminologyError(f"cannot read the terminology table {name}: {exc}") from exc


@cache
def _table() -> tuple[dict[str, Term], re.Pattern[str], str]:
    data = _read("structures.json")
    rows = data.get("structures") if isinstance(data, dict) else None
    if not isinstance(rows, dict):
        raise TerminologyError("structures.json must hold a 'structures' object")
    terms: dict[str, Term] = {}
    for name, row in rows.items():
        cat = row.get("category")
        if cat not in CATEGORIES:
            raise TerminologyError(f"structures.json {name}: category {cat!r} is not one of {', '.join(CATEGORIES)}")
        side = row.get("laterality")
        if side not in (None, "left", "right"):
            raise TerminologyError(f"structures.json {name}: laterality must be left, right or null, not {side!r}")
        scope = str(row.get("snomed_scope", "exact"))
        if scope not in ("exact", "enclosing"):
            raise TerminologyError(f"structures.json {name}: snomed_scope must be exact or enclosing")
        code = row.get("snomed")
        terms[name] = Term(name, cat, str(code) if code else None, row.get("snomed_meaning"), scope, side)
    margin = data["patterns"]["margin"]
    return terms, re.compile(str(margin["regex"])), str(margin["category"])


@cache
def _names(lang: str) -> tuple[dict[str, str], dict[str, str]]:
    if lang not in LANGUAGES:
        raise TerminologyError(f"no structure names in language {lang!r}; languages are {', '.join(LANGUAGES)}")
    data = _read(f"{lang}.json")
    names, patterns = data.get("names"), data.get("patterns")
    if not isinstance(names, dict) or not isinstance(patterns, dict):
        raise TerminologyError(f"{lang}.json must hold 'names' and 'patterns' objects")
    return {str(k): str(v) for k, v in names.items()}, {str(k): str(v) for k, v in patterns.items()}


def _margin(structure: str) -> tuple[str, str] | None:
    """(base structure, distance text in mm) of a margin shell's name, else None."""
    m = _table()[1].match(structure)
    return (m["base"], m["mm"].replace("p", ".")) if m else None


def _fallback(structure: str) -> str:
    return structure.replace("_", " ")


def display_name(structure: str, lang: str = "en") -> str:
    """The structure's name for a reader of ``lang``; an unknown structure is shown as its identifier, spaced."""
    names, patterns = _names(lang)
    if structure in names:
        return names[structure]
    margin = _margin(structure)
    if margin is not None:
        base, mm = margin
        return patterns["margin"].format(base=display_name(base, lang), mm=mm)
    return _fallback(structure)


def has_name(structure: str, lang: str) -> bool:
    """Whether ``lang``'s table names ``structure`` (margin shells: whether it names their base structure)."""
    names, _ = _names(lang)
    margin = _margin(structure) if structure not in names else None
    return structure in names or (margin is not None and has_name(margin[0], lang))


def term(structure: str) -> Term | None:
    """The table's entry of ``structure`` (margin shells: the margin category, no code), or None if unknown."""
    terms, _, margin_category = _table()
    if structure in terms:
        return terms[structure]
    if _margin(structure) is not None:
        return Term(structure, margin_category, None, None, "exact", None)
    return None


def category(structure: str) -> str:
    """The display category of ``structure`` (``other`` when the table does not know it)."""
    found = term(structure)
    return found.category if found else "other"


def snomed(structure: str) -> tuple[str, str] | None:
    """(SNOMED CT code, meaning) of ``structure``, or None when the table has no code for it."""
    found = term(structure)
    if found is None or not found.snomed:
        return None
    return found.snomed, found.snomed_meaning or display_name(structure, "en")


def known_structures() -> tuple[str, ...]:
    """Every structure name the table has a row for."""
    return tuple(_table()[0])


def names_for(structures: list[str] | tuple[str, ...], lang: str) -> dict[str, str]:
    """``{structure: display name}`` for a list of structures (what a page needs for one case)."""
    return {s: display_name(s, lang) for s in structures}


def missing_names(structures: list[str] | tuple[str, ...], lang: str) -> list[str]:
    """The structures among ``structures`` that ``lang``'s table does not name."""
    return [s for s in structures if not has_name(s, lang)]


def page_table(lang: str) -> dict[str, Any]:
    """The table as a web page uses it: ``names`` and ``categories`` by structure, the categories' display order
    (``category_order``) and the margin shells' (``margin_category``), and the margin-shell ``margin`` pattern
    (``regex`` in JavaScript syntax, ``text`` template with ``{base}``/``{mm}``)."""
    names, patterns = _names(lang)
    terms, regex, margin_category = _table()
    return {
        "lang": lang,
        "names": dict(names),
        "categories": {name: t.category for name, t in terms.items()},
        "category_order": list(CATEGORIES),
        "margin_category": margin_category,
        "margin": {"regex": regex.pattern.replace("?P<", "?<"), "text": patterns["margin"]},
    }


__all__ = ["CATEGORIES", "LANGUAGES", "Term", "category", "display_name", "has_name", "known_structures",
           "missing_names", "names_for", "page_table", "snomed", "term"]
