"""Ed25519 signing keys for the four TUF roles, as PEM (PKCS#8) files in a key folder.

Files: ``<role>-<n>.pem`` (private key; keep root keys offline) and ``<role>-<n>.pub.json`` (the public key
as TUF key JSON). A key holder only needs the files of their own role to sign.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Signer, SSlibKey  # type: ignore[attr-defined]

from appliance.fsio import atomic_write_bytes
from appliance.update.errors import KeyMaterialError

log = logging.getLogger(__name__)

#: The four top-level TUF roles.
ROLES: tuple[str, ...] = ("root", "targets", "snapshot", "timestamp")


def generate_keys(key_dir: Path, role: str, count: int = 1) -> list[CryptoSigner]:
    """Create ``count`` new ed25519 keys for ``role`` in ``key_dir`` (numbered after existing ones)."""
    if role not in ROLES:
        raise KeyMaterialError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    key_dir.mkdir(parents=True, exist_ok=True)
    start = len(sorted(key_dir.glob(f"{role}-*.pem")))
    signers: list[CryptoSigner] = []
    for i in range(start, start + count):
        signer = CryptoSigner.generate_ed25519()
        pem = key_dir / f"{role}-{i}.pem"
        atomic_write_bytes(pem, signer.private_bytes)
        os.chmod(pem, 0o600)
        pub = json.dumps({"keyid": signer.public_key.keyid, **signer.public_key.to_dict()}, indent=1)
        atomic_write_bytes(key_dir / f"{role}-{i}.pub.json", pub.encode())
        signers.append(signer)
        log.info("generated %s key %s", role, signer.public_key.keyid[:12])
    return signers


def load_signer(pem_path: Path) -> CryptoSigner:
    """A signer from a PEM private key file."""
    try:
        private = load_pem_private_key(pem_path.read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyMaterialError(f"cannot read private key {pem_path}: {exc}") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyMaterialError(f"{pem_path} is not an ed25519 key; generate keys with appliance update keygen")
    return CryptoSigner(private)


def load_signers(key_dir: Path, role: str) -> list[Signer]:
    """Every private key of ``role`` present in ``key_dir`` (possibly none)."""
    return [load_signer(p) for p in sorted(key_dir.glob(f"{role}-*.pem"))]


def load_public_keys(key_dir: Path, role: str) -> list[SSlibKey]:
    """Every public key of ``role`` in ``key_dir``."""
    keys: list[SSlibKey] = []
    for p in sorted(key_dir.glob(f"{role}-*.pub.json")):
        try:
            raw = json.loads(p.read_text())
            keyid = raw.pop("keyid")
            keys.append(SSlibKey.from_dict(keyid, raw))
        except (OSError, ValueError, KeyError) as exc:
            raise KeyMaterialError(f"cannot read public key {p}: {exc}") from exc
    return keys
