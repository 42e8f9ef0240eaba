"""The UI's records in the appliance audit trail (logins, lockouts, locks, structure approvals)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.audit import AUDIT_FILENAME, AuditLog, AuditRecord


class UiAudit:
    """Opens ``<data_dir>/audit.sqlite3`` on first use and appends records with ``ui:<role>[:<person>]`` actors."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / AUDIT_FILENAME
        self._log: AuditLog | None = None
        self._lock = threading.Lock()

    def log(self) -> AuditLog:
        """The underlying :class:`AuditLog` (raises :class:`~appliance.audit.AuditError` when unusable)."""
        with self._lock:
            if self._log is None:
                self._log = AuditLog(self.path)
            return self._log

    def record(
        self,
        actor: str,
        action: str,
        study_hash: str | None = None,
        details: Mapping[str, Any] | None = None,
        requirement: str | None = None,
    ) -> AuditRecord:
        """Append one record; ``actor`` is a role, ``<role>:<person>`` (a named session) or ``kiosk`` and is
        written as ``ui:<actor>``."""
        return self.log().append(f"ui:{actor}", action, study_hash, details, requirement)
