"""Base exceptions. Each domain (ingest, engines, export, service, update) derives its own small hierarchy
from :class:`ApplianceError`; messages say what to do. Nothing reaches the user as a traceback: the CLI catches
``ApplianceError`` and prints its message.
"""

from __future__ import annotations

from collections.abc import Sequence


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code: int = 1


class ConfigurationError(ApplianceError):
    """A configuration file or option is invalid; the message names the key."""


class PipelineError(ApplianceError):
    """A stage of the pipeline is missing or returned something unusable, or options contradict each other; the
    message names it."""


class RefusedInput(ApplianceError):
    """The input was refused for reconstruction; ``findings`` say why. CLI exit code 2."""

    exit_code = 2

    def __init__(self, message: str, findings: Sequence[object] | None = None) -> None:
        super().__init__(message)
        self.findings = list(findings or [])
