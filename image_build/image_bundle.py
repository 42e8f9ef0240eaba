"""The signed application bundle: wheel built from the repository, vendored UI assets, model packs and the
configuration, each as a deterministic pack, published into a TUF repository (``appliance update`` format).

Packs are byte-for-byte reproducible from the same sources and SOURCE_DATE_EPOCH; the TUF metadata is signed
at build time (its expiry is relative to the signing moment, so it differs between builds by design).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.update.errors import UpdateError
from appliance.update.keys import ROLES, generate_keys, load_public_keys, load_signers
from appliance.update.packs import build_pack, file_digest
from appliance.update.repository import Repository

log = logging.getLogger("image_build.bundle")

#: Where the OS image keeps the third-party Python environment the application release runs in.
RUNTIME_VENV = "/usr/lib/appliance/venv"


class BuildError(UpdateError):
    """The image build could not complete; the message says which step and what to install or fix."""


@dataclass(frozen=True)
class BundleArtifact:
    """One pack of the bundle."""

    kind: str
    name: str
    version: str
    pack: Path
    custom: Mapping[str, Any]


def tracked_files(repo_root: Path) -> list[str]:
    """Files under version control (the build never picks up stray local files)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=repo_root, capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"cannot list the repository's files with git in {repo_root}: {exc}") from exc
    return sorted(p for p in out.stdout.decode().split("\0") if p)


def _normalise_zip(src: Path, dest: Path, epoch: int) -> None:
    """Rewrite a wheel with sorted entries, one timestamp and fixed permissions (reproducible bytes)."""
    stamp = max(epoch, 315532800)  # zip cannot store dates before 1980
    import time

    date_time = time.gmtime(stamp)[:6]
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in sorted(zin.namelist()):
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.external_attr = (0o644 & 0xFFFF) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(info, zin.read(name), compresslevel=9)


