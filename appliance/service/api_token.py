"""The JSON API's per-start bearer token (REQ-PRIV-007) and its file ``<data_dir>/run/api_token``.

Lifecycle: ``appliance serve`` issues a fresh token at every start (the file is replaced atomically, so a token
left behind by a crashed run is never accepted again), local tools read it, and
:meth:`~appliance.service.runtime.ApplianceService.stop` revokes it (removes the file) on an orderly stop.
Kept free of Flask so the service's stop path can use it.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from appliance.fsio import atomic_write_text, fsync_dir

log = logging.getLogger(__name__)

#: Where ``appliance serve`` writes the token, relative to the data folder.
API_TOKEN_FILE = Path("run") / "api_token"
#: Permission bits of the token file: readable by the service's user only.
API_TOKEN_MODE = 0o600


def issue_api_token(data_dir: Path) -> str:
    """A fresh service API token, written atomically (mode 0600) to ``<data_dir>/run/api_token``.

    Replaces whatever token file is there (a stale one from a run that did not stop cleanly).
    """
    token = secrets.token_urlsafe(32)
    atomic_write_text(Path(data_dir) / API_TOKEN_FILE, token + "\n", mode=API_TOKEN_MODE)
    return token


def read_api_token(data_dir: Path) -> str:
    """The token the running ``appliance serve`` on ``data_dir`` accepts (for local tools and tests)."""
    return (Path(data_dir) / API_TOKEN_FILE).read_text(encoding="utf-8").strip()


def revoke_api_token(data_dir: Path) -> bool:
    """Remove ``<data_dir>/run/api_token`` (orderly stop); True when there was one to remove."""
    path = Path(data_dir) / API_TOKEN_FILE
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    log.info("API token %s removed", path)
    return True
