"""Errors of the exporters: an export that cannot be written, a manifest that fails its schema, bad arguments."""

from __future__ import annotations

from appliance.errors import ApplianceError


class ExportError(ApplianceError):
    """An export could not be written (empty mesh, non-finite vertices, unwritable folder)."""


class ManifestError(ExportError):
    """A manifest does not satisfy the schema (a bug: the message names the field)."""


class InvalidImage(ExportError, ValueError):
    """An image handed to the PNG encoder is not an (H, W, 3) ``uint8`` array."""


class MismatchedParts(ExportError, ValueError):
    """Sequences that must run in parallel (meshes and their bodies or paths) differ in length."""


class InvalidAmf(ExportError):
    """An AMF document does not have the structure ISO/ASTM 52915 / GB/T 35352 prescribes."""


class PdfReportError(ExportError):
    """The PDF report could not be made (no Chromium, printing failed or timed out, unreadable case)."""


class UsbExportError(ExportError):
    """An export for the print lab could not be written and verified (medium, case, choice of files)."""


__all__ = [
    "ExportError",
    "InvalidAmf",
    "InvalidImage",
    "ManifestError",
    "MismatchedParts",
    "PdfReportError",
    "UsbExportError",
]
