"""Flask app factory of the touchscreen OR UI.

``create_app(config, service)`` builds the kiosk: the UI's blueprints (login/lock, nurse inbox, surgeon viewer,
service screen), the security headers, the message catalogues and the service's JSON API
blueprint (``appliance.service.api.api_blueprint``), which finds ``service`` at
``app.config["APPLIANCE_SERVICE"]``. ``appliance serve`` calls this; tests call it with their own configuration.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, session

from appliance.service.api import AUTHORISER_KEY, IDENTITY_KEY, api_blueprint
from appliance.service.print_lab_api import register_print_lab_api
from ui import auth
from ui.assets import STATIC_DIR, TEMPLATE_DIR, VENDOR_MANIFEST
from ui.audit_sink import UiAudit
from ui.i18n import catalogue, translate
from ui.security import IMPORT_MAP, add_security_headers, refuse_cross_site, refuse_malformed_json
from ui.sessions import SessionStore
from ui.settings import LANGUAGES, UiSettings, settings_from_config, split_config

log = logging.getLogger(__name__)


def current_language() -> str:
    """The session's language, else the configured default."""
    lang = session.get("lang")
    if lang in LANGUAGES:
        return str(lang)
    settings: UiSettings = auth.settings()
    return settings.language


def _register_service_api(app: Flask) -> None:
    """Register the service's JSON API blueprint with the kiosk's authoriser."""
    app.register_blueprint(api_blueprint)
    register_print_lab_api(app)
    app.config[AUTHORISER_KEY] = auth.service_api_access
    app.config[IDENTITY_KEY] = auth.session_actor


def _demo(out_dir: Path, settings: UiSettings) -> tuple[object, UiSettings]:
    """Demo mode: a throw-away catalogue publishing ``out_dir``, and the demo PIN when none is configured."""
    import dataclasses
    import tempfile

    from ui.demo import DEMO_PIN, demo_service

    data_dir = Path(tempfile.mkdtemp(prefix="appliance-demo-"))
    service = demo_service(out_dir, data_dir)
    pins = dict(settings.pin_hashes)
    if not any(pins.values()):
        pins = {"nurse": auth.hash_pin(DEMO_PIN), "surgeon": auth.hash_pin(DEMO_PIN), "service": ""}
    return service, dataclasses.replace(settings, pin_hashes=pins, data_dir=data_dir, log_dir=data_dir / "logs")


def create_app(config: Mapping[str, Any] | None = None, service: object | None = None) -> Flask:
    """Build the kiosk app.

    Args:
        config: upper-case keys are Flask settings (``SECRET_KEY``, ``TESTING``; ``APPLIANCE_CONFIG`` an
            already loaded configuration, ``CONFIG_PATH`` a TOML file, ``UI_SERVICE_API`` False to leave the
            service API out, e.g. when a test registers its own; ``DEMO_OUTPUT_DIR`` a reconstruct output folder
            shown without the service, for ``appliance demo --serve``); lower-case keys are appliance configuration
            overrides such as ``{"ui": {"pins": {...}}, "storage": {"data_dir": ...}}``.
        service: the running service object, handed to the API blueprint through ``APPLIANCE_SERVICE``.
    """
    flask_settings, appliance_config = split_config(config)
    demo_dir = flask_settings.pop("DEMO_OUTPUT_DIR", None)
    settings = settings_from_config(appliance_config)
    if demo_dir is not None:
        service, settings = _demo(Path(demo_dir), settings)
    app = Flask(__name__, static_folder=str(STATIC_DIR), template_folder=str(TEMPLATE_DIR))
    app.config.update(
        SECRET_KEY=secrets.token_hex(32),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=1_000_000,
    )
    register_api = bool(flask_settings.pop("UI_SERVICE_API", True))
    app.config.update(flask_settings)
    app.config["APPLIANCE_SERVICE"] = service
    app.config["APPLIANCE_CONFIG"] = appliance_config
    app.extensions["ui_settings"] = settings
    app.extensions["ui_demo"] = demo_dir is not None
    app.extensions["ui_pin_gate"] = auth.PinGate(settings)
    app.extensions["ui_sessions"] = SessionStore(settings.idle_lock_seconds)
    app.extensions["ui_audit"] = UiAudit(settings.data_dir)
    if not VENDOR_MANIFEST.is_file():
        log.warning("ui/static/vendor/ is not built: run `bash tools/build_ui_vendor.sh`; the viewers cannot load")

    from ui.views.accounts import bp as accounts_bp
    from ui.views.auth import bp as auth_bp
    from ui.views.nurse import bp as nurse_bp
    from ui.views.service import bp as service_bp
    from ui.views.surgeon import bp as surgeon_bp

    for bp in (auth_bp, nurse_bp, surgeon_bp, service_bp, accounts_bp):
        app.register_blueprint(bp)
    if register_api:
        _register_service_api(app)
    app.config["UI_SERVICE_API_REGISTERED"] = register_api
    # "Find on PACS" and "Export to USB" talk to the running service's store, audit and configuration: the demo
    # viewer and a test's scripted service have none, so their pages leave the panels out
    service_panels = register_api and demo_dir is None and all(
        hasattr(service, a) for a in ("store", "audit", "config"))

    app.before_request(refuse_cross_site)  # first: nothing from another origin reaches a view
    app.before_request(refuse_malformed_json)
    app.after_request(add_security_headers)

    @app.before_request
    def _activity() -> None:
        from flask import request

        if request.path.startswith(("/static/", "/api/")) or request.headers.get("X-Background") == "1":
            return
        auth.touch_session()

    @app.context_processor
    def _template_globals() -> dict[str, Any]:
        lang = current_language()

        def t(key: str, **values: object) -> str:
            return translate(lang, key, **values)

        return {
            "t": t,
            "lang": lang,
            "languages": LANGUAGES,
            "role": auth.current_role(),
            "idle_lock_seconds": settings.idle_lock_seconds,
            "import_map": IMPORT_MAP,
            "catalogue": catalogue(lang),
            "service_panels": service_panels,
        }

    return app
