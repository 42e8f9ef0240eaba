"""The HTTP JSON API (Flask blueprint, ``/api``) used by the touchscreen UI and by tests.

The blueprint finds the running :class:`~appliance.service.runtime.ApplianceService` at
``current_app.config["APPLIANCE_SERVICE"]``. Its OpenAPI description is the static file ``openapi.json`` beside
this module, served at ``/api/openapi.json``.

Access (REQ-PRIV-007): every endpoint except ``GET /api/health`` and ``GET /api/openapi.json`` needs either
``Authorization: Bearer <token>`` with the service API token (``appliance serve`` writes a fresh one at each start
to ``<data_dir>/run/api_token``, mode 0600, removed again at an orderly stop, see :mod:`appliance.service.api_token`;
the app holds it at ``app.config["APPLIANCE_API_TOKEN"]``) or what the
pluggable authoriser at ``app.config["APPLIANCE_API_AUTHORISER"]`` allows (the kiosk UI installs one that accepts
an unlocked nurse/surgeon session). Without an authoriser only the token is accepted. The check is
:func:`authorise_request`, the blueprint's one ``before_request``. ``openapi.json`` declares both ways in
``components.securitySchemes`` (``apiToken``: HTTP bearer; ``kioskSession``: the UI's session cookie) with a
top-level ``security`` requirement, and ``security: []`` on the :data:`OPEN_ENDPOINTS`.

Who did it (REQ-TRACE-652): the audit actor of a request is what authenticated it, never what the body names:
``api:token`` for the bearer token, else what the identity hook at ``app.config["APPLIANCE_API_IDENTITY"]``
says (the kiosk installs one answering ``ui:<role>`` of the session). A body's ``actor`` key is ignored.

Bodies (REQ-SAFE-655): a body of the wrong shape or a field of the wrong type is answered 400 naming the field
(``{"error": ..., "field": ...}``); mesh format names are checked against the writers at the API. ``/api/health``
is open, so its alarm texts carry no UIDs or file paths (:func:`appliance.service.redact.redact_identifiers`).
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

from flask import Blueprint, Response, abort, current_app, g, jsonify, request, send_file, stream_with_context

from appliance.export import FORMATS as MESH_FORMATS
from appliance.export.manifest import MANIFEST_NAME, VIEWABLE_NAME
from appliance.service.api_token import API_TOKEN_FILE as API_TOKEN_FILE
from appliance.service.api_token import issue_api_token as issue_api_token
from appliance.service.api_token import read_api_token as read_api_token
from appliance.service.case_export import override_reason
from appliance.service.catalogue import FINAL_STATES, VIEWABLE_STATE, Catalogue
from appliance.service.errors import (
    DicomExportError,
    InvalidExportRequest,
    ThumbnailUnavailable,
    UnapprovedStructures,
    UnknownJob,
    UnknownStudy,
)
from appliance.service.export.job_export import ExportContext, export_job
from appliance.service.importer import ImportWatcher
from appliance.service.preset_choice import AUTO_PRESET, preset_modalities, preset_names, preset_refusal
from appliance.service.redact import redact_identifiers
from appliance.service.thumbnails import add_thumbnail_urls, series_thumbnail

api_blueprint = Blueprint("appliance_api", __name__, url_prefix="/api")

#: Seconds between job-state checks of an event stream, and the longest a stream stays open.
SSE_POLL_S = 0.25
SSE_MAX_S = 3600.0
SSE_KEEPALIVE_S = 15.0

#: ``app.config`` keys: the service API token, and the authoriser asked when no bearer token is sent.
API_TOKEN_KEY = "APPLIANCE_API_TOKEN"
AUTHORISER_KEY = "APPLIANCE_API_AUTHORISER"
#: ``app.config`` key of the hook naming the audit actor of an authorised request without a bearer token.
IDENTITY_KEY = "APPLIANCE_API_IDENTITY"
#: The audit actor of requests authenticated by the service API token.
TOKEN_ACTOR = "api:token"
#: Endpoints anyone on the box may call (no patient data).
OPEN_ENDPOINTS = frozenset({"appliance_api.health", "appliance_api.openapi"})

#: What an authoriser says about the current request: allowed, not authenticated (401), or role refused (403).
Access = Literal["allowed", "unauthenticated", "forbidden"]
Authoriser = Callable[[], Access]
#: Names the actor of the current request (``ui:nurse``), None when it cannot.
Identity = Callable[[], str | None]


class ApiService(Protocol):
    """What the API uses of the service found at ``APPLIANCE_SERVICE``.

    :class:`~appliance.service.runtime.ApplianceService` offers all of it; the UI's demo stand-in
    (``ui.demo.FolderService``) only the catalogue and health, which is all the demo's pages call.
    """

    catalogue: Catalogue
    importer: ImportWatcher | None
    export_context: ExportContext

    def health(self) -> dict[str, Any]:
        """Status for ``/api/health``."""

    def request_reconstruction(
        self,
        study_uid: str,
        requested_by: str,
        preset: str | None = None,
        device: str | None = None,
        formats: list[str] | None = None,
        override: bool = False,
    ) -> int:
        """Queue a reconstruction of a study; returns the job id."""


_HOW_TO_AUTHENTICATE = (
    "authentication required: log in on the kiosk (an unlocked nurse, surgeon or modelling-engineer session) or send "
    f"'Authorization: Bearer <token>' with the service API token from <data_dir>/{API_TOKEN_FILE.as_posix()}"
)


def _bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None when the header is absent or of another kind."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


@api_blueprint.before_request
def authorise_request() -> tuple[Response, int] | None:
    """The one access check of the API (REQ-PRIV-007); None lets the request through."""
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    sent = _bearer_token()
    if sent is not None:
        expected = current_app.config.get(API_TOKEN_KEY)
        if isinstance(expected, str) and expected and hmac.compare_digest(sent.encode(), expected.encode()):
            g.api_actor = TOKEN_ACTOR
            return None
        return _error(401, "the bearer token is not this service's API token; " + _HOW_TO_AUTHENTICATE)
    authoriser: Authoriser | None = current_app.config.get(AUTHORISER_KEY)
    access: Access = authoriser() if authoriser is not None else "unauthenticated"
    if access == "allowed":
        identity: Identity | None = current_app.config.get(IDENTITY_KEY)
        g.api_actor = (identity() if identity is not None else None) or "ui:unknown"
        return None
    if access == "forbidden":
        return _error(
            403, "this role sees no patient data (studies, jobs, files); log in as nurse, surgeon or modelling engineer"
        )
    return _error(401, _HOW_TO_AUTHENTICATE)


def _service() -> ApiService:
    """The running service (503 when the app has none)."""
    service: ApiService | None = current_app.config.get("APPLIANCE_SERVICE")
    if service is None:
        abort(503, description="the appliance service is not running")
    return service


def _error(status: int, message: str, field: str | None = None) -> tuple[Response, int]:
    body: dict[str, str] = {"error": message}
    if field is not None:
        body["field"] = field
    return jsonify(body), status


def request_actor() -> str:
    """The audit actor of this request, set by :func:`authorise_request` from the token or the session (never
    from the body)."""
    return str(g.get("api_actor") or "ui:unknown")


def _json_object() -> dict[str, Any] | None:
    """The request's JSON object; ``{}`` without a body; None when the body is not a JSON object."""
    if not request.get_data(cache=True):
        return {}
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


