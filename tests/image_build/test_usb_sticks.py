"""USB sticks on the box: the udev rule decides which block devices are mounted, the template unit mounts them
read-only under import.watch_dir, and the image build puts both in place (the VM test plugs a real virtual stick).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers.data import ROOT

sys.path[:0] = [str(ROOT / "image_build")]

import image_rootfs  # noqa: E402

FW = ROOT / "firmware_config"
RULE = FW / "udev" / "90-appliance-usb.rules"
TEMPLATE = FW / "systemd" / "appliance-usb-stick@.service"
MEDIA_MOUNT = FW / "systemd" / "media-usb.mount"
MOUNT_SCRIPT = FW / "usb" / "usb-mount.sh"

_MATCH = re.compile(r'^(ACTION|SUBSYSTEM|ENV\{(\w+)\})(==|!=)"([^"]*)"$')


def udev_wants(env: dict[str, str]) -> list[str]:
    """What the rule file adds to SYSTEMD_WANTS for a device with ``env`` (ACTION, SUBSYSTEM and properties).

    A small interpreter of the constructs the rule uses: ``==``/``!=`` matches with ``|`` alternatives,
    ``GOTO``/``LABEL``, ``TAG+=`` and ``ENV{...}+=``; an unknown construct fails the test.
    """
    lines = [ln.strip() for ln in RULE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    wants: list[str] = []
    goto: str | None = None
    for line in lines:
        if line.startswith("LABEL="):
            if goto == line.split("=", 1)[1].strip('"'):
                goto = None
            continue
        if goto is not None:
            continue
        matched = True
        actions: list[str] = []
        for part in (p.strip() for p in line.split(", ")):
            m = _MATCH.match(part)
            if m:
                key = m.group(2) or m.group(1)
                value = env.get(key, "")
                hit = any(value == alt for alt in m.group(4).split("|"))
                matched = matched and (hit if m.group(3) == "==" else not hit)
            elif part.startswith(("GOTO=", "TAG+=", "ENV{SYSTEMD_WANTS}+=")):
                actions.append(part)
            else:
                raise AssertionError(f"rule construct not understood by this test: {part!r}")
        if not matched:
            continue
        for action in actions:
            if action.startswith("GOTO="):
                goto = action.split("=", 1)[1].strip('"')
            elif action.startswith("ENV{SYSTEMD_WANTS}+="):
                wants.append(action.split("+=", 1)[1].strip('"'))
    return wants


STICK = {"ACTION": "add", "SUBSYSTEM": "block", "ID_BUS": "usb", "ID_FS_USAGE": "filesystem", "ID_FS_TYPE": "vfat"}


@pytest.mark.req("REQ-SAFE-1472")
def test_rule_mounts_usb_filesystems_only() -> None:
    """A FAT, exFAT or ext4 stick starts the mount unit; an internal disk, a swap partition, an unknown filesystem,
    a partition table without filesystem, and a removal do not."""
    for fs in ("vfat", "exfat", "ext4", "iso9660"):
        assert udev_wants({**STICK, "ID_FS_TYPE": fs}) == ["appliance-usb-stick@%k.service"], fs
    refused = [
        {**STICK, "ID_BUS": "ata"},
        {**STICK, "ID_BUS": "nvme"},
        {**STICK, "ID_FS_USAGE": "other", "ID_FS_TYPE": "swap"},
        {**STICK, "ID_FS_TYPE": "squashfs"},
        {**STICK, "ID_FS_USAGE": "", "ID_FS_TYPE": ""},
        {**STICK, "ACTION": "remove"},
        {**STICK, "SUBSYSTEM": "usb"},
    ]
    for env in refused:
        assert udev_wants(env) == [], env
    text = RULE.read_text()
    assert 'TAG+="systemd"' in text  # without the tag systemd ignores SYSTEMD_WANTS


@pytest.mark.req("REQ-SAFE-1472")
def test_stick_unit_mounts_read_only_and_follows_the_device(tmp_path: Path) -> None:
    """The template mounts /dev/%I at /media/usb/%I with ro,nosuid,nodev,noexec, is bound to the device (pulled
    stick = unmounted) and needs the tmpfs mount folder; systemd-analyze accepts an instance of it."""
    text = TEMPLATE.read_text()
    mount = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    assert mount == "ExecStart=/usr/lib/appliance/usb-mount.sh %I /media/usb/%I"  # the options: the next test
    assert "BindsTo=dev-%i.device" in text and "Requires=media-usb.mount" in text
    assert re.search(r"^ExecStop=/usr/bin/umount .*/media/usb/%I$", text, re.MULTILINE)
    media = MEDIA_MOUNT.read_text()
    assert "Where=/media/usb" in media and "Type=tmpfs" in media and "noexec" in media
    config = tomllib.loads((FW / "appliance.toml").read_text())
    assert config["import"]["watch_dir"] == "/media/usb"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed; the text checks above ran")
    instance = tmp_path / "appliance-usb-stick@sda1.service"
    shutil.copyfile(TEMPLATE, instance)
    shutil.copyfile(MEDIA_MOUNT, tmp_path / MEDIA_MOUNT.name)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(instance), str(tmp_path / MEDIA_MOUNT.name)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    # the mount script is installed by the image build only (its behaviour: the next test)
    assert [ln for ln in done.stderr.splitlines() if ln.strip() and "usb-mount.sh is not executable" not in ln] == []


def _run_mount_script(tmp_path: Path, device: str, fs_type: str, *mode: str,
                      protected: bool = False) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """The mount script with stand-ins for blkid (answers ``fs_type``), id (the service user is 998), umount and
    mount (each appends its name and arguments to ``calls``; ``protected``: a write-protected stick, where
    ``mount -w`` fails)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    refuse = 'if [ "$1" = -w ]; then exit 32; fi\n' if protected else ""
    for name, body in (("blkid", f"echo {fs_type}"), ("id", "echo 998"),
                       ("mount", f'echo mount "$@" >> {calls}\n{refuse}'),
                       ("umount", f'echo umount "$@" >> {calls}')):  # fmt: skip
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return subprocess.run(["sh", str(MOUNT_SCRIPT), device, f"/media/usb/{device}", *mode], capture_output=True,
                          text=True, timeout=30, check=False, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})  # fmt: skip


