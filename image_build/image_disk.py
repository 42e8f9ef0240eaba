"""The bootable disk: a GPT disk image with an EFI system partition (GRUB, A/B slot choice with RAUC's boot
counting in grubenv), two root slots (A holds the image, B is empty until the first OS update), and the data
partition (ext4, label ``appliance-data``, mounted on /var/lib/appliance-system; its ``data/`` on /var/lib/appliance).

Everything is assembled from files, without loop devices or mounts: each partition is made as its own file
(``mkfs.vfat`` + mtools, ``mkfs.ext4 -d``), the partition table is written by ``sfdisk`` and the partitions are
copied in at their offsets. Partition and filesystem UUIDs derive from SOURCE_DATE_EPOCH (reproducible).

The root slot is mounted read-only; ``systemd.volatile=state`` puts /var on a tmpfs, so all that changes lives
on the data partition.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from image_bundle import BuildError

log = logging.getLogger("image_build.disk")

MIB = 1 << 20
#: GPT partition type GUIDs (UEFI spec; Discoverable Partitions Specification for the x86-64 root).
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
LINUX_DATA_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
#: The GRUB modules the standalone EFI loader needs (GPT, ext4/FAT, grubenv, the slot script).
GRUB_MODULES = "part_gpt part_msdos fat ext2 normal linux search search_fs_uuid loadenv test echo configfile all_video"
#: Kernel command line shared by both slots.
KERNEL_ARGS = "ro systemd.volatile=state console=tty1 console=ttyS0,115200 panic=30"


@dataclass(frozen=True)
class DiskLayout:
    """Sizes (MiB) of the partitions, in disk order."""

    esp_mib: int = 64
    slot_mib: int = 2048
    data_mib: int = 4096


def stable_uuid(epoch: int, what: str) -> str:
    """A UUID that depends only on the build epoch and the part it names (reproducible images)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"or-appliance-disk-{epoch}-{what}"))