@api_blueprint.errorhandler(UnknownStudy)
@api_blueprint.errorhandler(UnknownJob)
def _not_found(exc: Exception) -> tuple[Response, int]:
    return _error(404, str(exc))


@api_blueprint.get("/health")
def health() -> Response:
    """Service status, queue counts, storage and alarms (alarm texts without UIDs or paths: this is open)."""
    status = dict(_service().health())
    status["alarms"] = [
        {**a, "message": redact_identifiers(str(a.get("message", "")))} if isinstance(a, dict) else a
        for a in status.get("alarms", [])
    ]
    return jsonify(status)


@api_blueprint.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 description of this API."""
    text = resources.files("appliance.service").joinpath("openapi.json").read_text(encoding="utf-8")
    return Response(text, mimetype="application/json")


@api_blueprint.get("/presets")
def presets() -> Response:
    """The presets a reconstruction may ask for, from the engines' registry (REQ-FUNC-800)."""
    return jsonify({"default": AUTO_PRESET,
                    "presets": [{"name": n, "modalities": preset_modalities(n)} for n in preset_names()]})


def _studies_dir(svc: ApiService) -> Path | None:
    """Where the service keeps the received images (None: a stand-in that keeps none)."""
    data_dir: Path | None = getattr(svc, "data_dir", None)
    return Path(data_dir) / "studies" if data_dir is not None else None


