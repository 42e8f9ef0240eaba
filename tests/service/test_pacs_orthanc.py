"""Find on PACS against a real Orthanc (Debian package) and a real `appliance serve`.

Orthanc is started with its own DICOM port, the box registered as a modality (for C-MOVE) and the real CT
series of the shared data loaded through its REST API, with a second, small study of another patient. The box
queries it at study and series level (by patient ID, accession number, name prefix and date range), retrieves
one study by C-MOVE and the other by C-GET, and the test checks that every instance arrived (count and SOP
Instance UIDs), the progress reported, and the audit trail.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from helpers.orthanc import start_orthanc
from helpers.served import APPLIANCE, ROOT, Served
from svc_helpers import PATIENT_ID, PATIENT_NAME, free_port, prepare_ct_series

from appliance.audit import AUDIT_FILENAME, AuditLog

pytestmark = [pytest.mark.serial]

ACCESSION = "ACC-0815"
OTHER_ID, OTHER_NAME = "PID-0001-Y", "ROE^RICHARD"


def _retag(files: list[Path], **tags: str) -> list[str]:
    """Set tags on written files; returns their SOP Instance UIDs."""
    uids = []
    for f in files:
        ds = pydicom.dcmread(f)
        for k, v in tags.items():
            setattr(ds, k, v)
        ds.save_as(f, enforce_file_format=True)
        uids.append(str(ds.SOPInstanceUID))
    return uids


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[dict[str, Any]]:
    """Orthanc holding two studies, and a real `appliance serve` configured to query/retrieve from it."""
    tmp = tmp_path_factory.mktemp("pacs")
    box_dicom, orthanc_dicom = free_port(), free_port()
    pacs = start_orthanc(tmp / "orthanc", orthanc_dicom, free_port(), {"box": ["EDGE3D", "127.0.0.1", box_dicom]})
    study_uid, files = prepare_ct_series(shared_data, tmp / "ct")
    sops = _retag(files, AccessionNumber=ACCESSION, StudyDate="20240315", StudyDescription="CT ABDOMEN")
    other_uid, other_files = prepare_ct_series(shared_data, tmp / "other", n=3)
    other_sops = _retag(other_files, PatientID=OTHER_ID, PatientName=OTHER_NAME, AccessionNumber="ACC-0001",
                        StudyDate="20230101")  # fmt: skip
    pacs.load([*files, *other_files])
    config = tmp / "appliance.toml"
    config.write_text(
        '[dicom]\nallowed = [{ae_title = "ORTHANC", host = "127.0.0.1"}]\nstudy_stable_seconds = 1\n'
        'min_free_bytes = 0\n[reconstruction]\nauto = false\n'
        f'[pacs]\nnodes = [{{name = "PACS", ae_title = "ORTHANC", host = "127.0.0.1", port = {orthanc_dicom}}},\n'
        f'  {{name = "PACS-GET", ae_title = "ORTHANC", host = "127.0.0.1", port = {orthanc_dicom},'
        ' retrieve = "get"}]\n'
        'query_timeout_seconds = 20\n'
    )  # fmt: skip
    (tmp / "data").mkdir()
    box = Served(tmp / "data", config, box_dicom)
    box.start()
    yield {"pacs": pacs, "box": box, "study_uid": study_uid, "sops": sops, "other_uid": other_uid,
           "other_sops": other_sops}  # fmt: skip
    box.stop()
    pacs.stop()


def _api(box: Served, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    from appliance.service.api import read_api_token

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{box.http_port}{path}", data=data,
                                 headers={"Authorization": f"Bearer {read_api_token(box.data_dir)}",
                                          "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.req("REQ-FUNC-850", "REQ-TRACE-852")
def test_find_on_pacs_by_each_criterion(world: dict[str, Any]) -> None:
    box, uid, other = world["box"], world["study_uid"], world["other_uid"]
    assert _api(box, "/api/pacs")[1]["nodes"][0]["name"] == "PACS"
    for query, expected in (
        (f"patient_id={PATIENT_ID}", [uid]),
        (f"accession={ACCESSION}", [uid]),
        ("name=DOE", [uid]),
        ("name=ROE", [other]),
        ("date_from=2024-03-01&date_to=2024-03-31", [uid]),
        ("date_from=20230101&date_to=20241231", [uid, other]),  # newest first
        ("date_to=2023-06-30", [other]),
        ("patient_id=NOBODY", []),
    ):
        status, body = _api(box, f"/api/pacs/PACS/studies?{query}")
        assert status == 200, body
        assert [s["study_instance_uid"] for s in body["studies"]] == expected, query
    (found,) = _api(box, f"/api/pacs/PACS/studies?patient_id={PATIENT_ID}")[1]["studies"]
    assert found["patient_name"] == PATIENT_NAME and found["accession_number"] == ACCESSION
    assert found["study_date"] == "20240315" and found["n_instances"] == 20 and found["modalities"] == ["CT"]
    status, body = _api(box, f"/api/pacs/PACS/studies/{uid}/series")
    assert status == 200 and len(body["series"]) == 1, body
    assert body["series"][0]["modality"] == "CT" and body["series"][0]["n_instances"] == 20
    for bad in ("", "patient_id=PID*", "date_from=2024-13-01", "date_from=20240301&date_to=20240201", "colour=red"):
        status, body = _api(box, f"/api/pacs/PACS/studies?{bad}")
        assert status == 400 and body["error"], bad
    assert _api(box, "/api/pacs/NOPE/studies?patient_id=X")[0] == 404
    queries = AuditLog(box.data_dir / AUDIT_FILENAME).records(action="pacs.query")
    assert len(queries) == 10  # 9 study-level + 1 series-level (refused criteria never reach the PACS)
    assert queries[0].details["criteria"] == ["patient_id"] and queries[0].details["matches"] == 1
    assert PATIENT_ID not in json.dumps([q.details for q in queries])  # criteria names, never values


def _wait_retrieval(box: Served, rid: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = _api(box, f"/api/pacs/retrievals/{rid}")[1]
        seen.append(r)
        if r["state"] != "running":
            return r, seen
        time.sleep(0.05)
    raise AssertionError(f"retrieval {rid} did not finish: {seen[-1]}")


def _on_box(box: Served, study_uid: str) -> set[str]:
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
            for p in (box.data_dir / "studies" / study_uid).rglob("*.dcm")}  # fmt: skip


@pytest.mark.req("REQ-FUNC-851", "REQ-TRACE-852")
def test_retrieve_by_cmove_and_cget_every_instance_arrives(world: dict[str, Any]) -> None:
    box, uid, other = world["box"], world["study_uid"], world["other_uid"]
    status, started = _api(box, "/api/pacs/PACS/retrieve", {"study_instance_uid": uid, "actor": "surgeon:Dr.House"})
    assert status == 202 and started["method"] == "C-MOVE", started
    done, seen = _wait_retrieval(box, started["id"])
    assert done["state"] == "done", done
    assert done["suboperations"]["completed"] == 20 and done["suboperations"]["failed"] == 0
    assert done["suboperations"]["status"] == "0x0000" and done["progress"] == 1.0
    assert done["instances_on_box"] == 20
    completed = [r["suboperations"]["completed"] for r in [started, *seen]]
    assert completed == sorted(completed) and started["progress"] <= done["progress"]  # progress only goes forward
    assert _on_box(box, uid) == set(world["sops"])
    assert _api(box, f"/api/studies/{uid}")[1]["n_instances"] == 20
    # C-GET from the node that prefers it: same association, stored by the box itself
    status, started = _api(box, "/api/pacs/PACS-GET/retrieve", {"study_instance_uid": other})
    assert status == 202 and started["method"] == "C-GET", started
    done, _ = _wait_retrieval(box, started["id"])
    assert done["state"] == "done" and done["suboperations"]["completed"] == 3, done
    assert _on_box(box, other) == set(world["other_sops"])
    # a study the PACS does not hold: failed, with the reason, nothing on the box
    status, started = _api(box, "/api/pacs/PACS/retrieve", {"study_instance_uid": "1.2.3.4.5.6.7"})
    done, _ = _wait_retrieval(box, started["id"])
    assert done["state"] == "failed" and done["message"], done
    assert _api(box, "/api/pacs/PACS/retrieve", {"study_instance_uid": "not a uid"})[0] == 400
    audit = AuditLog(box.data_dir / AUDIT_FILENAME)
    finished = audit.records(action="pacs.retrieve.finished")
    assert [r.details["method"] for r in finished] == ["C-MOVE", "C-GET"]
    assert finished[0].actor == "api:token" and finished[0].details["instances_on_box"] == 20
    assert finished[0].study_hash and uid not in json.dumps(finished[0].details)
    assert len(audit.records(action="pacs.retrieve.requested")) == 3
    assert len(audit.records(action="pacs.retrieve.failed")) == 1
    received = [r for r in audit.records(action="association.closed") if "ORTHANC" in r.actor]
    assert received, "the C-MOVE instances came in through the receiver"
    assert subprocess.run([*APPLIANCE, "audit", "verify", "--data-dir", str(box.data_dir)], cwd=ROOT,
                          capture_output=True, check=False).returncode == 0  # fmt: skip
