"""``appliance update``: keygen, build, sign, verify, install, rollback, status of fleet updates.

Publisher side (on the service engineer's laptop, keys offline): ``keygen``, ``build`` (pack a folder, add it
to the TUF repository, re-sign), ``sign`` (add a threshold signature). Box side: ``verify``, ``install``,
``rollback``, ``status``; paths come from ``--config`` ([update] and [storage]) unless given.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.update.errors import KeyMaterialError, UpdateError
from appliance.update.policy import ArtifactKind, parse_version


def _config(args: argparse.Namespace) -> Any:
    from appliance.config import DEFAULT_CONFIG_PATH, load_config

    if getattr(args, "config", None):
        return load_config(Path(args.config))
    return load_config(DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None)


def _out(args: argparse.Namespace, data: Any, line: str) -> None:
    sys.stdout.write((json.dumps(data, indent=1, default=str) if getattr(args, "json", False) else line) + "\n")


def _keyvals(items: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UpdateError(f"{what} {item!r} must look like name=value")
        out[key.strip()] = value.strip()
    return out


# ------------------------------------------------------------------------------------------------ publisher
def _keygen(args: argparse.Namespace) -> int:
    from appliance.update.keys import generate_keys

    signers = generate_keys(Path(args.keys), args.role, args.count)
    _out(args, [s.public_key.keyid for s in signers], f"{len(signers)} {args.role} key(s) in {args.keys}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from appliance.update.keys import ROLES, load_public_keys, load_signers
    from appliance.update.packs import build_pack
    from appliance.update.repository import Repository

    keys = Path(args.keys)
    repo = Repository(Path(args.repo))
    signers = {role: load_signers(keys, role) for role in ROLES}
    if args.init:
        public = {role: load_public_keys(keys, role) for role in ROLES}
        thresholds = {k: int(v) for k, v in _keyvals(args.threshold, "--threshold").items()}
        repo.create(public, signers, thresholds)
    releases = []
    if args.kind:
        if not (args.name and args.version and (args.source or args.pack)):
            raise UpdateError("a release needs --name, --version and --source FOLDER (or --pack FILE)")
        custom: dict[str, Any] = {"kind": args.kind, "name": args.name, "version": args.version}
        if args.min_os:
            custom["min_os"] = args.min_os
        if args.kind == ArtifactKind.ENGINE.value:
            if not (args.tensorrt and args.compute_capability):
                raise UpdateError("an engine pack needs --tensorrt VERSION and --compute-capability 8.9[,9.0]")
            custom["engine"] = {"tensorrt": args.tensorrt, "compute_capabilities": args.compute_capability.split(",")}
        if args.pack:
            pack = Path(args.pack)
        else:
            out_dir = Path(tempfile.mkdtemp(prefix="appliance-pack-"))
            pack = build_pack(
                Path(args.source), out_dir / f"{args.name}-{args.version}.tar", args.kind, args.name, args.version
            )
        releases.append((pack, custom))
    version = repo.publish(signers, releases, floors=_keyvals(args.floor, "--floor"))
    _out(
        args,
        {"targets_version": version, "releases": repo.releases()},
        f"repository {repo.root_dir}: targets v{version}, {len(repo.releases())} release(s)",
    )
    return 0


def _sign(args: argparse.Namespace) -> int:
    from appliance.update.keys import load_signer
    from appliance.update.repository import Repository

    count = Repository(Path(args.repo)).add_signature(args.role, load_signer(Path(args.key)))
    _out(args, {"role": args.role, "signatures": count}, f"{args.role}: now {count} signature(s)")
    return 0


# ------------------------------------------------------------------------------------------------ box
def _box_paths(args: argparse.Namespace) -> tuple[str, Path, Path, Path, dict[str, str]]:
    cfg = _config(args)
    opts = dict(cfg.update.options)
    repo = args.repo or cfg.update.repository
    metadata_dir = Path(args.metadata_dir) if args.metadata_dir else Path(cfg.update.trusted_metadata_dir)
    install_root = (
        Path(args.install_root) if args.install_root else Path(opts.get("install_root", str(cfg.data_dir / "releases")))
    )
    from appliance.audit import AUDIT_FILENAME

    audit_path = Path(opts.get("audit_path", str(cfg.data_dir / AUDIT_FILENAME)))
    if os.geteuid() == 0:  # root runs the installed releases: nobody else may be able to change them
        from appliance.update.paths import require_root_owned

        require_root_owned("release folder (install_root)", install_root)
        require_root_owned("trusted update metadata folder", metadata_dir)
    return repo, metadata_dir, install_root, audit_path, opts


def _bootstrap(args: argparse.Namespace) -> bytes | None:
    if not getattr(args, "trusted_root", None):
        return None
    try:
        return Path(args.trusted_root).read_bytes()
    except OSError as exc:
        raise KeyMaterialError(f"cannot read the trusted root {args.trusted_root}: {exc}") from exc


#: The shortest time a restart of the service may take before the new release counts as unhealthy.
MIN_RESTART_S = 300.0


def _activation(opts: dict[str, str], window_s: float) -> Callable[[ArtifactKind, Path], None] | None:
    """The ``restart_command`` as the installer's activation hook (None without one).

    The restart may take as long as the health window (at least MIN_RESTART_S): a box that starts its service
    slowly (a first start, a slow disk, a VM without KVM) must not roll back a good release for that alone.
    """
    if not opts.get("restart_command"):
        return None
    restart = shlex.split(opts["restart_command"])
    timeout_s = max(MIN_RESTART_S, window_s)

    def activate(kind: ArtifactKind, current: Path) -> None:
        done = subprocess.run(restart, capture_output=True, text=True, timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise UpdateError(f"{' '.join(restart)} exited {done.returncode}: {done.stderr.strip()[-300:]}")

    return activate


def _installer(args: argparse.Namespace, install_root: Path, audit_path: Path, opts: dict[str, str]) -> Any:
    from appliance.audit import AuditLog
    from appliance.update.box import detect_box, gpu_compute_capability
    from appliance.update.flow import validate_configuration_pack
    from appliance.update.health import HealthCheck, command_ok, gpu_visible, http_ok
    from appliance.update.install import Installer

    gpu_expected = opts.get("gpu_expected", "false").lower() == "true"
    box = detect_box(gpu_expected)
    if opts.get("os_version"):
        box = type(box)(parse_version(opts["os_version"]), box.compute_capability, box.tensorrt_version, gpu_expected)
    window = float(opts.get("health_window_s", "120"))
    app_checks: list[Any] = [("gpu", gpu_visible(gpu_expected, gpu_compute_capability))]
    if opts.get("health_url"):
        app_checks.append(("service", http_ok(opts["health_url"])))
    if opts.get("golden_command"):
        app_checks.append(("golden-reconstruction", command_ok(shlex.split(opts["golden_command"]))))
    health = {ArtifactKind.APP: HealthCheck(app_checks, window)}
    if opts.get("engine_smoke_command"):
        health[ArtifactKind.ENGINE] = HealthCheck(
            [("engine-smoke", command_ok(shlex.split(opts["engine_smoke_command"])))], window
        )
    return Installer(
        activate=_activation(opts, window),
        root=install_root,
        box=box,
        health=health,
        validators={ArtifactKind.CONFIG: validate_configuration_pack},
        audit=AuditLog(audit_path),
        actor=f"cli:{getpass.getuser()}",
    )


def _verify(args: argparse.Namespace) -> int:
    from appliance.update.client import UpdateClient, release_summary

    repo, metadata_dir, _root, _audit, _opts = _box_paths(args)
    with tempfile.TemporaryDirectory(prefix="appliance-verify-") as tmp:
        client = UpdateClient(repo, metadata_dir, _bootstrap(args))
        view = client.refresh()
        for release in view.releases:
            client.fetch(release, Path(tmp))
    summary = release_summary(view)
    _out(
        args,
        summary,
        f"{repo}: root v{view.root_version}, targets v{view.targets_version}, "
        f"{len(view.releases)} release(s) verified (every target downloaded and hashed)",
    )
    return 0


def _install(args: argparse.Namespace) -> int:
    from appliance.audit.ownership import hand_to_folder_owner
    from appliance.update.client import UpdateClient
    from appliance.update.flow import update_kind

    repo, metadata_dir, install_root, audit_path, opts = _box_paths(args)
    client = UpdateClient(repo, metadata_dir, _bootstrap(args))
    try:
        installer = _installer(args, install_root, audit_path, opts)
        result = update_kind(client, installer, ArtifactKind(args.kind), args.version, args.authorise_downgrade)
    finally:
        hand_to_folder_owner(audit_path)
    _out(
        args,
        {
            "kind": result.kind.value,
            "version": result.version,
            "decision": result.decision,
            "previous": result.previous,
        },
        f"{result.kind.value} {result.version} installed ({result.decision}; previous {result.previous})",
    )
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from appliance.audit.ownership import hand_to_folder_owner

    _repo, _meta, install_root, audit_path, opts = _box_paths(args)
    try:
        result = _installer(args, install_root, audit_path, opts).rollback(ArtifactKind(args.kind), args.reason)
    finally:
        hand_to_folder_owner(audit_path)
    _out(
        args,
        {"kind": result.kind.value, "version": result.version, "from": result.previous},
        f"{result.kind.value} rolled back to {result.version} (from {result.previous})",
    )
    return 0


def _recover(args: argparse.Namespace) -> int:
    from appliance.update.install import Installer
    from appliance.update.policy import BoxProfile

    _repo, _meta, install_root, audit_path, _opts = _box_paths(args)
    from appliance.audit import AuditLog
    from appliance.audit.ownership import hand_to_folder_owner

    try:
        audit = AuditLog(audit_path)
        installer = Installer(install_root, BoxProfile(os_version=(0,)), audit=audit, actor="service:boot")
        done = installer.recover() if install_root.is_dir() else []
    finally:
        hand_to_folder_owner(audit_path)  # runs as root before the service: the trail stays the service user's
    _out(args, done, "\n".join(done) or "nothing to recover")
    return 0


def _status(args: argparse.Namespace) -> int:
    from appliance.update.install import Installer
    from appliance.update.policy import BoxProfile

    repo, metadata_dir, install_root, _audit, _opts = _box_paths(args)
    status = Installer(install_root, BoxProfile(os_version=(0,))).status()
    if repo:
        from appliance.update.client import UpdateClient

        mark = UpdateClient(repo, metadata_dir).high_water()
        status["clock_high_water"] = mark.isoformat() if mark else None
    lines = [
        f"{k}: current {v['current']}, previous {v['previous']}" + (" (PENDING)" if v["pending"] else "")
        for k, v in status["kinds"].items()
    ] or ["nothing installed"]
    _out(args, status, "\n".join(lines))
    return 0


# ------------------------------------------------------------------------------------------------ parser
def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``appliance update`` and its subcommands."""
    p = sub.add_parser("update", help="fleet updates: signed (TUF) releases from a USB folder or LAN mirror")
    actions = p.add_subparsers(dest="update_command", metavar="ACTION", required=True)
    kinds = [k.value for k in ArtifactKind]

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--json", action="store_true", help="print JSON")

    def box(q: argparse.ArgumentParser) -> None:
        common(q)
        q.add_argument("--config", help="appliance.toml ([update], [storage]; default /etc/appliance/appliance.toml)")
        q.add_argument("--repo", help="repository folder (USB) or http(s) URL of the LAN mirror")
        q.add_argument("--metadata-dir", help="trusted TUF metadata folder (default from the configuration)")
        q.add_argument("--install-root", help="folder holding the releases (default <data_dir>/releases)")
        q.add_argument("--trusted-root", help="root.json to trust on first use (shipped in the image)")

    q = actions.add_parser("keygen", help="generate ed25519 keys for a TUF role")
    common(q)
    q.add_argument("--keys", required=True, help="key folder")
    q.add_argument("--role", required=True, choices=["root", "targets", "snapshot", "timestamp"])
    q.add_argument("--count", type=int, default=1)
    q.set_defaults(func=_keygen)

    q = actions.add_parser("build", help="pack a release, add it to the repository and sign the metadata")
    common(q)
    q.add_argument("--repo", required=True, help="repository folder")
    q.add_argument("--keys", required=True, help="key folder (private keys present are used to sign)")
    q.add_argument("--init", action="store_true", help="create the repository (root v1) first")
    q.add_argument("--threshold", action="append", metavar="ROLE=N", help="signatures needed per role (--init)")
    q.add_argument("--kind", choices=kinds)
    q.add_argument("--name")
    q.add_argument("--version")
    q.add_argument("--source", help="folder to pack")
    q.add_argument("--pack", help="an already built pack (tar) instead of --source")
    q.add_argument("--min-os", help="oldest OS image version the release runs on")
    q.add_argument("--tensorrt", help="engine packs: TensorRT version they were built with")
    q.add_argument("--compute-capability", help="engine packs: GPU compute capabilities, comma-separated")
    q.add_argument("--floor", action="append", metavar="KIND=VERSION", help="signed version floor")
    q.set_defaults(func=_build)

    q = actions.add_parser("sign", help="add a signature to the newest metadata of a role (threshold signing)")
    common(q)
    q.add_argument("--repo", required=True)
    q.add_argument("--role", required=True, choices=["root", "targets", "snapshot", "timestamp"])
    q.add_argument("--key", required=True, help="private key (PEM)")
    q.set_defaults(func=_sign)

    q = actions.add_parser("verify", help="verify a repository's metadata and every target against the trusted root")
    box(q)
    q.set_defaults(func=_verify)

    q = actions.add_parser("install", help="install the newest (or a given) release of a kind")
    box(q)
    q.add_argument("--kind", required=True, choices=kinds)
    q.add_argument("--version", help="install exactly this version")
    q.add_argument("--authorise-downgrade", metavar="REASON", help="allow going below the local floor (audited)")
    q.set_defaults(func=_install)

    q = actions.add_parser("rollback", help="return a kind to its previous release (audited)")
    box(q)
    q.add_argument("--kind", required=True, choices=kinds)
    q.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    q.set_defaults(func=_rollback)

    q = actions.add_parser("recover", help="clean up after a crash; roll back switches never confirmed (boot)")
    box(q)
    q.set_defaults(func=_recover)

    q = actions.add_parser("status", help="current/previous release per kind, pending installs, floors")
    box(q)
    q.set_defaults(func=_status)