def _with_thumbnails(svc: ApiService, study: dict[str, Any]) -> dict[str, Any]:
    """A study's JSON with ``thumbnail`` URLs on its stored CT/MR image series (:func:`add_thumbnail_urls`)."""
    return add_thumbnail_urls(study, _studies_dir(svc))


@api_blueprint.get("/studies")
def studies() -> Response:
    """Studies on the box, newest first."""
    svc = _service()
    shown = [s for s in svc.catalogue.studies() if s.state != "purged"]
    return jsonify({"studies": [_with_thumbnails(svc, s.to_dict()) for s in shown]})


@api_blueprint.get("/studies/<uid>/series/<series_uid>/thumbnail.png")
def thumbnail(uid: str, series_uid: str) -> Response | tuple[Response, int]:
    """The middle image of a series as a small PNG for the inbox (pixel data only: no patient text)."""
    svc = _service()
    if series_uid not in {s["series_instance_uid"] for s in svc.catalogue.study(uid).series}:
        return _error(404, f"study {uid} has no series {series_uid}")
    studies_dir = _studies_dir(svc)
    if studies_dir is None:
        return _error(404, "this service keeps no images")
    try:
        png = series_thumbnail(studies_dir.parent, uid, series_uid)
    except ThumbnailUnavailable as exc:
        return _error(404, f"no thumbnail for series {series_uid}: {exc}")
    return Response(png, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})


@api_blueprint.get("/studies/<uid>")
def study(uid: str) -> Response:
    """One study with its series, findings and jobs."""
    svc = _service()
    data = _with_thumbnails(svc, svc.catalogue.study(uid).to_dict())
    data["jobs"] = [j.to_dict() for j in svc.catalogue.jobs(study_uid=uid)]
    return jsonify(data)


@api_blueprint.post("/studies/<uid>/reconstruct")
def reconstruct(uid: str) -> tuple[Response, int]:
    """Queue a reconstruction. Body (optional JSON): ``preset``, ``device``, ``formats``, ``override``.

    The audited actor is the session's role or the API token (an ``actor`` key in the body is ignored).
    """
    svc = _service()
    body = _json_object()
    if body is None:
        return _error(400, "the request body must be a JSON object", "body")
    for key, kind in (("preset", str), ("device", str), ("override", bool)):
        if key in body and not isinstance(body[key], kind):
            return _error(400, f"'{key}' must be a {kind.__name__}", key)
    formats = body.get("formats")
    if formats is not None and (
        not isinstance(formats, list) or not all(isinstance(f, str) for f in formats)
    ):
        return _error(400, "'formats' must be a list of strings", "formats")
    unknown = [f for f in formats or [] if f not in MESH_FORMATS]
    if unknown:
        return _error(400, f"'formats': unknown format {unknown[0][:40]!r}; choose from {', '.join(MESH_FORMATS)}",
                      "formats")  # fmt: skip
    if body.get("device") not in (None, "auto", "cpu", "cuda"):
        return _error(400, "'device' must be auto, cpu or cuda", "device")
    known = preset_names()
    if "preset" in body and body["preset"] not in known:
        return _error(400, f"unknown preset {str(body['preset'])[:40]!r}; choose one of {', '.join(known)}", "preset")
    refusal = preset_refusal(body.get("preset"), svc.catalogue.study(uid).to_dict())  # 404 when unknown
    if refusal is not None:
        return _error(409, refusal)
    actor = request_actor()
    job_id = svc.request_reconstruction(
        uid, actor, preset=body.get("preset"), device=body.get("device"), formats=formats,
        override=bool(body.get("override", False)),
    )  # fmt: skip
    return jsonify(svc.catalogue.job(job_id).to_dict()), 202


