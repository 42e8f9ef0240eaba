"""Build the appliance: the signed application bundle (always) and the OS image (where the host allows).

    python image_build/build_image.py bundle --out out/image [--keys KEYDIR] [--version 0.1.0]
    python image_build/build_image.py all --out out/image [--fs erofs|squashfs] [--suite bookworm]
    python image_build/build_image.py disk --out out/disk [--test-config FILE --test-ui-peer 10.0.2.2]

Outputs under --out:
    packs/*.tar                  deterministic packs (app, config, model packs)
    repository/                  TUF repository (copy to a USB stick or serve from the LAN mirror)
    bundle-manifest.json         what the bundle holds, with hashes
    rootfs.<fs>, rootfs-manifest.json, rauc/manifest.raucm   the OS slot (when the OS part ran)
    build-report.json            what ran and what was skipped, and why
    disk.raw, disk-manifest.json the bootable GPT disk (disk): ESP + root slots A/B + data, and its manifest
    os-bundle/*.raucb            the disk's slot image as a signed RAUC OS bundle (disk, where rauc is installed)
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from image_bundle import BuildError, build_bundle, bundle_manifest, sign_bundle  # noqa: E402
from image_disk_build import build_disk, disk_preflight  # noqa: E402
from image_rootfs import (  # noqa: E402
    factory_release,
    mmdebstrap_rootfs,
    os_build_unavailable,
    pack_image,
    rootfs_manifest,
    stage_firmware,
    write_json,
    write_rauc_manifest,
)

log = logging.getLogger("image_build")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def default_epoch() -> int:
    """SOURCE_DATE_EPOCH, else the last commit's time (reproducible), else 0."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    stamp = _git("log", "-1", "--format=%ct")
    return int(stamp) if stamp else 0


def read_packages(path: Path) -> list[str]:
    """Package names from a packages.txt (comments and blanks ignored)."""
    return [ln.split("#")[0].strip() for ln in path.read_text().splitlines() if ln.split("#")[0].strip()]


def main(argv: list[str] | None = None) -> int:
    """Run the build; returns 0, or 1 with a one-line reason."""
    from appliance import __version__

    p = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    p.add_argument("what", choices=["bundle", "os", "all", "disk"])
    p.add_argument("--out", default=str(ROOT / "out" / "image"))
    p.add_argument("--version", default=__version__, help="application release version")
    p.add_argument("--min-os", default="1.0", help="oldest OS image the application release runs on")
    p.add_argument("--image-version", default="1.0", help="OS image version written to /etc/appliance-release")
    p.add_argument("--epoch", type=int, default=None, help="SOURCE_DATE_EPOCH (default: last commit time)")
    p.add_argument("--keys", help="TUF key folder (default: throw-away development keys)")
    p.add_argument("--model-packs", default=str(ROOT / "engines" / "model_packs"))
    p.add_argument("--ui-vendor", default=str(ROOT / "ui" / "static" / "vendor"))
    p.add_argument("--config", default=str(ROOT / "firmware_config" / "appliance.toml"))
    p.add_argument("--wheel", help="use this wheel instead of building one")
    p.add_argument("--fs", choices=["erofs", "squashfs"], default="erofs")
    p.add_argument("--suite", default="bookworm")
    p.add_argument("--variant", default="minbase")
    p.add_argument("--mirror", help="Debian mirror (default: the host's apt sources)")
    p.add_argument("--packages", default=str(HERE / "packages.txt"), help="package list file ('' = none)")
    p.add_argument("--test-config", help="disk: install this appliance.toml (a test image) and the test packages")
    p.add_argument(
        "--rauc-keys",
        help="disk: folder with the OS bundles' signing.key.pem, signing.cert.pem and "
        "keyring.pem (default: throw-away development keys under --out)",
    )
    p.add_argument("--test-ui-peer", help="disk, test images only: open the web UI port to this address")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    epoch = args.epoch if args.epoch is not None else default_epoch()
    report: dict[str, object] = {"epoch": epoch, "git_commit": _git("rev-parse", "HEAD")}
    try:
        if args.what == "disk":
            disk_preflight(args)
        app_tree = None
        if args.what in ("bundle", "all", "disk"):
            artifacts = build_bundle(
                ROOT,
                out,
                args.version,
                args.min_os,
                epoch,
                Path(args.config),
                Path(args.model_packs) if args.model_packs else None,
                Path(args.ui_vendor) if args.ui_vendor else None,
                Path(args.wheel) if args.wheel else None,
            )
            sign_bundle(artifacts, out / "repository", Path(args.keys) if args.keys else None, out)
            manifest = bundle_manifest(artifacts, args.version, epoch, report["git_commit"])  # type: ignore[arg-type]
            write_json(out / "bundle-manifest.json", manifest)
            report["bundle"] = {"artifacts": len(artifacts), "repository": str(out / "repository")}
        if args.what in ("os", "all"):
            reason = os_build_unavailable(args.fs)
            if reason:
                log.warning("OS image skipped: %s", reason)
                report["os"] = {"built": False, "reason": reason}
            else:
                app_tree = factory_release(out / "packs")
                stage = stage_firmware(ROOT / "firmware_config", app_tree, args.image_version, out / "stage")
                packages = read_packages(Path(args.packages)) if args.packages else []
                rootfs = mmdebstrap_rootfs(
                    out / "rootfs", args.suite, packages, stage, epoch, args.variant, args.mirror
                )
                write_json(out / "rootfs-manifest.json", rootfs_manifest(rootfs))
                image = pack_image(rootfs, out / f"rootfs.{args.fs}", args.fs, epoch)
                write_rauc_manifest(out, image, args.image_version, epoch)
                report["os"] = {"built": True, "image": str(image), "packages": packages}
        if args.what == "disk":
            report["disk"] = build_disk(args, out, epoch)
    except BuildError as exc:
        sys.stderr.write(f"image build: {exc}\n")
        report["error"] = str(exc)
        write_json(out / "build-report.json", report)
        return 1
    write_json(out / "build-report.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
