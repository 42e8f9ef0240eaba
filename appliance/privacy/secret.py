"""The box secret: a random key that never leaves the box, used for keyed hashes of identifiers.

It keys the study identity hash written to the audit trail, the UID remapping and the per-patient date shift of
de-identification, so the same study always maps to the same values on this box and to unrelated values on
another box.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from appliance.privacy.errors import SecretError

SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret at ``path``; create it (mode 0600, atomically) when absent."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_bytes(SECRET_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces a secret another process created meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        data = path.read_bytes()
    except OSError as exc:
        raise SecretError(
            f"cannot read the box secret {path}: {exc}; check the data folder's permissions"
        ) from exc
    if len(data) < 16:
        raise SecretError(f"the box secret {path} is too short ({len(data)} bytes); restore it from backup")
    return data


def keyed_hash(secret: bytes, purpose: str, value: str) -> str:
    """HMAC-SHA256 (hex) of ``value`` for one ``purpose`` (``study``, ``uid``, ``date``...)."""
    return hmac.new(secret, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()


def study_identity_hash(secret: bytes, study_uid: str) -> str:
    """The study's identity where it is written down outside the study's own files (audit trail, logs)."""
    return keyed_hash(secret, "study", study_uid)[:32]
