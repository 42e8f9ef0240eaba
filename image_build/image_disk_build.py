"""``build_image.py disk``: the bootable disk from the bundle just built, in steps that each reuse their output
while the inputs are unchanged (wheelhouse, Debian base), so a second build only redoes the slot and the disk.

Outputs under --out: ``disk.raw`` (sparse GPT disk), ``disk-manifest.json`` (packages with versions, runtime
wheels, partition sizes, kernel, SOURCE_DATE_EPOCH, step times), and the reused ``wheelhouse/`` and ``base/``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from image_bundle import BuildError
from image_disk import DiskLayout, assemble_disk, build_esp, disk_tools_missing, make_ext4, slot_script, stable_uuid
from image_rauc import RaucKeys, install_keyring, make_bundle, rauc_unavailable, signing_keys
from image_rootfs import factory_release, rootfs_manifest, stage_firmware, write_json
from image_runtime import download_wheelhouse, runtime_pins
from image_system import base_rootfs, data_tree, finish_slot, tree_size

log = logging.getLogger("image_build.disk")

HERE = Path(__file__).resolve().parent
#: Package lists: the appliance's, what booting adds, what only a test image adds.
PACKAGE_LISTS = ("packages.txt", "packages-boot.txt")
TEST_PACKAGE_LIST = "packages-test.txt"


def read_package_list(path: Path) -> list[str]:
    """Package names from a package list file (comments and blanks ignored)."""
    names = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [name for name in names if name]


def _wheelhouse(dest: Path) -> list[str]:
    pins = runtime_pins()
    listed = dest / "requirements.txt"
    have = {p.name for p in dest.glob("*.whl")} if dest.is_dir() else set()
    if not (listed.is_file() and listed.read_text().split() == pins and len(have) >= len(pins)):
        shutil.rmtree(dest, ignore_errors=True)
        download_wheelhouse(pins, dest)
    return pins


def _os_bundle(slot_img: Path, dest: Path, version: str, epoch: int, keys: RaucKeys) -> dict[str, object]:
    """The slot image as a signed RAUC bundle (what an OS update writes into the other slot), where rauc is here."""
    shutil.rmtree(dest, ignore_errors=True)
    reason = rauc_unavailable()
    if reason:
        log.warning("OS bundle skipped: %s", reason)
        return {"built": False, "reason": reason}
    bundle = make_bundle(slot_img, dest / f"or-appliance-os-{version}.raucb", version, epoch, keys)
    return {"built": True, "path": str(bundle), "bytes": bundle.stat().st_size}


def disk_preflight(args: argparse.Namespace) -> None:
    """Refuse a disk build that cannot work or is not allowed, before anything is built."""
    if args.test_ui_peer and not args.test_config:
        raise BuildError("--test-ui-peer opens the web UI to the network and is only for test images (--test-config)")
    if args.test_config and not Path(args.test_config).is_file():
        raise BuildError(f"--test-config {args.test_config}: no such file")
    missing = disk_tools_missing()
    if missing:
        raise BuildError("the disk build needs: " + ", ".join(missing))


def build_disk(args: argparse.Namespace, out: Path, epoch: int) -> dict[str, object]:
    """Build ``out/disk.raw`` and its manifest (after :func:`disk_preflight`); returns the report entry."""
    times: dict[str, float] = {}
    started = time.monotonic()

    def step(name: str) -> None:
        nonlocal started
        times[name] = round(time.monotonic() - started, 1)
        started = time.monotonic()

    packages = [name for lst in PACKAGE_LISTS for name in read_package_list(HERE / lst)]
    if args.test_config:
        packages += read_package_list(HERE / TEST_PACKAGE_LIST)
    pins = _wheelhouse(out / "wheelhouse")
    step("wheelhouse")
    base = base_rootfs(out / "base", args.suite, packages, out / "wheelhouse", epoch, args.mirror)
    step("base")
    stage = stage_firmware(HERE.parent / "firmware_config", factory_release(out / "packs"), args.image_version,
                           out / "stage")  # fmt: skip
    if args.test_config:
        shutil.copyfile(args.test_config, stage / "etc/appliance/appliance.toml")
    slot = out / "slot-a"
    finished = finish_slot(base, slot, stage, args.test_ui_peer, test_image=bool(args.test_config))
    rauc_keys = signing_keys(Path(args.rauc_keys) if args.rauc_keys else None, out)
    install_keyring(slot, rauc_keys)
    manifest = rootfs_manifest(slot)
    step("slot")
    size = tree_size(slot)
    layout = DiskLayout(slot_mib=max(2048, int(size * 1.3) // (1 << 20) + 256))
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    slot_img = make_ext4(parts / "root-a.ext4", slot, "appliance-root", layout.slot_mib, epoch)
    data = data_tree(slot, out / "data-tree")
    data_img = make_ext4(parts / "data.ext4", data, "appliance-data", layout.data_mib, epoch)
    partuuids = {name: stable_uuid(epoch, f"part-{name}") for name in ("A", "B")}
    esp = build_esp(parts / "esp.vfat", slot_script(partuuids), epoch, layout.esp_mib)
    disk = out / "disk.raw"
    assemble_disk(disk, esp, slot_img, data_img, layout, epoch)
    step("disk")
    bundle = _os_bundle(slot_img, out / "os-bundle", args.image_version, epoch, rauc_keys)
    shutil.rmtree(parts)
    step("os_bundle")
    allocated = disk.stat().st_blocks * 512
    entry: dict[str, object] = {
        "disk": str(disk),
        "source_date_epoch": epoch,
        "image_version": args.image_version,
        "suite": args.suite,
        "test_image": bool(args.test_config),
        "kernel": finished["kernel"],
        "layout_mib": {"esp": layout.esp_mib, "slot": layout.slot_mib, "data": layout.data_mib},
        "disk_bytes": disk.stat().st_size,
        "disk_allocated_bytes": allocated,
        "root_tree_bytes": size,
        "package_lists": [*PACKAGE_LISTS, *([TEST_PACKAGE_LIST] if args.test_config else [])],
        "runtime_wheels": pins,
        "os_bundle": bundle,
        "step_seconds": times,
    }
    write_json(out / "disk-manifest.json", {**entry, "packages": manifest["packages"], "files": manifest["files"]})
    log.info("disk %s: %.0f MB allocated, root tree %.0f MB", disk, allocated / 1e6, size / 1e6)
    return entry
