"""Ingest's small exception hierarchy. Messages say what to do; the CLI prints them without a traceback."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from appliance.core import Finding
from appliance.errors import ApplianceError, RefusedInput


class IngestError(ApplianceError):
    """The input could not be used (nothing readable found, unknown series UID...)."""


class NoSeriesFound(IngestError):
    """No reconstructable image series was found in the input; ``findings`` say what was found instead."""

    def __init__(self, message: str, findings: Sequence[Finding] = ()) -> None:
        super().__init__(message)
        self.findings: list[Finding] = list(findings)


class UnknownSeries(IngestError):
    """The series UID asked for is not in the input."""


class PixelDecodeError(IngestError):
    """One file's pixels could not be decoded; ``path`` names it."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path.name}: {why}")
        self.path = path
        self.why = why


class InvalidGeometry(IngestError, ValueError):
    """A stack's geometry tags cannot place it in space (missing tags, zero direction vector)."""


class InvalidSliceSpacing(IngestError, ValueError):
    """A resampling slice spacing that is not positive."""


class SeriesRefused(RefusedInput):
    """A series was refused for reconstruction; ``findings`` say why (exit code 2)."""

    def __init__(self, message: str, findings: Sequence[Finding] = ()) -> None:
        super().__init__(message, list(findings))
        self.refusal_findings: list[Finding] = list(findings)
