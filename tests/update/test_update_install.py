"""Acceptance tests: install-time faults: incompatibility, failed health checks, bad configuration, full disk,
a USB stick pulled or truncated mid-copy. Each names the fault; the running release must stay intact."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from update_fleet import Fleet

from appliance.update.errors import (
    HealthCheckFailed,
    IncompatibleEngine,
    IncompatibleOS,
    InvalidConfiguration,
    RepositoryUnavailable,
    TamperedTarget,
    UntrustedMetadata,
)
from appliance.update.flow import refresh_audited
from appliance.update.health import HealthCheck, command_ok, gpu_visible
from appliance.update.packs import build_pack, verify_release_dir
from appliance.update.policy import ArtifactKind, BoxProfile, select_release

ROOT = Path(__file__).resolve().parents[2]
ENGINE = {"engine": {"tensorrt": "10.3.0", "compute_capabilities": ["8.9", "9.0"]}}


@pytest.mark.req("REQ-UPD-014")
def test_incompatible_engine_pack_refused_onnx_fallback_stays(fleet: Fleet) -> None:
    """Fault: an engine pack built for another GPU architecture / TensorRT version than the box has."""
    fleet.box = BoxProfile(os_version=(2, 0), compute_capability="8.6", tensorrt_version="10.3.0.26")
    fleet.publish("model", "ct-default", "1.0.0", files={"model.onnx": b"onnx-bytes"})
    fleet.update("model")
    fleet.publish("engine", "ct-default-trt", "1.0.0", files={"model.plan": b"plan"}, extra=ENGINE)
    with pytest.raises(IncompatibleEngine, match=r"8.6.*ONNX fallback"):
        fleet.update("engine")
    fleet.box = BoxProfile(os_version=(2, 0), compute_capability="8.9", tensorrt_version="10.0.1")
    with pytest.raises(IncompatibleEngine, match=r"TensorRT 10.3.0"):
        fleet.update("engine")
    fleet.box = BoxProfile(os_version=(2, 0), compute_capability=None, tensorrt_version=None)
    with pytest.raises(IncompatibleEngine, match=r"no TensorRT"):
        fleet.update("engine")
    assert fleet.current("engine") is None
    assert fleet.current("model") == "1.0.0"  # the ONNX model pack is untouched
    assert not list((fleet.install_root / "engine" / "releases").iterdir())  # nothing was even downloaded
    fleet.box = BoxProfile(os_version=(2, 0), compute_capability="8.9", tensorrt_version="10.3.0.26")
    assert fleet.update("engine").version == "1.0.0"


@pytest.mark.req("REQ-UPD-015")
def test_app_needing_newer_os_refused(fleet: Fleet) -> None:
    """Fault: an application release that needs OS image 3.0 on a box running 2.0."""
    fleet.publish(version="1.0.0", extra={"min_os": "2.0"})
    fleet.update()
    fleet.publish(version="2.0.0", extra={"min_os": "3.0"})
    with pytest.raises(IncompatibleOS, match=r"OS image 3.0.0 or newer"):
        fleet.update()
    assert fleet.current() == "1.0.0"
    assert not (fleet.install_root / "app" / "downloads").exists()
    assert fleet.audit_actions()[-1] == "update.refused"


@pytest.mark.req("REQ-UPD-011", "REQ-SAFE-500")
def test_failed_health_check_rolls_back_automatically(fleet: Fleet) -> None:
    """Fault: the new release's service does not come up (health check fails) -> automatic rollback."""
    fleet.publish(version="1.0.0")
    fleet.update()
    fleet.publish(version="1.1.0")
    fleet.health[ArtifactKind.APP] = HealthCheck([("service", lambda release: False)], window_s=5)
    with pytest.raises(HealthCheckFailed, match=r"rolled back to 1.0.0"):
        fleet.update()
    assert fleet.current() == "1.0.0"
    record = [r for r in fleet.installer().audit.records() if r.action == "update.rolled_back"][-1]  # type: ignore[union-attr]
    assert record.details["version"] == "1.1.0" and "service: returned false" in record.details["reason"]
    history = fleet.installer().status()["kinds"]["app"]["history"]
    assert history[-1]["event"] == "rolled-back"
    # the local floor did not move: 1.0.0 is still the confirmed release
    assert fleet.installer().floors()["local"]["app"] == "1.0.0"