@pytest.mark.req("REQ-SAFE-1472", "REQ-FUNC-1960")
@pytest.mark.parametrize("fs_type", ["vfat", "exfat", "ntfs3", "ext4", "iso9660"])
def test_mount_script_mounts_read_only_and_gives_fat_sticks_to_the_service_user(tmp_path: Path, fs_type: str) -> None:
    """Always ro,nosuid,nodev,noexec; file systems without owners (FAT, exFAT, NTFS) owned by the service user with
    no access for anyone else, so an export can write once root remounts the stick read-write; a name that is not
    a device name is refused before anything is mounted."""
    owned = ["uid=998", "gid=998", "fmask=0177", "dmask=0077"] if fs_type in ("vfat", "exfat", "ntfs3") else []
    for mode, before in (((), []), (("ro",), []), (("rw",), ["umount /media/usb/sdb1"])):
        done = _run_mount_script(tmp_path, "sdb1", fs_type, *mode)
        assert done.returncode == 0, done.stderr
        *first, last = (tmp_path / "calls").read_text().splitlines()
        (tmp_path / "calls").unlink()
        assert first == before  # read-write: unmounted first, then mounted again (a new mount, never a remount)
        flags = ["-w", "-o"] if mode == ("rw",) else ["-o"]  # -w: never fall back to read-only
        assert last.split()[1:-3] == flags, last
        options, device, target = last.split()[-3:]
        assert (device, target) == ("/dev/sdb1", "/media/usb/sdb1")
        opts = options.split(",")
        assert opts == [(mode or ("ro",))[0], "nosuid", "nodev", "noexec", *owned], opts
    # a write-protected stick: the read-write mount fails, the importer's read-only mount is restored, exit 1
    done = _run_mount_script(tmp_path, "sdb1", fs_type, "rw", protected=True)
    assert done.returncode == 1
    calls = (tmp_path / "calls").read_text().splitlines()
    (tmp_path / "calls").unlink()
    assert calls[0] == "umount /media/usb/sdb1" and calls[1].startswith("mount -w -o rw,")
    assert calls[2] == " ".join(["mount", "-o", ",".join(["ro", "nosuid", "nodev", "noexec", *owned]), "/dev/sdb1",
                                 "/media/usb/sdb1"])  # fmt: skip
    for args in (("../sda",), ("sdb1", "exec")):
        bad = _run_mount_script(tmp_path, args[0], "vfat", *args[1:])
        assert bad.returncode == 2 and "usb-mount:" in bad.stderr and not (tmp_path / "calls").exists()


@pytest.mark.req("REQ-SAFE-1472", "REQ-UPD-1470")
def test_image_stage_has_rule_units_and_watch_dir(tmp_path: Path) -> None:
    """The image's staged tree carries the rule where udev reads it, the template and the enabled mount folder."""
    stage = image_rootfs.stage_firmware(FW, None, "1.0", tmp_path / "stage")
    assert (stage / "usr/lib/udev/rules.d" / RULE.name).read_text() == RULE.read_text()
    assert (stage / "etc/systemd/system" / TEMPLATE.name).is_file()
    script = stage / "usr/lib/appliance/usb-mount.sh"
    assert script.read_bytes() == MOUNT_SCRIPT.read_bytes() and script.stat().st_mode & 0o777 == 0o755
    wanted = stage / "etc/systemd/system/multi-user.target.wants"
    assert (wanted / "media-usb.mount").is_symlink() and (wanted / "appliance.service").is_symlink()
    shipped = tomllib.loads((stage / "etc/appliance/appliance.toml").read_text())
    assert shipped["import"]["watch_dir"] == "/media/usb"


RELEASE_PATH = FW / "systemd" / "appliance-usb-release.path"
RELEASE_SERVICE = FW / "systemd" / "appliance-usb-release.service"


