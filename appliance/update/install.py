"""Installing a verified release on the box: stage, verify, fsync, switch ``current`` atomically, health-check.

Layout under the install root (on the data partition)::

    <root>/<kind>/releases/<version>/    complete, verified releases (appear only by rename, after fsync)
    <root>/<kind>/current -> releases/<v>   switched by symlink-to-temp-name + os.replace
    <root>/<kind>/previous -> releases/<v>
    <root>/<kind>/state.json             pending install (unconfirmed) and history
    <root>/floors.json                   local floors (newest confirmed release) and the last signed floors

Every step leaves ``current`` pointing at a complete release, so a power cut or a SIGKILL at any moment is
harmless; :meth:`Installer.recover` (run first by every install, and at service start) removes leftovers and
rolls an unconfirmed switch back, like boot counting in RAUC.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from appliance.fsio import atomic_symlink, atomic_write_bytes, fsync_dir, fsync_tree
from appliance.update.errors import (
    DowngradeRefused,
    HealthCheckFailed,
    InstallError,
    InstallInProgress,
    TamperedTarget,
    UpdateError,
)
from appliance.update.health import HealthCheck
from appliance.update.packs import extract_pack, verify_release_dir
from appliance.update.policy import (
    ArtifactKind,
    BoxProfile,
    FloorDecision,
    ReleaseInfo,
    Version,
    check_compatibility,
    check_floor,
    format_version,
    parse_version,
)

log = logging.getLogger(__name__)

#: The steps of an install, in order; ``progress`` is called after each.
STEPS: tuple[str, ...] = (
    "recovered",
    "checked",
    "downloaded",
    "extracted",
    "validated",
    "synced",
    "staged",
    "pending",
    "previous-switched",
    "current-switched",
    "health-checked",
    "confirmed",
)

ProgressFn = Callable[[str], None]
Validator = Callable[[Path], None]


class AuditSink(Protocol):
    """What the installer needs of :class:`appliance.audit.AuditLog`."""

    def append(
        self,
        actor: str,
        action: str,
        study_hash: str | None = None,
        details: Mapping[str, Any] | None = None,
        requirement: str | None = None,
    ) -> object:
        """Append one record."""


@dataclass(frozen=True)
class InstallResult:
    """What an install did."""

    kind: ArtifactKind
    version: str
    decision: str
    previous: str | None
    path: Path


@dataclass
class Installer:
    """Installs releases of every kind under ``root``; see the module docstring for the layout."""

    root: Path
    box: BoxProfile
    health: Mapping[ArtifactKind, HealthCheck] = field(default_factory=dict)
    validators: Mapping[ArtifactKind, Validator] = field(default_factory=dict)
    audit: AuditSink | None = None
    actor: str = "service"
    progress: ProgressFn | None = None
    _lock_depth: int = field(default=0, init=False, repr=False)
    #: Called after every switch of ``current`` (install, automatic or manual rollback) with the kind and the
    #: release now current, e.g. to restart the service so the health check sees the new release.
    activate: Callable[[ArtifactKind, Path], None] | None = None

    # ------------------------------------------------------------------------------------------- layout
    def kind_dir(self, kind: ArtifactKind) -> Path:
        """``<root>/<kind>``."""
        return self.root / kind.value

    def link_version(self, kind: ArtifactKind, link: str) -> str | None:
        """The version ``current``/``previous`` points at, or None."""
        try:
            return Path(os.readlink(self.kind_dir(kind) / link)).name
        except OSError:
            return None

    def link_target(self, kind: ArtifactKind, link: str) -> str | None:
        """Where ``current``/``previous`` points, as stored (``releases/<v>``, or the image's factory release)."""
        try:
            return os.readlink(self.kind_dir(kind) / link)
        except OSError:
            return None

    def _activate(self, kind: ArtifactKind) -> str | None:
        """Run the activation hook; returns a failure text instead of raising."""
        if self.activate is None:
            return None
        try:
            self.activate(kind, self.kind_dir(kind) / "current")
        except Exception as exc:  # any failure to restart counts as an unhealthy release
            return f"activation: {type(exc).__name__}: {exc}"
        return None

    def _restore_previous(self, kind: ArtifactKind, older_target: str | None) -> None:
        """After an automatic rollback, ``previous`` goes back to what it was before the failed install."""
        link = self.kind_dir(kind) / "previous"
        if older_target is not None and (self.kind_dir(kind) / older_target).is_dir():
            atomic_symlink(link, older_target)
        elif older_target is None:
            link.unlink(missing_ok=True)

    def _step(self, name: str) -> None:
        log.debug("install step %s", name)
        if self.progress is not None:
            self.progress(name)

    def _audit(self, action: str, details: Mapping[str, Any], requirement: str | None = None) -> None:
        if self.audit is not None:
            self.audit.append(self.actor, action, details=details, requirement=requirement)

    # ------------------------------------------------------------------------------------------- state files
    def _read_json(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def floors(self) -> dict[str, dict[str, str]]:
        """``{"local": {kind: version}, "signed": {kind: version}}``."""
        data = self._read_json(self.root / "floors.json")
        return {"local": dict(data.get("local", {})), "signed": dict(data.get("signed", {}))}

    def _set_floor(self, section: str, kind: ArtifactKind, version: Version) -> None:
        data = self.floors()
        data[section][kind.value] = format_version(version)
        atomic_write_bytes(self.root / "floors.json", json.dumps(data, indent=1, sort_keys=True).encode())

    def remember_signed_floors(self, floors: Mapping[ArtifactKind, Version]) -> None:
        """Keep the newest signed floors seen (a later offline rollback must respect them too)."""
        data = self.floors()
        for kind, version in floors.items():
            old = data["signed"].get(kind.value)
            if old is None or parse_version(old) < version:
                data["signed"][kind.value] = format_version(version)
        atomic_write_bytes(self.root / "floors.json", json.dumps(data, indent=1, sort_keys=True).encode())

    def _state(self, kind: ArtifactKind) -> dict[str, Any]:
        return self._read_json(self.kind_dir(kind) / "state.json")

    def _write_state(self, kind: ArtifactKind, state: Mapping[str, Any]) -> None:
        atomic_write_bytes(self.kind_dir(kind) / "state.json", json.dumps(state, indent=1, sort_keys=True).encode())

    def _record(self, kind: ArtifactKind, event: dict[str, Any], pending: dict[str, Any] | None) -> None:
        state = self._state(kind)
        history = list(state.get("history", []))[-19:]
        history.append({"at": datetime.now(UTC).isoformat(), **event})
        self._write_state(kind, {"pending": pending, "history": history})

    # ------------------------------------------------------------------------------------------- recovery
    def recover(self) -> list[str]:
        """Remove half-done work and roll back unconfirmed switches; returns what was done.

        While another process installs (it holds the install lock), nothing is half-done and nothing is touched:
        the service restart an install's activation hook starts runs ``update recover`` before the start, which
        must neither fail the restart nor roll back the release being checked (REQ-UPD-1861).
        """
        try:
            with self._exclusive():
                return self._recover()
        except InstallInProgress:
            line = "an update is being installed by another process: nothing to recover"
            log.info("recovery: %s", line)
            return [line]

    def _recover(self) -> list[str]:
        done: list[str] = []
        if self.root.is_dir():
            for leftover in self.root.glob(".*.tmp"):  # a state file write cut short
                leftover.unlink(missing_ok=True)
                done.append(f"removed {leftover.name}")
        for kind in ArtifactKind:
            kdir = self.kind_dir(kind)
            if not kdir.is_dir():
                continue
            for leftover in list(kdir.iterdir()) + list((kdir / "releases").glob(".*")):
                if leftover.name.startswith((".staging-", ".trash-")) or leftover.name.endswith((".tmp-link", ".tmp")):
                    if leftover.is_dir() and not leftover.is_symlink():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)
                    done.append(f"removed {leftover.name}")
            shutil.rmtree(kdir / "downloads", ignore_errors=True)
            pending = self._state(kind).get("pending")
            if pending:
                current = self.link_version(kind, "current")
                prev = pending.get("previous")
                prev_target = pending.get("previous_target") or (f"releases/{prev}" if prev else None)
                if current == pending.get("version") and prev_target and (kdir / prev_target).is_dir():
                    atomic_symlink(kdir / "current", prev_target)
                    self._restore_previous(kind, pending.get("older_target"))
                    self._activate(kind)
                    why = "interrupted before the health check confirmed it"
                    done.append(f"{kind.value}: rolled back {current} -> {prev} ({why})")
                    self._record(kind, {"event": "rolled-back", "version": current, "to": prev, "reason": why}, None)
                    self._audit(
                        "update.rolled_back",
                        {"kind": kind.value, "version": current, "to": prev, "reason": why},
                        "REQ-UPD-011",
                    )
                else:
                    self._record(kind, {"event": "abandoned", "version": pending.get("version")}, None)
                    done.append(f"{kind.value}: abandoned unfinished install of {pending.get('version')}")
        for line in done:
            log.warning("recovery: %s", line)
        return done

    # ------------------------------------------------------------------------------------------- install
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One installer at a time per box (a lock file; a killed process releases it). Re-entrant."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".install.lock", "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise InstallInProgress("another update is running on this box; wait for it to finish") from exc
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(lock, fcntl.LOCK_UN)

    def install(
        self,
        release: ReleaseInfo,
        fetch: Callable[[Path], Path],
        signed_floor: Version | None = None,
        authorisation: str | None = None,
    ) -> InstallResult:
        """Install ``release`` (``fetch(dest_dir)`` downloads it verified); roll back if unhealthy."""
        with self._exclusive():
            return self._install(release, fetch, signed_floor, authorisation)

    def _install(
        self,
        release: ReleaseInfo,
        fetch: Callable[[Path], Path],
        signed_floor: Version | None,
        authorisation: str | None,
    ) -> InstallResult:
        kind = release.kind
        kdir = self.kind_dir(kind)
        (kdir / "releases").mkdir(parents=True, exist_ok=True)
        self.recover()
        self._step("recovered")
        try:
            decision = self._check(release, signed_floor, authorisation)
        except UpdateError as exc:
            self._audit(
                "update.refused",
                {"kind": kind.value, "version": release.version_text, "error": type(exc).__name__, "reason": str(exc)},
            )
            raise
        current = self.link_version(kind, "current")
        if current == release.version_text and decision is FloorDecision.REINSTALL:
            verify_release_dir(kdir / "releases" / current)
            log.info("%s %s is already installed and intact", kind.value, current)
            return InstallResult(
                kind, current, "already-installed", self.link_version(kind, "previous"), kdir / "releases" / current
            )
        self._step("checked")
        try:
            final = self._stage(release, fetch)
        except OSError as exc:
            self.recover()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                err: UpdateError = InstallError(
                    f"disk full while staging {kind.value} {release.version_text} ({exc}); free space on the data "
                    "partition and retry; the running release is unchanged"
                )
            else:
                err = InstallError(
                    f"staging {kind.value} {release.version_text} failed: {exc}; the running release is unchanged"
                )
            self._audit(
                "update.refused",
                {"kind": kind.value, "version": release.version_text, "error": type(err).__name__, "reason": str(err)},
            )
            raise err from exc
        except UpdateError as exc:
            self.recover()
            self._audit(
                "update.refused",
                {"kind": kind.value, "version": release.version_text, "error": type(exc).__name__, "reason": str(exc)},
            )
            raise
        return self._switch(release, final, current, decision, authorisation)

    def _check(self, release: ReleaseInfo, signed_floor: Version | None, authorisation: str | None) -> FloorDecision:
        check_compatibility(release, self.box)
        floors = self.floors()
        stored_signed = floors["signed"].get(release.kind.value)
        floor_candidates = [f for f in (signed_floor, parse_version(stored_signed) if stored_signed else None) if f]
        local = floors["local"].get(release.kind.value)
        return check_floor(
            release.version,
            max(floor_candidates) if floor_candidates else None,
            parse_version(local) if local else None,
            authorisation,
        )

    def _stage(self, release: ReleaseInfo, fetch: Callable[[Path], Path]) -> Path:
        kdir = self.kind_dir(release.kind)
        pack = fetch(kdir / "downloads")
        self._step("downloaded")
        staging = kdir / f".staging-{release.version_text}-{os.getpid()}"
        staging.mkdir()
        manifest = extract_pack(pack, staging)
        if (manifest.get("kind"), manifest.get("name"), manifest.get("version")) != (
            release.kind.value,
            release.name,
            release.version_text,
        ):
            raise TamperedTarget(
                f"the pack's manifest says {manifest.get('kind')} {manifest.get('name')} {manifest.get('version')}, "
                f"the signed metadata {release.kind.value} {release.name} {release.version_text}; refused"
            )
        self._step("extracted")
        validator = self.validators.get(release.kind)
        if validator is not None:
            validator(staging)
        self._step("validated")
        fsync_tree(staging)
        self._step("synced")
        final = kdir / "releases" / release.version_text
        if final.exists():
            try:
                verify_release_dir(final)
                shutil.rmtree(staging)
            except TamperedTarget:
                if release.version_text in (
                    self.link_version(release.kind, "current"),
                    self.link_version(release.kind, "previous"),
                ):
                    raise
                trash = kdir / "releases" / f".trash-{release.version_text}-{os.getpid()}"
                os.rename(final, trash)
                os.rename(staging, final)
                shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staging, final)
        fsync_dir(final.parent)
        with contextlib.suppress(FileNotFoundError):
            pack.unlink()
        self._step("staged")
        return final

    def _switch(
        self, release: ReleaseInfo, final: Path, current: str | None, decision: FloorDecision, authorisation: str | None
    ) -> InstallResult:
        kind = release.kind
        kdir = self.kind_dir(kind)
        version = release.version_text
        current_target = self.link_target(kind, "current")
        older_target = self.link_target(kind, "previous")
        self._record(
            kind,
            {"event": "switching", "version": version, "from": current},
            {"version": version, "previous": current, "previous_target": current_target, "older_target": older_target},
        )
        self._step("pending")
        if current_target is not None and current != version:
            atomic_symlink(kdir / "previous", current_target)
        self._step("previous-switched")
        atomic_symlink(kdir / "current", f"releases/{version}")
        self._step("current-switched")
        activation = self._activate(kind)
        check = self.health.get(kind)
        failures = ([activation] if activation else []) + (check.run(final) if check is not None else [])
        self._step("health-checked")
        if failures:
            reason = "; ".join(failures)
            if current_target is not None and current != version:
                atomic_symlink(kdir / "current", current_target)
                self._restore_previous(kind, older_target)
                self._activate(kind)
            self._record(kind, {"event": "rolled-back", "version": version, "to": current, "reason": reason}, None)
            self._audit(
                "update.rolled_back",
                {"kind": kind.value, "version": version, "to": current, "reason": reason},
                "REQ-UPD-011",
            )
            raise HealthCheckFailed(
                f"{kind.value} {version} failed its health check ({reason}); "
                + (f"rolled back to {current}" if current else "no previous release to return to")
            )
        self._set_floor("local", kind, release.version)
        self._record(
            kind, {"event": "installed", "version": version, "from": current, "decision": decision.value}, None
        )
        details = {
            "kind": kind.value,
            "name": release.name,
            "version": version,
            "from": current,
            "sha256": release.sha256,
            "decision": decision.value,
        }
        if decision is FloorDecision.AUTHORISED_DOWNGRADE:
            self._audit("update.downgrade_authorised", {**details, "authorisation": authorisation}, "REQ-UPD-006")
        self._audit("update.installed", details, "REQ-UPD-010")
        self._step("confirmed")
        self._collect_garbage(kind)
        return InstallResult(kind, version, decision.value, current, final)

    def _collect_garbage(self, kind: ArtifactKind) -> None:
        keep = {self.link_version(kind, "current"), self.link_version(kind, "previous")}
        rdir = self.kind_dir(kind) / "releases"
        for old in rdir.iterdir():
            if old.name not in keep and not old.name.startswith("."):
                trash = rdir / f".trash-{old.name}-{os.getpid()}"
                os.rename(old, trash)
                shutil.rmtree(trash, ignore_errors=True)

    # ------------------------------------------------------------------------------------------- rollback
    def rollback(self, kind: ArtifactKind, reason: str, actor: str | None = None) -> InstallResult:
        """Return to ``previous`` by hand: an explicit downgrade, audited; never below the signed floor."""
        with self._exclusive():
            return self._rollback(kind, reason, actor)

    def _rollback(self, kind: ArtifactKind, reason: str, actor: str | None) -> InstallResult:
        if not reason.strip():
            raise DowngradeRefused("a rollback needs a reason (it is recorded in the audit trail)")
        self.recover()
        kdir = self.kind_dir(kind)
        current, previous = self.link_version(kind, "current"), self.link_version(kind, "previous")
        current_target, previous_target = self.link_target(kind, "current"), self.link_target(kind, "previous")
        if previous_target is None or previous == current or not (kdir / previous_target).is_dir():
            raise UpdateError(f"no previous {kind.value} release to roll back to")
        previous_version = parse_version(str(verify_release_dir(kdir / previous_target).get("version")))
        signed = self.floors()["signed"].get(kind.value)
        if signed and previous_version < parse_version(signed):
            raise DowngradeRefused(f"{kind.value} {previous} is below the signed floor {signed}; rollback refused")
        atomic_symlink(kdir / "current", previous_target)
        if current_target is not None:
            atomic_symlink(kdir / "previous", current_target)
        self._set_floor("local", kind, previous_version)
        failure = self._activate(kind)
        if failure:
            log.error("rollback of %s to %s: %s", kind.value, previous, failure)
        self._record(kind, {"event": "manual-rollback", "version": current, "to": previous, "reason": reason}, None)
        if self.audit is not None:
            self.audit.append(
                actor or self.actor,
                "update.rollback",
                details={"kind": kind.value, "from": current, "to": previous, "reason": reason},
                requirement="REQ-UPD-006",
            )
        return InstallResult(kind, str(previous), "rollback", current, kdir / previous_target)

    def status(self) -> dict[str, Any]:
        """Per kind: current, previous, pending and recent history; plus the floors."""
        out: dict[str, Any] = {"floors": self.floors(), "kinds": {}}
        for kind in ArtifactKind:
            if self.kind_dir(kind).is_dir():
                state = self._state(kind)
                out["kinds"][kind.value] = {
                    "current": self.link_version(kind, "current"),
                    "previous": self.link_version(kind, "previous"),
                    "pending": state.get("pending"),
                    "history": state.get("history", [])[-5:],
                }
        return out
