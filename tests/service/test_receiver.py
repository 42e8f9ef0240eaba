"""DICOM receiver against real peers: dcmtk echoscu/storescu on loopback, and pynetdicom SCUs for edge cases."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE
from receiver_helpers import hold_reactor
from svc_helpers import FakeReconstruct, free_port, prepare_ct_series

from appliance.service.runtime import ApplianceService

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk (storescu) is not installed")

SCU_AE = "STORESCU"
ENHANCED = [
    "dicom-edge/pydicom-data/pydicom-data_wheel/emri_small.dcm",
    "dicom-edge/pydicom-data/pydicom-data_wheel/emri_small_big_endian.dcm",
    "dicom-edge/pydicom-data/pydicom-data_wheel/emri_small_RLE.dcm",
    "dicom-edge/pydicom-data/pydicom-data_wheel/emri_small_jpeg_ls_lossless.dcm",
    "dicom-edge/pydicom-data/pydicom-data_wheel/emri_small_jpeg_2k_lossless.dcm",
    "dicom-edge/pydicom-data/pydicom-data_wheel/eCT_Supplemental.dcm",
    "dicom-edge/dcm_qa_enh/In/Siemens/XA10/6_1.dcm",
]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


#: storescu's option proposing a file's own transfer syntax (dcmtk 3.6 proposes uncompressed ones otherwise).
STORESCU_TS_OPTION = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.5": "-xr",
}


def storescu(
    port: int, files: list[Path], aet: str = SCU_AE, *extra: str
) -> subprocess.CompletedProcess[str]:
    """dcmtk storescu proposing the files' own transfer syntax (all files must share it): no transcoding."""
    ts = {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files}
    assert len(ts) == 1, ts
    option = STORESCU_TS_OPTION.get(ts.pop())
    opts = [option] if option else []
    return _run(
        ["storescu", *opts, *extra, "-aet", aet, "-aec", "EDGE3D", "127.0.0.1", str(port), *map(str, files)]
    )


def dcmsend(port: int, files: list[Path], aet: str = SCU_AE) -> subprocess.CompletedProcess[str]:
    """dcmtk dcmsend (proposes each file's original transfer syntax)."""
    return _run(["dcmsend", "-aet", aet, "-aec", "EDGE3D", "127.0.0.1", str(port), *map(str, files)])


@pytest.fixture
def receiver(service_factory: Callable[..., ApplianceService]) -> Iterator[Callable[..., ApplianceService]]:
    def start(**sections: Any) -> ApplianceService:
        dicom = {"port": free_port(), "allowed": [{"ae_title": SCU_AE, "host": "127.0.0.1"}]}
        dicom.update(sections.pop("dicom", {}))
        svc = service_factory(FakeReconstruct(), dicom=dicom, reconstruction={"auto": False}, **sections)
        svc.start(importer=False)
        return svc

    yield start


def _stored(svc: ApplianceService) -> dict[str, Path]:
    return {p.stem: p for p in (svc.data_dir / "studies").rglob("*.dcm")}


@pytest.mark.req("REQ-ACQ-300")
def test_echo(receiver: Callable[..., ApplianceService]) -> None:
    svc = receiver()
    r = _run(["echoscu", "-aet", SCU_AE, "-aec", "EDGE3D", "127.0.0.1", str(svc.receiver.port)])
    assert r.returncode == 0, r.stderr
    assert [x.action for x in svc.audit.records(action="association")][:1] == ["association.accepted"]


