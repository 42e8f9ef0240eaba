"""The engines' exception hierarchy (presets, packs, backends, inference, lesions and margins).

Every error an engine raises on purpose derives from :class:`EngineError`; messages say what to do.
"""

from __future__ import annotations

from appliance.errors import ApplianceError


class EngineError(ApplianceError):
    """Base of the engines' errors (packs, backends, presets)."""


class UnknownPreset(EngineError):
    """``--preset`` named a preset that is not registered."""


__all__ = ["EngineError", "UnknownPreset"]
