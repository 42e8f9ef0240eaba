"""The UI's view of the appliance configuration: the ``[ui]`` section plus the data folder.

``create_app(config)`` accepts a mapping whose upper-case keys are Flask settings (``SECRET_KEY``, ``TESTING``)
and whose lower-case keys are appliance configuration overrides laid over the file (``{"ui": {"pins": ...}}``),
validated by :func:`appliance.config.load_config`. ``APPLIANCE_CONFIG`` may carry an already loaded
:class:`~appliance.config.ApplianceConfig` and ``CONFIG_PATH`` the TOML file to read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import ApplianceConfig, load_config
from ui.errors import UiConfigurationError

ROLES = ("nurse", "surgeon", "engineer", "service")
LANGUAGES = ("zh-CN", "en")


@dataclass(frozen=True)
class UiSettings:
    """Everything the UI reads from the configuration.

    Attributes:
        pin_hashes: role -> PIN hash (werkzeug format); an empty hash disables the role.
        idle_lock_seconds: idle time before the screen locks and patient data is hidden.
        lockout_attempts: wrong PINs in a row before logins are refused for ``lockout_seconds``.
        lockout_seconds: length of a lockout.
        language: default language (``zh-CN`` or ``en``).
        data_dir: the appliance data folder (audit trail, logs).
        log_dir: folder whose newest ``*.log`` the service screen shows.
        update_repository: where the update mechanism fetches from ('' = none configured).
    """

    pin_hashes: Mapping[str, str] = field(default_factory=dict)
    idle_lock_seconds: int = 300
    lockout_attempts: int = 5
    lockout_seconds: int = 300
    language: str = "en"
    data_dir: Path = Path("/var/lib/appliance")
    log_dir: Path = Path("/var/lib/appliance/logs")
    update_repository: str = ""


def settings_from_config(cfg: ApplianceConfig) -> UiSettings:
    """Translate the validated appliance configuration into :class:`UiSettings`."""
    ui = cfg.ui
    unknown = sorted(set(ui.pins) - set(ROLES))
    if unknown:
        raise UiConfigurationError(f"ui.pins.{unknown[0]}: unknown role; roles are {', '.join(ROLES)}")
    if ui.language not in LANGUAGES:
        raise UiConfigurationError(f"ui.language: {ui.language!r} is not one of {', '.join(LANGUAGES)}")
    if ui.idle_lock_seconds < 1 or ui.lockout_attempts < 1 or ui.lockout_seconds < 1:
        raise UiConfigurationError("ui.idle_lock_seconds, ui.lockout_attempts and ui.lockout_seconds must be >= 1")
    log_dir = Path(ui.options.get("log_dir", str(cfg.data_dir / "logs")))
    return UiSettings(
        pin_hashes=dict(ui.pins),
        idle_lock_seconds=ui.idle_lock_seconds,
        lockout_attempts=ui.lockout_attempts,
        lockout_seconds=ui.lockout_seconds,
        language=ui.language,
        data_dir=cfg.data_dir,
        log_dir=log_dir,
        update_repository=cfg.update.repository,
    )


def split_config(config: Mapping[str, Any] | None) -> tuple[dict[str, Any], ApplianceConfig]:
    """Split ``create_app``'s mapping into Flask settings and the validated appliance configuration."""
    config = dict(config or {})
    flask_keys = {k: v for k, v in config.items() if k.isupper()}
    overrides = {k: v for k, v in config.items() if not k.isupper()}
    given = flask_keys.pop("APPLIANCE_CONFIG", None)
    path = flask_keys.pop("CONFIG_PATH", None)
    if given is not None:
        if not isinstance(given, ApplianceConfig):
            raise UiConfigurationError("APPLIANCE_CONFIG must be an appliance.config.ApplianceConfig")
        if overrides:
            raise UiConfigurationError("pass either APPLIANCE_CONFIG or configuration overrides, not both")
        return flask_keys, given
    return flask_keys, load_config(Path(path) if path else None, overrides=overrides)
