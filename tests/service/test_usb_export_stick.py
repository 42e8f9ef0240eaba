"""Export to USB on the box, where sticks are mounted read-only: the stick chosen on the kiosk is made writable by
the root helper for the export (the service only asks, for that very mount), written and verified, then released
(unmounted: safe to remove); a stick the helper does not make writable in time is a named refusal, audited, with
nothing written (REQ-FUNC-1960, REQ-SAFE-1961). Mount points and the read-only flag are simulated here (the root
helper's real remount is a systemd unit: tests/image_build/test_usb_sticks.py checks it)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.print_case import make_case
from svc_helpers import claimed_job

from appliance.commands.serve import create_web_app
from appliance.service import print_export_api
from appliance.service.api_token import issue_api_token
from appliance.service.errors import StickNotWritable
from appliance.service.print_export import list_media
from appliance.service.runtime import ApplianceService
from appliance.service.usb_release import (
    REQUEST_FOLDER,
    WRITABLE_FOLDER,
    StickReleases,
    make_writable,
    release_requested_sticks,
)


class Sticks:
    """Which folders are mounted sticks and which of them are read-only; the root helper's remount."""

    def __init__(self) -> None:
        self.mounted: set[Path] = set()
        self.read_only: set[Path] = set()
        self.remounted: list[str] = []

    def ismount(self, path: Path) -> bool:
        return Path(path) in self.mounted

    def is_read_only(self, path: Path) -> bool:
        return Path(path) in self.read_only

    def plug(self, media: Path, device: str) -> Path:
        stick = media / device
        stick.mkdir()
        self.mounted.add(stick)
        self.read_only.add(stick)
        return stick

    def helper(self, data_dir: Path, media: Path, acts: bool, stop: threading.Event) -> None:
        """The root helper as the path unit runs it: on each request, remount (when ``acts``)."""

        def remount(device: str) -> bool:
            self.remounted.append(device)
            if acts:
                self.read_only.discard(media / device)
            return True

        while not stop.wait(0.05):
            release_requested_sticks(data_dir / WRITABLE_FOLDER, media, remount, boot_time=0, ismount=self.ismount,
                                     done="writable")  # fmt: skip


