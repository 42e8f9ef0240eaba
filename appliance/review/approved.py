"""What leaves the box of a reviewed model: the approved revision of each structure.

A job *entered review* when its revision store has a revision beyond 0 or a review decision. Such a job is
exported (PACS SEG and Encapsulated STL, USB print files, the report) from the **approved revision** of each
structure of its current revision: the newest revision on the current revision's line of ancestry (revisions left
by an undo do not count) in which the structure's review state is ``approved``. Because an edit that changes a
structure's voxels makes its state ``corrected``, a structure approved in revision N has the same voxels in every
later revision where it is still ``approved``. Structures without such a revision are *unapproved*; they leave the
box only on an explicit override (with a reason, audited and printed on the report), and then from the current
revision. A job that never entered review is exported from its reconstruction outputs, as before review existed.

The exported label map is composed structure by structure on the current revision's grid, with the current
revision's labels, colours and order: each structure's voxels are those it has in its chosen revision. Labels are
exclusive, so where two chosen revisions give a voxel to two structures, the one later in the current revision's
order keeps it (this only happens when a voxel moved between an approved structure and one approved elsewhere).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.core import LabelMap
from appliance.review.errors import InvalidReview
from appliance.review.states import APPROVED, ancestry, review_events, structure_states
from appliance.review.store import RevisionStore


@dataclass(frozen=True)
class ChosenRevision:
    """The revision a structure is exported from, and who approved it there (None: unapproved)."""

    structure: str
    revision: int
    approved: bool
    approved_by: str | None
    approved_at: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"structure": self.structure, "revision": self.revision, "approved": self.approved,
                "approved_by": self.approved_by, "approved_at": self.approved_at}


@dataclass(frozen=True)
class ExportBasis:
    """Which revision each structure of the current revision is exported from."""

    current: int
    structures: tuple[ChosenRevision, ...]

    @property
    def unapproved(self) -> list[str]:
        """Structures of the current revision no revision approves."""
        return [c.structure for c in self.structures if not c.approved]

    def chosen(self, structure: str) -> ChosenRevision:
        """The choice made for ``structure`` (:class:`InvalidReview` when it is not in the current revision)."""
        for c in self.structures:
            if c.structure == structure:
                return c
        raise InvalidReview(f"revision {self.current} has no structure {structure[:40]!r}", "structure")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"current": self.current, "structures": [c.to_dict() for c in self.structures],
                "unapproved": self.unapproved}


def entered_review(store: RevisionStore) -> bool:
    """Whether the job entered review: a revision beyond 0 or any review decision."""
    return store.exists() and (max(store.numbers(), default=0) > 0 or bool(review_events(store)))


def export_basis(store: RevisionStore) -> ExportBasis:
    """The revision each structure of the current revision is exported from (see the module docstring)."""
    current = store.current()
    events = review_events(store)
    chain = ancestry(store, current)
    states = {rev.number: structure_states(store, rev.number, events) for rev in chain}
    chosen = []
    for s in store.revision(current).structures:
        name = str(s["name"])
        found = next((rev.number for rev in chain if states[rev.number].get(name, {}).get("state") == APPROVED),
                     None)
        if found is None:
            chosen.append(ChosenRevision(name, current, False, None, None))
        else:
            state = states[found][name]
            chosen.append(ChosenRevision(name, found, True, state.get("actor"), state.get("at")))
    return ExportBasis(current, tuple(chosen))


def exported_labelmap(store: RevisionStore, basis: ExportBasis) -> LabelMap:
    """The label map composed from each structure's chosen revision (current grid, labels and order)."""
    current = store.labelmap(basis.current)
    maps: dict[int, LabelMap] = {basis.current: current}
    out = np.zeros_like(current.labels)
    for s in current.structures:
        number = basis.chosen(s.name).revision
        if number not in maps:
            maps[number] = store.labelmap(number)
        source = maps[number]
        out[source.labels == source.structure(s.name).label] = s.label
    return LabelMap(out, current.affine, current.structures, dict(current.metadata))


def exported_meshes(store: RevisionStore, basis: ExportBasis) -> dict[str, Path]:
    """The STL file of each structure in its chosen revision (structures without a mesh are absent)."""
    out: dict[str, Path] = {}
    for c in basis.structures:
        rel = store.revision(c.revision).meshes.get(c.structure)
        if rel and (store.root / rel).is_file():
            out[c.structure] = store.root / rel
    return out


def mesh_qa(store: RevisionStore, basis: ExportBasis, job_entries: Mapping[str, Mapping[str, Any]]) -> dict[
        str, dict[str, Any]]:
    """Mesh QA figures of each exported mesh: from the revision that made it, or the job's manifest (revision 0)."""
    out: dict[str, dict[str, Any]] = {}
    for c in basis.structures:
        rel = store.revision(c.revision).meshes.get(c.structure, "")
        maker = int(rel.split("/", 1)[0][4:]) if rel.startswith("rev-") else 0
        qa = store.revision(maker).mesh_qa.get(c.structure) if maker > 0 else None
        entry = job_entries.get(c.structure, {})
        out[c.structure] = {
            "triangles": int((qa or {}).get("triangles", entry.get("triangles", 0)) or 0),
            "watertight": bool((qa or {}).get("watertight", entry.get("watertight", False))),
            "manifold": bool((qa or {}).get("manifold", entry.get("manifold", False))),
            "mean_distance_to_mask_mm": (qa or {}).get("mean_distance_mm", entry.get("mean_distance_to_mask_mm")),
        }
    return out

