"""Model review routes (Flask blueprint ``review_api``): edits as revisions, undo/redo, review decisions, worklist.

Same access rule as the service API (its :func:`~appliance.service.api.authorise_request` runs before every
request); the audited actor is the session's person/role or the API token (:func:`request_actor`), never a name
in the body. Routes (docs/review.md):

- ``GET /api/jobs/<id>/revisions``: current revision, every revision's record, the pointer's events.
- ``POST /api/jobs/<id>/revisions`` ``{"base": N, "ops": [...], "reason": "..."}``: 201 with the new revision.
- ``POST /api/jobs/<id>/revisions/undo`` / ``redo`` ``{"base": N}``: move the current pointer.
- ``GET /api/jobs/<id>/revisions/<n>``: one revision with the review state of each structure.
- ``GET /api/jobs/<id>/revisions/<n>/files/<path>``: a file of a revision (nothing outside it).
- ``POST /api/jobs/<id>/structures/<name>/review`` ``{"revision": N, "decision": "approve" |
  "request_correction", "note": "..."}``.
- ``GET /api/review/worklist``: structures whose current state is "correction requested", across jobs.
- ``GET /api/jobs/<id>/report`` / ``GET /api/jobs/<id>/case``: the report (HTML) and the manifest (JSON) of the
  case as it is exported (:mod:`appliance.service.case_export`): the approved revision of each structure, review
  history, lesions, measurements; ``?override_unapproved=true&reason=...`` for a reviewed case with unapproved
  structures (409 naming them otherwise; the override is audited and printed on the report).

Errors: 400 a malformed body or bad operation (``{"error", "field"}``), 403 a role that may not approve, 404 an
unknown job, revision or file, 409 a stale base, nothing to undo/redo, or unapproved structures in an export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request, send_file

from appliance.export.report import REPORT_NAME
from appliance.review.errors import (
    InvalidMeasurement,
    InvalidOperation,
    InvalidReview,
    NothingToMove,
    ReviewError,
    ReviewNotAllowed,
    StaleRevision,
    UnknownRevision,
)
from appliance.review.states import CORRECTION_REQUESTED, record_decision, structure_states
from appliance.review.store import Revision, RevisionStore
from appliance.review.workflow import create_revision, redo, undo
from appliance.service.api import authorise_request as authorise_api_request
from appliance.service.api import request_actor
from appliance.service.case_export import exported_case, override_reason
from appliance.service.errors import InvalidExportRequest, UnapprovedStructures, UnknownJob
from appliance.service.revisions import (
    REVISIONS_DIR,
    ReviewService,
    finished_output,
    image_loader,
    job_store,
    job_stores,
    mesh_settings,
)

review_api = Blueprint("appliance_review_api", __name__, url_prefix="/api")
review_api.before_request(authorise_api_request)


def review_service() -> ReviewService:
    service: ReviewService | None = current_app.config.get("APPLIANCE_SERVICE")
    if service is None or not hasattr(service, "audit") or not hasattr(service, "data_dir"):
        abort(503, description="the appliance service is not running")
    return service


def _error(status: int, message: str, field: str | None = None) -> tuple[Response, int]:
    body = {"error": message}
    if field is not None:
        body["field"] = field
    return jsonify(body), status


@review_api.errorhandler(ReviewError)
def review_error_answer(exc: ReviewError) -> tuple[Response, int]:
    if isinstance(exc, InvalidOperation | InvalidReview | InvalidMeasurement):
        return _error(400, str(exc), exc.field)
    if isinstance(exc, ReviewNotAllowed):
        return _error(403, str(exc))
    if isinstance(exc, UnknownRevision):
        return _error(404, str(exc))
    if isinstance(exc, StaleRevision | NothingToMove):
        return _error(409, str(exc))
    return _error(500, str(exc))


@review_api.errorhandler(UnknownJob)
def unknown_job_answer(exc: UnknownJob) -> tuple[Response, int]:
    return _error(404, str(exc))


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidOperation("the request body must be a JSON object", "body")
    return body


def revision_summary(rev: Revision, job_id: int) -> dict[str, Any]:
    """A revision's record with the URL of each of its files."""
    data = rev.to_dict()
    data["files"] = [{"path": p, "sha256": h, "url": f"/api/jobs/{job_id}/revisions/{rev.number}/files/{p}"}
                     for p, h in sorted(rev.files.items())]
    return data


def _audit(svc: ReviewService, job_id: int, action: str, details: dict[str, Any], requirement: str) -> None:
    svc.audit.append(request_actor(), action, svc.study_hash(svc.catalogue.job(job_id).study_uid),
                     {"job_id": job_id, **details}, requirement)


@review_api.get("/jobs/<int:job_id>/revisions")
def revisions(job_id: int) -> Response:
    """Every revision of a job's model (revision 0 is made from its outputs on first use)."""
    store = job_store(review_service(), job_id, request_actor())
    state = store.state()
    return jsonify({"current": state["current"], "events": state["events"],
                    "revisions": [revision_summary(r, job_id) for r in store.revisions()]})


