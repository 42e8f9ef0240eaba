"""The bootable disk's assembly on a tiny root tree: GPT layout (ESP, two equal root slots, data), the ESP's
loader, grub.cfg and grubenv (RAUC's A/B selection), filesystem labels and reproducible UUIDs. The full disk with
Debian inside is built and booted by the slow tests/image_build/test_vm_boot.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.data import ROOT

sys.path[:0] = [str(ROOT / "image_build")]

import image_disk  # noqa: E402
import image_disk_build  # noqa: E402

EPOCH = 1_790_000_000
LAYOUT = image_disk.DiskLayout(esp_mib=40, slot_mib=12, data_mib=8)

pytestmark = pytest.mark.skipif(
    bool(image_disk.disk_tools_missing()), reason=f"disk tools missing: {image_disk.disk_tools_missing()}"
)


def _build(out: Path, epoch: int = EPOCH) -> Path:
    tree = out / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot" / "vmlinuz-6.1.0-test").write_bytes(b"kernel")
    (tree / "etc").mkdir()
    (tree / "etc" / "appliance-release").write_text('IMAGE_VERSION="1.0"\n')
    slot = image_disk.make_ext4(out / "a.ext4", tree, "appliance-root", LAYOUT.slot_mib, epoch)
    data = image_disk.make_ext4(out / "data.ext4", None, "appliance-data", LAYOUT.data_mib, epoch)
    uuids = {s: image_disk.stable_uuid(epoch, f"part-{s}") for s in ("A", "B")}
    esp = image_disk.build_esp(out / "esp.vfat", image_disk.slot_script(uuids), epoch, LAYOUT.esp_mib)
    disk = out / "disk.raw"
    image_disk.assemble_disk(disk, esp, slot, data, LAYOUT, epoch)
    return disk


def _part(disk: Path, index: int, dest: Path) -> Path:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, check=True).stdout)
    p = table["partitiontable"]["partitions"][index]
    subprocess.run(["dd", f"if={disk}", f"of={dest}", "bs=512", f"skip={p['start']}", f"count={p['size']}",
                    "status=none"], check=True)  # fmt: skip
    return dest


@pytest.mark.req("REQ-UPD-1470", "REQ-UPD-1471")
def test_gpt_layout_slots_and_labels(tmp_path: Path) -> None:
    """ESP + root-a + root-b (same size, x86-64 root type) + data; partition UUIDs from the epoch; slot A carries
    the tree (ext4 label appliance-root), data is labelled appliance-data (what var-lib-appliance.mount uses)."""
    disk = _build(tmp_path)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, check=True).stdout)
    parts = table["partitiontable"]["partitions"]
    assert [p["name"] for p in parts] == ["esp", "root-a", "root-b", "data"]
    assert [p["type"] for p in parts] == [image_disk.ESP_TYPE, image_disk.ROOT_X86_64_TYPE,
                                          image_disk.ROOT_X86_64_TYPE, image_disk.LINUX_DATA_TYPE]  # fmt: skip
    assert parts[1]["size"] == parts[2]["size"] == LAYOUT.slot_mib * 2048
    assert parts[1]["uuid"].lower() == image_disk.stable_uuid(EPOCH, "part-A")
    assert parts[1]["uuid"] != image_disk.stable_uuid(EPOCH + 1, "part-A")
    root = _part(disk, 1, tmp_path / "root.img")
    info = subprocess.run(["dumpe2fs", "-h", str(root)], capture_output=True, text=True, check=True).stdout
    assert "Filesystem volume name:   appliance-root" in info
    listing = subprocess.run(["debugfs", "-R", "cat /etc/appliance-release", str(root)], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    assert 'IMAGE_VERSION="1.0"' in listing
    data = _part(disk, 3, tmp_path / "data.img")
    assert "volume name:   appliance-data" in subprocess.run(["dumpe2fs", "-h", str(data)], capture_output=True,
                                                            text=True, check=True).stdout  # fmt: skip
    assert not subprocess.run(["blkid", "-p", str(_part(disk, 2, tmp_path / "b.img"))], capture_output=True).stdout


@pytest.mark.req("REQ-UPD-1470")
def test_esp_boots_slot_a_with_boot_counting(tmp_path: Path) -> None:
    """The ESP holds the removable-media loader, grub.cfg choosing by ORDER/<slot>_OK/<slot>_TRY and a grubenv
    that starts with only slot A good; each slot's entry boots its own partition read-only."""
    disk = _build(tmp_path)
    esp = _part(disk, 0, tmp_path / "esp.img")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    files = subprocess.run(["mdir", "-/", "-b", f"-i{esp}", "::/"], capture_output=True, text=True, env=env,
                           check=True).stdout.split()  # fmt: skip
    assert {"::/EFI/BOOT/BOOTX64.EFI", "::/grub/grub.cfg", "::/grub/grubenv"} <= set(files)
    loader = subprocess.run(["mtype", f"-i{esp}", "::/EFI/BOOT/BOOTX64.EFI"], capture_output=True, env=env).stdout
    assert loader[:2] == b"MZ"  # a PE/COFF EFI application
    cfg = subprocess.run(["mtype", f"-i{esp}", "::/grub/grub.cfg"], capture_output=True, text=True, env=env).stdout
    grubenv = subprocess.run(["mtype", f"-i{esp}", "::/grub/grubenv"], capture_output=True, text=True,
                             env=env).stdout  # fmt: skip
    assert "load_env" in cfg and "save_env A_TRY A_OK B_TRY B_OK ORDER" in cfg
    for slot in ("A", "B"):
        uuid = image_disk.stable_uuid(EPOCH, f"part-{slot}")
        assert f"root=PARTUUID={uuid} {image_disk.KERNEL_ARGS} rauc.slot={slot}" in cfg
    assert " ro " in f" {image_disk.KERNEL_ARGS} "
    assert "ORDER=A B" in grubenv and "A_OK=1" in grubenv and "B_OK=0" in grubenv and len(grubenv) == 1024


