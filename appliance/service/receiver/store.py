"""C-STORE: one received dataset checked, staged, group-committed and answered; this never raises.

The dataset is stored as received (no decode/re-encode) under a Part 10 header built from the request. It is
checked completely first (:mod:`.dataset`); success is answered only after the group commit made it durable.
Statuses: 0x0000 stored (or already held, or a differing duplicate kept aside and flagged), 0xA700 out of
resources (quota or disk reserve reached; nothing is deleted), 0xC000 cannot understand (truncated or impossible
dataset, unusable UIDs), 0x0110 processing failure (disk or database error, anything else).
A refused instance of a known study is remembered, so that study is not taken as complete (see the catalogue).
"""

from __future__ import annotations

import logging

from appliance.service.errors import StorageError, StorageFull
from appliance.service.receiver.association import AssociationStats
from appliance.service.receiver.commit import GroupCommitter, Lap, StageTimings
from appliance.service.receiver.dataset import inspect_dataset, part10_header
from appliance.service.receiver.dimse import Command
from appliance.service.receiver.errors import UnusableDataset, UnusableDatasetOf
from appliance.service.receiver.pdu import IMPLEMENTATION_CLASS_UID
from appliance.service.storage import Buffer, InstanceStore, StagedInstance, summarise

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110

REFUSED_STORAGE_FULL = "storage full"
REFUSED_UNUSABLE = "unusable data"
REFUSED_FAILURE = "processing failure"


class StoreHandler:
    """Handles the C-STORE requests of every association of one receiver."""

    def __init__(self, store: InstanceStore, committer: GroupCommitter, timings: StageTimings) -> None:
        self.store = store
        self.committer = committer
        self.timings = timings

    def _refused(self, study_uid: str, sop_uid: str, reason: str) -> None:
        try:
            self.store.catalogue.record_refusal(study_uid, sop_uid, reason)
        except Exception:  # the refusal is still answered; only the study's bookkeeping is missing
            log.exception("cannot record a refused instance")

    def handle(self, request: Command, transfer_syntax: str, data: Buffer, stats: AssociationStats) -> tuple[int, str]:
        """``(status, error comment)`` for one C-STORE request with its dataset ``data``."""
        lap = Lap(self.timings)
        try:
            values = inspect_dataset(data, transfer_syntax, request.sop_class_uid, request.sop_instance_uid)
            summary = summarise(values)
        except (UnusableDataset, StorageError) as exc:
            stats.failed += 1
            log.warning("C-STORE from %s not understood: %s", stats.actor, exc)
            if isinstance(exc, UnusableDatasetOf):
                self._refused(exc.study_uid, exc.sop_uid, REFUSED_UNUSABLE)
            return STATUS_CANNOT_UNDERSTAND, str(exc)[:64]
        lap.mark("check (walk every element, summary)")
        staged: StagedInstance | None = None
        try:
            header = part10_header(request.sop_class_uid, request.sop_instance_uid, transfer_syntax,
                                   IMPLEMENTATION_CLASS_UID)  # fmt: skip
            staged = self.store.stage([header, data], summary, stats.actor)
            lap.mark("write + fsync (staged file)")
            staged = self.store.place(staged)
            lap.mark("rename + folder fsync (own thread)")
            result = self.committer.commit(staged)
        except StorageFull as exc:
            stats.refused_full += 1
            log.warning("C-STORE from %s refused: %s", stats.actor, exc)
            self._refused(summary.study_uid, summary.sop_uid, REFUSED_STORAGE_FULL)
            return STATUS_OUT_OF_RESOURCES, "storage full"
        except Exception as exc:
            stats.failed += 1
            log.error("C-STORE from %s failed: %s", stats.actor, exc, exc_info=not isinstance(exc, StorageError))
            self._refused(summary.study_uid, summary.sop_uid, REFUSED_FAILURE)
            return STATUS_PROCESSING_FAILURE, "processing failure"
        lap.mark("wait for (or lead) the group commit")
        self.timings.count(instances=1)
        if result.outcome == "stored":
            stats.stored += 1
        elif result.outcome == "identical":
            stats.identical += 1
        else:
            stats.duplicates += 1
        stats.studies.add(summary.study_uid)
        return STATUS_SUCCESS, ""
