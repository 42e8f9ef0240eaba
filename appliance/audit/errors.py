"""Errors of the audit trail."""

from __future__ import annotations

from appliance.errors import ApplianceError


class AuditError(ApplianceError):
    """The audit trail could not be written or read."""


class AuditTrailMissing(AuditError):
    """There is no audit trail where one was expected."""