@pytest.fixture
def box(service_factory: Callable[..., ApplianceService], tmp_path: Path, shared_data: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:  # fmt: skip
    media = tmp_path / "media"
    media.mkdir()
    sticks = Sticks()
    svc = service_factory(**{"import": {"watch_dir": str(media)}})
    svc.start(receiver=False, importer=False)
    _study, job_id, out = claimed_job(svc, shared_data, tmp_path, n=3)
    make_case(shared_data, out)
    svc.catalogue.update_job(job_id, state="done", output_dir=str(out), manifest_path=str(out / "manifest.json"))
    monkeypatch.setattr(print_export_api, "make_writable", functools.partial(
        make_writable, ismount=sticks.ismount, read_only=sticks.is_read_only, timeout_s=3.0, poll_s=0.05))
    monkeypatch.setattr(print_export_api, "StickReleases", functools.partial(StickReleases, ismount=sticks.ismount))
    token = issue_api_token(svc.data_dir)
    client = create_web_app(svc.config, svc, api_token=token).test_client()
    yield {"svc": svc, "job": job_id, "media": media, "client": client, "sticks": sticks,
           "headers": {"Authorization": f"Bearer {token}"}}  # fmt: skip


def _with_helper(box: dict[str, Any], acts: bool, call: Callable[[], Any]) -> Any:
    stop = threading.Event()
    helper = threading.Thread(target=box["sticks"].helper, args=(Path(box["svc"].data_dir), box["media"], acts, stop))
    helper.start()
    try:
        return call()
    finally:
        stop.set()
        helper.join(5)


@pytest.mark.req("REQ-FUNC-1960")
def test_a_read_only_stick_is_offered_made_writable_for_the_export_and_released_after_it(
    box: dict[str, Any],
) -> None:
    sticks, media, svc, job = box["sticks"], box["media"], box["svc"], box["job"]
    stick = sticks.plug(media, "sdb1")
    (media / "sdc1").mkdir()  # a folder that is not a mount: listed as it is (not writable by the box's rules here)
    listed = {m["name"]: m for m in list_media(media, ismount=sticks.ismount, read_only=sticks.is_read_only)}
    assert listed["sdb1"]["writable"] is True and listed["sdb1"]["made_writable"] is True
    assert listed["sdc1"]["made_writable"] is False
    reply = _with_helper(box, True, lambda: box["client"].post(
        f"/api/jobs/{job}/usb-export", headers=box["headers"], json={"medium": "sdb1", "formats": ["stl"]}))
    assert reply.status_code == 200, reply.get_json()
    body = reply.get_json()
    assert body["safe_to_remove"] is True and body["stick"] == "releasing"
    assert sticks.remounted == ["sdb1"] and not sticks.is_read_only(stick)
    assert sorted(p.name for p in (stick / body["folder"]).iterdir()) == sorted(f["name"] for f in body["files"])
    # the writable request is gone (it must never act on the next stick); the release is asked for this mount
    data_dir = Path(svc.data_dir)
    assert list((data_dir / WRITABLE_FOLDER).iterdir()) == []
    assert [p.name for p in (data_dir / REQUEST_FOLDER).iterdir()] == [f"sdb1@{stick.stat().st_dev}"]
    (record,) = svc.audit.records(action="export.usb")
    assert record.details["medium"] == "sdb1"


@pytest.mark.req("REQ-SAFE-1961")
def test_a_stick_left_read_only_is_a_named_audited_refusal_with_nothing_written(box: dict[str, Any]) -> None:
    sticks, media, svc, job = box["sticks"], box["media"], box["svc"], box["job"]
    stick = sticks.plug(media, "sdb1")
    reply = _with_helper(box, False, lambda: box["client"].post(
        f"/api/jobs/{job}/usb-export", headers=box["headers"], json={"medium": "sdb1", "formats": ["stl"]}))
    assert reply.status_code == 409
    assert "did not make USB stick sdb1 writable" in reply.get_json()["error"]
    assert sticks.remounted == ["sdb1"] and list(stick.iterdir()) == []
    data_dir = Path(svc.data_dir)
    assert list((data_dir / WRITABLE_FOLDER).iterdir()) == []  # withdrawn
    assert not (data_dir / REQUEST_FOLDER).exists() or list((data_dir / REQUEST_FOLDER).iterdir()) == []
    (failed,) = svc.audit.records(action="export.usb_failed")
    assert "writable" in failed.details["error"] and not svc.audit.records(action="export.usb")


@pytest.mark.req("REQ-SAFE-1961")
def test_a_stick_pulled_while_waiting_is_named(tmp_path: Path) -> None:
    sticks = Sticks()
    stick = sticks.plug(tmp_path, "sdb1")

    def pulled(path: Path) -> bool:
        sticks.mounted.discard(stick)  # gone after the first look
        return True

    with pytest.raises(StickNotWritable, match="removed before the export"):
        make_writable(tmp_path / "data", stick, ismount=sticks.ismount, read_only=pulled, timeout_s=0.3, poll_s=0.01)
    assert list((tmp_path / "data" / WRITABLE_FOLDER).iterdir()) == []
    plain = tmp_path / "folder"
    plain.mkdir()
    make_writable(tmp_path / "data", plain, ismount=sticks.ismount, read_only=sticks.is_read_only, timeout_s=0)
    assert list((tmp_path / "data" / WRITABLE_FOLDER).iterdir()) == []  # not a stick: nothing asked


@pytest.mark.req("REQ-FUNC-1960", "REQ-SAFE-1961")
def test_the_helper_mounting_the_stick_again_is_waited_for_and_another_stick_is_refused(tmp_path: Path) -> None:
    """The root helper unmounts the stick and mounts it again read-write: for a moment it is no mount point, which
    is not a pulled stick; a different device at that place (another st_dev) is never written to."""
    stick = tmp_path / "sdb1"
    stick.mkdir()
    # what each look at the mount point finds: mounted read-only (the first look, then the first poll),
    # unmounted twice, then mounted read-write
    mounted = iter([True, True, False, False, True])
    looks: list[bool] = []

    def ismount(path: Path) -> bool:
        looks.append(next(mounted))
        return looks[-1]

    make_writable(tmp_path / "data", stick, ismount=ismount, read_only=lambda p: len(looks) < 5, timeout_s=5,
                  poll_s=0.01, device_of=lambda p: 7)  # fmt: skip
    assert looks == [True, True, False, False, True]
    numbers = iter([7, 8])  # the stick it asked for, then another device mounted there
    with pytest.raises(StickNotWritable, match="replaced before the export"):
        make_writable(tmp_path / "data", stick, ismount=lambda p: True, read_only=lambda p: True, timeout_s=5,
                      poll_s=0.01, device_of=lambda p: next(numbers))  # fmt: skip
    assert list((tmp_path / "data" / WRITABLE_FOLDER).iterdir()) == []
