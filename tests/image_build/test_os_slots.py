"""OS slot updates (RAUC) without QEMU: the box's system.conf against the disk layout, the mark-good unit, the
GRUB slot script's boot counting run step by step on a real grubenv, and a signed OS bundle checked by rauc
with the box's configuration. The slot update booted in a VM is in tests/image_build/test_vm_boot.py (slow)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.data import ROOT

sys.path[:0] = [str(ROOT / "image_build")]

import image_disk  # noqa: E402
import image_rauc  # noqa: E402
import image_rootfs  # noqa: E402
import image_system  # noqa: E402
from image_bundle import BuildError  # noqa: E402

SYSTEMD = ROOT / "firmware_config" / "systemd"
EPOCH = 1_790_000_000


def _ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # unit keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def _unit_values(path: Path, section: str, key: str) -> list[str]:
    """Every value of ``key`` in ``section`` of a unit file (a key may repeat)."""
    values, current = [], None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.startswith(f"{key}="):
            values.append(line.split("=", 1)[1])
    return values


@pytest.mark.req("REQ-UPD-1950")
def test_system_conf_names_the_disks_slots_grubenv_and_keyring() -> None:
    """system.conf: the two ext4 slots are the disk's root-a/root-b partitions with the boot names GRUB passes
    as rauc.slot=; the grubenv is the ESP's (where boot-efi.mount puts the partition named esp); the status file
    lies on the data partition (the root is read-only, /var a tmpfs); only verity bundles; the keyring is the file
    the build installs."""
    conf = _ini(image_rauc.SYSTEM_CONF)
    assert conf["system"]["bootloader"] == "grub"
    assert conf["system"]["compatible"] == image_rauc.system_compatible()
    slots = {conf[s]["bootname"]: conf[s] for s in conf.sections() if s.startswith("slot.rootfs.")}
    assert sorted(slots) == ["A", "B"]
    partuuids = {s: image_disk.stable_uuid(EPOCH, f"part-{s}") for s in ("A", "B")}
    script = image_disk.slot_script(partuuids)
    for bootname, slot in slots.items():
        assert slot["type"] == "ext4"
        assert slot["device"] == f"/dev/disk/by-partlabel/root-{bootname.lower()}"
        assert f"rauc.slot={bootname}" in script
    mount = _ini(SYSTEMD / "boot-efi.mount")["Mount"]
    assert mount["What"] == "/dev/disk/by-partlabel/esp" and {"noexec", "nosuid", "nodev"} <= set(
        mount["Options"].split(",")
    )
    assert conf["system"]["grubenv"] == f"{mount['Where']}/grub/grubenv"
    assert mount["Where"].lstrip("/") in image_system.MOUNT_POINTS
    assert Path(conf["system"]["statusfile"]).is_relative_to(image_system.DATA_MOUNT)
    assert conf["system"]["bundle-formats"] == "-plain"
    assert conf["keyring"]["path"] == "/" + image_rauc.KEYRING_IN_IMAGE
    assert ("rauc/system.conf", "etc/rauc/system.conf") in image_rootfs.FIRMWARE_FILES


@pytest.mark.req("REQ-UPD-1951")
def test_mark_good_unit_waits_for_the_service_and_its_api() -> None:
    """The slot is marked good only after appliance.service is ready (ordered after it, which is Type=notify) and
    its API answers; a failed service start fails the unit (Requires=), so the slot stays on trial. The unit is
    enabled in the image; RAUC's service gets the ESP and the data partition mounted."""
    unit = SYSTEMD / "appliance-mark-good.service"
    assert "appliance.service" in _unit_values(unit, "Unit", "After")[0].split()
    assert _unit_values(unit, "Unit", "Requires") == ["appliance.service"]
    assert _ini(SYSTEMD / "appliance.service")["Service"]["Type"] == "notify"
    assert _unit_values(unit, "Service", "ExecStart") == ["/usr/bin/rauc status mark-good"]
    (health,) = _unit_values(unit, "Service", "ExecStartPre")
    assert health.startswith("/usr/bin/curl --fail ") and health.endswith("http://127.0.0.1:8080/api/health")
    for path in (unit, SYSTEMD / "rauc.service.d" / "appliance.conf"):
        needs = " ".join(_unit_values(path, "Unit", "RequiresMountsFor")).split()
        assert {"/boot/efi", image_system.DATA_MOUNT} <= set(needs), path
    assert "appliance-mark-good.service" in image_rootfs.ENABLED_UNITS


