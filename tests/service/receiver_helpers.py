"""Helpers of the receiver tests: raw Part 10 files (meta kept, dataset bytes as a test wants them) and a
pynetdicom SCU that sends such files byte for byte over one association."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config
from svc_helpers import FakeReconstruct, free_port

from appliance.service.runtime import ApplianceService

SCU_AE = "STORESCU"


def split_part10(path: Path) -> tuple[bytes, bytes]:
    """``(preamble + DICM + file meta, dataset)`` bytes of an explicit-VR-little-endian-meta Part 10 file."""
    data = Path(path).read_bytes()
    (meta_length,) = struct.unpack_from("<L", data, 140)
    end = 144 + meta_length
    return data[:end], data[end:]


def write_raw(path: Path, meta: bytes, dataset: bytes) -> Path:
    """A Part 10 file of ``meta`` followed by ``dataset`` exactly as given (however broken)."""
    path.write_bytes(meta + dataset)
    return path


def hold_reactor(assoc: Any) -> None:
    """Hold pynetdicom's reactor before a send, so it cannot take the answer off the queue.

    pynetdicom (3.0) pauses its reactor by clearing an event and then waiting for ``_is_paused``, which the reactor
    sets *before* it blocks on that event: a reactor that had just passed the event still reads ``_is_paused``
    true, goes on, and takes a fast answer as "unexpected C-STORE service message" (pynetdicom issue #875), so
    ``send_c_store`` sees no answer although the receiver gave one. Clearing the event ourselves and waiting until
    the reactor has shown itself paused on 10 polls 1 ms apart (one reactor turn is 1 ms of sleep with the flag
    false) leaves it blocked; ``send_c_store`` then sets the event again after its answer.
    """
    assoc._reactor_checkpoint.clear()
    seen = 0
    deadline = time.monotonic() + 5.0
    while seen < 10 and time.monotonic() < deadline:
        seen = seen + 1 if assoc._is_paused else 0
        time.sleep(0.001)


def send_raw(port: int, files: Sequence[Path], aet: str = SCU_AE) -> list[int | None]:
    """Send each file's dataset bytes unchanged over one association; the statuses (None: no answer)."""
    return [status for status, _ in send_raw_answers(port, files, aet)]


def send_raw_answers(port: int, files: Sequence[Path], aet: str = SCU_AE) -> list[tuple[int | None, str]]:
    """Like :func:`send_raw`, with the error comment of each answer."""
    metas = [read_file_meta_info(f) for f in files]
    ae = AE(ae_title=aet)
    # a loaded CI machine can hold an fsync for many seconds: wait longer than pynetdicom's 30 s before "no answer"
    ae.dimse_timeout = ae.network_timeout = 120
    for pair in sorted({(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas}):
        ae.add_requested_context(*pair)
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    statuses: list[tuple[int | None, str]] = []
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="EDGE3D")
        if not assoc.is_established:
            return [(None, "")] * len(files)
        for f in files:
            if not assoc.is_established:
                statuses.append((None, ""))
                continue
            hold_reactor(assoc)
            status = assoc.send_c_store(Path(f))
            code = int(status.Status) if "Status" in status else None
            statuses.append((code, str(status.get("ErrorComment", ""))))
        if assoc.is_established:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
    return statuses


def start_receiver(service_factory: Callable[..., ApplianceService], reconstruct: FakeReconstruct | None = None,
                   **sections: Any) -> ApplianceService:  # fmt: skip
    """A started service with its receiver on a free port, allowing :data:`SCU_AE` from loopback."""
    dicom = {"port": free_port(), "allowed": [{"ae_title": SCU_AE, "host": "127.0.0.1"}]}
    dicom.update(sections.pop("dicom", {}))
    sections.setdefault("reconstruction", {"auto": False})
    svc = service_factory(reconstruct or FakeReconstruct(), dicom=dicom, **sections)
    svc.start(importer=False)
    return svc


def stored_files(svc: ApplianceService) -> dict[str, Path]:
    """Instance files under ``studies/`` by SOP Instance UID."""
    return {p.stem: p for p in (svc.data_dir / "studies").rglob("*.dcm")}


def send_datasets(port: int, datasets: Sequence[pydicom.Dataset], aet: str = SCU_AE) -> list[int]:
    """Send datasets over one association (pynetdicom encodes them); their statuses."""
    ae = AE(ae_title=aet)
    for pair in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}):
        ae.add_requested_context(*pair)
    assoc = ae.associate("127.0.0.1", port, ae_title="EDGE3D")
    assert assoc.is_established
    statuses = []
    for d in datasets:
        hold_reactor(assoc)
        statuses.append(int(assoc.send_c_store(d).Status))
    assoc.release()
    return statuses
