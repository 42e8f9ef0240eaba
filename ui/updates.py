"""The service screen's window on the update mechanism (``appliance.update``): what is installed and what a
configured repository offers, verified through TUF. Installing stays with ``appliance update install`` (health
checks, automatic rollback); the screen shows the command and the verified releases.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from appliance.config import ApplianceConfig
from appliance.update.client import UpdateClient, release_summary
from appliance.update.install import Installer
from appliance.update.policy import BoxProfile

log = logging.getLogger(__name__)


def _install_root(cfg: ApplianceConfig) -> Path:
    return Path(cfg.update.options.get("install_root", str(cfg.data_dir / "releases")))


def update_status(cfg: ApplianceConfig) -> dict[str, Any]:
    """Mechanism present (always, it is part of the appliance), configured repository, installed releases per kind
    (current/previous/pending)."""
    out: dict[str, Any] = {"mechanism": True, "repository": cfg.update.repository, "installed": {}}
    out["can_check"] = bool(cfg.update.repository)
    if _install_root(cfg).is_dir():
        status = Installer(_install_root(cfg), BoxProfile(os_version=(0,))).status()
        out["installed"] = {k: {"current": v["current"], "previous": v["previous"], "pending": v["pending"]}
                            for k, v in status["kinds"].items()}  # fmt: skip
    return out


def check_repository(cfg: ApplianceConfig) -> dict[str, Any]:
    """Refresh the repository's metadata through TUF and list its releases (raises ``UpdateError``)."""
    client = UpdateClient(cfg.update.repository, Path(cfg.update.trusted_metadata_dir))
    return release_summary(client.refresh())
