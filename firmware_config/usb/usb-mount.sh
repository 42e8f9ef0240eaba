#!/bin/sh
# Mounts one USB stick for the importer (appliance-usb-stick@.service): /dev/$1 at $2, read-only, nosuid, nodev,
# noexec. FAT, exFAT and NTFS have no owners on disk: they are mounted owned by the service user (files 0600,
# folders 0700), so that an export can write to the stick once root has remounted it read-write on the service's
# request (appliance-usb-writable@.service, REQ-FUNC-1960). Other file systems keep the owners they carry.
set -eu
device="$1"
target="$2"
case "$device" in
  "" | *[!a-z0-9]*) echo "usb-mount: not a device name: $device" >&2; exit 2 ;;
esac
options=ro,nosuid,nodev,noexec
case "$(blkid -o value -s TYPE "/dev/$device" || true)" in
  vfat | exfat | ntfs | ntfs3)
    options="$options,uid=$(id -u appliance),gid=$(id -g appliance),fmask=0177,dmask=0077" ;;
esac
exec mount -o "$options" "/dev/$device" "$target"
