"""A throw-away fleet for the update tests: keys, a TUF repository folder, packs, and one box."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Signer

from appliance.audit import AuditLog
from appliance.update.client import UpdateClient
from appliance.update.flow import update_kind, validate_configuration_pack
from appliance.update.health import HealthCheck
from appliance.update.install import Installer, InstallResult, ProgressFn
from appliance.update.keys import ROLES
from appliance.update.packs import build_pack
from appliance.update.policy import ArtifactKind, BoxProfile
from appliance.update.repository import Repository


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Fleet:
    """Publisher keys + repository, and one box (trusted metadata, install root, audit trail)."""

    tmp: Path
    signers: dict[str, list[CryptoSigner]] = field(default_factory=dict)
    box: BoxProfile = field(default_factory=lambda: BoxProfile(os_version=(2, 0)))
    health: dict[ArtifactKind, HealthCheck] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.repo = Repository(self.tmp / "usb")
        self.metadata_dir = self.tmp / "box" / "update" / "metadata"
        self.install_root = self.tmp / "box" / "releases"
        self.audit_path = self.tmp / "box" / "audit.sqlite3"

    def create(self, thresholds: Mapping[str, int] | None = None, keys_per_role: int = 1, **kw: Any) -> None:
        for role in ROLES:
            n = max(keys_per_role, (thresholds or {}).get(role, 1))
            self.signers[role] = [CryptoSigner.generate_ed25519() for _ in range(n)]
        self.repo.create(
            {r: [s.public_key for s in ss] for r, ss in self.signers.items()},
            dict(self.all_signers()),
            thresholds,
            **kw,
        )
        self.trusted_root = (self.repo.metadata_dir / "1.root.json").read_bytes()

    def all_signers(self) -> dict[str, Sequence[Signer]]:
        return {r: list(ss) for r, ss in self.signers.items()}

    def pack(self, kind: str, name: str, version: str, files: Mapping[str, bytes] | None = None) -> Path:
        src = self.tmp / "src" / f"{kind}-{name}-{version}"
        src.mkdir(parents=True, exist_ok=True)
        for rel, data in (files or {"README.txt": f"{name} {version}\n".encode(), "bin/run": b"#!/bin/sh\n"}).items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        return build_pack(src, self.tmp / "packs" / f"{kind}-{name}-{version}.tar", kind, name, version)

    def publish(
        self,
        kind: str = "app",
        name: str = "or-appliance",
        version: str = "1.0.0",
        files: Mapping[str, bytes] | None = None,
        extra: Mapping[str, Any] | None = None,
        signers: Mapping[str, Sequence[Signer]] | None = None,
        **kw: Any,
    ) -> int:
        pack = self.pack(kind, name, version, files)
        custom = {"kind": kind, "name": name, "version": version, **(extra or {})}
        return self.repo.publish(signers if signers is not None else self.all_signers(), [(pack, custom)], **kw)

    def client(self, repository: str | None = None, clock: Any = None) -> UpdateClient:
        kw: dict[str, Any] = {"clock": clock} if clock is not None else {}
        return UpdateClient(repository or str(self.repo.root_dir), self.metadata_dir, self.trusted_root, **kw)

    def installer(self, progress: ProgressFn | None = None, box: BoxProfile | None = None) -> Installer:
        return Installer(
            root=self.install_root,
            box=box or self.box,
            health=self.health,
            validators={ArtifactKind.CONFIG: validate_configuration_pack},
            audit=AuditLog(self.audit_path),
            actor="cli:test",
            progress=progress,
        )

    def update(self, kind: str = "app", version: str | None = None, authorisation: str | None = None,
               clock: Any = None, repository: str | None = None) -> InstallResult:
        return update_kind(self.client(repository, clock), self.installer(), ArtifactKind(kind), version,
                           authorisation)

    def current(self, kind: str = "app") -> str | None:
        return self.installer().link_version(ArtifactKind(kind), "current")

    def audit_actions(self) -> list[str]:
        return [r.action for r in AuditLog(self.audit_path).records()]


def shift(days: float) -> datetime:
    return now() + timedelta(days=days)


def write_box_config(tmp: Path) -> Path:
    """A box's appliance.toml under ``tmp``: data in ``tmp/data``, the update repository (USB stick) ``tmp/usb``,
    releases and trusted metadata in ``tmp/system`` (root's, outside the data folder, as on the box)."""
    cfg = tmp / "appliance.toml"
    cfg.write_text(
        f"""
[storage]
data_dir = "{tmp / "data"}"

[update]
repository = "{tmp / "usb"}"
trusted_metadata_dir = "{tmp / "system" / "update" / "metadata"}"

[update.options]
install_root = "{tmp / "system" / "releases"}"
os_version = "2.0"
health_window_s = "10"
"""
    )
    return cfg