@pytest.mark.req("REQ-UPD-1471")
def test_package_lists_and_refusals(tmp_path: Path) -> None:
    """The package lists name the kernel, initramfs and RAUC (its D-Bus service and grub-editenv for the slot flags);
    the guest agent and gdb only in the test list; the UI port is opened to a peer only for test images."""
    boot = [n for lst in image_disk_build.PACKAGE_LISTS for n in image_disk_build.read_package_list(
        image_disk_build.HERE / lst)]  # fmt: skip
    assert {"linux-image-amd64", "initramfs-tools", "rauc", "rauc-service", "grub-common", "systemd",
            "python3-venv"} <= set(boot)  # fmt: skip
    assert not {"qemu-guest-agent", "gdb"} & set(boot)
    test_only = image_disk_build.read_package_list(image_disk_build.HERE / image_disk_build.TEST_PACKAGE_LIST)
    assert test_only == ["qemu-guest-agent", "gdb"]
    import build_image

    code = build_image.main(["disk", "--out", str(tmp_path), "--test-ui-peer", "10.0.2.2"])
    report = json.loads((tmp_path / "build-report.json").read_text())
    assert code == 1 and "only for test images" in report["error"]


@pytest.mark.req("REQ-UPD-1470", "REQ-SAFE-1475")
@pytest.mark.skipif(os.geteuid() != 0, reason="the data partition's factory tree is owned by the box's users (root)")
def test_factory_data_partition_keeps_what_root_runs_out_of_the_service_users_reach(tmp_path: Path) -> None:
    """The data partition starts with firmware_config's tmpfiles layout: releases/app/current pointing at the
    factory release in the image. The partition's top folder, releases/ and update/ are root's; only data/ (the
    service's /var/lib/appliance) is the service user's, so it can neither write nor rename what root runs."""
    import image_system

    from appliance.update.paths import writable_by_others

    slot = tmp_path / "slot"
    (slot / "etc").mkdir(parents=True)
    (slot / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nappliance:x:998:997::/var/lib/appliance:/x\n")
    (slot / "etc/group").write_text("root:x:0:\nappliance:x:997:\n")
    (slot / "usr/lib/tmpfiles.d").mkdir(parents=True)
    conf = ROOT / "firmware_config" / "tmpfiles.d" / "appliance.conf"
    (slot / "usr/lib/tmpfiles.d/appliance.conf").write_text(conf.read_text())
    data = image_system.data_tree(slot, tmp_path / "data")
    current = data / "releases/app/current"
    assert current.is_symlink() and os.readlink(current) == "/usr/lib/appliance/factory-release"
    service = data / image_system.SERVICE_DATA_ON_PARTITION
    assert (service.stat().st_uid, service.stat().st_gid) == (998, 997)
    assert oct(service.stat().st_mode & 0o777) == "0o750" and (service / "logs").stat().st_uid == 998
    assert oct((data / "update").stat().st_mode & 0o777) == "0o750" and (data / "update").stat().st_gid == 997
    for root_trusted in (data, current.parent, data / "update" / "metadata"):
        assert writable_by_others(root_trusted, top=data) == [], root_trusted
    assert writable_by_others(service / "releases", top=data) == [f"{service} is owned by uid 998"]
    assert sorted(p.name for p in data.iterdir()) == ["data", "releases", "update"]
