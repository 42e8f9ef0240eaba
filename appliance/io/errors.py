"""Errors of the volume file readers at the edge of the box (NIfTI, NRRD)."""

from __future__ import annotations

from appliance.errors import ApplianceError


class VolumeFileError(ApplianceError):
    """Base of the errors raised while reading a volume file."""


class NrrdError(VolumeFileError):
    """The NRRD header cannot be placed in patient space; the message names the field."""


__all__ = ["NrrdError", "VolumeFileError"]
