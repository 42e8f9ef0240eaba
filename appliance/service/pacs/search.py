"""Audited searches ("Find on PACS"): which criteria were used and how many studies matched, never their values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appliance.service.pacs.association import PacsContext
from appliance.service.pacs.errors import PacsError
from appliance.service.pacs.query import StudyCriteria, check_study_uid, find_series, find_studies

REQ_QUERY = "REQ-FUNC-850"


def search_studies(context: PacsContext, node_name: str, args: Mapping[str, str], actor: str) -> dict[str, Any]:
    """Study-level C-FIND on a configured node; ``{"node", "studies", "truncated"}``; audited (also failures)."""
    node = context.node(node_name)
    criteria = StudyCriteria.from_args(args)
    details: dict[str, Any] = {"node": node.name, "level": "STUDY", "criteria": criteria.used()}
    try:
        studies, truncated = find_studies(context, node, criteria)
    except PacsError as exc:
        context.audit.append(actor, "pacs.query", None, {**details, "error": str(exc)}, REQ_QUERY)
        raise
    context.audit.append(actor, "pacs.query", None, {**details, "matches": len(studies), "truncated": truncated},
                         REQ_QUERY)  # fmt: skip
    return {"node": node.name, "studies": [s.to_dict() for s in studies], "truncated": truncated}


def search_series(context: PacsContext, node_name: str, study_uid: str, actor: str) -> dict[str, Any]:
    """Series-level C-FIND within one study; ``{"node", "study_instance_uid", "series"}``; audited."""
    node = context.node(node_name)
    uid = check_study_uid(study_uid)
    details: dict[str, Any] = {"node": node.name, "level": "SERIES"}
    try:
        series = find_series(context, node, uid)
    except PacsError as exc:
        context.audit.append(actor, "pacs.query", context.study_hash(uid), {**details, "error": str(exc)}, REQ_QUERY)
        raise
    context.audit.append(actor, "pacs.query", context.study_hash(uid), {**details, "matches": len(series)}, REQ_QUERY)
    return {"node": node.name, "study_instance_uid": uid, "series": [s.to_dict() for s in series]}