@pytest.mark.req("REQ-FUNC-1900")
def test_release_units_watch_the_service_request_folder_and_run_the_root_helper(tmp_path: Path) -> None:
    """The path unit watches the very folder the service writes its requests to (data_dir of the box's
    configuration), starts the root helper (the current release's module, not the whole CLI) with the box's
    configuration, which may write nothing but that folder; the path unit is enabled in the image."""
    from appliance.service.usb_release import REQUEST_FOLDER

    config = tomllib.loads((FW / "appliance.toml").read_text())
    requests = f"{config['storage']['data_dir']}/{REQUEST_FOLDER}"
    path_unit = RELEASE_PATH.read_text()
    assert f"DirectoryNotEmpty={requests}" in path_unit.splitlines()
    service = RELEASE_SERVICE.read_text()
    start = next(ln for ln in service.splitlines() if ln.startswith("ExecStart="))
    assert start.endswith("python -m appliance.service.usb_release --config /etc/appliance/appliance.toml"), start
    from image_bundle import RUNTIME_VENV

    assert start.split("=", 1)[1].split()[0] == f"{RUNTIME_VENV}/bin/python", start  # the release's own Python
    assert "Environment=PYTHONPATH=/var/lib/appliance-system/releases/app/current/site" in service.splitlines()
    assert f"ReadWritePaths=-{requests}" in service.splitlines() and "ProtectSystem=strict" in service
    assert "User=" not in service  # root: it stops the stick's mount unit through systemd
    # the request folder is the service user's (0750): root needs CAP_DAC_OVERRIDE for it, and nothing more
    assert [ln for ln in service.splitlines() if ln.startswith("CapabilityBoundingSet=")] == [
        "CapabilityBoundingSet=CAP_DAC_OVERRIDE"]  # fmt: skip
    stage = image_rootfs.stage_firmware(FW, None, "1.0", tmp_path / "stage")
    assert (stage / "etc/systemd/system/multi-user.target.wants" / RELEASE_PATH.name).is_symlink()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed; the text checks above ran")
    for unit in (RELEASE_PATH, RELEASE_SERVICE):
        shutil.copyfile(unit, tmp_path / unit.name)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / RELEASE_PATH.name)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


WRITABLE_PATH = FW / "systemd" / "appliance-usb-writable.path"
WRITABLE_SERVICE = FW / "systemd" / "appliance-usb-writable.service"
WRITABLE_TEMPLATE = FW / "systemd" / "appliance-usb-writable@.service"


@pytest.mark.req("REQ-FUNC-1960")
def test_writable_units_watch_the_service_request_folder_and_remount_only_that_stick(tmp_path: Path) -> None:
    """Export to USB: the path unit watches the folder the service writes its requests to, the root helper runs
    with --writable and may write nothing but that folder, the read-write mount keeps nosuid,nodev,noexec and
    needs the stick's own mount unit active; the path unit is enabled in the image."""
    from appliance.service.usb_release import WRITABLE_FOLDER

    config = tomllib.loads((FW / "appliance.toml").read_text())
    requests = f"{config['storage']['data_dir']}/{WRITABLE_FOLDER}"
    assert f"DirectoryNotEmpty={requests}" in WRITABLE_PATH.read_text().splitlines()
    service = WRITABLE_SERVICE.read_text().splitlines()
    start = next(ln for ln in service if ln.startswith("ExecStart="))
    assert start.endswith("python -m appliance.service.usb_release --writable --config /etc/appliance/appliance.toml")
    assert f"ReadWritePaths=-{requests}" in service and "ProtectSystem=strict" in service
    capabilities = [ln for ln in service if ln.startswith("CapabilityBoundingSet=")]
    assert capabilities == ["CapabilityBoundingSet=CAP_DAC_OVERRIDE"]
    template = WRITABLE_TEMPLATE.read_text().splitlines()
    assert "ExecStart=/usr/lib/appliance/usb-mount.sh %I /media/usb/%I rw" in template
    assert "Requisite=appliance-usb-stick@%i.service" in template
    stage = image_rootfs.stage_firmware(FW, None, "1.0", tmp_path / "stage")
    assert (stage / "etc/systemd/system/multi-user.target.wants" / WRITABLE_PATH.name).is_symlink()
    assert (stage / "etc/systemd/system" / WRITABLE_TEMPLATE.name).is_file()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed; the text checks above ran")
    for unit in (WRITABLE_PATH, WRITABLE_SERVICE):
        shutil.copyfile(unit, tmp_path / unit.name)
    instance = tmp_path / "appliance-usb-writable@sda1.service"
    shutil.copyfile(WRITABLE_TEMPLATE, instance)
    shutil.copyfile(TEMPLATE, tmp_path / "appliance-usb-stick@sda1.service")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / WRITABLE_PATH.name), str(instance)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    problems = [ln for ln in done.stderr.splitlines() if ln.strip() and "usb-mount.sh is not executable" not in ln
                and "venv/bin/python is not executable" not in ln]  # fmt: skip (installed by the image build)
    assert problems == [], done.stderr
