"""The kiosk's "Export to USB" button: ``GET /api/usb/media`` and ``POST /api/jobs/<id>/usb-export``.

Same access rule as the service API (its own check runs before every request). The body of the POST:
``{"medium": name, "formats": ["stl", "3mf", "amf", "pdf"], "structures": [...] or null (all),
"languages": ["en", "zh-CN"], "override_unapproved": false, "reason": "..."}`` (audited as the signed-in person or
the API token, never a name sent). A reviewed job is written from the approved revision of each structure
(:mod:`appliance.service.case_export`); unapproved structures need the override with a reason (409 naming them).
The answer is the verified export (folder, files with size and
SHA-256, ``safe_to_remove``, ``stick``: ``releasing`` when the box unmounts the stick after it); 400 a malformed
body, 404 an unknown job, 409 the export could not be done (the message says why; nothing is left on the
medium). Exports run one at a time. A stick the box mounted read-only is made writable for the export and
released after it (REQ-FUNC-1960, REQ-SAFE-1961).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

from flask import Blueprint, Response, abort, current_app, jsonify, request

from appliance.audit import AuditLog
from appliance.config import ApplianceConfig
from appliance.export.errors import UsbExportError
from appliance.export.report_text import LANGUAGES
from appliance.export.usb import PRINT_FORMATS
from appliance.service.api import authorise_request as authorise_api_request
from appliance.service.api import request_actor
from appliance.service.case_export import exported_case, override_reason
from appliance.service.catalogue import Catalogue
from appliance.service.errors import InvalidExportRequest, StickNotWritable, UnapprovedStructures, UnknownJob
from appliance.service.print_export import (
    audited_print_export,
    job_case_dir,
    job_label,
    list_media,
    medium_path,
    review_records,
)
from appliance.service.revisions import REVISIONS_DIR
from appliance.service.usb_release import StickReleases, make_writable

usb_export_api = Blueprint("appliance_usb_export_api", __name__, url_prefix="/api")
usb_export_api.before_request(authorise_api_request)
_ONE_AT_A_TIME = threading.Lock()


class PrintExportService(Protocol):
    """What the routes use of the running service."""

    config: ApplianceConfig
    catalogue: Catalogue
    audit: AuditLog
    data_dir: Path

    def study_hash(self, study_uid: str) -> str:
        """The study's keyed identity hash."""


def _service() -> PrintExportService:
    service: PrintExportService | None = current_app.config.get("APPLIANCE_SERVICE")
    if service is None or not hasattr(service, "audit"):
        abort(503, description="the appliance service is not running")
    return service


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


def _strings(body: dict[str, Any], key: str, default: list[str] | None) -> list[str] | None:
    value = body.get(key, default)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsbExportError(f"'{key}' must be a list of strings")
    return value


@usb_export_api.get("/usb/media")
def media() -> Response:
    """The plugged-in USB media the box may write to."""
    watch_dir = _service().config.import_.watch_dir
    return jsonify({"enabled": watch_dir is not None, "media": list_media(Path(watch_dir) if watch_dir else None)})


@usb_export_api.post("/jobs/<int:job_id>/usb-export")
def usb_export(job_id: int) -> tuple[Response, int]:
    """Write the job's chosen structures (STL, 3MF, AMF) and PDF reports to a medium, verified and audited."""
    svc = _service()
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("medium"), str):
        return _error(400, 'the body must be a JSON object with "medium" (the name of a plugged-in USB stick)')
    try:
        formats = _strings(body, "formats", list(PRINT_FORMATS)) or []
        structures = _strings(body, "structures", None)
        languages = _strings(body, "languages", list(LANGUAGES)) or []
    except UsbExportError as exc:
        return _error(400, str(exc))
    actor = request_actor()
    try:
        job = svc.catalogue.job(job_id)
    except UnknownJob as exc:
        return _error(404, str(exc))
    watch_dir = svc.config.import_.watch_dir
    try:
        reason = override_reason(body)
    except InvalidExportRequest as exc:
        return jsonify({"error": str(exc), "field": exc.field}), 400
    try:
        job_out = job_case_dir(svc.catalogue, job_id)  # first: an unfinished job is refused for that, by name
        target = medium_path(Path(watch_dir) if watch_dir else None, body["medium"])
        if not _ONE_AT_A_TIME.acquire(timeout=1.0):
            return _error(409, "another export is being written; wait until it says it is safe to remove")
        try:
            with exported_case(Path(svc.data_dir) / REVISIONS_DIR, job_id, job_out, actor, reason, svc.audit,
                               svc.study_hash(job.study_uid), "usb") as case_dir:
                result = audited_print_export(
                    svc.audit, actor, svc.study_hash(job.study_uid), case_dir, target, job_label(job_id), formats,
                    structures, languages, review_records(svc.audit, job_id),
                    prepare=lambda: make_writable(Path(svc.data_dir), target),
                )  # fmt: skip
            releases = StickReleases(Path(svc.data_dir))
            released = releases.is_stick(target)
            if released:  # unmounted cleanly by the root helper: the stick is left as a computer expects it
                releases.request(target)
        finally:
            _ONE_AT_A_TIME.release()
    except UnapprovedStructures as exc:
        return jsonify({"error": str(exc), "unapproved": exc.structures}), 409
    except (UsbExportError, StickNotWritable) as exc:
        return _error(409, str(exc))
    data = result.to_dict()
    data["folder"] = result.folder.name  # the medium's own path is the box's business
    data["stick"] = "releasing" if released else ""
    return jsonify(data), 200
