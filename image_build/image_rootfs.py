"""The OS root filesystem: mmdebstrap (unshare mode, no root needed) + the project's Debian packages +
firmware_config + the application release, packed read-only (erofs or squashfs) with a manifest of package
versions and file hashes, and the RAUC bundle manifest for the OS slot.

What a production image adds and this build cannot test (no NVIDIA repository, no signing HSM here): the NVIDIA
driver and TensorRT runtime from NVIDIA's apt repository, the Python runtime's wheels (torch, onnxruntime-gpu,
cupy) in /usr/lib/appliance/venv, a signed RAUC bundle (``rauc bundle --cert --key``), and secure boot (shim +
signed kernel/UKI, dm-verity over the read-only slot). See docs/updates.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

from image_bundle import BuildError
from image_rauc import manifest_text

log = logging.getLogger("image_build.rootfs")

#: Where firmware_config files go inside the image.
FIRMWARE_LAYOUT: tuple[tuple[str, str], ...] = (
    ("systemd", "etc/systemd/system"),
    ("sysusers.d", "usr/lib/sysusers.d"),
    ("tmpfiles.d", "usr/lib/tmpfiles.d"),
    ("logrotate.d", "etc/logrotate.d"),
    ("journald.conf.d", "etc/systemd/journald.conf.d"),
    ("udev", "usr/lib/udev/rules.d"),
)
FIRMWARE_FILES: tuple[tuple[str, str], ...] = (
    ("appliance.toml", "etc/appliance/appliance.toml"),
    ("appliance.schema.json", "usr/share/appliance/appliance.schema.json"),
    ("gpu/gpu.conf", "etc/appliance/gpu.conf"),
    ("gpu/gpu-setup.sh", "usr/lib/appliance/gpu-setup.sh"),
    ("usb/usb-mount.sh", "usr/lib/appliance/usb-mount.sh"),
    ("network/render-firewall.py", "usr/lib/appliance/render-firewall.py"),
    ("network/80-wired.network", "etc/systemd/network/80-wired.network"),
    ("rauc/system.conf", "etc/rauc/system.conf"),
)
ENABLED_UNITS = (
    "appliance.service",
    "appliance-kiosk.service",
    "appliance-gpu.service",
    "appliance-firewall.service",
    "var-lib-appliance\\x2dsystem.mount",
    "var-lib-appliance.mount",
    "media-usb.mount",
    "appliance-usb-release.path",
    "appliance-usb-writable.path",
    "appliance-mark-good.service",
)


def _run(cmd: list[str], timeout: float, what: str, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise BuildError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-1200:]}")
    return done.stdout


def os_build_unavailable(fs: str) -> str | None:
    """Why the OS part cannot run on this host, or None when it can."""
    if shutil.which("mmdebstrap") is None:
        return "mmdebstrap is not installed (apt-get install mmdebstrap)"
    tool = {"erofs": "mkfs.erofs", "squashfs": "mksquashfs"}[fs]
    if shutil.which(tool) is None:
        return f"{tool} is not installed (apt-get install {'erofs-utils' if fs == 'erofs' else 'squashfs-tools'})"
    try:
        probe = subprocess.run(
            ["unshare", "--user", "--map-root-user", "true"], capture_output=True, timeout=20, check=False
        )
    except OSError as exc:
        return f"unshare(1) unavailable: {exc}"
    if probe.returncode != 0:
        return f"user namespaces are refused by this kernel/container: {probe.stderr.decode().strip()[:200]}"
    return None


def stage_firmware(firmware: Path, app_release: Path | None, image_version: str, stage: Path) -> Path:
    """The tree copied into the rootfs: firmware_config files in their places, the app release, the stamp."""
    if stage.exists():
        shutil.rmtree(stage)
    for src, dst in FIRMWARE_LAYOUT:
        shutil.copytree(firmware / src, stage / dst, dirs_exist_ok=True)
    for src, dst in FIRMWARE_FILES:
        (stage / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(firmware / src, stage / dst)
    for script in ("gpu-setup.sh", "usb-mount.sh"):
        (stage / "usr/lib/appliance" / script).chmod(0o755)
    wants = stage / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ENABLED_UNITS:
        (wants / unit).symlink_to(f"../{unit}")
    (stage / "etc/appliance-release").write_text(f'NAME="OR appliance"\nIMAGE_VERSION="{image_version}"\n')
    if app_release is not None:
        # the factory release: releases/app/current on the data partition points here until the first update
        shutil.copytree(app_release, stage / "usr/lib/appliance/factory-release", symlinks=True)
    return stage


def factory_release(packs: Path) -> Path | None:
    """The newest application pack in ``packs`` unpacked into a temporary folder (None when there is none)."""
    import tempfile

    from appliance.update.packs import extract_pack

    apps = sorted(packs.glob("app-*.tar")) if packs.is_dir() else []
    if not apps:
        return None
    app_tree = Path(tempfile.mkdtemp(prefix="appliance-app-")) / "release"
    app_tree.mkdir()
    extract_pack(apps[-1], app_tree)
    return app_tree


def mmdebstrap_rootfs(
    dest: Path,
    suite: str,
    packages: list[str],
    stage: Path | None,
    epoch: int,
    variant: str = "minbase",
    mirror: str | None = None,
    hooks: tuple[str, ...] = (),
    mode: str = "unshare",
) -> Path:
    """Build the root filesystem into the folder ``dest`` with mmdebstrap (unshare mode unless told otherwise).

    ``stage`` is copied over the tree; ``hooks`` are further ``--customize-hook`` commands, run before the
    clean-up (``$1`` is the tree).
    """
    if dest.exists():
        shutil.rmtree(dest)
    cmd = [
        "mmdebstrap",
        f"--mode={mode}",
        f"--variant={variant}",
        "--format=directory",
        '--aptopt=Acquire::Retries "3"',
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        *([f"--customize-hook=sync-in {stage} /"] if stage is not None else []),
        *[f"--customize-hook={hook}" for hook in hooks],
        '--customize-hook=rm -f "$1/etc/machine-id" && touch "$1/etc/machine-id"',
        '--customize-hook=rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*',
    ]
    if packages:
        cmd.append("--include=" + ",".join(packages))
    cmd += [suite, str(dest)]
    if mirror:
        cmd.append(mirror)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    _run(cmd, 3600, "mmdebstrap", env)
    return dest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def rootfs_manifest(rootfs: Path) -> dict[str, Any]:
    """Package versions (from the image's dpkg database) and every file's hash, link target or type."""
    packages: list[dict[str, str]] = []
    admindir = rootfs / "var/lib/dpkg"
    if (admindir / "status").exists():
        out = _run(
            ["dpkg-query", f"--admindir={admindir}", "-W", "-f=${Package}\\t${Version}\\t${Architecture}\\n"],
            120,
            "dpkg-query",
        )
        for line in sorted(out.splitlines()):
            name, version, arch = line.split("\t")
            packages.append({"package": name, "version": version, "architecture": arch})
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = Path(dirpath) / name
            rel = "/" + full.relative_to(rootfs).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                files[rel] = "link:" + os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                files[rel] = "sha256:" + _sha256(full)
            else:
                files[rel] = f"special:{stat.S_IFMT(st.st_mode):o}"
    return {"packages": packages, "files": files}


def pack_image(rootfs: Path, image: Path, fs: str, epoch: int) -> Path:
    """Pack ``rootfs`` read-only and reproducibly (fixed times, UUID from the epoch, no xattrs)."""
    image.parent.mkdir(parents=True, exist_ok=True)
    image.unlink(missing_ok=True)
    if fs == "erofs":
        fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"or-appliance-rootfs-{epoch}"))
        _run(
            ["mkfs.erofs", f"-T{epoch}", f"-U{fs_uuid}", "-x-1", "--quiet", str(image), str(rootfs)], 3600, "mkfs.erofs"
        )
    elif fs == "squashfs":
        _run(
            [
                "mksquashfs",
                str(rootfs),
                str(image),
                "-noappend",
                "-no-xattrs",
                "-quiet",
                "-no-progress",
                "-mkfs-time",
                str(epoch),
                "-all-time",
                str(epoch),
                "-processors",
                "1",
            ],
            3600,
            "mksquashfs",
        )
    else:
        raise BuildError(f"unknown filesystem {fs!r}; use erofs or squashfs")
    return image


def write_rauc_manifest(
    out: Path, image: Path, image_version: str, epoch: int, compatible: str = "or-appliance-x86_64"
) -> Path:
    """The RAUC bundle manifest for the OS slot (``rauc bundle`` signs it in production)."""
    rauc = out / "rauc"
    rauc.mkdir(parents=True, exist_ok=True)
    if image.parent != rauc:
        (rauc / image.name).unlink(missing_ok=True)
        try:
            os.link(image, rauc / image.name)  # same bytes, no second copy on disk
        except OSError:
            shutil.copyfile(image, rauc / image.name)
    text = manifest_text(compatible, image_version, epoch, image.name, "OR appliance OS image") + (
        f"sha256={_sha256(image)}\nsize={image.stat().st_size}\n"
    )
    manifest = rauc / "manifest.raucm"
    manifest.write_text(text)
    return manifest


def write_json(path: Path, data: Any) -> None:
    """Stable JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
