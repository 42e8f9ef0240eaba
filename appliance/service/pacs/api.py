"""``/api/pacs``: "Find on PACS" for the kiosk and local tools (Flask blueprint ``pacs_api``).

Same access rule as the service API (REQ-PRIV-007): the service API's own check runs before every request
(bearer token, or an unlocked nurse/surgeon kiosk session). Routes:

- ``GET /api/pacs``: the configured nodes (name, AE title, host, port, tls, retrieve method).
- ``GET /api/pacs/<name>/studies?patient_id=&accession=&name=&date_from=&date_to=``: study-level C-FIND
  (``name`` is the beginning of the patient's name; dates ``YYYY-MM-DD``).
- ``GET /api/pacs/<name>/studies/<study_uid>/series``: series-level C-FIND.
- ``POST /api/pacs/<name>/retrieve`` ``{"study_instance_uid": ...}``: 202 and the retrieval (audited as the
  signed-in person or the API token, never a name the client sends).
- ``GET /api/pacs/retrievals`` and ``GET /api/pacs/retrievals/<id>``: progress of retrievals.

Errors: 400 bad criteria, 404 unknown node or retrieval, 502 the PACS refused or did not answer.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Protocol

from flask import Blueprint, Response, abort, current_app, jsonify, request

from appliance.audit import AuditLog
from appliance.config import ApplianceConfig
from appliance.service.api import authorise_request as authorise_api_request
from appliance.service.api import request_actor
from appliance.service.pacs.association import PacsContext
from appliance.service.pacs.errors import (
    PacsError,
    PacsQueryFailed,
    PacsUnreachable,
    QueryRefused,
    RetrieveFailed,
    UnknownPacsNode,
    UnknownRetrieval,
)
from appliance.service.pacs.retrieve import Retrievals
from appliance.service.pacs.search import search_series, search_studies
from appliance.service.storage import InstanceStore

pacs_api = Blueprint("appliance_pacs_api", __name__, url_prefix="/api/pacs")
pacs_api.before_request(authorise_api_request)

#: ``app.extensions`` key of the app's :class:`Retrievals`.
RETRIEVALS_KEY = "appliance_pacs_retrievals"


class PacsService(Protocol):
    """What the PACS routes use of the running service (:class:`~appliance.service.runtime.ApplianceService`)."""

    config: ApplianceConfig
    store: InstanceStore
    audit: AuditLog

    def study_hash(self, study_uid: str) -> str:
        """The study's keyed identity hash."""


def pacs_context(service: PacsService) -> PacsContext:
    """The query/retrieve context of a running service."""
    cfg = service.config
    return PacsContext(cfg.pacs, cfg.dicom.ae_title, cfg.dicom.tls, service.store, service.audit, service.study_hash)


def retrievals() -> Retrievals:
    """The app's retrievals (made on first use from ``APPLIANCE_SERVICE``; 503 without a service)."""
    found: Retrievals | None = current_app.extensions.get(RETRIEVALS_KEY)
    if found is None:
        service: PacsService | None = current_app.config.get("APPLIANCE_SERVICE")
        if service is None or not hasattr(service, "store"):
            abort(503, description="the appliance service is not running")
        found = current_app.extensions.setdefault(RETRIEVALS_KEY, Retrievals(pacs_context(service)))
    return found


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


@pacs_api.errorhandler(PacsError)
def _pacs_error(exc: PacsError) -> tuple[Response, int]:
    if isinstance(exc, QueryRefused):
        return _error(400, str(exc))
    if isinstance(exc, UnknownPacsNode | UnknownRetrieval):
        return _error(404, str(exc))
    if isinstance(exc, PacsUnreachable | PacsQueryFailed | RetrieveFailed):
        return _error(502, str(exc))
    return _error(500, str(exc))


@pacs_api.get("")
def nodes() -> Response:
    """The configured PACS nodes."""
    return jsonify({"nodes": [asdict(n) for n in retrievals().context.settings.nodes]})


@pacs_api.get("/<name>/studies")
def studies(name: str) -> Response:
    """Study-level C-FIND by patient ID, accession number, name prefix or study date range."""
    args = {k: v for k, v in request.args.items() if k != "actor"}
    return jsonify(search_studies(retrievals().context, name, args, request_actor()))


@pacs_api.get("/<name>/studies/<study_uid>/series")
def series(name: str, study_uid: str) -> Response:
    """Series-level C-FIND within one study."""
    return jsonify(search_series(retrievals().context, name, study_uid, request_actor()))


@pacs_api.post("/<name>/retrieve")
def retrieve(name: str) -> tuple[Response, int]:
    """Start retrieving a study to the box (C-MOVE, or C-GET for nodes with ``retrieve = "get"``)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, 'the request body must be a JSON object {"study_instance_uid": ...}')
    item = retrievals().start(name, body.get("study_instance_uid"), request_actor())
    return jsonify(item.to_dict()), 202


@pacs_api.get("/retrievals")
def retrieval_list() -> Response:
    """Retrievals since the service started, newest first."""
    return jsonify({"retrievals": [r.to_dict() for r in retrievals().all()]})


@pacs_api.get("/retrievals/<int:retrieval_id>")
def retrieval(retrieval_id: int) -> Response:
    """One retrieval's state, progress and counts."""
    return jsonify(retrievals().get(retrieval_id).to_dict())
