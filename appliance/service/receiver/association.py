"""Association bookkeeping: who the peer is, what it stored, and the association records of the audit trail.

Every accepted, rejected and closed association is logged and audited (rejections with their reason; failed TLS
handshakes are audited by the server module).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.audit import AuditLog
from appliance.config import DicomConfig

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


def actor_name(calling_ae: str, address: str) -> str:
    """``dicom:<calling AE>@<address>`` of a peer."""
    return f"dicom:{calling_ae.strip() or '?'}@{address}"


class AssociationTracker:
    """Counts open associations (for the limit) and writes the association records of the audit trail."""

    def __init__(self, config: DicomConfig, audit: AuditLog, study_hash: Callable[[str], str]) -> None:
        self.config = config
        self.audit = audit
        self.study_hash = study_hash
        self._lock = threading.Lock()
        self.established = 0
        self.rejected = 0

    def try_open(self) -> bool:
        """Count one more association unless ``max_associations`` are open already."""
        with self._lock:
            if self.established >= self.config.max_associations:
                return False
            self.established += 1
            return True

    def rejected_by(self, actor: str, why: str, requirement: str) -> None:
        """Log and audit a rejected association."""
        with self._lock:
            self.rejected += 1
        log.warning("association from %s rejected: %s", actor, why)
        self.audit.append(actor, "association.rejected", None, {"reason": why}, requirement)

    def accepted(self, stats: AssociationStats) -> None:
        """Audit an accepted association."""
        self.audit.append(stats.actor, "association.accepted", None, {"called_ae": self.config.ae_title})

    def closed(self, stats: AssociationStats, how: str) -> None:
        """Audit what a released or aborted association stored; it no longer counts against the limit."""
        with self._lock:
            self.established -= 1
        details = {
            "how": how, "stored": stats.stored, "identical": stats.identical, "duplicates": stats.duplicates,
            "refused_storage_full": stats.refused_full, "failed": stats.failed,
            "studies": sorted(self.study_hash(u) for u in stats.studies),
        }  # fmt: skip
        self.audit.append(stats.actor, "association.closed", None, details)
