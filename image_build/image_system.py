"""The root slot of the bootable disk: the Debian base with the Python runtime (built once by mmdebstrap and
kept while its inputs are unchanged), then a copy of it finished with firmware_config, the application release,
the system users, the fstab and the kernel links.

Finishing works on the copy as root (chroot for ``systemd-sysusers``); the base build itself needs no root.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

from image_bundle import RUNTIME_VENV, BuildError
from image_rootfs import mmdebstrap_rootfs

log = logging.getLogger("image_build.system")

#: What the base tree was built from (a changed input rebuilds it).
BASE_STAMP = ".appliance-base.json"

#: tmpfs for /tmp (services use PrivateTmp); /var is a tmpfs through systemd.volatile=state.
FSTAB = """# Written by image_build/image_system.py. The root slot is read-only (kernel 'ro',
# systemd.volatile=state puts /var on a tmpfs); the data partition is mounted by var-lib-appliance.mount.
tmpfs /tmp tmpfs mode=1777,nosuid,nodev,size=25% 0 0
"""

#: Test images only: the QEMU user-network host may reach the web UI (production keeps it loopback-only).
TEST_UI_DROPIN = """# Test image only (build_image.py disk --test-config): the VM test's host reaches the web UI
# through QEMU's user network ({peer}). A production image never has this file.
[Service]
ExecStartPost=/usr/sbin/nft insert rule inet appliance input ip saddr {peer} tcp dport {port} accept
"""


#: The application release shipped in the image (stage_firmware puts it there).
FACTORY_RELEASE = "/usr/lib/appliance/factory-release"
#: Debian's units the box needs enabled (the appliance's own are enabled by stage_firmware).
SYSTEM_UNITS = ("systemd-networkd.service",)
#: Mount points on the read-only root: the data partition, the service's data, the USB folder, the update stick,
#: the ESP (boot-efi.mount: RAUC's grubenv).
MOUNT_POINTS = ("var/lib/appliance-system", "var/lib/appliance", "media/usb", "media/appliance-update", "boot/efi")


#: Test images only: the VM test may run under QEMU's TCG (no usable KVM), where the first start takes minutes;
#: the watchdog (WatchdogSec) stays as in production.
TEST_START_DROPIN = """# Test image only (build_image.py disk --test-config): a VM without KVM starts slowly.
[Service]
TimeoutStartSec=20min
"""
#: Test image only: QEMU's virtual display has no usable GL (wlroots' GLES2 renderer on Mesa's kms_swrast crashed cage
#: with SIGSEGV), so the kiosk composites in software there; a box keeps the GPU renderer, which can show Chromium's
#: GPU buffers (pixman takes shared-memory buffers only).
TEST_KIOSK_DROPIN = """# Test image only (build_image.py disk --test-config): software compositing in a VM.
[Service]
Environment=WLR_RENDERER=pixman
"""
#: Test image only, read by Debian's /usr/bin/chromium from /etc/chromium.d: under QEMU's TCG the browser takes
#: longer than Chromium's 15 s to connect to a child process it started, so the network service and other
#: utility processes ended themselves ("Terminating current process after 15 seconds with no connection", then
#: "Network service crashed or was terminated", found booting the image); a box starts them in well under a second.
TEST_CHROMIUM_FLAGS = """# Test image only (build_image.py disk --test-config): a VM without KVM is slow.
export CHROMIUM_FLAGS="$CHROMIUM_FLAGS --ipc-connection-timeout=600"
"""


def _runtime_hooks(wheelhouse: Path) -> tuple[str, ...]:
    """mmdebstrap hooks: the venv at RUNTIME_VENV from the wheelhouse only (no index, nothing downloaded)."""
    return (
        'mkdir -p "$1/tmp/wheelhouse"',
        f"sync-in {wheelhouse} /tmp/wheelhouse",
        f'chroot "$1" python3 -m venv {RUNTIME_VENV}',
        f'chroot "$1" {RUNTIME_VENV}/bin/pip install --quiet --no-index --no-cache-dir --find-links /tmp/wheelhouse'
        " -r /tmp/wheelhouse/requirements.txt",
        'rm -rf "$1/tmp/wheelhouse"',
    )


def base_key(suite: str, packages: list[str], wheelhouse: Path, mirror: str | None, epoch: int) -> dict[str, object]:
    """The inputs of the base tree."""
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    return {
        "suite": suite,
        "packages": sorted(packages),
        "wheels": hashlib.sha256("\n".join(wheels).encode()).hexdigest(),
        "mirror": mirror,
        "epoch": epoch,
    }


def base_rootfs(
    dest: Path, suite: str, packages: list[str], wheelhouse: Path, epoch: int, mirror: str | None = None
) -> Path:
    """The Debian base with the runtime venv; reused when it was built from the same inputs."""
    key = base_key(suite, packages, wheelhouse, mirror, epoch)
    stamp = dest / BASE_STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == key:
        log.info("base root filesystem unchanged, reused: %s", dest)
        return dest
    mode = "root" if os.geteuid() == 0 else "unshare"
    log.info("building the base root filesystem with mmdebstrap (%s mode, %d packages)", mode, len(packages))
    mmdebstrap_rootfs(dest, suite, packages, None, epoch, "minbase", mirror, _runtime_hooks(wheelhouse), mode)
    stamp.write_text(json.dumps(key, sort_keys=True))
    return dest


def _chroot(tree: Path, *cmd: str) -> None:
    try:
        done = subprocess.run(["chroot", str(tree), *cmd], capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"chroot {' '.join(cmd)} failed: {exc}") from exc
    if done.returncode != 0:
        raise BuildError(f"chroot {' '.join(cmd)} failed: {done.stderr.strip()[-800:]}")


def _newest_kernel(tree: Path) -> str:
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise BuildError("no kernel in the image's /boot: is linux-image-amd64 in the package list?")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    if not (tree / "boot" / f"initrd.img-{version}").is_file():
        raise BuildError(f"no initramfs for kernel {version}: is initramfs-tools in the package list?")
    return version


def finish_slot(
    base: Path, slot: Path, stage: Path, ui_peer: str | None = None, ui_port: int = 8080, test_image: bool = False
) -> dict[str, object]:
    """Copy ``base`` to ``slot`` and finish it: ``stage`` on top, users, fstab, kernel links, enabled units.

    ``ui_peer`` (test images only) opens the web UI port to that address; ``test_image`` allows a slow start and
    software compositing for the kiosk (a VM's display).
    Needs root (files owned by root).
    """
    if os.geteuid() != 0:
        raise BuildError("finishing the root slot needs root (files owned by root, chroot); run the build as root")
    if slot.exists():
        shutil.rmtree(slot)
    try:
        subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(slot)], check=True, timeout=1800)
        (slot / BASE_STAMP).unlink(missing_ok=True)
        subprocess.run(["cp", "-a", "--remove-destination", f"{stage}/.", str(slot)], check=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"copying the base root filesystem and the staged files failed: {exc}") from exc
    _chroot(slot, "systemd-sysusers")
    (slot / "etc/fstab").write_text(FSTAB)
    (slot / "etc/hostname").write_text("or-appliance\n")
    version = _newest_kernel(slot)
    for name in ("vmlinuz", "initrd.img"):
        link = slot / "boot" / name
        link.unlink(missing_ok=True)
        link.symlink_to(f"{name}-{version}")
    _chroot(slot, "systemctl", "enable", *SYSTEM_UNITS)
    # bytecode at build time: the root is read-only, so without it every start compiles the release in memory
    _chroot(slot, f"{RUNTIME_VENV}/bin/python", "-m", "compileall", "-q", "-j0", FACTORY_RELEASE)
    for folder in MOUNT_POINTS:  # the root is read-only at run time: mount points exist in the image
        (slot / folder).mkdir(parents=True, exist_ok=True)
    if ui_peer:
        dropin = slot / "etc/systemd/system/appliance-firewall.service.d"
        dropin.mkdir(parents=True, exist_ok=True)
        (dropin / "test-ui-peer.conf").write_text(TEST_UI_DROPIN.format(peer=ui_peer, port=ui_port))
    if test_image:
        dropin = slot / "etc/systemd/system/appliance.service.d"
        dropin.mkdir(parents=True, exist_ok=True)
        (dropin / "test-slow-start.conf").write_text(TEST_START_DROPIN)
        kiosk = slot / "etc/systemd/system/appliance-kiosk.service.d"
        kiosk.mkdir(parents=True, exist_ok=True)
        (kiosk / "test-software-compositing.conf").write_text(TEST_KIOSK_DROPIN)
        (slot / "etc/chromium.d").mkdir(parents=True, exist_ok=True)
        (slot / "etc/chromium.d/appliance-test-vm").write_text(TEST_CHROMIUM_FLAGS)
    return {"kernel": version}


#: Where the data partition is mounted (var-lib-appliance\x2dsystem.mount): root-owned, holds the releases root
#: runs and the trusted update metadata.
DATA_MOUNT = "/var/lib/appliance-system"
#: The service's data folder (var-lib-appliance.mount binds the partition's ``data/`` there).
SERVICE_DATA = "/var/lib/appliance"
SERVICE_DATA_ON_PARTITION = "data"


def _ids(slot: Path, table: str, name: str) -> int:
    for line in (slot / "etc" / table).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise BuildError(f"{name} is not in the image's /etc/{table} (sysusers.d not applied?)")


def _on_partition(path: str) -> Path | None:
    """Where a tmpfiles path lies on the data partition (relative), None when it is not on it."""
    where = Path(path)
    if where.is_relative_to(DATA_MOUNT):
        return where.relative_to(DATA_MOUNT)
    if where.is_relative_to(SERVICE_DATA):
        return SERVICE_DATA_ON_PARTITION / where.relative_to(SERVICE_DATA)
    return None


def data_tree(slot: Path, dest: Path) -> Path:
    """The factory content of the data partition: the tmpfiles.d layout below DATA_MOUNT and SERVICE_DATA (its
    ``data/``), made at build time with the owners and modes the lines give.

    The partition's top folder, ``releases/`` and ``update/`` are root's (the service user can neither write nor
    rename what root runs or trusts); the box has ``releases/app/current`` from the start. Only 'd' and 'L' lines
    are supported (what firmware_config uses).
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for conf in sorted((slot / "usr/lib/tmpfiles.d").glob("appliance*.conf")):
        for line in conf.read_text().splitlines():
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            rel = _on_partition(fields[1])
            if rel is None:
                continue
            kind, target = fields[0], dest / rel
            if kind == "d":
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(int(fields[2], 8))
                os.chown(target, _ids(slot, "passwd", fields[3]), _ids(slot, "group", fields[4]))
            elif kind == "L":
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(fields[6])
            else:
                raise BuildError(f"{conf.name}: tmpfiles type {kind!r} below {DATA_MOUNT} is not supported here")
    return dest


def tree_size(tree: Path) -> int:
    """Bytes of the regular files under ``tree``."""
    total = 0
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                total += os.lstat(full).st_size
    return total
