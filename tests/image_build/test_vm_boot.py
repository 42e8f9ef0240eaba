"""The appliance disk, as built, booted in QEMU/KVM and driven from outside like a box in the hospital network.

Slow (a disk build is minutes, a boot and two CPU reconstructions are minutes). The documented command:

    sudo python image_build/build_image.py disk --out out/disk \\
        --test-config tests/image_build/vm_test_appliance.toml --test-ui-peer 10.0.2.2
    APPLIANCE_VM_DISK=out/disk/disk.raw python -m pytest -m slow tests/image_build/test_vm_boot.py

Without ``APPLIANCE_VM_DISK`` the test builds the test disk itself (into ``APPLIANCE_VM_BUILD_DIR`` when set, so
the Debian base and the wheelhouse are reused between runs). Artefacts (serial console, QEMU log, step times,
measurements, kiosk screendump) go to ``APPLIANCE_VM_ARTEFACTS`` or ``<tmp>/artefacts``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.data import ROOT
from helpers.qemu_vm import Vm, vm_unavailable

sys.path[:0] = [str(ROOT / "tests" / "service")]

from svc_helpers import free_port, prepare_ct_series  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.serial]

TEST_CONFIG = Path(__file__).with_name("vm_test_appliance.toml")
#: QEMU's user network: the host as the box sees it.
QEMU_HOST = "10.0.2.2"


class Steps:
    """Each step's duration and the measurements, written to ``steps.json`` as the test goes."""

    def __init__(self, artefacts: Path) -> None:
        self.artefacts = artefacts
        self.t0 = time.monotonic()
        self.last = self.t0
        self.data: dict[str, Any] = {"steps": {}, "measured": {}}

    def done(self, name: str) -> float:
        now = time.monotonic()
        took = round(now - self.last, 1)
        self.data["steps"][name] = took
        self.last = now
        self.save()
        return took

    def measured(self, name: str, value: Any) -> None:
        self.data["measured"][name] = value
        self.save()

    def save(self) -> None:
        (self.artefacts / "steps.json").write_text(json.dumps(self.data, indent=1) + "\n")


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built test disk (APPLIANCE_VM_DISK, or built here)."""
    reason = vm_unavailable()
    if reason:
        pytest.skip(reason)
    given = os.environ.get("APPLIANCE_VM_DISK")
    if given:
        if not Path(given).is_file():
            pytest.fail(f"APPLIANCE_VM_DISK={given} does not exist")
        return Path(given)
    if os.geteuid() != 0:
        pytest.skip("building the disk image needs root here; build it once and set APPLIANCE_VM_DISK")
    sys.path[:0] = [str(ROOT / "image_build")]
    import build_image

    out = Path(os.environ.get("APPLIANCE_VM_BUILD_DIR") or tmp_path_factory.mktemp("disk"))
    code = build_image.main(["disk", "--out", str(out), "--test-config", str(TEST_CONFIG), "--test-ui-peer", QEMU_HOST])
    assert code == 0, (out / "build-report.json").read_text()
    return out / "disk.raw"


@pytest.fixture
def box(disk: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Vm, Steps]]:
    """The booted VM (powered off afterwards; the serial log is kept with the artefacts, one folder per test)."""
    artefacts = Path(os.environ.get("APPLIANCE_VM_ARTEFACTS") or tmp_path / "artefacts") / request.node.name
    artefacts.mkdir(parents=True, exist_ok=True)
    vm = Vm(disk, tmp_path / "vm", free_port(), free_port())
    steps = Steps(artefacts)
    try:
        vm.start()
        yield vm, steps
    finally:
        vm.stop()
        for name in ("serial.log", "qemu.log"):
            if (vm.workdir / name).exists():
                shutil.copyfile(vm.workdir / name, artefacts / name)
        sys.stderr.write(f"\nVM artefacts: {artefacts}\n")


def _timeout_factor(vm: Vm) -> float:
    """How much longer than under KVM each wait may take: APPLIANCE_VM_TIMEOUT_FACTOR, else 1 (KVM) or 5 (TCG,
    several times slower; a host loaded by other work may need more)."""
    given = os.environ.get("APPLIANCE_VM_TIMEOUT_FACTOR")
    return float(given) if given else (1.0 if vm.accel == "kvm" else 5.0)


def _http(vm: Vm, path: str, token: str | None = None) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{vm.http_port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _post(vm: Vm, path: str, token: str, body: dict[str, Any], timeout: float) -> tuple[int, Any]:
    """``(status, JSON)`` of a POST to the box's API with the service token."""
    req = urllib.request.Request(f"http://127.0.0.1:{vm.http_port}{path}", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json",
                                                         "Authorization": f"Bearer {token}"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _wait(what: str, timeout: float, probe: Any, vm: Vm) -> Any:
    """Call ``probe`` until it returns something truthy; fails with the serial log's tail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = probe()
        except (OSError, ValueError, RuntimeError, ConnectionError):
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s; serial console ends:\n{vm.serial()[-3000:]}")
        time.sleep(1)


def _job_done(vm: Vm, token: str, study_uid: str) -> dict[str, Any] | None:
    jobs = [j for j in _http(vm, "/api/jobs", token)["jobs"] if j.get("study_instance_uid") == study_uid]
    if jobs and jobs[0]["state"] in ("failed", "refused"):
        pytest.fail(f"job for {study_uid} ended {jobs[0]['state']}: {jobs[0]}")
    if not jobs or jobs[0]["state"] != "done":
        return None
    job: dict[str, Any] = _http(vm, f"/api/jobs/{jobs[0]['id']}", token)  # the listing has no files
    return job


#: The UI's page background (ui/static/css/app.css --bg); the kernel console is black (0, 0, 0).
UI_BACKGROUND = (0x0B, 0x0D, 0x10)


def _shows_the_ui(png: Path) -> bool:
    """Whether a screendump shows the web UI (most of the screen its page background), not the console."""
    from PIL import Image

    with Image.open(png) as image:
        rgb = image.convert("RGB")
        pixels = rgb.width * rgb.height
        background = sum(n for n, colour in rgb.getcolors(pixels) or [] if colour == UI_BACKGROUND)
    return background > 0.3 * pixels


def _wait_for_login_screen(vm: Vm, dest: Path, timeout: float) -> None:
    """Screendumps of the box's display until it shows the kiosk's login screen (kept as ``dest``); fails with
    the kiosk unit's journal otherwise."""
    deadline = time.monotonic() + timeout
    while not _shows_the_ui(vm.screendump(dest)):
        if time.monotonic() > deadline:
            journal = vm.agent.run("journalctl", "-b", "--no-pager", "-n", "2000")[1].splitlines()
            kiosk = "\n".join(line for line in journal if re.search(r"kiosk|cage|chromium|libseat", line))
            pytest.fail(f"the display shows no login screen {timeout:.0f} s after the service was ready; "
                        f"kiosk journal:\n{kiosk[-4000:]}")  # fmt: skip
        time.sleep(10)


def _stick_release(vm: Vm, token: str, device: str | None, state: str) -> dict[str, Any] | None:
    """The release of the newest import of the stick ``device`` (None: of any stick) when it is in ``state``
    (``/api/imports``)."""
    for report in _http(vm, "/api/imports", token)["imports"]:
        release = report.get("release") or {}
        if release and device in (None, release.get("device")):
            return release if release.get("state") == state else None
    return None


def _fat_stick(files: list[Path], image: Path) -> Path:
    """A FAT image holding ``files`` in a folder, as a nurse's stick from a CD burner would."""
    subprocess.run(["mkfs.vfat", "-C", "-n", "STUDY", str(image), str(64 * 1024)], check=True, capture_output=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mmd", f"-i{image}", "::/CT"], check=True, env=env)
    subprocess.run(["mcopy", f"-i{image}", *map(str, files), "::/CT/"], check=True, env=env)
    return image


@pytest.mark.timeout(3 * 3600)  # under TCG (no usable KVM) the two CPU reconstructions alone take long
@pytest.mark.req(
    "REQ-UPD-1470", "REQ-SAFE-1472", "REQ-FUNC-1860", "REQ-FUNC-1900", "REQ-SAFE-1901", "REQ-FUNC-1954",
    "REQ-FUNC-1955", "REQ-FUNC-1960",
)
def test_box_boots_receives_and_reconstructs(box: tuple[Vm, Steps], tmp_path: Path, shared_data: Path) -> None:
    """Boot to appliance.service ready (sd_notify) and /api/health; the kiosk's login screen is on the display
    (screendump kept); the demo study over DICOM from the allowed peer is reconstructed; a USB stick with another
    study plugged in through QMP is mounted read-only, imported and reconstructed, and released (unmounted) by the
    box itself; a stick with nothing to import stays mounted read-only, its report says why; the demo case is then
    exported to it (made writable by root for the export, released after it) and read back on the host."""
    vm, steps = box
    slow = _timeout_factor(vm)
    steps.measured("accelerator", vm.accel)
    vm.agent.wait_ready(300 * slow)
    steps.done("boot_to_guest_agent")
    _wait("appliance.service active (READY=1)", 300 * slow,
          lambda: vm.agent.run("systemctl", "is-active", "appliance.service")[1].strip() == "active", vm)  # fmt: skip
    steps.measured("boot_to_ready_s", round(time.monotonic() - steps.t0, 1))
    steps.done("service_ready")
    health = _wait("/api/health", 60 * slow, lambda: _http(vm, "/api/health"), vm)
    assert health["status"] in ("ok", "degraded"), health
    assert health["dicom"]["enabled"] is True, health
    steps.measured("health", health)
    time.sleep(5)
    meminfo = dict(re.findall(r"^(\w+):\s+(\d+) kB", vm.agent.read("/proc/meminfo").decode(), re.MULTILINE))
    steps.measured("idle_memory_used_mib", round((int(meminfo["MemTotal"]) - int(meminfo["MemAvailable"])) / 1024))
    _wait_for_login_screen(vm, steps.artefacts / "kiosk.png", 180 * slow)
    steps.done("kiosk_login_screen")
    token = vm.agent.read("/var/lib/appliance/run/api_token").decode().strip()

    # the demo study's 20 slices with the UIDs a scanner sends (the public copy in appliance/samples has them
    # blanked, so storescu cannot send it as it is: "No presentation context for: (unknown SOP class)")
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "demo-study")
    sent = subprocess.run(
        ["storescu", "-xv", "-aet", "STORESCU", "-aec", "EDGE3D", "127.0.0.1", str(vm.dicom_port), *map(str, files)],
        capture_output=True, text=True, timeout=300 * slow, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    steps.done("storescu_demo_study")
    job = _wait("the demo study's job done", 600 * slow, lambda: _job_done(vm, token, study_uid), vm)
    assert any(f["path"].endswith(".stl") for f in job["files"]), job
    demo_job = int(job["id"])
    steps.measured("dicom_to_job_done_s", steps.done("demo_study_reconstructed"))

    # a small series keeps the CPU reconstruction short under TCG
    stick_uid, stick_files = prepare_ct_series(shared_data, tmp_path / "stick-files", n=8)
    stick = _fat_stick(stick_files, tmp_path / "stick.img")
    steps.done("stick_prepared")
    vm.attach_stick(stick, "stick0")
    inserted = time.monotonic()
    mount = _wait("the stick mounted under /media/usb", 60 * slow,
                  lambda: vm.agent.run("findmnt", "-n", "-o", "TARGET,OPTIONS", "-T", "/media/usb/sda")[1]
                  if vm.agent.run("findmnt", "-n", "/media/usb/sda")[0] == 0 else None, vm)  # fmt: skip
    target, options = mount.split()
    assert target == "/media/usb/sda" and {"ro", "nosuid", "nodev", "noexec"} <= set(options.split(",")), mount
    steps.done("stick_mounted")
    job = _wait("the stick's study reconstructed", 600 * slow, lambda: _job_done(vm, token, stick_uid), vm)
    assert any(f["path"].endswith(".stl") for f in job["files"]), job
    steps.measured("stick_inserted_to_job_done_s", round(steps.done("stick_study_reconstructed")
                                                         + steps.data["steps"]["stick_mounted"], 1))  # fmt: skip
    # the box released (unmounted) the stick by itself once its study was imported: "safe to remove"
    released = _wait("the stick released by the box after its import", 300 * slow,
                     lambda: _stick_release(vm, token, "sda", "released"), vm)  # fmt: skip
    assert vm.agent.run("findmnt", "-n", "/media/usb/sda")[0] != 0, released
    steps.measured("stick_inserted_to_released_s", round(time.monotonic() - inserted, 1))
    steps.done("stick_released_by_the_box")
    vm.detach_stick("stick0")

    # a stick with nothing the box can take is not released silently: it stays mounted, the report says why
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "README.TXT").write_text("not a DICOM file\n")
    junk_image = _fat_stick([junk / "README.TXT"], tmp_path / "junk.img")
    vm.attach_stick(junk_image, "stick1", writable=True)  # not write-protected: it is exported to below
    kept = _wait("the failed stick's import reported", 300 * slow, lambda: _stick_release(vm, token, None, "kept"), vm)
    assert "no DICOM images" in kept["problem"], kept
    where = f"/media/usb/{kept['device']}"
    assert vm.agent.run("findmnt", "-n", where)[0] == 0, f"a stick whose import failed was released: {kept}"
    steps.done("failed_stick_kept_and_reported")

    # Export to USB onto that read-only stick (REQ-FUNC-1960): the root helper makes it writable for the export,
    # the box writes and verifies, then releases (unmounts) it; the files are read back from the image on the host
    media = {m["name"]: m for m in _http(vm, "/api/usb/media", token)["media"]}
    assert media[kept["device"]]["writable"] and media[kept["device"]]["made_writable"], media
    status, exported = _post(vm, f"/api/jobs/{demo_job}/usb-export", token,
                             {"medium": kept["device"], "formats": ["stl"], "override_unapproved": True,
                              "reason": "VM system test"}, timeout=300 * slow)  # fmt: skip
    if status != 200:
        units = ("appliance-usb-writable.path", "appliance-usb-writable.service", "appliance-usb-writable@sda.service")
        journal = vm.agent.run("journalctl", "-b", "--no-pager", "-n", "300", *(f"-u{u}" for u in units))[1]
        mounts = vm.agent.run("findmnt", "-R", "/media/usb")[1]
        inside = vm.agent.run("nsenter", "-t", vm.agent.run("systemctl", "show", "-p", "MainPID", "--value",
                                                            "appliance.service")[1].strip(),
                              "-m", "findmnt", "-R", "/media/usb")[1]  # fmt: skip
        pytest.fail(f"export to the stick: {status} {exported}\njournal:\n{journal[-4000:]}\nmounts:\n{mounts}\n"
                    f"the service's mounts:\n{inside}")  # fmt: skip
    assert exported["safe_to_remove"] and exported["stick"] == "releasing", exported
    _wait("the export stick released by the box", 300 * slow,
          lambda: vm.agent.run("findmnt", "-n", where)[0] != 0, vm)  # fmt: skip
    steps.done("exported_to_the_stick_and_released")
    vm.detach_stick("stick1")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    back = tmp_path / "exported"
    back.mkdir()
    subprocess.run(["mcopy", "-s", f"-i{junk_image}", f"::/{exported['folder']}", str(back)], check=True, env=env)
    folder = back / exported["folder"]
    for f in exported["files"]:
        assert hashlib.sha256((folder / f["name"]).read_bytes()).hexdigest() == f["sha256"], f
    assert {f["name"] for f in exported["files"]} == {p.name for p in folder.iterdir()}
    readme = subprocess.run(["mtype", f"-i{junk_image}", "::/CT/README.TXT"], capture_output=True, text=True, env=env)
    assert readme.stdout == "not a DICOM file\n"  # what the stick held is untouched


def _app_release(factory_pack: Path, dest: Path, version: str, broken: bool = False) -> Path:
    """An application release folder made from the image's factory release, as version ``version``; a broken
    one cannot start (its ``bin/appliance`` exits 3), as a release with a bad dependency would."""
    from appliance.update.packs import extract_pack

    dest.mkdir(parents=True)
    extract_pack(factory_pack, dest)
    (dest / "MANIFEST.json").unlink()
    release = json.loads((dest / "RELEASE.json").read_text())
    (dest / "RELEASE.json").write_text(json.dumps({**release, "version": version}, indent=1) + "\n")
    if broken:
        (dest / "bin/appliance").write_text('#!/bin/sh\necho "broken release (VM test)" >&2\nexit 3\n')
    return dest


def _update_stick(repo: Path, image: Path) -> Path:
    """A FAT image holding the update repository ``repo`` (metadata/ and targets/) at its top."""
    subprocess.run(["mkfs.vfat", "-C", "-n", "UPDATE", str(image), str(96 * 1024)], check=True, capture_output=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mcopy", "-s", f"-i{image}", str(repo / "metadata"), str(repo / "targets"), "::/"], check=True,
                   env=env)  # fmt: skip
    return image


#: The installed releases on the box (firmware_config: root-owned, outside the service's data folder).
BOX_APP = "/var/lib/appliance-system/releases/app"


def _box_update(vm: Vm, stick: str, timeout: float, *extra: str) -> tuple[int, str]:
    """``appliance update install`` of the app from the stick mounted at /media/usb/<stick>, run as root in the
    box (as a service engineer would); trusts the stick's root.json on first use (the image ships none yet)."""
    repo = f"/media/usb/{stick}"
    return vm.agent.run(f"{BOX_APP}/current/bin/appliance", "update", "install", "--config",
                        "/etc/appliance/appliance.toml", "--repo", repo, "--trusted-root",
                        f"{repo}/metadata/1.root.json", "--kind", "app", *extra, timeout=timeout)  # fmt: skip


def _boot_id(vm: Vm) -> str | None:
    try:
        vm.agent.wait_ready(5)
        return vm.agent.read("/proc/sys/kernel/random/boot_id").decode().strip()
    except (OSError, ConnectionError, RuntimeError, TimeoutError, ValueError):
        return None


def _reboot(vm: Vm, timeout: float) -> None:
    """``systemctl reboot`` in the box; returns once the guest agent answers from the next boot."""
    before = _boot_id(vm)
    assert before, "no boot id before the reboot"
    try:
        vm.agent.run("systemctl", "reboot", timeout=30)
    except (OSError, ConnectionError, RuntimeError, TimeoutError, ValueError):
        pass  # the agent may go away before it reports the command's end
    _wait("the box back from its reboot", timeout, lambda: (_boot_id(vm) or before) != before, vm)


def _service_ready(vm: Vm, timeout: float) -> None:
    _wait("appliance.service active (READY=1)", timeout,
          lambda: vm.agent.run("systemctl", "is-active", "appliance.service")[1].strip() == "active", vm)  # fmt: skip
    health = _wait("/api/health", timeout, lambda: _http(vm, "/api/health"), vm)
    assert health["status"] in ("ok", "degraded"), health


@pytest.mark.timeout(3 * 3600)
@pytest.mark.req("REQ-UPD-1470", "REQ-SAFE-1475")
def test_box_installs_a_signed_update_from_a_stick_and_rolls_back_a_broken_one(
    box: tuple[Vm, Steps], disk: Path, tmp_path: Path
) -> None:
    """A signed application update on a stick is installed as root, the service restarts on it and passes its
    health check, and the box still runs it after a reboot; a broken release (it cannot start) from a second
    stick fails its health check and the box returns to the good release by itself."""
    from appliance.cli import main as appliance_main

    vm, steps = box
    slow = _timeout_factor(vm)
    vm.agent.wait_ready(300 * slow)
    steps.done("boot_to_guest_agent")
    _service_ready(vm, 300 * slow)
    steps.done("service_ready")
    factory = sorted((disk.parent / "packs").glob("app-*.tar"))
    if not factory:
        pytest.skip(f"no application pack beside {disk} (build the disk with build_image.py disk)")
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    for role in ("root", "targets", "snapshot", "timestamp"):
        assert appliance_main(["update", "keygen", "--keys", str(keys), "--role", role]) == 0
    build = ["update", "build", "--repo", str(repo), "--keys", str(keys), "--kind", "app", "--name", "or-appliance"]
    good = _app_release(factory[-1], tmp_path / "good", "9.0.1")
    assert appliance_main([*build, "--init", "--version", "9.0.1", "--source", str(good)]) == 0
    stick_good = _update_stick(repo, tmp_path / "update-good.img")
    broken = _app_release(factory[-1], tmp_path / "broken", "9.0.2", broken=True)
    assert appliance_main([*build, "--version", "9.0.2", "--source", str(broken)]) == 0
    stick_broken = _update_stick(repo, tmp_path / "update-broken.img")
    steps.done("update_sticks_prepared")

    vm.attach_stick(stick_good, "update0")
    _wait("the update stick mounted", 60 * slow, lambda: vm.agent.run("findmnt", "-n", "/media/usb/sda")[0] == 0, vm)
    code, out = _box_update(vm, "sda", 600 * slow, "--version", "9.0.1")
    assert code == 0, out
    assert vm.agent.run("readlink", f"{BOX_APP}/current")[1].strip() == "releases/9.0.1", out
    _service_ready(vm, 120 * slow)
    steps.done("update_installed_and_healthy")
    vm.detach_stick("update0")
    _wait("the update stick unmounted", 60 * slow, lambda: vm.agent.run("findmnt", "-n", "/media/usb/sda")[0] != 0, vm)

    _reboot(vm, 300 * slow)
    _service_ready(vm, 300 * slow)
    assert vm.agent.run("readlink", f"{BOX_APP}/current")[1].strip() == "releases/9.0.1"
    steps.measured("reboot_to_ready_s", steps.done("rebooted_on_the_update"))

    vm.attach_stick(stick_broken, "update1")
    _wait("the second update stick mounted", 60 * slow,
          lambda: vm.agent.run("findmnt", "-n", "/media/usb/sda")[0] == 0, vm)  # fmt: skip
    code, out = _box_update(vm, "sda", 600 * slow, "--version", "9.0.2")
    assert code == 1 and "failed its health check" in out and "rolled back to 9.0.1" in out, out
    assert vm.agent.run("readlink", f"{BOX_APP}/current")[1].strip() == "releases/9.0.1"
    _service_ready(vm, 120 * slow)
    steps.done("broken_update_rolled_back")
    vm.detach_stick("update1")


def _grubenv(vm: Vm) -> dict[str, str]:
    """The slot flags GRUB and RAUC keep in the ESP's grubenv (mounted at /boot/efi by boot-efi.mount)."""
    code, out = vm.agent.run("grub-editenv", "/boot/efi/grub/grubenv", "list")
    assert code == 0, out
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _booted_slot(vm: Vm) -> str:
    slots: list[str] = re.findall(r"rauc\.slot=(\w+)", vm.agent.read("/proc/cmdline").decode())
    return slots[-1]


def _marked_good(vm: Vm, slot: str, timeout: float) -> None:
    """Wait until appliance-mark-good.service has marked the booted ``slot`` good (its TRY flag cleared)."""
    _wait(
        f"slot {slot} marked good",
        timeout,
        lambda: vm.agent.run("systemctl", "is-active", "appliance-mark-good.service")[1].strip() == "active",
        vm,
    )
    env = _grubenv(vm)
    assert _booted_slot(vm) == slot and env[f"{slot}_OK"] == "1" and env[f"{slot}_TRY"] == "0", env


def _broken_os_bundle(disk: Path, dest: Path) -> Path:
    """A signed OS bundle whose slot has the image's kernel and initramfs but no working init: the kernel of the
    slot starts and panics (the kernel's panic=30 restarts the box), as an OS update that cannot come up would."""
    sys.path[:0] = [str(ROOT / "image_build")]
    import image_disk
    import image_rauc

    tree = dest.parent / "broken-slot"
    (tree / "boot").mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img"):
        shutil.copyfile((disk.parent / "slot-a" / "boot" / name).resolve(), tree / "boot" / name)
    (tree / "dev").mkdir()  # where the initramfs moves /dev before it starts init
    (tree / "sbin").mkdir()
    (tree / "sbin/init").write_text("#!/no/such/interpreter\n")
    (tree / "sbin/init").chmod(0o755)
    image = image_disk.make_ext4(dest.parent / "broken.ext4", tree, "appliance-root", 192, 1)
    keys = image_rauc.dev_keys(disk.parent / image_rauc.DEV_KEYS)  # the development keys the build signed with
    return image_rauc.make_bundle(image, dest, "9.9-broken", 1, keys, description="broken OS image (VM test)")


def _bundle_stick(bundle: Path, image: Path) -> Path:
    """A FAT stick holding ``bundle`` at its top."""
    size_kib = bundle.stat().st_size // 1024 + 64 * 1024
    subprocess.run(["mkfs.vfat", "-C", "-F", "32", "-n", "OSUPDATE", str(image), str(size_kib)], check=True,
                   capture_output=True)  # fmt: skip
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mcopy", f"-i{image}", str(bundle), "::/"], check=True, env=env)
    return image


def _rauc_install(vm: Vm, stick: Path, name: str, bundle: str, timeout: float) -> None:
    """Plug the stick, ``rauc install`` its bundle as root (as a service engineer would), pull the stick."""
    vm.attach_stick(stick, name)
    _wait(f"the stick {name} mounted", timeout, lambda: vm.agent.run("findmnt", "-n", "/media/usb/sda")[0] == 0, vm)
    code, out = vm.agent.run("rauc", "install", f"/media/usb/sda/{bundle}", timeout=timeout)
    assert code == 0, out
    vm.detach_stick(name)
    _wait(f"the stick {name} unmounted", timeout, lambda: vm.agent.run("findmnt", "-n", "/media/usb/sda")[0] != 0, vm)


@pytest.mark.timeout(3 * 3600)
@pytest.mark.req("REQ-UPD-1950", "REQ-UPD-1951", "REQ-UPD-1952", "REQ-UPD-1953")
def test_box_updates_its_os_slot_and_falls_back_from_a_broken_one(
    box: tuple[Vm, Steps], disk: Path, tmp_path: Path
) -> None:
    """Slot A is marked good once the service answers; a signed OS bundle whose slot cannot start is installed
    into slot B from a stick with rauc, the box reboots into B, B never comes up, and the box is back on A by
    itself (B's one try used up); the build's OS bundle installed into B boots and is marked good."""
    vm, steps = box
    slow = _timeout_factor(vm)
    good = sorted((disk.parent / "os-bundle").glob("*.raucb"))
    if not good:
        pytest.skip(f"no OS bundle beside {disk} (the build makes one where rauc is installed)")
    if not (disk.parent / "rauc-dev-keys").is_dir():
        pytest.skip(f"{disk} was built with --rauc-keys: the test cannot sign its broken bundle")
    vm.agent.wait_ready(300 * slow)
    _service_ready(vm, 300 * slow)
    _marked_good(vm, "A", 300 * slow)
    steps.done("slot_a_ready_and_marked_good")
    broken = _broken_os_bundle(disk, tmp_path / "os-broken.raucb")
    _rauc_install(vm, _bundle_stick(broken, tmp_path / "broken-stick.img"), "os0", broken.name, 600 * slow)
    env = _grubenv(vm)
    assert env["ORDER"] == "B A" and env["B_OK"] == "1" and env["B_TRY"] == "0", env
    steps.done("broken_bundle_installed")
    serial_before = len(vm.serial())
    _reboot(vm, 900 * slow)  # into B, which panics; the kernel restarts the box after 30 s and GRUB picks A
    tried = vm.serial()[serial_before:]
    # slot B's kernel started (its command line), found no working init and restarted the box (initramfs' panic
    # or the kernel's, both restart after panic=30 s)
    panicked = re.search(r"No init found|Kernel panic|panic= boot argument", tried)
    assert "rauc.slot=B" in tried and panicked, tried[-3000:]
    _service_ready(vm, 300 * slow)
    _marked_good(vm, "A", 300 * slow)
    assert _grubenv(vm)["B_TRY"] == "1"  # B had its one try
    steps.measured("broken_slot_to_back_on_a_s", steps.done("fell_back_to_slot_a"))
    _rauc_install(vm, _bundle_stick(good[-1], tmp_path / "good-stick.img"), "os1", good[-1].name, 1200 * slow)
    steps.measured("os_bundle_install_s", steps.done("good_bundle_installed"))
    _reboot(vm, 300 * slow)
    _service_ready(vm, 300 * slow)
    _marked_good(vm, "B", 300 * slow)
    steps.measured("reboot_into_b_to_marked_good_s", steps.done("slot_b_booted_and_marked_good"))
