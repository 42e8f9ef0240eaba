"""Errors of model review and revisions: a bad edit operation or measurement (naming its field), a stale base, an
unknown revision or review decision, a revision store that cannot be read or written."""

from __future__ import annotations

from appliance.errors import ApplianceError


class ReviewError(ApplianceError):
    """Base of the errors of model review and revisions."""


class InvalidOperation(ReviewError):
    """An edit operation is malformed or cannot apply to this label map; ``field`` names the offending field
    (``ops[2].sphere.radius_mm``) so the API answers 400 naming it. Nothing of the request was applied."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class StaleRevision(ReviewError):
    """The request was based on a revision that is no longer the current one (answered 409)."""


class UnknownRevision(ReviewError):
    """No such revision (or no revisions at all) for this job (answered 404)."""


class InvalidReview(ReviewError):
    """A review decision is malformed (unknown decision, structure or revision, missing note); ``field`` names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InvalidMeasurement(ReviewError):
    """A measurement request is malformed (unknown kind, structure or revision, a point outside the volume);
    ``field`` names the offending field (``a_lps``, ``structures[1]``). Nothing was saved."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ReviewNotAllowed(ReviewError):
    """The person's role may not take this decision (only a surgeon or the service token approves)."""


class RevisionStoreError(ReviewError):
    """The revision store is missing, damaged (a file's sha256 does not match) or cannot be written."""


class NothingToMove(ReviewError):
    """Undo at revision 0, or redo with nothing undone (answered 409)."""
