"""USB sticks released after their import: the service asks (a request file), the root helper unmounts only the
very stick still mounted there, the kiosk's import report says "released" (safe to remove); a stick whose import
failed is kept mounted with the reason (REQ-FUNC-1900, REQ-SAFE-1901). Mount points are simulated (``ismount``);
the VM test (tests/image_build/test_vm_boot.py) does it with a real stick and systemd."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from svc_helpers import FakeReconstruct, prepare_ct_series

from appliance.service.importer import ImportWatcher
from appliance.service.runtime import ApplianceService
from appliance.service.usb_release import REQUEST_FOLDER, StickRelease, StickReleases, release_requested_sticks


class Mounts:
    """Which folders count as mount points, and the root helper's stop (it unmounts: the folder goes)."""

    def __init__(self) -> None:
        self.mounted: set[Path] = set()
        self.stopped: list[str] = []

    def ismount(self, path: Path) -> bool:
        return Path(path) in self.mounted

    def plug(self, watch: Path, device: str, files: list[Path]) -> Path:
        stick = watch / device
        stick.mkdir()
        for f in files:
            shutil.copy(f, stick / f.name)
        self.mounted.add(stick)
        return stick

    def stop(self, device: str) -> bool:
        self.stopped.append(device)
        return True


def _helper(data_dir: Path, watch: Path, mounts: Mounts, stop: Callable[[str], bool] | None = None) -> dict[str, str]:
    return release_requested_sticks(data_dir / REQUEST_FOLDER, watch, stop or mounts.stop, boot_time=0,
                                    ismount=mounts.ismount)  # fmt: skip


@pytest.fixture
def box(service_factory: Callable[..., ApplianceService], tmp_path: Path) -> tuple[ApplianceService, Path, Mounts]:
    watch = tmp_path / "media-usb"
    watch.mkdir()
    svc = service_factory(FakeReconstruct(), **{"import": {"watch_dir": str(watch), "poll_seconds": 0.1}})
    return svc, watch, Mounts()


@pytest.mark.req("REQ-FUNC-1900")
def test_a_stick_is_released_once_its_study_is_imported_and_reported_safe_to_remove(
    box: tuple[ApplianceService, Path, Mounts], shared_data: Path, tmp_path: Path
) -> None:
    svc, watch, mounts = box
    releases = StickReleases(svc.data_dir, ismount=mounts.ismount)
    watcher = ImportWatcher(svc.import_context, releases=releases)
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "src", n=3)
    stick = mounts.plug(watch, "sda", files)
    (report,) = watcher.scan_once()
    assert report.stored == 3 and svc.catalogue.study(study_uid) is not None
    assert report.release is not None and report.release.state == "releasing"
    requests = svc.data_dir / REQUEST_FOLDER
    asked = f"sda@{stick.stat().st_dev}"
    assert [p.name for p in requests.iterdir()] == [asked]
    assert watcher.scan_once() == [] and report.release.state == "releasing"  # still mounted: not yet

    def unmount(device: str) -> bool:  # what stopping appliance-usb-stick@sda.service does
        mounts.stopped.append(device)
        mounts.mounted.discard(watch / device)
        (watch / device).rename(tmp_path / "pulled")
        return True

    assert _helper(svc.data_dir, watch, mounts, unmount) == {asked: "released"}
    assert mounts.stopped == ["sda"] and not list(requests.iterdir())
    assert watcher.scan_once() == []
    assert report.to_dict()["release"] == {"device": "sda", "state": "released", "problem": ""}


@pytest.mark.req("REQ-SAFE-1901")
def test_a_stick_whose_import_failed_is_kept_mounted_and_says_why(
    box: tuple[ApplianceService, Path, Mounts], shared_data: Path, tmp_path: Path
) -> None:
    svc, watch, mounts = box
    watcher = ImportWatcher(svc.import_context, releases=StickReleases(svc.data_dir, ismount=mounts.ismount))
    empty = mounts.plug(watch, "sdb", [])
    (empty / "README.TXT").write_text("not a dicom file")
    (first,) = watcher.scan_once()
    assert first.release is not None and first.release.state == "kept"
    assert "no DICOM images found" in first.release.problem and first.to_dict()["problem"]

    _, files = prepare_ct_series(shared_data, tmp_path / "src", n=2)
    mounts.plug(watch, "sdc", files)
    watcher.read_timeout_s = -1.0  # every read overruns its time: a failing stick
    (second,) = watcher.scan_once()
    assert second.release is not None and second.release.state == "kept"
    assert second.failures and "2 file(s) could not be taken" in second.release.problem
    assert "reading took longer" in second.release.problem
    assert not (svc.data_dir / REQUEST_FOLDER).exists() or not list((svc.data_dir / REQUEST_FOLDER).iterdir())
    assert _helper(svc.data_dir, watch, mounts) == {} and mounts.stopped == []