def _grub_as_sh(script: str) -> str:
    """The slot choice of grub.cfg as a POSIX shell script: GRUB's ``set X=Y`` is an assignment, load_env/save_env
    read and write the grubenv file with grub-editenv, the terminal commands do nothing, and the menu entries are
    replaced by printing the entry GRUB would boot."""
    lines = [
        "serial() { :; }",
        "terminal_input() { :; }",
        "terminal_output() { :; }",
        'load_env() { eval "$(grub-editenv "$GRUBENV" list | sed "s/=\\(.*\\)/=\'\\1\'/")"; }',
        'save_env() { for v in "$@"; do eval "grub-editenv \\"\\$GRUBENV\\" set \\"$v=\\$$v\\""; done; }',
    ]
    for line in script.splitlines():
        if line.startswith("menuentry"):
            break
        lines.append(line[4:] if line.startswith("set ") else line)
    lines.append('echo "entry=$default"')
    return "\n".join(lines) + "\n"


class _Box:
    """grub.cfg's slot choice on a grubenv made as the build makes it; RAUC's grub backend's writes done with
    grub-editenv as RAUC does them (mark-good: <slot>_OK=1 <slot>_TRY=0; install: the slot first in ORDER, good,
    not on trial)."""

    def __init__(self, tmp: Path) -> None:
        self.env = tmp / "grubenv"
        subprocess.run(["grub-editenv", str(self.env), "create"], check=True)
        subprocess.run(["grub-editenv", str(self.env), "set", "ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=0", "B_TRY=0"],
                       check=True)  # fmt: skip
        uuids = {s: image_disk.stable_uuid(EPOCH, f"part-{s}") for s in ("A", "B")}
        self.script = tmp / "grub.sh"
        self.script.write_text(_grub_as_sh(image_disk.slot_script(uuids)))

    def boot(self) -> str:
        """Power on: the slot GRUB boots."""
        done = subprocess.run(["sh", str(self.script)], capture_output=True, text=True, check=True,
                              env={**os.environ, "GRUBENV": str(self.env)})  # fmt: skip
        return "AB"[int(done.stdout.strip().splitlines()[-1].removeprefix("entry="))]

    def set(self, *assignments: str) -> None:
        subprocess.run(["grub-editenv", str(self.env), "set", *assignments], check=True)

    def mark_good(self, slot: str) -> None:
        self.set(f"{slot}_OK=1", f"{slot}_TRY=0")

    def installed(self, slot: str) -> None:
        other = "B" if slot == "A" else "A"
        self.set(f"ORDER={slot} {other}", f"{slot}_OK=1", f"{slot}_TRY=0")


@pytest.mark.req("REQ-UPD-1952")
@pytest.mark.skipif(shutil.which("grub-editenv") is None, reason="grub-editenv missing (apt-get install grub-common)")
def test_grub_boots_a_new_slot_once_and_falls_back_when_it_never_marks_good(tmp_path: Path) -> None:
    """Boot counting as the box's grub.cfg does it: the factory disk boots A; an installed slot B is tried once;
    B marked good stays; a B that never marks good (a broken OS update) is skipped at the next boot and the box is
    back on A by itself; with no slot good and not on trial, A is booted."""
    box = _Box(tmp_path)
    assert box.boot() == "A"
    box.mark_good("A")
    assert box.boot() == "A"
    box.mark_good("A")
    box.installed("B")
    assert box.boot() == "B"  # B on trial; it never comes up to mark itself good
    assert box.boot() == "A"  # fallback after its one try
    box.mark_good("A")
    assert box.boot() == "A"  # and stays there: B's trial is used up
    box.mark_good("A")
    box.installed("B")  # a good OS update
    assert box.boot() == "B"
    box.mark_good("B")
    assert box.boot() == "B"
    box.mark_good("B")
    assert box.boot() == "B"
    box.set("A_TRY=1", "B_TRY=1")  # both on trial (power lost twice before mark-good): the fallback entry is A
    assert box.boot() == "A"


