"""Errors of the touchscreen UI (derived from :class:`~appliance.errors.ApplianceError`)."""

from __future__ import annotations

from appliance.errors import ApplianceError


class UiError(ApplianceError):
    """Base of the UI's errors."""


class UiConfigurationError(UiError):
    """The UI configuration is unusable; the message names the key to fix."""


class VendorMissing(UiError):
    """ui/static/vendor/ has not been built; run ``bash tools/build_ui_vendor.sh``."""
