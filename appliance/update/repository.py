"""The publisher's side: a TUF repository in a folder (copied to a USB stick or served by a LAN mirror).

Layout (consistent snapshots, so a mirror can be updated while boxes read it)::

    <repo>/metadata/1.root.json, 2.root.json ...   every root version (boxes walk the chain)
    <repo>/metadata/root.json                      newest root (for bootstrapping a new box)
    <repo>/metadata/<N>.targets.json, <N>.snapshot.json, timestamp.json
    <repo>/targets/<kind>/<sha256>.<name>-<version>.tar

Metadata with fewer signatures than its role's threshold is still written, so further key holders can add
theirs with :meth:`Repository.add_signature` (``appliance update sign``); boxes refuse it until then.
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signer  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from appliance.fsio import atomic_write_bytes
from appliance.update.errors import UntrustedMetadata, UpdateError
from appliance.update.keys import ROLES
from appliance.update.packs import file_digest
from appliance.update.policy import (
    CUSTOM_KEY,
    FLOORS_KEY,
    SIGNED_AT_KEY,
    ArtifactKind,
    format_version,
    parse_version,
    target_path,
)

log = logging.getLogger(__name__)

#: Default metadata lifetimes. Boxes are updated from USB sticks that may sit in a drawer, so the timestamp
#: lives weeks, not minutes; the clock guard and version floors cover what a long timestamp would leave open.
DEFAULT_LIFETIMES: dict[str, timedelta] = {
    "root": timedelta(days=365),
    "targets": timedelta(days=180),
    "snapshot": timedelta(days=60),
    "timestamp": timedelta(days=30),
}

_VERSIONED = re.compile(r"^(\d+)\.(root|targets|snapshot)\.json$")


def _utc(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Repository:
    """A TUF repository folder: create it, add releases, set floors, publish, sign, rotate root keys."""

    def __init__(self, root_dir: Path) -> None:
        self.root_dir = Path(root_dir)
        self.metadata_dir = self.root_dir / "metadata"
        self.targets_dir = self.root_dir / "targets"

    # ------------------------------------------------------------------------------------------- reading
    def latest_version(self, role: str) -> int:
        """Newest version of a versioned role on disk (0 when none)."""
        best = 0
        if self.metadata_dir.is_dir():
            for p in self.metadata_dir.iterdir():
                m = _VERSIONED.match(p.name)
                if m and m.group(2) == role:
                    best = max(best, int(m.group(1)))
        return best

    def _path(self, role: str, version: int | None = None) -> Path:
        if role == "timestamp":
            return self.metadata_dir / "timestamp.json"
        v = version if version is not None else self.latest_version(role)
        return self.metadata_dir / f"{v}.{role}.json"

    def load(self, role: str, version: int | None = None) -> Metadata[Any]:
        """The newest (or a given version of) metadata for ``role``."""
        path = self._path(role, version)
        try:
            return Metadata.from_bytes(path.read_bytes())
        except FileNotFoundError as exc:
            raise UpdateError(f"{path} is missing; create the repository with appliance update build --init") from exc

    def root(self) -> Root:
        """The newest root."""
        signed: Root = self.load("root").signed
        return signed

    # ------------------------------------------------------------------------------------------- writing
    def _write(self, role: str, md: Metadata[Any]) -> Path:
        path = self._path(role, md.signed.version)
        atomic_write_bytes(path, md.to_bytes(JSONSerializer(compact=False)))
        if role == "root":
            atomic_write_bytes(self.metadata_dir / "root.json", md.to_bytes(JSONSerializer(compact=False)))
        return path

    def _sign(self, role: str, md: Metadata[Any], signers: Sequence[Signer]) -> None:
        root = md.signed if role == "root" else self.root()
        allowed = set(root.roles[role].keyids)
        used = [s for s in signers if s.public_key.keyid in allowed]
        md.signatures.clear()
        for s in used:
            md.sign(s, append=True)
        threshold = root.roles[role].threshold
        if len(used) < threshold:
            log.warning(
                "%s v%d carries %d of %d signatures; add more with appliance update sign",
                role,
                md.signed.version,
                len(used),
                threshold,
            )

    def create(
        self,
        public_keys: Mapping[str, Sequence[Key]],
        signers: Mapping[str, Sequence[Signer]],
        thresholds: Mapping[str, int] | None = None,
        now: datetime | None = None,
        lifetimes: Mapping[str, timedelta] | None = None,
    ) -> None:
        """A new repository: root v1 with the given keys, and empty targets/snapshot/timestamp."""
        if self.latest_version("root"):
            raise UpdateError(f"{self.metadata_dir} already holds a repository; use it or pick an empty folder")
        t = _utc(now)
        life = {**DEFAULT_LIFETIMES, **(lifetimes or {})}
        root = Root(expires=t + life["root"], consistent_snapshot=True)
        for role in ROLES:
            keys = list(public_keys.get(role, ()))
            if not keys:
                raise UpdateError(f"no public key for the {role} role; generate one with appliance update keygen")
            for key in keys:
                root.add_key(key, role)
            root.roles[role].threshold = int((thresholds or {}).get(role, 1))
        md_root = Metadata(root)
        self._sign("root", md_root, signers.get("root", ()))
        self._write("root", md_root)
        targets = Targets(version=1, expires=t)
        self._write_targets_chain(targets, signers, t, life, bump=False)

    def _write_targets_chain(
        self,
        targets: Targets,
        signers: Mapping[str, Sequence[Signer]],
        t: datetime,
        life: Mapping[str, timedelta],
        bump: bool = True,
    ) -> None:
        """Bump targets, snapshot and timestamp together and sign each with what is available."""
        if bump:
            targets.version += 1
        targets.expires = t + life["targets"]
        targets.unrecognized_fields[SIGNED_AT_KEY] = _iso(t)
        md_t = Metadata(targets)
        self._sign("targets", md_t, signers.get("targets", ()))
        self._write("targets", md_t)
        snap = Snapshot(version=self.latest_version("snapshot") + 1, expires=t + life["snapshot"])
        snap.meta = {"targets.json": MetaFile(version=targets.version)}
        md_s = Metadata(snap)
        self._sign("snapshot", md_s, signers.get("snapshot", ()))
        self._write("snapshot", md_s)
        ts_version = 1
        if (self.metadata_dir / "timestamp.json").exists():
            ts_version = self.load("timestamp").signed.version + 1
        ts = Timestamp(
            version=ts_version,
            expires=t + life["timestamp"],
            snapshot_meta=MetaFile(version=snap.version),
            unrecognized_fields={SIGNED_AT_KEY: _iso(t)},
        )
        md_ts = Metadata(ts)
        self._sign("timestamp", md_ts, signers.get("timestamp", ()))
        self._write("timestamp", md_ts)

    def publish(
        self,
        signers: Mapping[str, Sequence[Signer]],
        releases: Sequence[tuple[Path, Mapping[str, Any]]] = (),
        floors: Mapping[str, str] | None = None,
        remove: Sequence[str] = (),
        now: datetime | None = None,
        lifetimes: Mapping[str, timedelta] | None = None,
    ) -> int:
        """Add release packs (``(pack, custom)`` with custom = kind/name/version/...), set floors, re-sign.

        Returns the new targets version.
        """
        t = _utc(now)
        life = {**DEFAULT_LIFETIMES, **(lifetimes or {})}
        targets: Targets = self.load("targets").signed
        for pack, custom in releases:
            kind = ArtifactKind(str(custom["kind"]))
            version = format_version(parse_version(str(custom["version"])))
            path = target_path(kind, str(custom["name"]), version)
            size, sha = file_digest(pack)
            dest = self.targets_dir / kind.value / f"{sha}.{Path(path).name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                shutil.copyfile(pack, dest.with_name(dest.name + ".part"))
                dest.with_name(dest.name + ".part").replace(dest)
            entry = {**custom, "version": version}
            targets.targets[path] = TargetFile(size, {"sha256": sha}, path, {"custom": {CUSTOM_KEY: entry}})
            log.info("added %s (%d bytes, sha256 %s)", path, size, sha[:12])
        for path in remove:
            targets.targets.pop(path, None)
        if floors:
            current = dict(targets.unrecognized_fields.get(FLOORS_KEY, {}))
            for kind_text, version in floors.items():
                current[ArtifactKind(kind_text).value] = format_version(parse_version(version))
            targets.unrecognized_fields[FLOORS_KEY] = current
        self._write_targets_chain(targets, signers, t, life)
        return int(targets.version)

    def add_signature(self, role: str, signer: Signer) -> int:
        """Append ``signer``'s signature to the newest metadata of ``role`` (threshold signing)."""
        md = self.load(role)
        root = md.signed if role == "root" else self.root()
        if signer.public_key.keyid not in root.roles[role].keyids:
            if role == "root":
                prev = self.load("root", md.signed.version - 1).signed if md.signed.version > 1 else None
                if prev is None or signer.public_key.keyid not in prev.roles["root"].keyids:
                    raise UntrustedMetadata(f"key {signer.public_key.keyid[:12]} is not a root key; nothing signed")
            else:
                raise UntrustedMetadata(f"key {signer.public_key.keyid[:12]} is not a {role} key; nothing signed")
        md.signatures.pop(signer.public_key.keyid, None)
        md.sign(signer, append=True)
        self._write(role, md)
        return len(md.signatures)

    def rotate_root(
        self,
        new_keys: Mapping[str, Sequence[Key]],
        old_root_signers: Sequence[Signer],
        new_root_signers: Sequence[Signer],
        thresholds: Mapping[str, int] | None = None,
        now: datetime | None = None,
        lifetime: timedelta | None = None,
    ) -> int:
        """Write root v+1 with ``new_keys`` for the named roles, signed by old and new root keys.

        Boxes walk 1.root.json -> 2.root.json ... and accept each only with a threshold of the previous
        *and* of its own root keys. Returns the new root version.
        """
        old: Root = self.root()
        old_ids = set(old.roles["root"].keyids)
        new = Root.from_dict(copy.deepcopy(old.to_dict()))  # to_dict shares lists with ``old``
        new.version = old.version + 1
        new.expires = _utc(now) + (lifetime or DEFAULT_LIFETIMES["root"])
        for role, keys in new_keys.items():
            for keyid in list(new.roles[role].keyids):
                new.revoke_key(keyid, role)
            for key in keys:
                new.add_key(key, role)
        for role, threshold in (thresholds or {}).items():
            new.roles[role].threshold = int(threshold)
        md = Metadata(new)
        new_ids = set(new.roles["root"].keyids)
        for s in list(old_root_signers) + list(new_root_signers):
            kid = s.public_key.keyid
            if (kid in old_ids or kid in new_ids) and kid not in md.signatures:
                md.sign(s, append=True)
        self._write("root", md)
        return int(new.version)

    def releases(self) -> dict[str, dict[str, Any]]:
        """``{target path: our custom fields}`` of the newest targets metadata (for listings)."""
        targets: Targets = self.load("targets").signed
        out: dict[str, dict[str, Any]] = {}
        for path, tf in targets.targets.items():
            custom = tf.unrecognized_fields.get("custom", {}).get(CUSTOM_KEY, {})
            out[path] = {"length": tf.length, "sha256": tf.hashes.get("sha256"), **custom}
        return out