@pytest.mark.req("REQ-ACQ-301", "REQ-TRACE-002")
def test_unknown_ae_and_wrong_address_rejected(receiver: Callable[..., ApplianceService]) -> None:
    svc = receiver(dicom={"allowed": [{"ae_title": SCU_AE, "host": "127.0.0.1"},
                                      {"ae_title": "SCANNER1", "host": "10.0.0.5"}]})  # fmt: skip
    port = svc.receiver.port
    bad = _run(["echoscu", "-aet", "INTRUDER", "-aec", "EDGE3D", "127.0.0.1", str(port)])
    assert bad.returncode != 0 and "Rejected" in (bad.stdout + bad.stderr)
    wrong_ip = _run(["echoscu", "-aet", "SCANNER1", "-aec", "EDGE3D", "127.0.0.1", str(port)])
    assert wrong_ip.returncode != 0
    wrong_called = _run(["echoscu", "-aet", SCU_AE, "-aec", "OTHER", "127.0.0.1", str(port)])
    assert wrong_called.returncode != 0
    time.sleep(0.2)
    rejected = svc.audit.records(action="association.rejected")
    assert [r.actor for r in rejected] == ["dicom:INTRUDER@127.0.0.1", "dicom:SCANNER1@127.0.0.1",
                                           f"dicom:{SCU_AE}@127.0.0.1"]  # fmt: skip
    assert "not allowed from 127.0.0.1" in rejected[1].details["reason"]
    assert "not ours" in rejected[2].details["reason"]
    assert not svc.audit.records(action="association.accepted")


@pytest.mark.req("REQ-ACQ-300", "REQ-SAFE-301")
def test_storescu_real_ct_series(receiver: Callable[..., ApplianceService], shared_data: Path,
                                 tmp_path: Path) -> None:  # fmt: skip
    svc = receiver()
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "ct")
    r = storescu(svc.receiver.port, files)
    assert r.returncode == 0, r.stderr
    stored = _stored(svc)
    assert len(stored) == 20
    for f in files:
        sent = pydicom.dcmread(f)
        got_path = stored[sent.SOPInstanceUID]
        assert got_path.read_bytes()[:128] == b"\0" * 128
        got = pydicom.dcmread(got_path)
        assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID  # JPEG 2000, untouched
        assert got.PixelData == sent.PixelData
    study = svc.catalogue.study(study_uid)
    assert study.n_instances == 20 and study.series[0]["modality"] == "CT"
    time.sleep(0.3)
    (closed,) = svc.audit.records(action="association.closed")
    assert closed.details["stored"] == 20 and closed.details["studies"] == [svc.study_hash(study_uid)]
    # sending again is idempotent
    assert storescu(svc.receiver.port, files[:3]).returncode == 0
    assert len(_stored(svc)) == 20


@pytest.mark.req("REQ-ACQ-300")
def test_every_transfer_syntax_and_enhanced_objects(
    receiver: Callable[..., ApplianceService], shared_data: Path
) -> None:
    svc = receiver()
    ts_files = sorted((shared_data / "dicom-edge/dcm_qa_ts/In").glob("*.dcm"))
    assert len(ts_files) == 9
    enhanced = [shared_data / p for p in ENHANCED if (shared_data / p).is_file()]
    sent = {}
    for f in ts_files + enhanced:
        ds = pydicom.dcmread(f)
        sent[ds.SOPInstanceUID] = (f, ds.file_meta.TransferSyntaxUID, ds.PixelData)
    # one association per file, so each keeps its own transfer syntax (several share SOP Instance UIDs)
    stored_syntaxes = set()
    for f in ts_files + enhanced:
        ts = str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        sender = storescu if ts in STORESCU_TS_OPTION else dcmsend
        r = sender(svc.receiver.port, [f])
        assert r.returncode == 0, f"{f.name} ({ts}, {sender.__name__}): {r.stdout} {r.stderr}"
        ds = pydicom.dcmread(f)
        kept = svc.catalogue.instance(ds.SOPInstanceUID)
        assert kept is not None
        candidates = [Path(kept[0]), *list((svc.data_dir / "duplicates" / ds.SOPInstanceUID).glob("*.dcm"))]
        match = [c for c in candidates if pydicom.dcmread(c).PixelData == ds.PixelData]
        assert match, f"{f.name} not stored unchanged"
        stored_syntaxes.add(pydicom.dcmread(match[0]).file_meta.TransferSyntaxUID)
    assert len(stored_syntaxes) >= 7  # explicit/implicit LE, BE, RLE, JPEG lossless, JPEG-LS, J2K