@pytest.mark.req("REQ-FUNC-1900")
def test_a_plain_folder_or_an_unmounted_stick_folder_is_not_released(
    box: tuple[ApplianceService, Path, Mounts], shared_data: Path, tmp_path: Path
) -> None:
    svc, watch, mounts = box
    watcher = ImportWatcher(svc.import_context, releases=StickReleases(svc.data_dir, ismount=mounts.ismount))
    _, files = prepare_ct_series(shared_data, tmp_path / "src", n=1)
    (watch / "sdd").mkdir()  # a mount folder before its mount (or after its release): no medium
    folder = watch / "CDROM"  # not a device name: a folder someone copied, never released
    folder.mkdir()
    shutil.copy(files[0], folder / files[0].name)
    (report,) = watcher.scan_once()
    assert report.medium == "CDROM" and report.stored == 1 and report.release is None


@pytest.mark.req("REQ-FUNC-1900")
def test_the_root_helper_acts_only_on_the_very_stick_still_mounted(tmp_path: Path) -> None:
    requests, media, mounts = tmp_path / "requests", tmp_path / "media", Mounts()
    requests.mkdir()
    media.mkdir()
    for device in ("sda", "sdb"):
        (media / device).mkdir()
        mounts.mounted.add(media / device)
    dev = (media / "sda").stat().st_dev
    names = [f"sda@{dev}", f"sdb@{dev + 1}", f"sdz@{dev}", "sda", "SDA@1", "sda;reboot@1", ".hidden"]
    for name in names:
        (requests / name).write_bytes(b"")
    (requests / "folder@1").mkdir()
    outcome = release_requested_sticks(requests, media, mounts.stop, boot_time=0, ismount=mounts.ismount)
    assert outcome[f"sda@{dev}"] == "released" and mounts.stopped == ["sda"]
    assert all(outcome[n].startswith("dropped") for n in names[1:])  # another stick, gone, malformed
    assert outcome["folder@1"].startswith("dropped") and not list(requests.iterdir())

    (requests / f"sda@{dev}").write_bytes(b"")
    os.utime(requests / f"sda@{dev}", (time.time() - 3600, time.time() - 3600))
    assert release_requested_sticks(requests, media, mounts.stop, boot_time=time.time() - 60,
                                     ismount=mounts.ismount) == {
        f"sda@{dev}": "dropped: asked before this boot or longer ago than the service waits"}
    assert mounts.stopped == ["sda"]  # a request from before this boot is never acted on


@pytest.mark.req("REQ-FUNC-1900")
def test_a_release_the_root_helper_does_not_do_in_time_is_reported(tmp_path: Path) -> None:
    mounts = Mounts()
    stick = tmp_path / "sda"
    stick.mkdir()
    mounts.mounted.add(stick)
    releases = StickReleases(tmp_path / "data", ismount=mounts.ismount, timeout_s=0.0)
    release = releases.request(stick)
    assert (releases.requests / release.request).exists()
    time.sleep(0.01)
    releases.follow(release, stick)
    assert release.state == "not_released" and "still mounted read-only" in release.problem
    assert not (releases.requests / release.request).exists()  # withdrawn: never acted on for the next stick
    kept = StickRelease("sdb", "kept", "the import failed")
    releases.follow(kept, tmp_path / "sdb")
    assert kept.state == "kept"  # a kept stick stays as it is until pulled


@pytest.mark.req("REQ-FUNC-1900")
def test_the_root_helper_reads_the_box_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m appliance.service.usb_release --config``: the requests below the configured data folder, the
    sticks below import.watch_dir; a box without a watched folder is told so (exit 2), nothing is touched."""
    from appliance.service.usb_release import main

    data, media = tmp_path / "data", tmp_path / "media"
    (data / REQUEST_FOLDER).mkdir(parents=True)
    media.mkdir()
    (data / REQUEST_FOLDER / "sda@1").write_bytes(b"")  # sda is not mounted: dropped
    config = tmp_path / "appliance.toml"
    config.write_text(f'[storage]\ndata_dir = "{data}"\n[import]\nwatch_dir = "{media}"\n')
    assert main(["--config", str(config)]) == 0
    assert '"sda@1": "dropped: that stick is no longer mounted there"' in capsys.readouterr().out
    assert not list((data / REQUEST_FOLDER).iterdir())
    config.write_text(f'[storage]\ndata_dir = "{data}"\n')
    assert main(["--config", str(config)]) == 2
    assert "import.watch_dir is not configured" in capsys.readouterr().err


@pytest.mark.req("REQ-FUNC-1900")
def test_a_request_is_withdrawn_when_the_stick_is_pulled_first(tmp_path: Path) -> None:
    """The next stick in the same port gets the same device number: a request the helper has not acted on yet
    must not outlive its stick (else the helper would release the next stick before its import)."""
    mounts = Mounts()
    stick = tmp_path / "media" / "sda"
    stick.mkdir(parents=True)
    mounts.mounted.add(stick)
    releases = StickReleases(tmp_path / "data", ismount=mounts.ismount)
    release = releases.request(stick)
    mounts.mounted.discard(stick)
    stick.rmdir()  # pulled: the stick unit unmounts and removes the folder
    releases.follow(release, stick)
    assert release.state == "released" and not list(releases.requests.iterdir())
    stick.mkdir()  # the next stick, same device name and number
    mounts.mounted.add(stick)
    assert release_requested_sticks(releases.requests, stick.parent, mounts.stop, boot_time=0,
                                     ismount=mounts.ismount) == {}  # fmt: skip
    assert mounts.stopped == []
