"""``Finding``: a QA verdict with a stable machine code, a severity and a sentence a nurse can read.

Refusals are Findings, not exceptions swallowed somewhere: every stage returns the findings it made and the
pipeline decides, from their severities, whether a volume may be reconstructed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.core.errors import InvalidFinding


class Severity(enum.StrEnum):
    """How a finding affects reconstruction.

    ``info``: recorded only. ``warning``: reconstruction goes on, the finding is shown with the result.
    ``refusal``: the volume is not reconstructed unless the caller passes an explicit, recorded override.
    ``error``: the input could not be used at all (unreadable file, no pixel data).
    """

    INFO = "info"
    WARNING = "warning"
    REFUSAL = "refusal"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Finding:
    """One verdict about the input or a result.

    Attributes:
        code: stable machine code (``slice_gap``, ``gantry_tilt`` ...); never translated.
        severity: see :class:`Severity`.
        message: one sentence a nurse can read, saying what was found and what to do.
        requirement: the requirement ID this finding enforces (``REQ-ACQ-...``), for traceability.
        details: machine-readable figures (angles, positions, file names).
    """

    code: str
    severity: Severity
    message: str
    requirement: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.code or not self.code.replace("_", "").isalnum() or self.code != self.code.lower():
            raise InvalidFinding(f"Finding code {self.code!r} must be a non-empty lower_snake_case word")
        if not self.message.strip():
            raise InvalidFinding(f"Finding {self.code!r} needs a message a nurse can read")
        object.__setattr__(self, "severity", Severity(self.severity))

    @property
    def blocks_reconstruction(self) -> bool:
        """True for refusals and errors."""
        return self.severity in (Severity.REFUSAL, Severity.ERROR)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"code", "severity", "message", "requirement", "details"}``."""
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "requirement": self.requirement,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        """Inverse of :meth:`to_dict`."""
        return cls(
            code=str(data["code"]),
            severity=Severity(data["severity"]),
            message=str(data["message"]),
            requirement=data.get("requirement"),
            details=dict(data.get("details") or {}),
        )


def blocking(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that block reconstruction."""
    return [f for f in findings if f.blocks_reconstruction]
