"""ACSE notification handlers: allow-list, audit of accepted/rejected/closed associations, per-association counts.

Rejections by the allow-list happen in ``EVT_REQUESTED`` (before negotiation): an A-ASSOCIATE-RJ with
"calling AE title not recognised" (the address is not told to the peer). The association limit is enforced by
pynetdicom (``maximum_associations``), whose A-ASSOCIATE-RJ "local limit exceeded" arrives here as
``EVT_REJECTED``. Every rejection is logged and audited; failed TLS handshakes are audited by the server module.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from appliance.audit import AuditLog
from appliance.config import DicomConfig
from appliance.service.receiver.acl import peer_allowed

log = logging.getLogger(__name__)


@dataclass
class AssociationStats:
    """What one association did (written to the audit trail when it closes)."""

    actor: str
    stored: int = 0
    identical: int = 0
    duplicates: int = 0
    refused_full: int = 0
    failed: int = 0
    studies: set[str] = field(default_factory=set)


def actor_of(assoc: Any) -> str:
    """``dicom:<calling AE>@<address>`` of the peer."""
    req = assoc.requestor
    ae = str(getattr(req, "ae_title", "") or "").strip()
    if not ae and req.primitive is not None:
        ae = str(getattr(req.primitive, "calling_ae_title", "") or "").strip()
    ae = ae or "?"
    return f"dicom:{ae}@{getattr(req, 'address', '?')}"


class AssociationTracker:
    """Keeps per-association counts and writes the association records of the audit trail."""

    def __init__(self, config: DicomConfig, audit: AuditLog, study_hash: Any) -> None:
        self.config = config
        self.audit = audit
        self.study_hash = study_hash
        self._stats: dict[int, AssociationStats] = {}
        self._lock = threading.Lock()
        self.rejected = 0

    def handlers(self) -> list[tuple[Any, Any]]:
        """The notification handlers to bind."""
        from pynetdicom import evt

        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_RELEASED, self.on_closed),
            (evt.EVT_ABORTED, self.on_closed),
        ]

    def stats(self, assoc: Any) -> AssociationStats:
        """The counts of one association (created on first use)."""
        with self._lock:
            s = self._stats.get(id(assoc))
            if s is None:
                s = self._stats[id(assoc)] = AssociationStats(actor_of(assoc))
            return s

    def on_requested(self, event: Any) -> None:
        """Reject calling AEs not on the allow-list (or from the wrong address) and wrong called AE titles."""
        assoc = event.assoc
        calling = str(getattr(assoc.requestor.primitive, "calling_ae_title", "")).strip()
        called = str(getattr(assoc.requestor.primitive, "called_ae_title", "")).strip()
        address = str(assoc.requestor.address)
        if not peer_allowed(self.config.allowed, calling, address):
            self._reject(assoc, 0x03, f"calling AE title {calling!r} is not allowed from {address}")
        elif called != self.config.ae_title:
            self._reject(assoc, 0x07, f"called AE title {called!r} is not ours ({self.config.ae_title!r})")

    def _reject(self, assoc: Any, diagnostic: int, why: str) -> None:
        with self._lock:
            self.rejected += 1
        log.warning("association from %s rejected: %s", actor_of(assoc), why)
        assoc.acse.send_reject(0x01, 0x01, diagnostic)  # permanent, service-user
        self.audit.append(actor_of(assoc), "association.rejected", None, {"reason": why}, "REQ-ACQ-301")
        assoc.kill()

    def on_accepted(self, event: Any) -> None:
        """Audit an accepted association."""
        s = self.stats(event.assoc)
        self.audit.append(s.actor, "association.accepted", None, {"called_ae": self.config.ae_title})

    def on_rejected(self, event: Any) -> None:
        """pynetdicom rejected the association (concurrent association limit)."""
        with self._lock:
            self.rejected += 1
        why = f"more than {self.config.max_associations} concurrent associations"
        log.warning("association from %s rejected: %s", actor_of(event.assoc), why)
        self.audit.append(actor_of(event.assoc), "association.rejected", None, {"reason": why}, "REQ-ACQ-303")

    def on_closed(self, event: Any) -> None:
        """Audit what a released or aborted association stored."""
        with self._lock:
            s = self._stats.pop(id(event.assoc), None)
        if s is None:
            return
        details = {
            "how": "released" if event.event.name == "EVT_RELEASED" else "aborted",
            "stored": s.stored, "identical": s.identical, "duplicates": s.duplicates,
            "refused_storage_full": s.refused_full, "failed": s.failed,
            "studies": sorted(self.study_hash(u) for u in s.studies),
        }  # fmt: skip
        self.audit.append(s.actor, "association.closed", None, details)