@api_blueprint.get("/jobs")
def jobs() -> Response:
    """Jobs, newest first (``?state=`` and ``?study=`` filter)."""
    svc = _service()
    found = svc.catalogue.jobs(study_uid=request.args.get("study"), state=request.args.get("state"))
    return jsonify({"jobs": [j.to_dict() for j in found]})


@api_blueprint.get("/jobs/<int:job_id>")
def job(job_id: int) -> Response:
    """One job: state, stage, progress, study UID, manifest path when done, files (when done; when ``viewable``
    the files the kiosk may show)."""
    svc = _service()
    data = svc.catalogue.job(job_id).to_dict()
    data["files"] = _files(svc, job_id) if data["state"] in ("done", VIEWABLE_STATE) else []
    return jsonify(data)


#: The files a ``viewable`` job serves: these keys of its ``files`` and each structure's GLB (what the kiosk shows).
VIEWER_FILE_KEYS = frozenset({"labels", "structures", "segmentation", "image", "scene_glb"})


def viewable_files(folder: Path) -> frozenset[str] | None:
    """The files of a ``viewable`` job's unfinished folder the kiosk may read: ``viewable.json`` and the viewer's
    files it names (image, label map, scene and structure GLBs); None when the folder has no readable description.

    In the moment between the pipeline writing the manifest (which supersedes ``viewable.json``) and the worker
    publishing the finished folder, the same viewer files are read from the manifest: a slice view opened then
    still finds its image."""
    for name in (VIEWABLE_NAME, MANIFEST_NAME):
        try:
            described = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(described, dict):
            continue
        files = described.get("files")
        named = {v for k, v in files.items() if k in VIEWER_FILE_KEYS} if isinstance(files, dict) else set()
        for s in described.get("structures", []):
            glb = s.get("files", {}).get("glb") if isinstance(s, dict) and isinstance(s.get("files"), dict) else None
            named.add(glb)
        return frozenset({VIEWABLE_NAME} | {v for v in named if isinstance(v, str)})
    return None


def _job_folder(svc: ApiService, job_id: int) -> tuple[Path | None, frozenset[str] | None, str]:
    """``(folder, allowed, state)``: a done job's output folder (every file allowed: None), a viewable job's
    unfinished folder with the files it may serve, or no folder. A viewable job whose folder was just moved into
    place is read again (it is done now)."""
    for _ in range(2):
        j = svc.catalogue.job(job_id)
        folder = Path(j.output_dir) if j.output_dir else None
        if j.state == "done" and folder is not None and folder.is_dir():
            return folder, None, j.state
        if j.state == VIEWABLE_STATE and folder is not None:
            allowed = viewable_files(folder)
            if allowed is not None:
                return folder, allowed, j.state
            continue  # the folder moved between the two reads: the job is done (or failed) now
        return None, None, j.state
    return None, None, svc.catalogue.job(job_id).state


def _output_dir(svc: ApiService, job_id: int) -> Path | None:
    folder, allowed, _ = _job_folder(svc, job_id)
    return folder if allowed is None else None


def _files(svc: ApiService, job_id: int) -> list[dict[str, Any]]:
    folder, allowed, _ = _job_folder(svc, job_id)
    if folder is None:
        return []
    return [
        {"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size,
         "url": f"/api/jobs/{job_id}/files/{p.relative_to(folder).as_posix()}"}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink() and (allowed is None or p.relative_to(folder).as_posix() in allowed)
    ]  # fmt: skip


@api_blueprint.get("/jobs/<int:job_id>/files")
def files(job_id: int) -> Response:
    """The files of a finished job (of a ``viewable`` one: the files the kiosk may show)."""
    return jsonify({"files": _files(_service(), job_id)})


