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
from appliance.service.storage import summarise


@pytest.mark.req("REQ-SAFE-301", "REQ-PERF-606")
def test_group_commit_stores_every_instance_of_parallel_senders_in_fewer_batches(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc = service_factory()
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=1)
    data = files[0].read_bytes()
    timings = StageTimings()
    committer = GroupCommitter(svc.store, timings)
    uids: list[str] = []
    results: list[str] = []

    def sender(k: int) -> None:
        for _ in range(5):
            uid = generate_uid()
            summary = dataclasses.replace(summarise(pydicom.dcmread(files[0], stop_before_pixels=True)), sop_uid=uid)
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
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=1)
    data = files[0].read_bytes()
    summary = summarise(pydicom.dcmread(files[0], stop_before_pixels=True))
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