@pytest.mark.req("REQ-SAFE-300")
def test_quota_full_answers_a700_and_deletes_nothing(
    receiver: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=6)
    sizes = [f.stat().st_size for f in files]
    svc = receiver(dicom={"quota_bytes": sum(sizes[:3]) + 1000})
    assert storescu(svc.receiver.port, files[:3]).returncode == 0
    before = {k: v.read_bytes() for k, v in _stored(svc).items()}
    r = storescu(svc.receiver.port, files[3:], SCU_AE, "-v")
    assert r.returncode == 0xA7, r  # storescu exits with the high byte of the last failure status
    assert "Refused: OutOfResources" in r.stdout + r.stderr
    assert _scu_send(svc.receiver.port, pydicom.dcmread(files[4])) == 0xA700
    after = _stored(svc)
    assert set(after) == set(before) and all(after[k].read_bytes() == v for k, v in before.items())
    health = svc.health()
    assert health["status"] == "alarm" and health["alarms"][0]["code"] == "storage_full"
    assert svc.audit.records(action="alarm")[0].details["code"] == "storage_full"
    time.sleep(0.3)
    refused = [r.details["refused_storage_full"] for r in svc.audit.records(action="association.closed")]
    assert refused[0] == 0 and refused[1] >= 1 and refused[2] == 1  # storescu stops at its first refusal


def _scu_send(port: int, ds: pydicom.Dataset) -> int:
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="EDGE3D")
    assert assoc.is_established
    hold_reactor(assoc)
    status = assoc.send_c_store(ds)
    assoc.release()
    return int(status.Status)


@pytest.mark.req("REQ-SAFE-302")
def test_duplicate_with_different_content_kept_aside(
    receiver: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc = receiver()
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=1)
    first = pydicom.dcmread(files[0])
    assert _scu_send(svc.receiver.port, first) == 0
    original = next(iter(_stored(svc).values())).read_bytes()
    changed = pydicom.dcmread(files[0])
    changed.SeriesDescription = "changed on the scanner"
    assert _scu_send(svc.receiver.port, changed) == 0
    assert next(iter(_stored(svc).values())).read_bytes() == original  # first one untouched
    (aside,) = (svc.data_dir / "duplicates" / first.SOPInstanceUID).glob("*.dcm")
    assert pydicom.dcmread(aside).SeriesDescription == "changed on the scanner"
    (rec,) = svc.audit.records(action="instance.duplicate_kept_aside")
    assert rec.requirement == "REQ-SAFE-302"
    assert any(a["code"] == "duplicate_instance" for a in svc.health()["alarms"])


@pytest.mark.req("REQ-SAFE-301")
def test_handler_errors_give_failure_status(
    receiver: Callable[..., ApplianceService],
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = receiver()
    _, files = prepare_ct_series(shared_data, tmp_path / "ct", n=2)
    bad = pydicom.dcmread(files[0])
    bad.StudyInstanceUID = "../../etc"  # a UID that would escape the studies folder
    assert _scu_send(svc.receiver.port, bad) == 0xC000
    assert not _stored(svc)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk on fire")

    monkeypatch.setattr(svc.store, "stage", broken)
    assert _scu_send(svc.receiver.port, pydicom.dcmread(files[1])) == 0x0110
    assert not _stored(svc)


@pytest.mark.req("REQ-ACQ-303")
def test_association_limit_and_tcp_nodelay(receiver: Callable[..., ApplianceService]) -> None:
    import socket

    svc = receiver(dicom={"max_associations": 2})
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context("1.2.840.10008.1.1")
    held = [ae.associate("127.0.0.1", svc.receiver.port, ae_title="EDGE3D") for _ in range(2)]
    assert all(a.is_established for a in held)
    server_sockets = svc.receiver.connections()
    assert len(server_sockets) == 2 and all(
        s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in server_sockets
    )
    third = ae.associate("127.0.0.1", svc.receiver.port, ae_title="EDGE3D")
    assert third.is_rejected
    for a in held:
        a.release()
    time.sleep(0.3)
    reasons = [r.details["reason"] for r in svc.audit.records(action="association.rejected")]
    assert reasons == ["more than 2 concurrent associations"]
    again = ae.associate("127.0.0.1", svc.receiver.port, ae_title="EDGE3D")
    assert again.is_established
    again.release()
