"""Model review on the box: server-side edit operations on a job's label map, immutable revisions, re-meshing of
the changed structures, and review states per structure and revision (docs/review.md)."""

from __future__ import annotations

from appliance.review.edit import EditResult, apply_operations
from appliance.review.errors import InvalidOperation, ReviewError, StaleRevision
from appliance.review.operations import OPERATION_NAMES, Operation, parse_operations
from appliance.review.store import Revision, RevisionStore

__all__ = ["OPERATION_NAMES", "EditResult", "InvalidOperation", "Operation", "ReviewError", "Revision",
           "RevisionStore", "StaleRevision", "apply_operations", "parse_operations"]
