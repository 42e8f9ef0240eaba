"""Margin tables kept with the revisions: each revision's record holds the table of every lesion whose table is
known for its label map, so reading the lesions of a case does not recompute the distance map.

A table is stored when the ``margins`` operation makes the shells (it is the table the shells were made with,
computed once, from the label map before the shells were written) and carried to a child revision whose edit
changed no voxel, removed nothing and kept every structure of the table under its name (a recolour, a new empty
structure). Any other edit leaves the lesion without a stored table: it is computed from that revision's label map
when asked for (:func:`lesion_margin_table`), as before tables were stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from appliance.core import LabelMap, Structure, StructureCategory
from appliance.review.edit import EditResult
from appliance.review.store import Revision
from engines.margin_table import margin_table
from engines.measurements import axial_diameters, lesion_volume, longest_diameter

#: Name of a margin shell structure: ``<lesion>_margin_<mm>mm`` (``2p5mm`` for 2.5 mm).
SHELL_NAME = re.compile(r"^(?P<lesion>.+)_margin_(?P<mm>\d+(?:p\d+)?)mm$")


def lesion_margins(structures: Iterable[Structure]) -> dict[str, list[float]]:
    """Every lesion (category lesion), in order, with the sorted margins (mm) its shells were made at."""
    listed = list(structures)
    shells: dict[str, list[float]] = {}
    for s in listed:
        m = SHELL_NAME.match(s.name)
        if m and s.category == StructureCategory.MARGIN:
            shells.setdefault(m["lesion"], []).append(float(m["mm"].replace("p", ".")))
    return {s.name: sorted(shells.get(s.name, [])) for s in listed if s.category == StructureCategory.LESION}


def revision_margin_tables(parent: Revision, result: EditResult) -> dict[str, dict[str, Any]]:
    """The tables valid for the revision an edit makes: those its ``margins`` operation made, and the parent's
    for lesions the edit cannot have changed."""
    tables = {name: dict(t) for name, t in result.margin_tables.items()}
    if result.changed or result.removed:
        return tables
    names = {s.name for s in result.structures}
    for lesion, table in parent.margin_tables.items():
        kept = {lesion, *(row["structure"] for row in table.get("rows", []))}
        remnant = table.get("remnant")
        if remnant:
            kept.add(str(remnant["organ"]))
        if lesion not in tables and kept <= names:
            tables[lesion] = dict(table)
    return tables


def lesion_margin_table(revision: Revision, labelmap: LabelMap, lesion: str,
                        margins_mm: Sequence[float]) -> dict[str, Any] | None:
    """The lesion's margin table in ``revision``: the stored one, else computed from its label map (None without
    margins)."""
    if not margins_mm:
        return None
    stored = revision.margin_tables.get(lesion)
    if stored is not None and [float(m) for m in stored.get("margins_mm", [])] == [float(m) for m in margins_mm]:
        return dict(stored)
    return margin_table(labelmap, lesion, margins_mm).to_dict()


def lesion_record(revision: Revision, labelmap: LabelMap, lesion: str, margins_mm: Sequence[float]) -> dict[str, Any]:
    """A lesion's measurements (volume, longest 3D diameter, RECIST axial pair) and margin table, in ``revision``."""
    measurements = [m(labelmap, lesion).to_dict() for m in (lesion_volume, longest_diameter, axial_diameters)]
    table = lesion_margin_table(revision, labelmap, lesion, margins_mm)
    return {"name": lesion, "measurements": measurements, "margins_mm": list(margins_mm), "margin_table": table}