def _slot_image(tmp: Path, name: str) -> Path:
    tree = tmp / f"{name}-tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "appliance-release").write_text(f'IMAGE_VERSION="{name}"\n')
    (tree / "payload").write_bytes(os.urandom(64 * 1024))  # a bundle needs more than one squashfs block
    return image_disk.make_ext4(tmp / f"{name}.ext4", tree, "appliance-root", 8, EPOCH)


def _box_conf(tmp: Path, keyring: Path) -> Path:
    """The box's system.conf with the keyring where this test keeps it."""
    conf = tmp / "system.conf"
    text = image_rauc.SYSTEM_CONF.read_text().replace("/" + image_rauc.KEYRING_IN_IMAGE, str(keyring))
    conf.write_text(text)
    return conf


@pytest.mark.req("REQ-UPD-1953")
@pytest.mark.skipif(bool(image_rauc.rauc_unavailable()), reason=str(image_rauc.rauc_unavailable()))
def test_os_bundle_is_signed_and_verified_with_the_boxs_keyring(tmp_path: Path) -> None:
    """The build's OS bundle (a slot image, verity format, the box's compatible) passes rauc's check with the box's
    system.conf and the keyring the build installs; a bundle signed by another key is refused."""
    keys = image_rauc.signing_keys(None, tmp_path / "out")
    assert keys == image_rauc.signing_keys(None, tmp_path / "out")  # made once, reused
    slot = tmp_path / "slot"
    installed = image_rauc.install_keyring(slot, keys)
    assert installed.read_bytes() == keys.keyring.read_bytes()
    bundle = image_rauc.make_bundle(_slot_image(tmp_path, "2.0"), tmp_path / "b" / "os-2.0.raucb", "2.0", EPOCH, keys)
    conf = _box_conf(tmp_path, installed)
    info = subprocess.run(["rauc", f"--conf={conf}", "info", str(bundle)], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert f"Compatible: \t'{image_rauc.system_compatible()}'" in info.stdout
    assert "Version:    \t'2.0'" in info.stdout and "Bundle Format: \tverity" in info.stdout
    assert "Filename:  rootfs.ext4" in info.stdout and "Size:      8388608" in info.stdout
    other = image_rauc.dev_keys(tmp_path / "other-keys")
    forged = image_rauc.make_bundle(_slot_image(tmp_path, "2.1"), tmp_path / "b" / "os-2.1.raucb", "2.1", EPOCH, other)
    refused = subprocess.run(["rauc", f"--conf={conf}", "info", str(forged)], capture_output=True, text=True)
    assert refused.returncode != 0 and "signature" in refused.stderr.lower(), refused.stderr


@pytest.mark.req("REQ-UPD-1953")
def test_fleet_keys_must_be_complete(tmp_path: Path) -> None:
    """--rauc-keys names a folder with the signing key, its certificate and the keyring; one missing is named."""
    for name in image_rauc.KEY_FILES[:2]:
        (tmp_path / name).write_text("x")
    with pytest.raises(BuildError, match=r"missing keyring\.pem"):
        image_rauc.signing_keys(tmp_path, tmp_path / "out")
    (tmp_path / "keyring.pem").write_text("x")
    assert image_rauc.signing_keys(tmp_path, tmp_path / "out").keyring == tmp_path / "keyring.pem"
    assert not (tmp_path / "out").exists()  # no development keys made
