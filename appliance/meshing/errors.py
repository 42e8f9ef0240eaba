"""Errors of the meshing stage."""

from __future__ import annotations

from appliance.errors import ApplianceError


class MeshingError(ApplianceError):
    """The meshing stage could not produce a mesh; the message says what to change."""