def build_wheel(repo_root: Path, out_dir: Path, epoch: int) -> Path:
    """Build the project's wheel from the tracked files only, with SOURCE_DATE_EPOCH, normalised."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="appliance-wheel-") as tmp:
        src = Path(tmp) / "src"
        for rel in tracked_files(repo_root):
            full = repo_root / rel
            if full.is_file() and not full.is_symlink():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(full, src / rel)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0"}
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "--quiet",
            "-w",
            str(Path(tmp) / "wheel"),
            str(src),
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise BuildError(f"building the wheel failed: {done.stderr.strip()[-800:]}")
        wheels = sorted((Path(tmp) / "wheel").glob("*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"expected one wheel, got {[w.name for w in wheels]}")
        dest = out_dir / wheels[0].name
        _normalise_zip(wheels[0], dest, epoch)
    return dest


_LAUNCHER = """#!/bin/sh
# Runs this application release in the OS image's Python environment ({venv}).
here=$(dirname "$(readlink -f "$0")")
PYTHONPATH="$here/../site${{PYTHONPATH:+:$PYTHONPATH}}" exec {venv}/bin/python {args}"$@"
"""


def app_release_tree(wheel: Path, ui_vendor: Path | None, version: str, min_os: str, dest: Path) -> Path:
    """The folder an application pack is made of: the unpacked wheel, launchers, vendored UI assets."""
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "bin").mkdir(parents=True)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(dest / "site")
    for name, args in (("appliance", "-m appliance.cli "), ("python", "")):
        launcher = dest / "bin" / name
        launcher.write_text(_LAUNCHER.format(venv=RUNTIME_VENV, args=args))
        launcher.chmod(0o755)
    if ui_vendor is not None and ui_vendor.is_dir():
        shutil.copytree(ui_vendor, dest / "site" / "ui" / "static" / "vendor", dirs_exist_ok=True)
    size, sha = file_digest(wheel)
    info = {
        "version": version,
        "min_os": min_os,
        "wheel": wheel.name,
        "wheel_sha256": sha,
        "wheel_size": size,
        "runtime": RUNTIME_VENV,
        "ui_vendor": bool(ui_vendor is not None and ui_vendor.is_dir()),
    }
    (dest / "RELEASE.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return dest


def model_pack_trees(model_packs: Path | None) -> list[tuple[str, str, Path]]:
    """``(name, version, folder)`` for every model pack folder (one holding a pack.json)."""
    out: list[tuple[str, str, Path]] = []
    if model_packs is None or not model_packs.is_dir():
        return out
    for folder in sorted(p for p in model_packs.iterdir() if (p / "pack.json").is_file()):
        meta = json.loads((folder / "pack.json").read_text())
        version = str(meta.get("version", "1.0.0"))
        out.append((folder.name.lower(), version, folder))
    return out


def build_bundle(
    repo_root: Path,
    out: Path,
    version: str,
    min_os: str,
    epoch: int,
    config_file: Path,
    model_packs: Path | None = None,
    ui_vendor: Path | None = None,
    wheel: Path | None = None,
) -> list[BundleArtifact]:
    """All packs of a release into ``out/packs`` (returns them; nothing is signed here)."""
    packs_dir = out / "packs"
    packs_dir.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    wheel = wheel or build_wheel(repo_root, out / "wheel", epoch)
    artifacts: list[BundleArtifact] = []
    tree = app_release_tree(wheel, ui_vendor, version, min_os, work / "app")
    artifacts.append(
        BundleArtifact(
            "app",
            "or-appliance",
            version,
            build_pack(tree, packs_dir / f"app-or-appliance-{version}.tar", "app", "or-appliance", version),
            {"min_os": min_os},
        )
    )
    cfg_tree = work / "config"
    cfg_tree.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_file, cfg_tree / "appliance.toml")
    artifacts.append(
        BundleArtifact(
            "config",
            "site",
            version,
            build_pack(cfg_tree, packs_dir / f"config-site-{version}.tar", "config", "site", version),
            {},
        )
    )
    for name, mversion, folder in model_pack_trees(model_packs):
        pack = build_pack(folder, packs_dir / f"model-{name}-{mversion}.tar", "model", name, mversion)
        artifacts.append(BundleArtifact("model", name, mversion, pack, {}))
    shutil.rmtree(work, ignore_errors=True)
    return artifacts


def sign_bundle(artifacts: list[BundleArtifact], repo_dir: Path, keys: Path | None, out: Path) -> Path:
    """Publish the packs into the TUF repository ``repo_dir`` (created when new) with the keys in ``keys``.

    Without a key folder, throw-away development keys are generated in ``out/dev-keys`` (never ship those).
    """
    if keys is None:
        keys = out / "dev-keys"
        log.warning("no --keys given: signing with throw-away development keys in %s (never ship these)", keys)
        for role in ROLES:
            if not list(keys.glob(f"{role}-*.pem")):
                generate_keys(keys, role)
    repo = Repository(repo_dir)
    signers = {role: load_signers(keys, role) for role in ROLES}
    if not repo.latest_version("root"):
        repo.create({role: load_public_keys(keys, role) for role in ROLES}, signers)
    releases = [(a.pack, {"kind": a.kind, "name": a.name, "version": a.version, **a.custom}) for a in artifacts]
    repo.publish(signers, releases)
    return repo_dir


def bundle_manifest(artifacts: list[BundleArtifact], version: str, epoch: int, commit: str | None) -> dict[str, Any]:
    """What the bundle holds, with hashes (written as bundle-manifest.json)."""
    entries = []
    for a in artifacts:
        size, sha = file_digest(a.pack)
        entries.append(
            {"kind": a.kind, "name": a.name, "version": a.version, "file": a.pack.name, "size": size, "sha256": sha}
        )
    return {
        "version": version,
        "source_date_epoch": epoch,
        "git_commit": commit,
        "artifacts": entries,
        "sha256_of_artifacts": hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest(),
    }