@pytest.mark.req("REQ-UPD-011")
def test_health_check_window_expires(fleet: Fleet) -> None:
    """Fault: the new service hangs at start (check never finishes within the window); GPU expected but absent."""
    fleet.publish(version="1.0.0")
    fleet.update()
    fleet.publish(version="1.1.0")
    fleet.health[ArtifactKind.APP] = HealthCheck(
        [("gpu", gpu_visible(True, lambda: None)), ("service", lambda release: time.sleep(30))], window_s=0.5
    )
    t = time.monotonic()
    with pytest.raises(HealthCheckFailed, match=r"gpu: returned false.*not finished within"):
        fleet.update()
    assert time.monotonic() - t < 15  # the hung check did not hold the install for its 30 s
    assert fleet.current() == "1.0.0"


@pytest.mark.req("REQ-UPD-011", "REQ-UPD-014")
def test_failed_engine_smoke_test_rolls_back(fleet: Fleet) -> None:
    """Fault: a compatible engine pack whose smoke test (inference on a golden input) fails."""
    fleet.box = BoxProfile(os_version=(2, 0), compute_capability="8.9", tensorrt_version="10.3.0")
    smoke = [sys.executable, "{release}/smoke.py"]
    fleet.health[ArtifactKind.ENGINE] = HealthCheck([("engine-smoke", command_ok(smoke, 30))], window_s=30)
    ok = b"import sys; sys.exit(0)\n"
    bad = b"import sys; sys.stderr.write('max abs diff 0.4 > 1e-3'); sys.exit(3)\n"
    fleet.publish("engine", "ct-default-trt", "1.0.0", files={"smoke.py": ok, "model.plan": b"a"}, extra=ENGINE)
    fleet.update("engine")
    fleet.publish("engine", "ct-default-trt", "1.1.0", files={"smoke.py": bad, "model.plan": b"b"}, extra=ENGINE)
    with pytest.raises(HealthCheckFailed, match=r"exited 3.*max abs diff"):
        fleet.update("engine")
    assert fleet.current("engine") == "1.0.0"


@pytest.mark.req("REQ-UPD-017")
def test_signed_but_invalid_configuration_refused(fleet: Fleet) -> None:
    """Fault: a configuration pack, correctly signed, whose appliance.toml does not validate."""
    fleet.publish("config", "site", "1.0.0", files={"appliance.toml": b"[dicom]\nport = 11112\n"})
    fleet.update("config")
    fleet.publish("config", "site", "1.1.0", files={"appliance.toml": b"[dicom]\nport = 'eleven'\n"})
    with pytest.raises(InvalidConfiguration, match=r"dicom.port"):
        fleet.update("config")
    fleet.publish("config", "site", "1.2.0", files={"notes.txt": b"no config here"})
    with pytest.raises(InvalidConfiguration, match=r"no appliance.toml"):
        fleet.update("config")
    assert fleet.current("config") == "1.0.0"
    assert (fleet.install_root / "config" / "current" / "appliance.toml").read_bytes() == b"[dicom]\nport = 11112\n"
    assert not [p for p in (fleet.install_root / "config").iterdir() if p.name.startswith(".staging")]