def run_tool(cmd: list[str], what: str, timeout: float = 1800, env: dict[str, str] | None = None) -> str:
    """``cmd``'s standard output; :class:`BuildError` naming ``what`` when it cannot run, times out or fails."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise BuildError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-1200:]}")
    return done.stdout


def disk_tools_missing() -> list[str]:
    """Host tools the disk build needs and cannot find (each with its Debian package)."""
    needed = {
        "sfdisk": "fdisk",
        "mkfs.ext4": "e2fsprogs",
        "mkfs.vfat": "dosfstools",
        "mcopy": "mtools",
        "grub-mkstandalone": "grub-efi-amd64-bin",
        "grub-editenv": "grub-common",
    }
    missing = [f"{tool} ({pkg})" for tool, pkg in needed.items() if shutil.which(tool) is None]
    if not Path("/usr/lib/grub/x86_64-efi").is_dir():
        missing.append("/usr/lib/grub/x86_64-efi (grub-efi-amd64-bin)")
    return missing


def slot_script(partuuids: dict[str, str]) -> str:
    """grub.cfg: RAUC's GRUB boot selection (ORDER, <slot>_OK, <slot>_TRY in grubenv), one entry per slot.

    A slot is booted when it is marked good and not already being tried; booting it sets its TRY flag, which
    ``rauc status mark-good`` clears once the box is healthy. A slot that fails to come up is skipped at the next
    boot, so the box falls back to the other slot by itself.
    """
    lines = [
        "# Written by image_build/image_disk.py: A/B slot choice with RAUC's grub backend (grubenv on the ESP).",
        "set timeout=0",
        "set default=0",
        "serial --unit=0 --speed=115200",
        "terminal_input console serial",
        "terminal_output console serial",
        'set ORDER="A B"',
        "set A_OK=0",
        "set B_OK=0",
        "set A_TRY=0",
        "set B_TRY=0",
        "load_env",
        "set chosen=none",
        "for SLOT in $ORDER; do",
        '  if [ "$SLOT" = "A" ]; then INDEX=0; OK=$A_OK; TRY=$A_TRY; fi',
        '  if [ "$SLOT" = "B" ]; then INDEX=1; OK=$B_OK; TRY=$B_TRY; fi',
        '  if [ "$OK" = "1" -a "$TRY" = "0" ]; then',
        "    default=$INDEX",
        "    chosen=$SLOT",
        '    if [ "$SLOT" = "A" ]; then A_TRY=1; fi',
        '    if [ "$SLOT" = "B" ]; then B_TRY=1; fi',
        "    break",
        "  fi",
        "done",
        'if [ "$chosen" = "none" ]; then',
        "  echo 'No bootable slot marked good: booting slot A.'",
        "  default=0",
        "fi",
        "save_env A_TRY A_OK B_TRY B_OK ORDER",
    ]
    for index, slot in enumerate(("A", "B")):
        part = index + 2
        lines += [
            f'menuentry "OR appliance slot {slot}" {{',
            f"  linux (hd0,gpt{part})/boot/vmlinuz root=PARTUUID={partuuids[slot]} {KERNEL_ARGS} rauc.slot={slot}",
            f"  initrd (hd0,gpt{part})/boot/initrd.img",
            "}",
        ]
    return "\n".join(lines) + "\n"


def build_esp(dest: Path, grub_cfg: str, epoch: int, size_mib: int) -> Path:
    """The EFI system partition as a FAT file: a standalone GRUB as the removable-media loader, grub.cfg, grubenv."""
    work = dest.parent / "esp-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    vol_id = stable_uuid(epoch, "esp").replace("-", "")[:8].upper()
    early = work / "early.cfg"
    early.write_text(
        f"search --no-floppy --fs-uuid --set=root {vol_id[:4]}-{vol_id[4:]}\n"
        "set prefix=($root)/grub\nconfigfile $prefix/grub.cfg\n"
    )
    loader = work / "BOOTX64.EFI"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    run_tool(
        ["grub-mkstandalone", "-O", "x86_64-efi", f"--modules={GRUB_MODULES}", "--locales=", "--fonts=",
         "--themes=", "-o", str(loader), f"boot/grub/grub.cfg={early}"],
        "grub-mkstandalone", env=env,
    )  # fmt: skip
    (work / "grub.cfg").write_text(grub_cfg)
    grubenv = work / "grubenv"
    run_tool(["grub-editenv", str(grubenv), "create"], "grub-editenv")
    run_tool(["grub-editenv", str(grubenv), "set", "ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=0", "B_TRY=0"],
             "grub-editenv")
    dest.unlink(missing_ok=True)
    run_tool(["mkfs.vfat", "-C", "-F", "32", "-n", "APPLIANCE", "-i", vol_id, str(dest), str(size_mib * 1024)],
             "mkfs.vfat")
    mt = {**env, "MTOOLS_SKIP_CHECK": "1"}
    img = f"-i{dest}"
    for folder in ("::/EFI", "::/EFI/BOOT", "::/grub"):
        run_tool(["mmd", img, folder], "mmd", env=mt)
    run_tool(["mcopy", img, str(loader), "::/EFI/BOOT/BOOTX64.EFI"], "mcopy", env=mt)
    run_tool(["mcopy", img, str(work / "grub.cfg"), "::/grub/grub.cfg"], "mcopy", env=mt)
    run_tool(["mcopy", img, str(grubenv), "::/grub/grubenv"], "mcopy", env=mt)
    shutil.rmtree(work)
    return dest


def make_ext4(dest: Path, source: Path | None, label: str, size_mib: int, epoch: int) -> Path:
    """An ext4 filesystem file of ``size_mib`` holding ``source`` (or empty), reproducible UUID and hash seed."""
    dest.unlink(missing_ok=True)
    with open(dest, "wb") as fh:
        fh.truncate(size_mib * MIB)
    fs_uuid = stable_uuid(epoch, f"fs-{label}")
    cmd = ["mkfs.ext4", "-q", "-F", "-L", label, "-U", fs_uuid, "-E", f"hash_seed={fs_uuid},root_owner=0:0"]
    if source is not None:
        cmd += ["-d", str(source)]
    cmd += [str(dest)]
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(epoch), "SOURCE_DATE_EPOCH": str(epoch)}
    run_tool(cmd, f"mkfs.ext4 {label}", env=env)
    return dest


def _copy_in(part: Path, disk: Path, offset_mib: int) -> None:
    """Copy a partition file into the disk at ``offset_mib``, keeping holes (sparse)."""
    run_tool(
        ["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={offset_mib}", "conv=notrunc,sparse", "status=none"],
        f"copying {part.name} into the disk",
    )


def assemble_disk(disk: Path, esp: Path, slot_a: Path, data: Path, layout: DiskLayout, epoch: int) -> dict[str, str]:
    """Write the GPT (esp, root-a, root-b, data) and the partition files into ``disk``; returns the PARTUUIDs."""
    total_mib = 1 + layout.esp_mib + 2 * layout.slot_mib + layout.data_mib + 1
    disk.unlink(missing_ok=True)
    with open(disk, "wb") as fh:
        fh.truncate(total_mib * MIB)
    partuuids = {name: stable_uuid(epoch, f"part-{name}") for name in ("esp", "A", "B", "data")}
    sizes = [layout.esp_mib, layout.slot_mib, layout.slot_mib, layout.data_mib]
    kinds = [ESP_TYPE, ROOT_X86_64_TYPE, ROOT_X86_64_TYPE, LINUX_DATA_TYPE]
    names = ["esp", "root-a", "root-b", "data"]
    script = ["label: gpt", f"label-id: {stable_uuid(epoch, 'disk')}", "unit: sectors", "first-lba: 2048"]
    start = 1
    for key, size, kind, name in zip(("esp", "A", "B", "data"), sizes, kinds, names, strict=True):
        script.append(f"start={start * 2048}, size={size * 2048}, type={kind}, uuid={partuuids[key]}, name={name}")
        start += size
    try:
        done = subprocess.run(
            ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)],
            input="\n".join(script) + "\n", capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"sfdisk failed: {exc}") from exc
    if done.returncode != 0:
        raise BuildError(f"sfdisk failed: {done.stderr.strip()[-800:]}")
    _copy_in(esp, disk, 1)
    _copy_in(slot_a, disk, 1 + layout.esp_mib)
    _copy_in(data, disk, 1 + layout.esp_mib + 2 * layout.slot_mib)
    return partuuids
