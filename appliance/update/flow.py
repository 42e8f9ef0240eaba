"""One update, end to end: verified refresh -> choose the release -> install with checks -> audit.

This is the glue the CLI and the service use; the decisions live in :mod:`appliance.update.policy`, the
trust in :mod:`appliance.update.client`, the file work in :mod:`appliance.update.install`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from appliance.errors import ConfigurationError
from appliance.update.client import RepositoryView, UpdateClient
from appliance.update.errors import InvalidConfiguration, UpdateError
from appliance.update.install import Installer, InstallResult
from appliance.update.policy import ArtifactKind, select_release

log = logging.getLogger(__name__)

#: The file a configuration pack must carry.
CONFIG_FILENAME = "appliance.toml"


def validate_configuration_pack(release_dir: Path) -> None:
    """A configuration pack must hold an ``appliance.toml`` that :func:`appliance.config.load_config` accepts."""
    from appliance.config import load_config

    path = release_dir / CONFIG_FILENAME
    if not path.is_file():
        raise InvalidConfiguration(f"the configuration pack has no {CONFIG_FILENAME}; rebuild it")
    try:
        load_config(path)
    except ConfigurationError as exc:
        raise InvalidConfiguration(
            f"the signed configuration does not validate: {exc}; fix it and publish a new configuration pack"
        ) from exc


def refresh_audited(client: UpdateClient, installer: Installer) -> RepositoryView:
    """Refresh the trusted metadata; refusals are audited, the signed floors remembered."""
    try:
        view = client.refresh()
    except UpdateError as exc:
        if installer.audit is not None:
            installer.audit.append(
                installer.actor,
                "update.refused",
                details={"repository": client.repository, "error": type(exc).__name__, "reason": str(exc)},
                requirement="REQ-UPD-002",
            )
        raise
    installer.remember_signed_floors(view.floors)
    return view


def update_kind(
    client: UpdateClient,
    installer: Installer,
    kind: ArtifactKind,
    version: str | None = None,
    authorisation: str | None = None,
) -> InstallResult:
    """Install the newest (or the named) release of ``kind`` from the client's repository."""
    view = refresh_audited(client, installer)
    release = select_release(view.releases, kind, version)
    log.info("installing %s %s from %s", kind.value, release.version_text, client.repository)
    return installer.install(
        release,
        fetch=lambda dest: client.fetch(release, dest),
        signed_floor=view.floors.get(kind),
        authorisation=authorisation,
    )