@api_blueprint.get("/jobs/<int:job_id>/files/<path:relpath>")
def file(job_id: int, relpath: str) -> Response | tuple[Response, int]:
    """One file of a finished job, or one the kiosk may show of a ``viewable`` job (409 naming the wait for any
    other, e.g. ``manifest.json`` or ``report.html``); nothing outside the job's output folder is ever served."""
    folder, allowed, state = _job_folder(_service(), job_id)
    if folder is None:
        return _error(404, f"job {job_id} has no output files (it is {state}, not done)")
    if "\x00" in relpath:
        return _error(400, "'path' must not contain a NUL character", "path")
    if allowed is not None and relpath not in allowed:
        return _error(409, f"job {job_id} is viewable: its exports are still being written; {relpath[:200]!r} is "
                           "available when the job is done")
    root = folder.resolve()
    target = (folder / relpath).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return _error(404, f"no file {relpath!r} in the outputs of job {job_id}")
    return send_file(target, conditional=True)


@api_blueprint.post("/jobs/<int:job_id>/export")
def export(job_id: int) -> tuple[Response, int]:
    """De-identified DICOM SEG + Encapsulated STL of a finished job; C-STORE to ``destination`` when given.

    A reviewed job: the approved revision of each structure; unapproved ones only with ``"override_unapproved":
    true`` and a ``"reason"`` (409 naming them otherwise).
    """
    svc = _service()
    body = _json_object()
    if body is None:
        return _error(400, "the request body must be a JSON object", "body")
    destination = body.get("destination")
    if destination is not None and not isinstance(destination, str):
        return _error(400, "'destination' must be the name of a configured export destination", "destination")
    try:
        result = export_job(svc.export_context, job_id, request_actor(), destination, override_reason(body))
    except InvalidExportRequest as exc:
        return _error(400, str(exc), exc.field)
    except UnapprovedStructures as exc:
        return jsonify({"error": str(exc), "unapproved": exc.structures}), 409
    except DicomExportError as exc:
        return _error(409, str(exc))
    folder = Path(svc.catalogue.job(job_id).output_dir or "")
    return jsonify({
        "files": [p.relative_to(folder).as_posix() for p in result.files],
        "destination": result.destination, "statuses": result.statuses,
    }), 200  # fmt: skip


@api_blueprint.get("/imports")
def imports() -> Response:
    """Reports of the latest USB / folder imports (stored, skipped with reasons)."""
    svc = _service()
    reports = svc.importer.reports if svc.importer is not None else []
    return jsonify({"enabled": svc.importer is not None, "imports": [r.to_dict() for r in reversed(reports)]})


@api_blueprint.get("/jobs/<int:job_id>/events")
def events(job_id: int) -> Response:
    """Server-Sent Events: one ``job`` event per change of state/stage/progress until the job is final."""
    svc = _service()
    svc.catalogue.job(job_id)  # 404 when unknown
    by_token = g.get("api_actor") == TOKEN_ACTOR
    authoriser: Authoriser | None = current_app.config.get(AUTHORISER_KEY)

    def still_allowed() -> bool:
        """A stream opened by a kiosk session ends with the session (lock, logout, idle)."""
        return by_token or (authoriser is not None and authoriser() == "allowed")

    def stream() -> Iterator[str]:
        last: tuple[Any, ...] | None = None
        start = sent = time.monotonic()
        yield "retry: 1000\n\n"
        while time.monotonic() - start < SSE_MAX_S:
            if not still_allowed():
                yield "event: end\ndata: {\"error\": \"session ended\"}\n\n"
                return
            j = svc.catalogue.job(job_id)
            key = (j.state, j.stage, round(j.progress, 3))
            if key != last:
                last = key
                sent = time.monotonic()
                yield f"id: {j.updated_at}\nevent: job\ndata: {json.dumps(j.to_dict())}\n\n"
            if j.state in FINAL_STATES:
                yield "event: end\ndata: {}\n\n"
                return
            time.sleep(SSE_POLL_S)
            if time.monotonic() - sent > SSE_KEEPALIVE_S:
                sent = time.monotonic()
                yield ": keep-alive\n\n"

    return Response(
        stream_with_context(stream()), mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )  # fmt: skip
