"""Review states of structures, per revision: automatic -> correction requested -> corrected -> approved.

Decisions are kept in the store's ``reviews.json`` (a list, replaced atomically under the store's lock), each
``{"structure", "revision", "state", "note", "actor", "role", "at"}``. The state of a structure in revision N is
the last decision taken on it in N; without one, ``corrected`` when revision N changed its voxels, else its state
in N's parent (``automatic`` in revision 0). Only a surgeon (or the service API token) approves; a correction
request needs a note.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.fsio import atomic_write_text
from appliance.review.errors import InvalidReview, ReviewNotAllowed
from appliance.review.store import Revision, RevisionStore, role_of, utc_now

REVIEWS_FILE = "reviews.json"
AUTOMATIC = "automatic"
CORRECTION_REQUESTED = "correction_requested"
CORRECTED = "corrected"
APPROVED = "approved"
#: The decisions a request may send, and the state each leads to.
DECISIONS = {"approve": APPROVED, "request_correction": CORRECTION_REQUESTED}
#: Roles allowed to approve.
APPROVING_ROLES = frozenset({"surgeon", "api"})


def review_events(store: RevisionStore) -> list[dict[str, Any]]:
    """Every review decision of the job, oldest first."""
    path = store.root / REVIEWS_FILE
    if not path.is_file():
        return []
    data: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def ancestry(store: RevisionStore, number: int) -> list[Revision]:
    """Revision ``number`` and its ancestors, newest first."""
    chain = []
    n: int | None = number
    while n is not None:
        rev = store.revision(n)
        chain.append(rev)
        n = rev.parent
    return chain


def structure_states(store: RevisionStore, number: int, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``{name: {"state", "note", "actor", "at"}}`` for every structure of revision ``number``."""
    events = review_events(store) if events is None else events
    chain = ancestry(store, number)
    states: dict[str, dict[str, Any]] = {}
    for rev in reversed(chain):
        names = [s["name"] for s in rev.structures]
        states = {name: dict(states.get(name, {"state": AUTOMATIC, "note": "", "actor": None, "at": None}))
                  for name in names}
        for name in rev.changed:
            if name in states:
                states[name] = {"state": CORRECTED, "note": "", "actor": rev.author, "at": rev.created_utc}
        for e in events:
            if e["revision"] == rev.number and e["structure"] in states:
                states[e["structure"]] = {k: e[k] for k in ("state", "note", "actor", "at")}
    return states


def record_decision(store: RevisionStore, structure: Any, revision: Any, decision: Any, note: Any,
                    actor: str) -> dict[str, Any]:
    """Check and keep one review decision; returns the event. Fields are checked in the request's terms."""
    if isinstance(revision, bool) or not isinstance(revision, int):
        raise InvalidReview("must be a revision number", "revision")
    if decision not in DECISIONS:
        raise InvalidReview(f"must be one of {', '.join(DECISIONS)}", "decision")
    if not isinstance(note, str) or len(note) > 2000:
        raise InvalidReview("must be a text of at most 2000 characters", "note")
    if decision == "request_correction" and not note.strip():
        raise InvalidReview("a correction request needs a note saying what to correct", "note")
    role = role_of(actor)
    if decision == "approve" and role not in APPROVING_ROLES:
        raise ReviewNotAllowed(f"only a surgeon approves a structure; this session's role is {role!r}")
    with store.locked():
        rev = store.revision(revision)
        if structure not in {s["name"] for s in rev.structures}:
            raise InvalidReview(f"revision {revision} has no structure {str(structure)[:40]!r}", "structure")
        event = {"structure": structure, "revision": revision, "state": DECISIONS[decision], "note": note,
                 "actor": actor, "role": role, "at": utc_now()}
        events = [*review_events(store), event]
        atomic_write_text(store.root / REVIEWS_FILE, json.dumps(events, indent=1) + "\n")
    return event
