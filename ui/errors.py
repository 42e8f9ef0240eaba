"""Errors of the touchscreen UI (derived from :class:`~appliance.errors.ApplianceError`)."""

from __future__ import annotations

from appliance.errors import ApplianceError


class UiError(ApplianceError):
    """Base of the UI's errors."""


class UiConfigurationError(UiError):
    """The UI configuration is unusable; the message names the key to fix."""


class CatalogueError(UiError):
    """A message catalogue is missing, malformed or out of step with the other."""


class InvalidPin(UiError, ValueError):
    """A PIN that is not 4 to 12 digits (a ``ValueError`` too, as callers of ``hash_pin`` expect)."""


class VendorMissing(UiError):
    """ui/static/vendor/ has not been built; run ``bash tools/build_ui_vendor.sh``."""
