"""C-STORE intervention handler: the response status is what this function returns; it never raises.

The dataset is written to disk as received (no decode/re-encode), atomically, and recorded before success is
returned. Statuses: 0x0000 stored (or already held, or a differing duplicate kept aside and flagged), 0xA700
out of resources (quota or disk reserve reached; nothing is deleted), 0xC000 cannot understand (unusable UIDs,
unreadable dataset), 0x0110 processing failure (any other error).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import pydicom

from appliance.service.errors import StorageError, StorageFull
from appliance.service.receiver.association import AssociationTracker
from appliance.service.storage import InstanceStore, summarise

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110


def make_store_handler(store: InstanceStore, tracker: AssociationTracker) -> Callable[[Any], int]:
    """The ``EVT_C_STORE`` handler bound to ``store``."""

    def handle_store(event: Any) -> int:
        stats = tracker.stats(event.assoc)
        try:
            data = event.encoded_dataset()
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            summary = summarise(ds)
            result = store.store(data, summary, stats.actor)
        except StorageFull as exc:
            stats.refused_full += 1
            log.warning("C-STORE from %s refused: %s", stats.actor, exc)
            return STATUS_OUT_OF_RESOURCES
        except (StorageError, pydicom.errors.InvalidDicomError) as exc:
            stats.failed += 1
            log.warning("C-STORE from %s not understood: %s", stats.actor, exc)
            return STATUS_CANNOT_UNDERSTAND
        except Exception:
            stats.failed += 1
            log.exception("C-STORE from %s failed", stats.actor)
            return STATUS_PROCESSING_FAILURE
        if result.outcome == "stored":
            stats.stored += 1
        elif result.outcome == "identical":
            stats.identical += 1
        else:
            stats.duplicates += 1
        stats.studies.add(summary.study_uid)
        return STATUS_SUCCESS

    return handle_store
