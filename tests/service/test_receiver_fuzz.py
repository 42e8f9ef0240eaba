"""Issue 18: the receiver fuzzed over real associations with mutated real instances.

Real CT and MR instances in six transfer syntaxes (native and encapsulated pixel data, implicit, explicit and big
endian) are truncated, get changed length fields, changed VRs or flipped bits (every fifth is left intact), and are
sent byte for byte. The receiver must answer every one, keep running, store nothing the oracle cannot read
completely (and exactly the bytes sent), and store every one the oracle finds valid — where DICOM is stricter than
pydicom (items and delimiters inside sequences) the receiver may refuse, naming the rule, in a few cases.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from fuzz_helpers import STRICTER_THAN_PYDICOM, make_mutants, readable
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from receiver_helpers import SCU_AE, send_raw, send_raw_answers, split_part10, start_receiver, stored_files
from svc_helpers import prepare_ct_series

from appliance.service.runtime import ApplianceService

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk (storescu) is not installed")

TRANSFER_SYNTAX_FILES = [f"dicom-edge/dcm_qa_ts/In/{i}.dcm" for i in (1, 2, 3, 4, 7, 9)]
PER_ASSOCIATION = 25


def _sources(shared_data: Path, tmp_path: Path) -> list[Path]:
    _, ct = prepare_ct_series(shared_data, tmp_path / "ct", n=2)
    native = pydicom.dcmread(ct[1])
    native.decompress()
    native.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    native.save_as(tmp_path / "native.dcm", enforce_file_format=True)
    return [ct[0], tmp_path / "native.dcm", *(shared_data / p for p in TRANSFER_SYNTAX_FILES)]


def _fuzz(svc: ApplianceService, shared_data: Path, tmp_path: Path, n: int, seed: int) -> None:
    assert svc.receiver is not None
    port = svc.receiver.port
    mutants = make_mutants(_sources(shared_data, tmp_path), tmp_path / "mutants", n, seed)
    answers: list[tuple[int | None, str]] = []
    for i in range(0, n, PER_ASSOCIATION):
        answers += send_raw_answers(port, [m.path for m in mutants[i : i + PER_ASSOCIATION]])
    # alive: a C-ECHO and an intact instance still work
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="EDGE3D")
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()
    stored = stored_files(svc)
    stricter = []
    for m, (status, comment) in zip(mutants, answers, strict=True):
        assert status in (0x0000, 0xC000), f"{m.path.name} ({m.kind}): status {status} {comment}"
        valid = readable(m.path, m.sop_uid)
        if status == 0:
            path = stored[m.sop_uid]
            assert readable(path, m.sop_uid), f"{m.path.name} ({m.kind}) stored but unusable"
            assert split_part10(path)[1] == split_part10(m.path)[1], f"{m.path.name}: not stored as sent"
            assert svc.catalogue.instance(m.sop_uid) is not None
        else:
            assert m.sop_uid not in stored and svc.catalogue.instance(m.sop_uid) is None
            if valid:
                assert any(rule in comment for rule in STRICTER_THAN_PYDICOM), (
                    f"{m.path.name} ({m.kind}) is valid but was refused: {comment}"
                )
                stricter.append(m.path.name)
        if m.kind == "none":
            assert status == 0, f"{m.path.name}: an intact instance was refused: {comment}"
    assert len(stricter) <= max(1, n // 50), stricter
    assert sum(1 for s, _ in answers if s == 0) >= n // 5  # the intact fifth at least
    assert sum(1 for s, _ in answers if s == 0xC000) >= n // 3
    assert not list((svc.data_dir / "studies").rglob("*.tmp"))
    _, intact = prepare_ct_series(shared_data, tmp_path / "after", n=1)
    assert send_raw(port, intact) == [0]


@pytest.mark.req("REQ-SAFE-605", "REQ-SAFE-604")
def test_receiver_fuzz_40_mutated_instances(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    _fuzz(start_receiver(service_factory), shared_data, tmp_path, 40, seed=7)


@pytest.mark.slow
@pytest.mark.req("REQ-SAFE-605", "REQ-SAFE-604")
def test_receiver_fuzz_300_mutated_instances(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    _fuzz(start_receiver(service_factory), shared_data, tmp_path, 300, seed=18)
