"""image_build/: the signed application bundle (always), the read-only OS image parts as far as this host allows.

The full mmdebstrap build downloads Debian packages and takes minutes: it is marked slow and skipped with the
reason where user namespaces or the tools are missing. Packing, manifests and the RAUC manifest are tested on a
small synthetic root filesystem in the default run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "image_build")]

import build_image as image_build  # noqa: E402
import image_rootfs  # noqa: E402
import image_system  # noqa: E402

from appliance.update.client import UpdateClient  # noqa: E402
from appliance.update.flow import update_kind, validate_configuration_pack  # noqa: E402
from appliance.update.install import Installer  # noqa: E402
from appliance.update.policy import ArtifactKind, BoxProfile  # noqa: E402

EPOCH = 1_790_000_000


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    pack = root / "demo-ct"
    pack.mkdir()
    (pack / "pack.json").write_text(json.dumps({"name": "demo-ct", "version": "2.1.0"}))
    (pack / "model.onnx").write_bytes(b"\x08\x07" * 512)
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    code = image_build.main(
        [
            "bundle",
            "--out",
            str(out),
            "--epoch",
            str(EPOCH),
            "--model-packs",
            str(tiny_models),
            "--version",
            "0.1.0",
            "--min-os",
            "1.0",
        ]
    )
    assert code == 0
    return out


@pytest.mark.req("REQ-UPD-019", "REQ-UPD-001")
def test_bundle_is_signed_and_complete(bundle: Path) -> None:
    """The bundle holds app (wheel unpacked + launchers), configuration and model packs, published in TUF."""
    manifest = json.loads((bundle / "bundle-manifest.json").read_text())
    kinds = sorted((a["kind"], a["name"], a["version"]) for a in manifest["artifacts"])
    assert kinds == [("app", "or-appliance", "0.1.0"), ("config", "site", "0.1.0"), ("model", "demo-ct", "2.1.0")]
    for a in manifest["artifacts"]:
        assert _sha(bundle / "packs" / a["file"]) == a["sha256"]
    meta = bundle / "repository" / "metadata"
    newest = max(int(p.name.split(".")[0]) for p in meta.glob("*.targets.json"))
    targets = json.loads((meta / f"{newest}.targets.json").read_text())
    signed_paths = set(targets["signed"]["targets"])
    assert signed_paths == {"app/or-appliance-0.1.0.tar", "config/site-0.1.0.tar", "model/demo-ct-2.1.0.tar"}
    assert targets["signatures"] and json.loads((bundle / "build-report.json").read_text())["bundle"]["artifacts"] == 3


@pytest.mark.req("REQ-UPD-019")
def test_bundle_packs_are_reproducible(bundle: Path, tiny_models: Path, tmp_path: Path) -> None:
    """Fault: none. Re-packing the same wheel, models and configuration gives identical packs; the wheel
    normalisation gives identical bytes whatever the build wrote (the full double wheel build is a slow test)."""
    wheel = next((bundle / "wheel").glob("*.whl"))
    assert (
        image_build.main(
            [
                "bundle",
                "--out",
                str(tmp_path / "again"),
                "--epoch",
                str(EPOCH),
                "--model-packs",
                str(tiny_models),
                "--version",
                "0.1.0",
                "--min-os",
                "1.0",
                "--wheel",
                str(wheel),
            ]
        )
        == 0
    )
    first = {p.name: _sha(p) for p in (bundle / "packs").iterdir()}
    second = {p.name: _sha(p) for p in (tmp_path / "again" / "packs").iterdir()}
    assert first == second
    import zipfile

    import image_bundle

    shuffled = tmp_path / "shuffled.whl"
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(shuffled, "w") as zout:
        for name in reversed(zin.namelist()):  # other order, today's timestamps
            zout.writestr(name, zin.read(name))
    image_bundle._normalise_zip(shuffled, tmp_path / "normalised.whl", EPOCH)
    assert _sha(tmp_path / "normalised.whl") == _sha(wheel)


@pytest.mark.slow
@pytest.mark.req("REQ-UPD-019")
def test_bundle_is_reproducible_from_source(bundle: Path, tiny_models: Path, tmp_path: Path) -> None:
    """Fault: none. A second build from the same commit and SOURCE_DATE_EPOCH (wheel rebuilt) gives identical packs."""
    assert (
        image_build.main(
            [
                "bundle",
                "--out",
                str(tmp_path),
                "--epoch",
                str(EPOCH),
                "--model-packs",
                str(tiny_models),
                "--version",
                "0.1.0",
                "--min-os",
                "1.0",
            ]
        )
        == 0
    )
    first = {p.name: _sha(p) for p in (bundle / "packs").iterdir()}
    second = {p.name: _sha(p) for p in (tmp_path / "packs").iterdir()}
    assert first == second
    assert _sha(next((bundle / "wheel").glob("*.whl"))) == _sha(next((tmp_path / "wheel").glob("*.whl")))


@pytest.mark.req("REQ-UPD-009", "REQ-SAFE-504")
def test_bundle_installs_on_a_box(bundle: Path, tmp_path: Path) -> None:
    """The built repository installs on a box (dev keys as the trusted root); the unpacked wheel imports and runs."""
    client = UpdateClient(
        str(bundle / "repository"),
        tmp_path / "metadata",
        (bundle / "repository" / "metadata" / "1.root.json").read_bytes(),
    )
    installer = Installer(
        tmp_path / "releases",
        BoxProfile(os_version=(1, 0)),
        validators={ArtifactKind.CONFIG: validate_configuration_pack},
    )
    for kind in (ArtifactKind.APP, ArtifactKind.CONFIG, ArtifactKind.MODEL):
        update_kind(client, installer, kind)
        client = UpdateClient(str(bundle / "repository"), tmp_path / "metadata")
    app = tmp_path / "releases" / "app" / "current"
    assert json.loads((app / "RELEASE.json").read_text())["version"] == "0.1.0"
    assert (app / "bin" / "appliance").stat().st_mode & 0o111
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import appliance, appliance.cli; print(appliance.__file__)",
            str(app / "site"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(app / "site"))
    assert (tmp_path / "releases" / "config" / "current" / "appliance.toml").is_file()


def test_os_part_skipped_with_reason_or_available() -> None:
    """The OS part states why it cannot run here (or that it can)."""
    reason = image_rootfs.os_build_unavailable("erofs")
    assert reason is None or ("install" in reason or "namespace" in reason or "unshare" in reason)


@pytest.mark.req("REQ-UPD-020", "REQ-PRIV-500")
def test_firmware_staged_into_image_layout(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "bin").mkdir(parents=True)
    (app / "bin" / "appliance").write_text("#!/bin/sh\n")
    stage = image_rootfs.stage_firmware(ROOT / "firmware_config", app, "1.2", tmp_path / "stage")
    assert (stage / "etc/systemd/system/appliance.service").is_file()
    assert os.readlink(stage / "etc/systemd/system/multi-user.target.wants/appliance.service") == "../appliance.service"
    assert (stage / "usr/lib/appliance/gpu-setup.sh").stat().st_mode & 0o111
    assert 'IMAGE_VERSION="1.2"' in (stage / "etc/appliance-release").read_text()
    assert (stage / "etc/appliance/appliance.toml").read_bytes() == (
        ROOT / "firmware_config/appliance.toml"
    ).read_bytes()
    from appliance.update.box import os_image_version

    assert os_image_version((stage / "etc/appliance-release",)) == (1, 2)


def _synthetic_rootfs(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc/appliance-release").write_text('IMAGE_VERSION="1.0"\n')
    (root / "usr/bin/tool").write_bytes(b"\x7fELF" + b"\0" * 100)
    (root / "usr/bin/alias").symlink_to("tool")
    return root


@pytest.mark.req("REQ-UPD-020")
@pytest.mark.parametrize("fs", ["erofs", "squashfs"])
def test_read_only_image_manifest_and_rauc(tmp_path: Path, fs: str) -> None:
    """Packing is reproducible; the manifest lists every file's hash; the RAUC manifest names the image's hash."""
    tool = {"erofs": "mkfs.erofs", "squashfs": "mksquashfs"}[fs]
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed on this host")
    rootfs = _synthetic_rootfs(tmp_path / "rootfs")
    one = image_rootfs.pack_image(rootfs, tmp_path / f"a.{fs}", fs, EPOCH)
    os.utime(rootfs / "usr/bin/tool", (5, 5))
    two = image_rootfs.pack_image(rootfs, tmp_path / f"b.{fs}", fs, EPOCH)
    assert _sha(one) == _sha(two)
    manifest = image_rootfs.rootfs_manifest(rootfs)
    assert manifest["files"]["/usr/bin/alias"] == "link:tool"
    assert manifest["files"]["/usr/bin/tool"] == "sha256:" + _sha(rootfs / "usr/bin/tool")
    rauc = image_rootfs.write_rauc_manifest(tmp_path / "out", one, "1.0", EPOCH).read_text()
    assert "compatible=or-appliance-x86_64" in rauc and f"sha256={_sha(one)}" in rauc
    assert f"filename={one.name}" in rauc and (tmp_path / "out" / "rauc" / one.name).is_file()


@pytest.mark.slow
@pytest.mark.req("REQ-UPD-020")
def test_full_os_image_with_mmdebstrap(bundle: Path) -> None:
    """The real OS image: mmdebstrap (unshare) essential set + firmware_config + the app release, erofs, manifests."""
    reason = image_rootfs.os_build_unavailable("erofs")
    if reason:
        pytest.skip(f"OS image not built on this host: {reason}")
    code = image_build.main(
        ["os", "--out", str(bundle), "--epoch", str(EPOCH), "--variant", "essential", "--packages", ""]
    )
    report = json.loads((bundle / "build-report.json").read_text())
    assert code == 0, report
    if not report["os"]["built"]:
        pytest.skip(report["os"]["reason"])
    manifest = json.loads((bundle / "rootfs-manifest.json").read_text())
    names = {p["package"] for p in manifest["packages"]}
    assert {"dpkg", "libc6", "base-files"} <= names
    assert manifest["files"]["/etc/appliance/appliance.toml"].startswith("sha256:")
    assert "/usr/lib/appliance/factory-release/bin/appliance" in manifest["files"]
    assert (bundle / "rauc" / "manifest.raucm").is_file() and (bundle / "rootfs.erofs").stat().st_size > 1_000_000


@pytest.mark.req("REQ-FUNC-1860")
def test_software_compositing_is_a_test_image_drop_in_only() -> None:
    """QEMU's display needs the kiosk's software compositor; a box keeps its GPU renderer (the unit sets none)."""
    unit = (ROOT / "firmware_config" / "systemd" / "appliance-kiosk.service").read_text()
    assert "WLR_RENDERER" not in "".join(line for line in unit.splitlines() if not line.startswith("#"))
    dropin = image_system.TEST_KIOSK_DROPIN.splitlines()
    assert "[Service]" in dropin and "Environment=WLR_RENDERER=pixman" in dropin
    # Debian's chromium wrapper reads /etc/chromium.d: the test image's longer child-connection timeout (TCG)
    flags = image_system.TEST_CHROMIUM_FLAGS.splitlines()
    assert 'export CHROMIUM_FLAGS="$CHROMIUM_FLAGS --ipc-connection-timeout=600"' in flags
    assert "ipc-connection-timeout" not in unit
