"""Audit trail: append-only, hash-chained records of who did what to which study, in SQLite."""

from appliance.audit.errors import AuditError, AuditTrailMissing
from appliance.audit.log import GENESIS_HASH, AuditLog, AuditRecord, record_hash

#: File name of the audit trail inside the data folder.
AUDIT_FILENAME = "audit.sqlite3"

__all__ = [
    "AUDIT_FILENAME",
    "GENESIS_HASH",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "AuditTrailMissing",
    "record_hash",
]
