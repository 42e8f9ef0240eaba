"""Retrievals: C-MOVE (or C-GET where the node prefers it) of one study to the box, in the background, audited.

:meth:`Retrievals.start` checks the node and the UID, records ``pacs.retrieve.requested`` and returns at once;
a thread runs the retrieval, updating the counts the nurse sees as progress (``GET /api/pacs/retrievals/<id>``),
and records ``pacs.retrieve.finished`` (counts, status, instances of the study now on the box) or
``pacs.retrieve.failed`` (why). The instances land in the box's store either way (the receiver for C-MOVE, the
C-GET handler otherwise), so the study then completes and is checked and queued like any received study.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from appliance.service.errors import UnknownStudy
from appliance.service.pacs.association import PacsContext, describe
from appliance.service.pacs.errors import PacsError, RetrieveFailed, UnknownRetrieval
from appliance.service.pacs.get import get_study
from appliance.service.pacs.move import move_study
from appliance.service.pacs.query import check_study_uid
from appliance.service.pacs.suboperations import SUCCESS, SubOperations

log = logging.getLogger(__name__)

REQ_RETRIEVE = "REQ-FUNC-851"


@dataclass
class Retrieval:
    """One retrieval as the nurse follows it."""

    id: int
    node: str
    study_uid: str
    method: str
    actor: str
    state: str = "running"
    counts: SubOperations = field(default_factory=SubOperations)
    on_box: int = 0
    message: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def progress(self) -> float:
        """0..1 from the sub-operation counts (1 when finished)."""
        if self.state != "running":
            return 1.0
        c = self.counts
        done = c.completed + c.failed + c.warning
        total = done + (c.remaining or 0)
        return done / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "id": self.id, "node": self.node, "study_instance_uid": self.study_uid, "method": self.method,
            "state": self.state, "progress": round(self.progress(), 4), "suboperations": self.counts.to_dict(),
            "instances_on_box": self.on_box, "message": self.message, "started_at": self.started_at,
            "finished_at": self.finished_at,
        }  # fmt: skip


class Retrievals:
    """The retrievals started since the service started (kept in memory; the audit trail keeps them for good)."""

    def __init__(self, context: PacsContext) -> None:
        self.context = context
        self._items: dict[int, Retrieval] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, node_name: str, study_uid: object, actor: str) -> Retrieval:
        """Begin retrieving a study (its UID as received) from a configured node; returns at once; audited."""
        node = self.context.node(node_name)
        uid = check_study_uid(study_uid)
        with self._lock:
            item = Retrieval(next(self._ids), node.name, uid, "C-GET" if node.retrieve == "get" else "C-MOVE", actor)
            self._items[item.id] = item
        self.context.audit.append(
            actor, "pacs.retrieve.requested", self.context.study_hash(uid),
            {"retrieval": item.id, "node": node.name, "method": item.method}, REQ_RETRIEVE,
        )  # fmt: skip
        thread = threading.Thread(target=self._run, args=(item,), name=f"pacs-retrieve-{item.id}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return item

    def get(self, retrieval_id: int) -> Retrieval:
        """One retrieval; :class:`UnknownRetrieval` when there is none of that id."""
        with self._lock:
            item = self._items.get(retrieval_id)
        if item is None:
            raise UnknownRetrieval(f"no retrieval {retrieval_id} since the service started")
        return item

    def all(self) -> list[Retrieval]:
        """Every retrieval, newest first."""
        with self._lock:
            return sorted(self._items.values(), key=lambda r: r.id, reverse=True)

    def wait(self, timeout: float) -> None:
        """Wait for running retrievals (tests, orderly stop)."""
        end = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, end - time.monotonic()))

    def _on_box(self, study_uid: str) -> int:
        try:
            return self.context.store.catalogue.study(study_uid).n_instances
        except UnknownStudy:
            return 0

    def _run(self, item: Retrieval) -> None:
        ctx = self.context
        node = ctx.node(item.node)
        deadline = time.monotonic() + ctx.settings.retrieve_timeout_seconds

        def progress(counts: SubOperations) -> None:
            item.counts = counts
            item.on_box = self._on_box(item.study_uid)

        operation = get_study if item.method == "C-GET" else move_study
        try:
            counts = operation(ctx, node, item.study_uid, progress, deadline)
            item.counts = counts
            item.on_box = self._on_box(item.study_uid)
            if counts.status != SUCCESS or counts.failed:
                raise RetrieveFailed(f"retrieval from {describe(node)}: {counts.meaning()}")
        except PacsError as exc:
            self._finish(item, "failed", str(exc))
            return
        except Exception as exc:  # a thread must not die silently: the nurse would wait for ever
            log.exception("retrieval %d failed", item.id)
            self._finish(item, "failed", f"retrieval failed unexpectedly: {exc}")
            return
        self._finish(item, "done", f"{counts.completed} instance(s) received")

    def _finish(self, item: Retrieval, state: str, message: str) -> None:
        """Record the outcome in the audit trail, then show it (a reader who sees the state finds the record)."""
        on_box = self._on_box(item.study_uid)
        counts = {k: v for k, v in item.counts.to_dict().items() if k != "failed_sop_uids"}  # UIDs stay off the trail
        details: dict[str, Any] = {"retrieval": item.id, "node": item.node, "method": item.method,
                                   "suboperations": counts, "instances_on_box": on_box,
                                   "failed_instances": len(item.counts.failed_sop_uids)}  # fmt: skip
        if state == "failed":
            details["error"] = message
        self.context.audit.append(item.actor, f"pacs.retrieve.{'finished' if state == 'done' else 'failed'}",
                                  self.context.study_hash(item.study_uid), details, REQ_RETRIEVE)  # fmt: skip
        item.on_box, item.message, item.finished_at = on_box, message, time.time()
        item.state = state
        log.info("retrieval %d from %s: %s (%s)", item.id, item.node, state, message)
