"""Issue 20, sixth pass: fewer thread wake-ups per instance without changing what is acknowledged.

- The group commit hands over: everything that waited while a batch was being committed is committed as the next
  batch, led by the first of those threads, and every caller gets its own result.
- A plain TCP association now blocks in the kernel with ``SO_RCVTIMEO`` instead of Python's polling timeout: an
  association that stops sending (between PDUs or in the middle of one) is still aborted after
  ``network_timeout_seconds`` and audited, nothing is stored, and the receiver goes on serving.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from receiver_helpers import SCU_AE, start_receiver, stored_files
from svc_helpers import prepare_ct_series

from appliance.service.receiver.commit import GroupCommitter, StageTimings
from appliance.service.runtime import ApplianceService
from appliance.service.storage import StagedInstance, StoreResult, summarise

Factory = Callable[..., ApplianceService]


def _wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.mark.req("REQ-PERF-1921", "REQ-SAFE-301")
def test_instances_waiting_during_a_batch_are_committed_together_as_the_next_batch(
    service_factory: Factory, shared_data: Path, tmp_path: Path
) -> None:
    svc = service_factory()
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=1)
    data = files[0].read_bytes()
    template = summarise(pydicom.dcmread(files[0], stop_before_pixels=True))
    timings = StageTimings()
    committer = GroupCommitter(svc.store, timings)
    first_batch_may_end = threading.Event()
    real_commit = svc.store.commit
    seen: list[int] = []

    def held_commit(batch: Sequence[StagedInstance]) -> list[StoreResult]:
        seen.append(len(batch))
        if len(seen) == 1:
            assert first_batch_may_end.wait(30)
        return real_commit(batch)

    svc.store.commit = held_commit  # type: ignore[method-assign]
    uids = [generate_uid() for _ in range(8)]
    outcomes: dict[str, str] = {}

    def sender(uid: str) -> None:
        staged = svc.store.stage([data], dataclasses.replace(template, sop_uid=uid), "test")
        outcomes[uid] = committer.commit(staged).outcome

    threads = [threading.Thread(target=sender, args=(uids[0],))]
    threads[0].start()
    _wait_until(lambda: len(seen) == 1)  # the first caller leads a batch of its own instance and is held there
    threads += [threading.Thread(target=sender, args=(u,)) for u in uids[1:]]
    for t in threads[1:]:
        t.start()
    _wait_until(lambda: len(committer._queue) == 7)  # the other seven wait for the batch being committed
    first_batch_may_end.set()
    for t in threads:
        t.join(60)
    committer.stop()
    assert seen == [1, 7]
    assert timings.batch_sizes == Counter({1: 1, 7: 1}) and timings.batches == 2
    assert outcomes == {u: "stored" for u in uids}
    assert all(svc.catalogue.instance(u) is not None for u in uids)
    assert set(stored_files(svc)) == set(uids)


def _associate(port: int) -> tuple[AE, Association]:
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="EDGE3D")
    assert assoc.is_established
    return ae, assoc


def _closed_records(svc: ApplianceService) -> list[str]:
    return [str(r.details.get("how")) for r in svc.audit.records(action="association.closed")]


@pytest.mark.req("REQ-ACQ-603", "REQ-PERF-1921")
def test_an_association_that_stops_sending_is_aborted_after_the_network_timeout(service_factory: Factory) -> None:
    svc = start_receiver(service_factory, dicom={"network_timeout_seconds": 1.0})
    assert svc.receiver is not None
    _, assoc = _associate(svc.receiver.port)
    started = time.monotonic()
    _wait_until(lambda: _closed_records(svc) == ["aborted"], timeout=10)
    assert 0.9 <= time.monotonic() - started < 6
    _wait_until(lambda: not assoc.is_established, timeout=10)
    assert assoc.is_aborted


@pytest.mark.req("REQ-ACQ-603", "REQ-PERF-1921")
def test_an_association_stalled_in_the_middle_of_a_pdu_is_aborted(
    service_factory: Factory, shared_data: Path, tmp_path: Path
) -> None:
    svc = start_receiver(service_factory, dicom={"network_timeout_seconds": 1.0})
    assert svc.receiver is not None
    port = svc.receiver.port
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=1)
    _, assoc = _associate(port)
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert isinstance(raw, socket.socket)
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID
    # a P-DATA-TF promising a 60000-byte command fragment of which only 100 bytes ever arrive
    raw.sendall(struct.pack(">BxL", 4, 60006) + struct.pack(">LBB", 60002, 1, 1) + b"\0" * 100)
    started = time.monotonic()
    _wait_until(lambda: _closed_records(svc) == ["aborted"], timeout=10)
    assert time.monotonic() - started < 6
    assert uid not in stored_files(svc) and not svc.catalogue.studies()
    assert not list((svc.data_dir / "studies").rglob("*.tmp"))
    # the receiver is unharmed: a new association is served
    _, again = _associate(port)
    assert again.send_c_echo().Status == 0
    again.release()
