"""Service flow: health, versions, logs and the update screen (service engineer role only, no patient data)."""

from __future__ import annotations

import importlib
import logging

from flask import Blueprint, jsonify, render_template, request
from werkzeug.wrappers import Response

from ui import auth, health

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
    from ui.app import VENDOR_DIR

    return jsonify(health.versions(VENDOR_DIR / "manifest.json"))


@bp.get("/ui/api/logs")
@auth.require_area("service")
def logs() -> Response:
    """Tail of the newest log file."""
    lines = request.args.get("lines", default=200, type=int) or 200
    return jsonify(health.log_tail(auth.settings().log_dir, lines))


@bp.get("/ui/api/update")
@auth.require_area("service")
def update_status() -> Response:
    """What the update screen can do on this box: whether the update mechanism and a repository exist."""
    try:
        importlib.import_module("appliance.update.client")
        mechanism = True
    except ImportError:
        mechanism = False
    repository = auth.settings().update_repository
    return jsonify({"mechanism": mechanism, "repository": repository, "can_check": mechanism and bool(repository)})
