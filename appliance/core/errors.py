"""Errors of the core types: a constructor refusing inconsistent data, or a lookup of an unknown structure.

Each also derives from the builtin it replaced (``ValueError`` / ``KeyError``), so callers that catch the builtin
keep working.
"""

from __future__ import annotations

from appliance.errors import ApplianceError


class CoreError(ApplianceError):
    """Base of the errors raised by the core types."""


class InvalidVolume(CoreError, ValueError):
    """A ``Volume`` was built from an array or affine that cannot be a voxel grid in patient space."""


class InvalidLabelMap(CoreError, ValueError):
    """A ``LabelMap`` or ``Structure`` is inconsistent (shape, dtype, affine, duplicate or invalid label/name)."""


class InvalidMesh(CoreError, ValueError):
    """A ``Mesh`` has vertices or faces of the wrong shape, or faces indexing missing vertices."""


class InvalidFinding(CoreError, ValueError):
    """A ``Finding`` has an invalid code or an empty message."""


class UnknownStructure(CoreError, KeyError):
    """A label map has no structure of the requested name; the message lists the known ones."""


class TerminologyError(CoreError, ValueError):
    """A terminology table (structure names, categories, SNOMED CT codes) is missing, malformed, or has no such
    language."""


__all__ = ["CoreError", "InvalidFinding", "InvalidLabelMap", "InvalidMesh", "InvalidVolume", "TerminologyError",
           "UnknownStructure"]
