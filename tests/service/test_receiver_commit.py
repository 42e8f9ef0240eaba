"""The store's two steps (stage, then group commit) on their own: batches, failures, retries (issue 20)."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid
from svc_helpers import prepare_ct_series

from appliance.service.catalogue import InstanceBatch
from appliance.service.errors import StorageError
from appliance.service.receiver.commit import GroupCommitter, StageTimings
from appliance.service.runtime import ApplianceService
from appliance.service.storage import InstanceSummary, summarise


def _one_ct_instance(shared_data: Path, tmp_path: Path) -> tuple[bytes, InstanceSummary]:
    """The bytes and the catalogue keys of one real CT instance (a fresh copy under ``tmp_path``)."""
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=1)
    return files[0].read_bytes(), summarise(pydicom.dcmread(files[0], stop_before_pixels=True))


@pytest.mark.req("REQ-SAFE-301", "REQ-PERF-606")
def test_group_commit_stores_every_instance_of_parallel_senders_in_fewer_batches(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc = service_factory()
    data, base = _one_ct_instance(shared_data, tmp_path)
    timings = StageTimings()
    committer = GroupCommitter(svc.store, timings)
    uids: list[str] = []
    results: list[str] = []

    def sender(k: int) -> None:
        for _ in range(5):
            uid = generate_uid()
            summary = dataclasses.replace(base, sop_uid=uid)
            uids.append(uid)
            results.append(committer.commit(svc.store.stage([data], summary, f"test:{k}")).outcome)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    committer.stop()
    assert results == ["stored"] * 40
    assert all(svc.catalogue.instance(u) is not None for u in uids)
    assert timings.batches < 40 and timings.batches >= 1
    assert not list((svc.data_dir / "studies").rglob("*.tmp"))


@pytest.mark.req("REQ-SAFE-301", "REQ-SAFE-600")
def test_failed_commit_is_not_acknowledged_and_its_retry_is_stored_once(
    service_factory: Callable[..., ApplianceService],
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = service_factory()
    data, summary = _one_ct_instance(shared_data, tmp_path)
    add = InstanceBatch.add

    def broken(self: InstanceBatch, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(InstanceBatch, "add", broken)
    with pytest.raises(StorageError):
        svc.store.commit([svc.store.stage([data], summary, "test")])
    assert svc.catalogue.instance(summary.sop_uid) is None  # not recorded, so never acknowledged
    monkeypatch.setattr(InstanceBatch, "add", add)
    (result,) = svc.store.commit([svc.store.stage([data], summary, "test")])  # the sender's retry
    assert result.outcome in ("stored", "identical")
    assert svc.catalogue.instance(summary.sop_uid) is not None
    assert not (svc.data_dir / "duplicates").exists()
    assert svc.catalogue.stored_bytes() == svc.store._stored == len(data)
    assert not list((svc.data_dir / "studies").rglob("*.tmp"))


@pytest.mark.req("REQ-SAFE-1840", "REQ-SAFE-600", "REQ-SAFE-302")
def test_no_hash_on_the_acknowledgement_path_until_a_copy_arrives_again(
    service_factory: Callable[..., ApplianceService],
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hashlib

    from appliance import fsio

    svc = service_factory()
    data, base = _one_ct_instance(shared_data, tmp_path)
    hashed: list[int] = []  # sizes of what was hashed (files, or data given to sha256() at once)
    real_sha256, real_sha256_file = hashlib.sha256, fsio.sha256_file

    class Counted:
        """A SHA-256 object that notes the size of everything it hashes."""

        def __init__(self, data: bytes = b"") -> None:
            self._h = real_sha256()
            self.update(data)

        def update(self, data: bytes) -> None:
            hashed.append(len(data))
            self._h.update(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._h, name)

    def counted(data: bytes = b"", **kwargs: Any) -> Any:
        return Counted(data)

    def counted_file(path: Path) -> str:
        hashed.append(path.stat().st_size)
        return real_sha256_file(path)

    monkeypatch.setattr(hashlib, "sha256", counted)
    monkeypatch.setattr(fsio, "sha256_file", counted_file)
    uids = [generate_uid() for _ in range(3)]
    staged = [svc.store.stage([data], dataclasses.replace(base, sop_uid=u), "test") for u in uids]
    assert [r.outcome for r in svc.store.commit(staged)] == ["stored"] * 3
    assert not [n for n in hashed if n >= 1024], "a new instance was hashed on the acknowledgement path"
    monkeypatch.undo()
    assert all(row is not None and row[1] == "" for row in map(svc.catalogue.instance, uids))

    # the same content again: identical, stored once, the held copy's row gets its hash
    (again,) = svc.store.commit([svc.store.stage([data], dataclasses.replace(base, sop_uid=uids[0]), "test")])
    assert again.outcome == "identical" and again.sha256 == hashlib.sha256(data).hexdigest()
    row = svc.catalogue.instance(uids[0])
    assert row is not None and row[1] == hashlib.sha256(data).hexdigest()
    # different content under a held UID (its row has no hash yet): kept aside under the copy's SHA-256
    changed = data[:-2] + bytes([data[-2] ^ 0xFF, data[-1]])
    (aside,) = svc.store.commit([svc.store.stage([changed], dataclasses.replace(base, sop_uid=uids[1]), "test")])
    assert aside.outcome == "duplicate"
    assert aside.path == svc.data_dir / "duplicates" / uids[1] / f"{hashlib.sha256(changed).hexdigest()}.dcm"
    assert aside.path.read_bytes() == changed
    assert svc.store.path_for(dataclasses.replace(base, sop_uid=uids[1])).read_bytes() == data
    row = svc.catalogue.instance(uids[1])
    assert row is not None and row[1] == hashlib.sha256(data).hexdigest()
    # two copies of a new instance in one batch: the second is compared with the first, filed a moment before
    uid = generate_uid()
    pair = [svc.store.stage([d], dataclasses.replace(base, sop_uid=uid), "test") for d in (data, changed)]
    assert [r.outcome for r in svc.store.commit(pair)] == ["stored", "duplicate"]
    row = svc.catalogue.instance(uid)
    assert row is not None and row[1] == hashlib.sha256(data).hexdigest()


@pytest.mark.req("REQ-SAFE-1922", "REQ-SAFE-301", "REQ-SAFE-600")
def test_a_placed_instance_whose_batch_fails_is_found_identical_by_the_retry_and_stored_once(
    service_factory: Callable[..., ApplianceService],
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = service_factory()
    data, summary = _one_ct_instance(shared_data, tmp_path)
    final = svc.store.path_for(summary)
    placed = svc.store.place(svc.store.stage([data], summary, "test"))
    assert placed.placed and placed.temp == final and final.read_bytes() == data  # under its final name already
    add = InstanceBatch.add

    def broken(self: InstanceBatch, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(InstanceBatch, "add", broken)
    with pytest.raises(StorageError):
        svc.store.commit([placed])
    assert svc.catalogue.instance(summary.sop_uid) is None  # never acknowledged
    assert final.read_bytes() == data  # the placed file stays (durable; the retry or reconcile records it)
    monkeypatch.setattr(InstanceBatch, "add", add)
    retry = svc.store.place(svc.store.stage([data], summary, "test"))  # the sender's retry
    assert not retry.placed and retry.temp != final  # never over an existing name
    (result,) = svc.store.commit([retry])
    assert result.outcome == "identical" and result.path == final
    row = svc.catalogue.instance(summary.sop_uid)
    assert row is not None and row[0] == str(final)
    assert not (svc.data_dir / "duplicates").exists()
    assert svc.catalogue.stored_bytes() == svc.store._stored == len(data)
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no temporary file left


@pytest.mark.req("REQ-SAFE-1922", "REQ-SAFE-302")
def test_placing_never_replaces_a_file_already_at_the_final_name(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc = service_factory()
    data, summary = _one_ct_instance(shared_data, tmp_path)
    final = svc.store.path_for(summary)
    final.parent.mkdir(parents=True)
    held = data[:-2] + bytes([data[-2] ^ 0xFF, data[-1]])
    final.write_bytes(held)  # on disk, unrecorded (written before a crash)
    staged = svc.store.place(svc.store.stage([data], summary, "test"))
    assert not staged.placed and final.read_bytes() == held
    (result,) = svc.store.commit([staged])
    assert result.outcome == "duplicate" and result.path.read_bytes() == data  # the new copy kept aside
    assert final.read_bytes() == held
    # a recorded instance is not placed either (looked up first): the commit decides by content
    (other,) = svc.store.commit([svc.store.stage([data], dataclasses.replace(summary, sop_uid=generate_uid()), "t")])
    assert other.outcome == "stored"
    again = svc.store.place(svc.store.stage([data], dataclasses.replace(summary, sop_uid=other.path.stem), "t"))
    assert not again.placed
    assert svc.store.commit([again])[0].outcome == "identical"
