"""``appliance serve``: the DICOM receiver, USB/folder import, job worker and web app in one process.

``appliance serve --data-dir D [--http-port P] [--dicom-port Q] [--ae-title AET] [--config FILE]``;
``--dicom-port 0`` disables the receiver, ``--http-port 0`` picks a free port. Once listening, the ports are
written to ``D/run/serve.json`` (for supervisors and tests) and a fresh JSON API token to ``D/run/api_token``
(mode 0600; send it as ``Authorization: Bearer <token>``). Logs go to stderr and ``D/logs/appliance.log``
(rotating). SIGTERM/SIGINT stop it cleanly; a kill -9 loses nothing (see the job queue).
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import ApplianceConfig, load_config
from appliance.service.runtime import ApplianceService
from appliance.service.storage import atomic_write
from appliance.service.systemd import Watchdog, sd_notify

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)


def build_config(args: argparse.Namespace) -> ApplianceConfig:
    """The configuration file (if any) with the command-line options laid over it."""
    overrides: dict[str, Any] = {}
    if args.data_dir:
        overrides.setdefault("storage", {})["data_dir"] = str(args.data_dir)
    if args.http_port is not None:
        overrides.setdefault("http", {})["port"] = args.http_port
    if args.dicom_port is not None:
        overrides.setdefault("dicom", {})["port"] = args.dicom_port
    if args.ae_title:
        overrides.setdefault("dicom", {})["ae_title"] = args.ae_title
    return load_config(Path(args.config) if args.config else None, overrides)


def setup_logging(config: ApplianceConfig) -> None:
    """Log to stderr (already set up by the CLI) and to a rotating file in the data folder."""
    logs = config.storage.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        logs / "appliance.log",
        maxBytes=config.logging.file_max_bytes,
        backupCount=config.logging.file_backups,
    )
    fmt = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(config.logging.level.upper())
    for h in root.handlers:
        if not isinstance(h, logging.handlers.RotatingFileHandler):
            h.setFormatter(logging.Formatter(fmt))


def create_web_app(config: ApplianceConfig, service: ApplianceService, api_token: str | None = None) -> Flask:
    """The kiosk UI's app (``ui.app.create_app``) with the service's JSON API.

    ``api_token`` is the bearer token the JSON API accepts (None: only what the UI's session authoriser allows).
    """
    from appliance.service.api import API_TOKEN_KEY, ApiService, api_blueprint
    from ui.app import create_app

    app = create_app({"APPLIANCE_CONFIG": config}, service=service)
    api_service: ApiService = service  # the API's view of the service
    app.config["APPLIANCE_SERVICE"] = api_service
    app.config[API_TOKEN_KEY] = api_token
    if "appliance_api" not in app.blueprints:
        app.register_blueprint(api_blueprint)
    return app


def write_run_file(config: ApplianceConfig, http_port: int, service: ApplianceService) -> Path:
    """``<data_dir>/run/serve.json``: pid and the ports actually listened on."""
    path = config.storage.data_dir / "run" / "serve.json"
    dicom_port = service.receiver.port if service.receiver is not None else 0
    info = {
        "pid": os.getpid(),
        "http_port": http_port,
        "dicom_port": dicom_port,
        "ae_title": config.dicom.ae_title,
    }
    atomic_write(path, json.dumps(info).encode())
    return path


def _serve(args: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

    from appliance.service.api import issue_api_token

    config = build_config(args)
    setup_logging(config)
    service = ApplianceService(config)
    service.start()
    app = create_web_app(config, service, api_token=issue_api_token(config.storage.data_dir))
    server = make_server(config.http.host, config.http.port, app, threaded=True)
    stop = threading.Event()

    def _shutdown(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    run_file = write_run_file(config, int(server.server_port), service)
    watchdog = Watchdog(service.is_healthy)
    sd_notify("READY=1")
    watchdog.start()
    log.info(
        "serving: web http://%s:%d, DICOM %s, data %s (ports in %s)", config.http.host, server.server_port,
        f"{config.dicom.ae_title}@{service.receiver.port}" if service.receiver else "disabled",
        config.storage.data_dir, run_file,
    )  # fmt: skip
    try:
        server.serve_forever()
    finally:
        sd_notify("STOPPING=1")
        watchdog.stop()
        service.stop()
        run_file.unlink(missing_ok=True)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``."""
    p = sub.add_parser("serve", help="run the DICOM receiver, import watcher, job worker and web app")
    p.add_argument("--data-dir", help="data folder (studies, jobs, outputs, audit trail, logs)")
    p.add_argument("--http-port", type=int, help="web app / JSON API port (0: pick a free one)")
    p.add_argument("--dicom-port", type=int, help="DICOM receiver port (0: receiver disabled)")
    p.add_argument("--ae-title", help="our AE title")
    p.add_argument("--config", help="configuration file (TOML)")
    p.set_defaults(func=_serve)
