"""Issue 18, receiver finding 5: two copies of one instance arriving at the same moment over two associations.

Before: both got 0x0000 and one was gone (the store looked the instance up outside its lock), no copy kept aside,
no alarm, no audit (8 of 10 tries). Now the duplicate check, the move into place and the catalogue row are one
transaction: under any interleaving one copy is filed, the other is kept aside (or found identical).
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from receiver_helpers import SCU_AE, hold_reactor, start_receiver
from svc_helpers import prepare_ct_series

from appliance.service.runtime import ApplianceService

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk (storescu) is not installed")

ROUNDS = 10


def _send_at_once(port: int, datasets: list[pydicom.Dataset]) -> list[int]:
    """Each dataset on its own, already established association, released at the same moment."""
    ae = AE(ae_title=SCU_AE)
    ds0 = datasets[0]
    ae.add_requested_context(ds0.SOPClassUID, ds0.file_meta.TransferSyntaxUID)
    assocs = [ae.associate("127.0.0.1", port, ae_title="EDGE3D") for _ in datasets]
    assert all(a.is_established for a in assocs)
    barrier = threading.Barrier(len(datasets))
    statuses = [-1] * len(datasets)

    def send(i: int) -> None:
        hold_reactor(assocs[i])
        barrier.wait()
        statuses[i] = int(assocs[i].send_c_store(datasets[i]).Status)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(datasets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for a in assocs:
        a.release()
    return statuses


@pytest.mark.req("REQ-SAFE-600", "REQ-SAFE-302")
def test_finding5_two_different_copies_at_once_none_lost(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc = start_receiver(service_factory)
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=1)
    for r in range(ROUNDS):
        copies = []
        uid = generate_uid()
        for which in ("A", "B"):
            ds = pydicom.dcmread(files[0])
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
            ds.SeriesDescription = f"copy {which}"
            copies.append(ds)
        assert _send_at_once(svc.receiver.port, copies) == [0, 0], f"round {r}"
        (filed,) = (svc.data_dir / "studies").rglob(f"{uid}.dcm")
        aside = list((svc.data_dir / "duplicates" / uid).glob("*.dcm"))
        assert len(aside) == 1, f"round {r}: the second copy was not kept aside"
        kept = {pydicom.dcmread(p).SeriesDescription for p in [filed, *aside]}
        assert kept == {"copy A", "copy B"}, f"round {r}: a copy was lost"
        row = svc.catalogue.instance(uid)
        assert row is not None and row[0] == str(filed)
        assert row[1] == hashlib.sha256(filed.read_bytes()).hexdigest(), f"round {r}: catalogue names the lost copy"
    records = svc.audit.records(action="instance.duplicate_kept_aside")
    assert len(records) == ROUNDS and all(rec.requirement == "REQ-SAFE-302" for rec in records)
    assert any(a["code"] == "duplicate_instance" for a in svc.health()["alarms"])


@pytest.mark.req("REQ-SAFE-600")
def test_finding5_identical_copies_at_once_stored_once(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc = start_receiver(service_factory)
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=1)
    for r in range(ROUNDS // 2):
        ds = pydicom.dcmread(files[0])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        assert _send_at_once(svc.receiver.port, [ds, ds]) == [0, 0], f"round {r}"
        assert len(list((svc.data_dir / "studies").rglob(f"{ds.SOPInstanceUID}.dcm"))) == 1
    assert not (svc.data_dir / "duplicates").exists()
    assert not svc.audit.records(action="instance.duplicate_kept_aside")
    assert svc.catalogue.study(str(ds.StudyInstanceUID)).n_instances == ROUNDS // 2
