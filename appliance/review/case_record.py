"""The sections a reviewed case adds to its manifest and report: review history, lesions, measurements, and which
revision each exported structure comes from.

- ``review``: whether the job entered review, the current revision, per structure the revision it is exported from
  and who approved it there (:mod:`appliance.review.approved`), and the history, oldest first: each revision
  (author, role, time, reason, operations, volume change per structure against its parent), each review decision
  (structure, revision, decision, note, person, role, time, the structure's volume in that revision and its change
  against the automatic revision 0) and each undo/redo;
- ``lesions``: each lesion of the current revision, measured in its exported revision (volume, longest diameter,
  RECIST pair, margin table per shell with the remnant);
- ``measurements``: every measurement saved with the case (author, role, time, revision).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.review.approved import ExportBasis, entered_review
from appliance.review.lesion_tables import lesion_margins, lesion_record
from appliance.review.measurements import saved_measurements
from appliance.review.states import review_events
from appliance.review.store import RevisionStore

#: Volumes are given in ml with this many decimals.
_ML_DIGITS = 3


def structure_volumes(store: RevisionStore, number: int) -> dict[str, float]:
    """Volume (ml) of every structure of a revision, from its label map."""
    lm = store.labelmap(number)
    counts = np.bincount(lm.labels.ravel().astype(np.int64), minlength=max((s.label for s in lm.structures),
                                                                            default=0) + 1)
    return {s.name: round(float(counts[s.label]) * lm.voxel_volume_ml, _ML_DIGITS) for s in lm.structures}


def _change(after: float | None, before: float | None) -> float | None:
    if after is None and before is None:
        return None
    return round((after or 0.0) - (before or 0.0), _ML_DIGITS)


def review_history(store: RevisionStore) -> list[dict[str, Any]]:
    """Revisions, review decisions and undo/redo moves of the job, oldest first (see the module docstring)."""
    revisions = {r.number: r for r in store.revisions()}
    volumes = {n: structure_volumes(store, n) for n in revisions}
    history: list[dict[str, Any]] = []
    for rev in revisions.values():
        parent = volumes.get(rev.parent, {}) if rev.parent is not None else {}
        touched = sorted({*rev.changed, *rev.removed})
        history.append({
            "kind": "revision", "revision": rev.number, "parent": rev.parent, "actor": rev.author, "role": rev.role,
            "at": rev.created_utc, "reason": rev.reason,
            "ops": [str(op.get("op")) for op in rev.ops if isinstance(op, dict)],
            "volume_change_ml": {name: _change(volumes[rev.number].get(name), parent.get(name)) for name in touched},
        })  # fmt: skip
    for e in review_events(store):
        in_revision = volumes.get(int(e["revision"]), {}).get(str(e["structure"]))
        history.append({
            "kind": "decision", "revision": e["revision"], "structure": e["structure"], "decision": e["state"],
            "note": e.get("note", ""), "actor": e["actor"], "role": e.get("role"), "at": e["at"],
            "volume_ml": in_revision,
            "volume_change_ml": _change(in_revision, volumes.get(0, {}).get(str(e["structure"]))),
        })  # fmt: skip
    for e in store.state().get("events", []):
        if e.get("event") in ("undo", "redo"):
            history.append({"kind": e["event"], "revision": e["revision"], "from": e.get("from"),
                            "actor": e.get("actor"), "at": e.get("at")})
    order = {"revision": 0, "decision": 1, "undo": 2, "redo": 2}
    return sorted(history, key=lambda h: (str(h.get("at") or ""), order[h["kind"]], int(h["revision"])))


def lesion_records(store: RevisionStore, basis: ExportBasis) -> list[dict[str, Any]]:
    """Each lesion of the current revision with its measurements and margin table, in its exported revision."""
    records = []
    for name, margins in lesion_margins(store.labelmap(basis.current).structures).items():
        number = basis.chosen(name).revision
        rec = lesion_record(store.revision(number), store.labelmap(number), name, margins)
        records.append({**rec, "revision": number, "approved": basis.chosen(name).approved})
    return records


def case_sections(store: RevisionStore, basis: ExportBasis) -> dict[str, Any]:
    """The ``review``, ``lesions`` and ``measurements`` sections of the case's manifest."""
    return {
        "review": {"entered_review": entered_review(store), "current": basis.current,
                   "structures": [c.to_dict() for c in basis.structures], "history": review_history(store)},
        "lesions": lesion_records(store, basis),
        "measurements": saved_measurements(store),
    }  # fmt: skip