@pytest.mark.req("REQ-UPD-008", "REQ-SAFE-500")
def test_usb_truncated_mid_copy(fleet: Fleet) -> None:
    """Fault: the stick was pulled while the repository was copied onto it (truncated artifact / metadata)."""
    fleet.publish(version="1.0.0")
    fleet.update()
    fleet.publish(version="1.1.0", files={"big.bin": os.urandom(200_000)})
    stored = next(p for p in (fleet.repo.targets_dir / "app").iterdir() if "1.1.0" in p.name)
    full = stored.read_bytes()
    stored.write_bytes(full[: len(full) // 3])
    with pytest.raises(TamperedTarget):
        fleet.update()
    stored.write_bytes(full)
    ts = fleet.repo.metadata_dir / "timestamp.json"
    ts.write_bytes(ts.read_bytes()[:100])
    with pytest.raises(UntrustedMetadata):
        fleet.update()
    assert fleet.current() == "1.0.0"
    verify_release_dir(fleet.install_root / "app" / "current")


@pytest.mark.req("REQ-UPD-008", "REQ-SAFE-500")
def test_usb_pulled_between_metadata_and_download(fleet: Fleet) -> None:
    """Fault: the stick is pulled after the metadata was verified, before/while the artifact is read."""
    fleet.publish(version="1.0.0")
    fleet.update()
    fleet.publish(version="1.1.0")
    client, installer = fleet.client(), fleet.installer()
    view = refresh_audited(client, installer)
    release = select_release(view.releases, ArtifactKind.APP)
    shutil.rmtree(fleet.repo.root_dir)
    with pytest.raises(RepositoryUnavailable, match=r"check the USB stick"):
        installer.install(release, fetch=lambda d: client.fetch(release, d))
    assert fleet.current() == "1.0.0"


def _userns_tmpfs_available() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d"],
        capture_output=True, check=False, timeout=20,
    )
    if probe.returncode != 0:
        return f"the kernel refuses a tmpfs in a user namespace: {probe.stderr.decode().strip()[:200]}"
    return None


@pytest.mark.req("REQ-UPD-013", "REQ-SAFE-500")
def test_disk_full_during_staging(fleet: Fleet, tmp_path: Path) -> None:
    """Fault: the data partition fills up (ENOSPC) while the new release is staged (tmpfs of 512 KiB)."""
    reason = _userns_tmpfs_available()
    if reason:
        pytest.skip(reason)
    fleet.publish(version="1.0.0")
    fleet.publish(version="1.1.0", files={"weights.bin": os.urandom(400_000)})
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from update_fleet import Fleet
        from appliance.update.errors import UpdateError
        f = Fleet(Path({str(tmp_path)!r}))
        f.trusted_root = (f.repo.metadata_dir / "1.root.json").read_bytes()
        out = {{"first": f.update(version="1.0.0").version}}
        try:
            f.update()
        except UpdateError as exc:
            out["error"] = type(exc).__name__
            out["message"] = str(exc)
        out["current"] = f.current()
        out["leftovers"] = sorted(p.name for p in (f.install_root / "app").iterdir() if p.name.startswith("."))
        print(json.dumps(out))
        """
    )
    releases = fleet.install_root
    releases.mkdir(parents=True)
    cmd = f"mount -t tmpfs -o size=512k tmpfs {releases} && exec {sys.executable} -c \"$0\""
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", cmd, script], capture_output=True, text=True, cwd=ROOT, timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["first"] == "1.0.0"
    assert out["error"] == "InstallError" and "disk full" in out["message"]
    assert out["current"] == "1.0.0"
    assert out["leftovers"] == []


@pytest.mark.req("REQ-UPD-019")
def test_packs_are_reproducible(tmp_path: Path) -> None:
    """Fault: none. Building the same folder twice (different mtimes) gives the same bytes."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a")
    (src / "sub" / "b.bin").write_bytes(b"b" * 1000)
    one = build_pack(src, tmp_path / "one.tar", "model", "m", "1.0.0").read_bytes()
    os.utime(src / "a.txt", (1, 1))
    two = build_pack(src, tmp_path / "two.tar", "model", "m", "1.0.0").read_bytes()
    assert one == two
    (src / "a.txt").write_bytes(b"A")
    assert build_pack(src, tmp_path / "three.tar", "model", "m", "1.0.0").read_bytes() != one


