"""Service flow: health, versions, logs and the update screen (service engineer role only, no patient data)."""

from __future__ import annotations

import logging
from typing import cast

from flask import Blueprint, current_app, jsonify, render_template, request
from werkzeug.wrappers import Response

from appliance.config import ApplianceConfig
from appliance.errors import ApplianceError
from ui import auth, health, updates
from ui.assets import VENDOR_MANIFEST
from ui.audit_sink import UiAudit

log = logging.getLogger(__name__)
bp = Blueprint("service", __name__)


@bp.get("/service")
@auth.require_area("service")
def index() -> str:
    """The service screen."""
    return render_template("service.html")


@bp.get("/ui/api/health")
@auth.require_area("service")
def machine() -> Response:
    """CPU, memory, disk, GPUs (NVML when present)."""
    return jsonify(health.machine_health(auth.settings().data_dir))


@bp.get("/ui/api/versions")
@auth.require_area("service")
def versions() -> Response:
    """Software, vendored front-end and model-pack versions."""
    return jsonify(health.versions(VENDOR_MANIFEST))


@bp.get("/ui/api/logs")
@auth.require_area("service")
def logs() -> Response:
    """Tail of the newest log file."""
    lines = request.args.get("lines", default=200, type=int) or 200
    return jsonify(health.log_tail(auth.settings().log_dir, lines))


@bp.get("/ui/api/update")
@auth.require_area("service")
def update_status() -> Response:
    """Whether the update mechanism and a repository exist, and what is installed."""
    return jsonify(updates.update_status(_config()))


@bp.post("/ui/api/update/check")
@auth.require_area("service")
def update_check() -> tuple[Response, int] | Response:
    """Verify the configured repository (TUF) and list its releases; audited."""
    cfg = _config()
    status = updates.update_status(cfg)
    if not status["can_check"]:
        return jsonify({"error": "no update mechanism or repository configured (update.repository)"}), 409
    audit = cast(UiAudit, current_app.extensions["ui_audit"])
    try:
        summary = updates.check_repository(cfg)
    except ApplianceError as exc:
        audit.record("service", "update.check_failed", details={"error": str(exc)[:500]}, requirement="REQ-HCI-050")
        return jsonify({"error": str(exc)}), 502
    audit.record("service", "update.checked", details={"releases": len(summary["releases"])}, requirement="REQ-HCI-050")
    return jsonify(summary)


def _config() -> ApplianceConfig:
    return cast(ApplianceConfig, current_app.config["APPLIANCE_CONFIG"])