@review_api.post("/jobs/<int:job_id>/revisions")
def create(job_id: int) -> tuple[Response, int]:
    """Apply edit operations to the current revision and keep the result as the next one."""
    svc = review_service()
    body = _body()
    store = job_store(svc, job_id, request_actor())
    rev = create_revision(store, body.get("base"), body.get("ops"), body.get("reason", ""), request_actor(),
                          lambda: image_loader(svc, job_id), mesh_settings(svc, job_id))
    _audit(svc, job_id, "revision.created", {"revision": rev.number, "parent": rev.parent, "reason": rev.reason,
                                             "ops": [o.get("op") for o in rev.ops], "changed": rev.changed,
                                             "removed": rev.removed, "files": rev.files}, "REQ-TRACE-1002")
    return jsonify(revision_summary(rev, job_id)), 201


def _move(job_id: int, kind: str) -> Response:
    svc = review_service()
    store = job_store(svc, job_id, request_actor())
    body = _body()
    state = (undo if kind == "undo" else redo)(store, body.get("base"), request_actor())
    _audit(svc, job_id, f"revision.{kind}", {"from": body.get("base"), "revision": state["current"]},
           "REQ-FUNC-1004")
    return jsonify({"current": state["current"], "events": state["events"]})


@review_api.post("/jobs/<int:job_id>/revisions/undo")
def undo_route(job_id: int) -> Response:
    """Make the current revision's parent current (``{"base": current}``)."""
    return _move(job_id, "undo")


@review_api.post("/jobs/<int:job_id>/revisions/redo")
def redo_route(job_id: int) -> Response:
    """Move forward to the revision the last undo left (``{"base": current}``)."""
    return _move(job_id, "redo")


@review_api.get("/jobs/<int:job_id>/revisions/<int:number>")
def revision(job_id: int, number: int) -> Response:
    """One revision, with the review state of each of its structures."""
    store = job_store(review_service(), job_id, request_actor())
    data = revision_summary(store.revision(number), job_id)
    data["review"] = structure_states(store, number)
    return jsonify(data)


@review_api.get("/jobs/<int:job_id>/revisions/<int:number>/files/<path:relpath>")
def revision_file(job_id: int, number: int, relpath: str) -> Response:
    """A file of one revision (labels, structures, record, meshes); never anything outside its folder."""
    store = job_store(review_service(), job_id, request_actor())
    return send_file(store.file(number, relpath), conditional=True)


@review_api.post("/jobs/<int:job_id>/structures/<name>/review")
def review(job_id: int, name: str) -> tuple[Response, int]:
    """Approve a structure in a revision, or request its correction with a note."""
    svc = review_service()
    body = _body()
    store = job_store(svc, job_id, request_actor())
    event = record_decision(store, name, body.get("revision"), body.get("decision"), body.get("note", ""),
                            request_actor())
    _audit(svc, job_id, f"structure.{event['state']}",
           {"structure": name, "revision": event["revision"], "note": event["note"], "role": event["role"]},
           "REQ-FUNC-1005")
    return jsonify({**event, "job_id": job_id}), 201


def _worklist_items(job_id: int, store: RevisionStore) -> list[dict[str, Any]]:
    current = store.current()
    return [{"job_id": job_id, "revision": current, "structure": name, **state}
            for name, state in structure_states(store, current).items() if state["state"] == CORRECTION_REQUESTED]


@review_api.get("/review/worklist")
def worklist() -> Response:
    """The modelling engineer's worklist: every structure whose current state is "correction requested"."""
    items = [item for job_id, store in job_stores(review_service()) for item in _worklist_items(job_id, store)]
    return jsonify({"corrections": items})


@review_api.errorhandler(UnapprovedStructures)
def unapproved_answer(exc: UnapprovedStructures) -> tuple[Response, int]:
    return jsonify({"error": str(exc), "unapproved": exc.structures}), 409


@review_api.errorhandler(InvalidExportRequest)
def invalid_export_answer(exc: InvalidExportRequest) -> tuple[Response, int]:
    return _error(400, str(exc), exc.field)


def _exported_file(job_id: int, name: str, export: str) -> bytes:
    """A file of the case as exported (report or manifest); the override comes from the query string."""
    svc = review_service()
    job, out = finished_output(svc, job_id)
    flag = request.args.get("override_unapproved", "false").lower()
    if flag not in ("true", "false", "1", "0"):
        raise InvalidExportRequest("must be true or false", "override_unapproved")
    reason = override_reason({"override_unapproved": flag in ("true", "1"), "reason": request.args.get("reason")})
    with exported_case(Path(svc.data_dir) / REVISIONS_DIR, job_id, out, request_actor(), reason, svc.audit,
                       svc.study_hash(job.study_uid), export) as folder:
        path = folder / name
        if not path.is_file():
            abort(404, description=f"job {job_id} has no {name}")
        return path.read_bytes()


@review_api.get("/jobs/<int:job_id>/report")
def case_report(job_id: int) -> Response:
    """The report of the case as exported: approved revisions, review history, lesions, measurements."""
    return Response(_exported_file(job_id, REPORT_NAME, "report"), mimetype="text/html")


@review_api.get("/jobs/<int:job_id>/case")
def case_manifest(job_id: int) -> Response:
    """The manifest of the case as exported (the job's manifest with review, lesions and measurements)."""
    return Response(_exported_file(job_id, "manifest.json", "manifest"), mimetype="application/json")
