"""Errors of the trace matrix (derived from :class:`~appliance.errors.ApplianceError`)."""

from __future__ import annotations

from appliance.errors import ApplianceError


class TraceError(ApplianceError):
    """Base of the trace matrix's errors."""


class RegisterError(TraceError):
    """The requirement register or the risk file is malformed or missing."""
