"""OS updates of the bootable disk with RAUC: the signing keys, the keyring in the image and the signed OS bundle
that writes a root slot.

The box's RAUC configuration is ``firmware_config/rauc/system.conf`` (installed as ``/etc/rauc/system.conf``):
two ext4 root slots (``root-a``, ``root-b``), GRUB's grubenv on the ESP. The keyring in the image is the CA
that signed the bundles; production builds pass the fleet's signing material with ``--rauc-keys DIR``
(``signing.key.pem``, ``signing.cert.pem``, ``keyring.pem``); without it the build makes throw-away development
keys under ``--out`` (``rauc-dev-keys/``, reused), as it does for the update repository's TUF keys.

A bundle's image is a whole slot filesystem (the disk's slot A image), which RAUC writes block for block into
the slot not booted; bundles are dm-verity bundles (``system.conf`` refuses plain ones).
"""

from __future__ import annotations

import configparser
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from image_bundle import BuildError
from image_disk import run_tool

log = logging.getLogger("image_build.rauc")

HERE = Path(__file__).resolve().parent
#: The box's RAUC configuration (firmware_config) and where the image keeps the keyring it names.
SYSTEM_CONF = HERE.parent / "firmware_config" / "rauc" / "system.conf"
KEYRING_IN_IMAGE = "etc/rauc/keyring.pem"
#: The signing material --rauc-keys names (a folder holding these three files).
KEY_FILES = ("signing.key.pem", "signing.cert.pem", "keyring.pem")
DEV_KEYS = "rauc-dev-keys"
#: squashfs compression of the bundle payload: zstd at a low level (quick to make, quick to read on the box).
MKSQUASHFS_ARGS = "-comp zstd -Xcompression-level 3"


@dataclass(frozen=True)
class RaucKeys:
    """The key and certificate that sign bundles, and the keyring (CA) the box verifies them with."""

    key: Path
    cert: Path
    keyring: Path


def rauc_unavailable() -> str | None:
    """Why OS bundles cannot be made on this host (None when they can)."""
    for tool, package in (("rauc", "rauc"), ("mksquashfs", "squashfs-tools"), ("openssl", "openssl")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    return None


def system_compatible(conf: Path = SYSTEM_CONF) -> str:
    """The ``compatible`` string of the box's system.conf (a bundle must carry the same)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(conf.read_text())
    try:
        return parser["system"]["compatible"]
    except KeyError as exc:
        raise BuildError(f"{conf}: no [system] compatible") from exc


def dev_keys(folder: Path) -> RaucKeys:
    """Throw-away development signing keys in ``folder`` (made once, then reused): a self-signed certificate that
    is its own keyring. Never for a fleet: production builds pass ``--rauc-keys``."""
    keys = RaucKeys(folder / KEY_FILES[0], folder / KEY_FILES[1], folder / KEY_FILES[2])
    if all(p.is_file() for p in (keys.key, keys.cert, keys.keyring)):
        return keys
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    run_tool(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(keys.key), "-out", str(keys.cert), "-days", "3650",
         "-subj", "/O=OR appliance development/CN=OR appliance OS bundles (development, not for a fleet)"],
        "openssl (development RAUC key)", timeout=120,
    )  # fmt: skip
    shutil.copyfile(keys.cert, keys.keyring)
    return keys


def signing_keys(given: Path | None, out: Path) -> RaucKeys:
    """The signing material: ``given`` (``--rauc-keys``, all of KEY_FILES) or development keys under ``out``."""
    if given is None:
        log.warning("OS bundles signed with throw-away development keys (%s); pass --rauc-keys for a fleet", out)
        return dev_keys(out / DEV_KEYS)
    missing = [name for name in KEY_FILES if not (given / name).is_file()]
    if missing:
        raise BuildError(f"--rauc-keys {given}: missing {', '.join(missing)}")
    return RaucKeys(given / KEY_FILES[0], given / KEY_FILES[1], given / KEY_FILES[2])


def install_keyring(slot: Path, keys: RaucKeys) -> Path:
    """Put the keyring where system.conf names it in the slot tree."""
    dest = slot / KEYRING_IN_IMAGE
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keys.keyring, dest)
    dest.chmod(0o644)
    return dest


def manifest_text(compatible: str, version: str, epoch: int, image: str, description: str) -> str:
    """A RAUC bundle manifest with one slot image (``rootfs``) in a dm-verity bundle."""
    return (
        "[update]\n"
        f"compatible={compatible}\n"
        f"version={version}\n"
        f"build={epoch}\n"
        f"description={description}\n\n"
        "[bundle]\n"
        "format=verity\n\n"
        "[image.rootfs]\n"
        f"filename={image}\n"
    )


def make_bundle(
    image: Path,
    dest: Path,
    version: str,
    epoch: int,
    keys: RaucKeys,
    description: str = "OR appliance OS image",
    compatible: str | None = None,
) -> Path:
    """The signed bundle ``dest`` holding the slot image ``image`` (an ext4 filesystem of the slot's size)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)  # rauc refuses to overwrite
    with tempfile.TemporaryDirectory(prefix="rauc-bundle-", dir=dest.parent) as tmp:
        content = Path(tmp) / "content"
        content.mkdir()
        name = "rootfs" + image.suffix
        try:
            os.link(image, content / name)  # same bytes, no second copy
        except OSError:
            shutil.copyfile(image, content / name)
        text = manifest_text(compatible or system_compatible(), version, epoch, name, description)
        (content / "manifest.raucm").write_text(text)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
        run_tool(
            ["rauc", "bundle", f"--cert={keys.cert}", f"--key={keys.key}", f"--signing-keyring={keys.keyring}",
             f"--mksquashfs-args={MKSQUASHFS_ARGS}", str(content), str(dest)],
            "rauc bundle", timeout=3600, env=env,
        )  # fmt: skip
    return dest
