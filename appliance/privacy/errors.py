"""Errors of privacy: the box secret and the de-identification profile."""

from __future__ import annotations

from appliance.errors import ApplianceError


class PrivacyError(ApplianceError):
    """Base of the privacy errors."""


class SecretError(PrivacyError):
    """The box secret cannot be read or created."""


class ProfileError(PrivacyError):
    """The shipped attribute table is missing or malformed (reinstall the appliance)."""
