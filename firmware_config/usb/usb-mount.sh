#!/bin/sh
# Mounts one USB stick: /dev/$1 at $2, nosuid, nodev, noexec; read-only ($3 = ro, the default: the importer's
# mount, appliance-usb-stick@.service) or read-write ($3 = rw: only for an export the service asked for,
# appliance-usb-writable@.service, REQ-FUNC-1960). A stick is made writable by unmounting and mounting it again
# rather than by a remount: the service sees the box's mounts through its own mount namespace (ProtectSystem=),
# where a new mount arrives with its own flags but a remount of an existing one does not arrive at all (found in
# the VM). FAT, exFAT and NTFS have no owners on disk: they are mounted owned by the service user (files 0600,
# folders 0700), so that the service can write to them once mounted read-write. Other file systems keep the
# owners they carry.
set -eu
device="$1"
target="$2"
mode="${3:-ro}"
case "$device" in
  "" | *[!a-z0-9]*) echo "usb-mount: not a device name: $device" >&2; exit 2 ;;
esac
case "$mode" in
  ro | rw) ;;
  *) echo "usb-mount: mode must be ro or rw, not $mode" >&2; exit 2 ;;
esac
options="$mode,nosuid,nodev,noexec"
case "$(blkid -o value -s TYPE "/dev/$device" || true)" in
  vfat | exfat | ntfs | ntfs3)
    options="$options,uid=$(id -u appliance),gid=$(id -g appliance),fmask=0177,dmask=0077" ;;
esac
if [ "$mode" = rw ]; then
  umount "$target"
  # -w: a write-protected stick fails here (the export is refused by name) instead of coming back read-only;
  # the importer's read-only mount is restored either way
  mount -w -o "$options" "/dev/$device" "$target" && exit 0
  mount -o "ro${options#rw}" "/dev/$device" "$target"
  exit 1
fi
exec mount -o "$options" "/dev/$device" "$target"