@pytest.mark.req("REQ-UPD-009", "REQ-UPD-011", "REQ-UPD-006")
def test_first_boot_factory_release_update_activation_and_rollback(fleet: Fleet, tmp_path: Path) -> None:
    """Fault: the new release cannot be activated (service restart fails) on a box still on its factory release."""
    from appliance.update.packs import extract_pack

    factory = tmp_path / "image" / "usr-lib-appliance" / "factory-release"
    factory.mkdir(parents=True)
    extract_pack(fleet.pack("app", "or-appliance", "0.9.0"), factory)
    kind_dir = fleet.install_root / "app"
    kind_dir.mkdir(parents=True)
    (kind_dir / "current").symlink_to(factory)  # what tmpfiles.d does on first boot
    activated: list[str] = []

    def restart(kind: ArtifactKind, current: Path) -> None:
        version = json.loads((current / "MANIFEST.json").read_text())["version"]
        activated.append(version)
        if version == "1.1.0":
            raise RuntimeError("appliance.service failed to start")

    installer = fleet.installer()
    installer.activate = restart
    fleet.publish(version="1.0.0")
    from appliance.update.flow import update_kind

    assert update_kind(fleet.client(), installer, ArtifactKind.APP).previous == "factory-release"
    assert os.readlink(kind_dir / "previous") == str(factory) and activated == ["1.0.0"]
    fleet.publish(version="1.1.0")
    with pytest.raises(HealthCheckFailed, match="activation: RuntimeError"):
        update_kind(fleet.client(), installer, ArtifactKind.APP)
    assert fleet.current() == "1.0.0" and activated == ["1.0.0", "1.1.0", "1.0.0"]
    result = installer.rollback(ArtifactKind.APP, "back to the factory release for a field test")
    assert result.version == "factory-release" and os.readlink(kind_dir / "current") == str(factory)
    assert activated[-1] == "0.9.0"
    verify_release_dir(kind_dir / "current")


@pytest.mark.req("REQ-UPD-008", "REQ-SAFE-500")
def test_usb_read_error_mid_download(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault: the stick is pulled while the artifact is being read (I/O error after the first chunk)."""
    from appliance.update import fetchers

    fleet.publish(version="1.0.0")
    fleet.update()
    fleet.publish(version="1.1.0", files={"big.bin": os.urandom(300_000)})
    class PulledStick(io.BufferedReader):
        """A file on the stick whose reads fail after the first chunk (the stick was pulled)."""

        def read(self, size: int | None = -1) -> bytes:
            if self.tell() > 0 and str(self.name).endswith(".tar"):
                raise OSError(5, "Input/output error")
            return super().read(size)

    def pulled_open(path: Path, mode: str = "r") -> io.BufferedReader:
        return PulledStick(io.FileIO(path, mode.replace("b", "")))

    monkeypatch.setattr(fetchers, "open", pulled_open, raising=False)
    with pytest.raises(RepositoryUnavailable, match="check the USB stick"):
        fleet.update()
    assert fleet.current() == "1.0.0"
    assert not (fleet.install_root / "app" / "downloads").exists() or not any(
        (fleet.install_root / "app" / "downloads").iterdir()
    )


@pytest.mark.req("REQ-UPD-012")
def test_second_installer_at_the_same_time_refused(fleet: Fleet) -> None:
    """Fault: a second update (UI and CLI at once) while one is running: refused, the first is unaffected."""
    import fcntl

    from appliance.update.errors import InstallError

    fleet.publish(version="1.0.0")
    fleet.update()
    fleet.publish(version="1.1.0")
    with open(fleet.install_root / ".install.lock", "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another installer holds the box
        with pytest.raises(InstallError, match="another update is running"):
            fleet.update()
        fcntl.flock(held, fcntl.LOCK_UN)
    assert fleet.current() == "1.0.0"
    assert fleet.update().version == "1.1.0"


@pytest.mark.req("REQ-UPD-1861")
def test_recover_run_by_the_restart_an_install_started_leaves_the_install_alone(fleet: Fleet) -> None:
    """Found booting the image: the install's activation hook restarts appliance.service, whose ExecStartPre runs
    ``update recover`` in another process while the installer holds the lock. That recover must succeed without
    touching anything (it failed the restart, and the good release was rolled back)."""
    from appliance.update.flow import update_kind
    from appliance.update.install import Installer

    fleet.publish(version="1.0.0")
    fleet.update()
    fleet.publish(version="1.1.0")
    seen: list[tuple[list[str], str | None]] = []

    def restart_service(kind: ArtifactKind, current: Path) -> None:  # what ExecStartPre= does on the box
        boot = Installer(root=fleet.install_root, box=fleet.box)
        seen.append((boot.recover(), boot.link_version(kind, "current")))

    installer = fleet.installer()
    installer.activate = restart_service
    result = update_kind(fleet.client(), installer, ArtifactKind.APP, None, None)
    assert result.version == "1.1.0" and fleet.current() == "1.1.0"
    assert seen == [(["an update is being installed by another process: nothing to recover"], "1.1.0")]
    assert "update.rolled_back" not in fleet.audit_actions()
    assert Installer(root=fleet.install_root, box=fleet.box).recover() == []  # nothing left behind
