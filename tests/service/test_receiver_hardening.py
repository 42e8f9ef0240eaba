"""Issue 18, receiver findings 6, 7, 9 and 10, each against the real receiver over real associations.

- finding 6: a Series Instance UID reused in two studies mixed their counts in the catalogue.
- finding 7: a study cut short by the quota was reconstructed as if complete.
- finding 9: silent TCP connections filled max_associations and locked modalities out for ~30 s.
- finding 10: truncated or impossible datasets were answered 0x0000 and stored.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from receiver_helpers import SCU_AE, send_datasets, send_raw, split_part10, start_receiver, stored_files, write_raw
from svc_helpers import prepare_ct_series

from appliance.service.catalogue import Catalogue
from appliance.service.runtime import ApplianceService

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk (storescu) is not installed")

Factory = Callable[..., ApplianceService]


T = TypeVar("T")


def _wait(predicate: Callable[[], T], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.mark.req("REQ-FUNC-601")
def test_finding6_series_uid_reused_in_two_studies_keeps_counts_apart(
    service_factory: Factory, shared_data: Path, tmp_path: Path
) -> None:
    svc = start_receiver(service_factory)
    study_a, files_a = prepare_ct_series(shared_data, tmp_path / "a", n=3)
    series = pydicom.dcmread(files_a[0], stop_before_pixels=True).SeriesInstanceUID
    study_b, files_b = prepare_ct_series(shared_data, tmp_path / "b", n=2)
    second = []
    for f in files_b:  # the second study's scanner reuses the first one's Series Instance UID
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = series
        second.append(ds)
    assert send_datasets(svc.receiver.port, [pydicom.dcmread(f) for f in files_a]) == [0] * 3
    assert send_datasets(svc.receiver.port, second) == [0] * 2
    a, b = svc.catalogue.study(study_a), svc.catalogue.study(study_b)
    assert (a.n_instances, b.n_instances) == (3, 2)
    assert [(s["series_instance_uid"], s["n_instances"]) for s in a.series] == [(series, 3)]
    assert [(s["series_instance_uid"], s["n_instances"]) for s in b.series] == [(series, 2)]
    assert len(list((svc.data_dir / "studies" / study_b / series).glob("*.dcm"))) == 2


@pytest.mark.req("REQ-FUNC-601")
def test_finding6_database_keyed_by_series_alone_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE studies (study_uid TEXT PRIMARY KEY, study_hash TEXT NOT NULL, patient_name TEXT NOT NULL"
        " DEFAULT '', patient_id TEXT NOT NULL DEFAULT '', study_date TEXT NOT NULL DEFAULT '', description TEXT"
        " NOT NULL DEFAULT '', source TEXT NOT NULL DEFAULT '', state TEXT NOT NULL DEFAULT 'receiving',"
        " first_received REAL NOT NULL, last_received REAL NOT NULL, findings TEXT NOT NULL DEFAULT '[]');"
        "CREATE TABLE series (series_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, modality TEXT NOT NULL"
        " DEFAULT '', description TEXT NOT NULL DEFAULT '', sop_class_uid TEXT NOT NULL DEFAULT '');"
        "INSERT INTO studies (study_uid, study_hash, first_received, last_received) VALUES ('1.2', 'h', 1, 1);"
        "INSERT INTO series (series_uid, study_uid, modality) VALUES ('1.2.3', '1.2', 'CT');"
    )
    old.commit()
    old.close()
    cat = Catalogue(path)
    tags = {"modality": "MR"}
    cat.add_instance(study_uid="1.9", study_hash="h9", series_uid="1.2.3", sop_uid="1.9.1", path=tmp_path / "x",
                     sha256="0", size=1, source="t", study_tags={}, series_tags=tags)  # fmt: skip
    assert [(s["series_instance_uid"], s["modality"]) for s in cat.study("1.2").series] == [("1.2.3", "CT")]
    assert [(s["series_instance_uid"], s["n_instances"]) for s in cat.study("1.9").series] == [("1.2.3", 1)]


@pytest.mark.req("REQ-SAFE-602", "REQ-SAFE-300")
def test_finding7_study_cut_short_by_the_quota_is_refused_until_the_sender_retries(
    service_factory: Factory, shared_data: Path, tmp_path: Path
) -> None:
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "ct", n=6)
    quota = sum(f.stat().st_size for f in files[:3]) + 2000
    svc = start_receiver(service_factory, dicom={"quota_bytes": quota},
                         reconstruction={"auto": True, "device": "cpu"})  # fmt: skip
    statuses = send_datasets(svc.receiver.port, [pydicom.dcmread(f) for f in files])
    assert statuses[:3] == [0] * 3 and statuses[3:] == [0xA700] * 3
    jobs = _wait(lambda: [j for j in svc.catalogue.jobs(study_uid=study_uid) if j.state in ("refused", "done")])
    assert len(jobs) == 1
    job = jobs[0]
    assert job.state == "refused", job
    (finding,) = [f for f in job.findings if f["code"] == "instances_refused"]
    assert finding["severity"] == "refusal" and finding["details"] == {"refused": 3, "reasons": {"storage full": 3}}
    assert "3 instances" in finding["message"] and "storage full" in finding["message"]
    assert svc.catalogue.study(study_uid).state == "incomplete"
    # space is freed; the scanner re-sends the study: it completes and is reconstructed from all six slices
    svc.store.quota_bytes = 0
    assert send_datasets(svc.receiver.port, [pydicom.dcmread(f) for f in files]) == [0] * 6
    done = _wait(lambda: [j for j in svc.catalogue.jobs(study_uid=study_uid) if j.id != job.id and j.state == "done"])
    assert done and svc.catalogue.study(study_uid).state == "complete"
    assert svc.catalogue.study(study_uid).n_instances == 6


@pytest.mark.req("REQ-ACQ-603", "REQ-ACQ-303")
def test_finding9_silent_connections_are_closed_and_never_fill_the_association_limit(
    service_factory: Factory,
) -> None:
    svc = start_receiver(service_factory, dicom={"max_associations": 2})
    silent = [socket.create_connection(("127.0.0.1", svc.receiver.port)) for _ in range(10)]
    time.sleep(0.3)
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context("1.2.840.10008.1.1")
    started = time.monotonic()
    held = [ae.associate("127.0.0.1", svc.receiver.port, ae_title="EDGE3D") for _ in range(2)]
    assert all(a.is_established for a in held), "silent connections took the association slots"
    assert time.monotonic() - started < 5
    for s in silent:  # the receiver closes each within its 5 s association-request timer
        s.settimeout(8.0)
        assert s.recv(1) == b""
        s.close()
    assert time.monotonic() - started < 9
    for a in held:
        assert a.send_c_echo().Status == 0
        a.release()


@pytest.mark.req("REQ-SAFE-604")
def test_finding10_truncated_or_impossible_datasets_answered_c000_nothing_stored(
    service_factory: Factory, shared_data: Path, tmp_path: Path
) -> None:
    svc = start_receiver(service_factory)
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=2)
    meta, dataset = split_part10(files[0])
    series = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    cut = dataset.index(series.encode()) + 8  # inside the Series Instance UID's value
    name_tag = struct.pack("<HH", 0x0010, 0x0010) + b"PN"
    at = dataset.index(name_tag)
    huge = dataset[: at + 6] + b"\xf0\xff" + dataset[at + 8 :]  # PatientName with a 2-byte length of 0xFFF0
    pixel = dataset.index(struct.pack("<HH", 0x7FE0, 0x0010))
    impossible = dataset[: pixel + 8] + struct.pack("<L", 0xFFFFFFF0) + dataset[pixel + 12 :]
    broken = [
        write_raw(tmp_path / "cut_mid_header.dcm", meta, dataset[:cut]),
        write_raw(tmp_path / "cut_in_pixels.dcm", meta, dataset[: len(dataset) - 1000]),
        write_raw(tmp_path / "name_length.dcm", meta, huge),
        write_raw(tmp_path / "length_fffffff0.dcm", meta, impossible),
    ]
    assert send_raw(svc.receiver.port, broken) == [0xC000] * 4
    assert not stored_files(svc) and not svc.catalogue.studies()
    assert not list((svc.data_dir / "studies").rglob("*.tmp"))
    # the receiver is unharmed: the intact instance is stored
    assert send_raw(svc.receiver.port, [files[1]]) == [0]
    assert list(stored_files(svc)) == [pydicom.dcmread(files[1], stop_before_pixels=True).SOPInstanceUID]


@pytest.mark.req("REQ-SAFE-604")
def test_finding10_native_pixel_data_shorter_than_the_image_is_refused(
    service_factory: Factory, shared_data: Path, tmp_path: Path
) -> None:
    svc = start_receiver(service_factory)
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=1)
    ds = pydicom.dcmread(files[0])
    ds.decompress()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # well-formed element, half an image
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    assert send_datasets(svc.receiver.port, [ds]) == [0xC000]
    assert not stored_files(svc)
