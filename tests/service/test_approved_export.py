"""Exports of a reviewed model use the approved revision of each structure (issue 14 item 4, issue 15 item 3):
a real Orthanc receives the SEG and Encapsulated STLs of the approved revision, not of the newer unapproved edit;
unapproved structures are refused with a 409 naming them and nothing exported, unless the override with a reason
is sent, which is audited and printed on the report; a job that never entered review exports as before; the
report and the case manifest carry the lesions, measurements and review history."""

from __future__ import annotations

import io
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from approved_case import approve, bone_point, erase_bone, post_job, reviewed_case_box
from helpers.orthanc import start_orthanc
from svc_helpers import free_port

from appliance.core import Volume
from appliance.export.pdf_report import build_pdf_html
from appliance.privacy.deidentify import deidentifier_for
from appliance.review.store import RevisionStore
from appliance.service.export.sources import labels_on_sources, source_series
from appliance.service.export.stl import ENCAPSULATED_STL
from appliance.service.runtime import ApplianceService

pytestmark = pytest.mark.req("REQ-SAFE-1433")


def test_pacs_receives_the_approved_revision_not_the_newer_edit(
        service_factory: Callable[..., ApplianceService], tmp_path: Path, shared_data: Path) -> None:
    orthanc_dicom, orthanc_http = free_port(), free_port()
    box = reviewed_case_box(service_factory, tmp_path, shared_data, export={"destinations": [
        {"name": "PACS", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc_dicom}]})
    pacs = start_orthanc(tmp_path / "orthanc", orthanc_dicom, orthanc_http, {})
    try:
        erase_bone(box, 0, bone_point(box))
        approve(box, "body", 1)
        approve(box, "bone", 1)
        erase_bone(box, 1, bone_point(box, 4000))  # a newer edit nobody approved
        r = post_job(box, "/export", {"destination": "PACS"})
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["statuses"] == [0, 0, 0]
        svc = box["svc"]
        store = RevisionStore(svc.data_dir / "revisions" / f"job-{box['job']}")
        approved, newer = store.labelmap(1), store.labelmap(2)
        bone = approved.structure("bone").label
        assert (approved.labels == bone).sum() != (newer.labels == bone).sum()
        received = {}
        for i in pacs.rest("/instances"):
            with urllib.request.urlopen(f"http://127.0.0.1:{orthanc_http}/instances/{i}/file", timeout=30) as f:
                ds = pydicom.dcmread(io.BytesIO(f.read()))
            received[str(ds.SOPClassUID), str(getattr(ds, "DocumentTitle", ""))] = ds
        assert len(received) == 3
        seg = hd.seg.Segmentation.from_dataset(received["1.2.840.10008.5.1.4.1.1.66.4", ""])
        originals = source_series(svc.data_dir / "studies" / box["study_uid"],
                                  Volume(approved.labels, approved.affine, "SEG", "label"))
        mapped = [deidentifier_for(svc.config.privacy, svc.secret).deidentify(d) for d in originals]
        got = seg.get_pixels_by_source_instance(source_sop_instance_uids=[m.SOPInstanceUID for m in mapped],
                                                segment_numbers=[1, 2])
        for lm, same in ((approved, True), (newer, False)):
            expected = labels_on_sources(Volume(lm.labels, lm.affine, "SEG", "label"), originals)
            assert np.array_equal(got[..., 1] > 0, expected == bone) is same
        stl = received[ENCAPSULATED_STL, "Bone"]
        doc = bytes(stl.EncapsulatedDocument)[: stl.EncapsulatedDocumentLength]
        assert doc == (store.root / store.revision(1).meshes["bone"]).read_bytes()
        assert doc != (store.root / store.revision(2).meshes["bone"]).read_bytes()
        (record,) = svc.audit.records(action="export")
        assert record.details["revisions"] == {"body": 2, "bone": 1} and record.details["destination"] == "PACS"
        assert svc.audit.verify() == []
    finally:
        pacs.stop()


def _soft_seed(box: dict[str, Any]) -> list[float]:
    lm, image = box["labelmap"], box["volume"].array
    calm = (image > 20) & (image < 60) & (lm.labels == lm.structure("body").label)
    ijk = np.argwhere(calm)[len(np.argwhere(calm)) // 2]
    return [float(v) for v in lm.affine[:3, :3] @ ijk + lm.affine[:3, 3]]


@pytest.mark.req("REQ-FUNC-1432")
def test_unapproved_structures_need_the_override_which_is_audited_and_printed(
        service_factory: Callable[..., ApplianceService], tmp_path: Path, shared_data: Path) -> None:
    media = tmp_path / "media"
    (media / "STICK").mkdir(parents=True)
    box = reviewed_case_box(service_factory, tmp_path, shared_data, **{"import": {"watch_dir": str(media)}})
    svc, client, headers, job = box["svc"], box["client"], box["headers"], box["job"]
    # a job that never entered review (opened in the viewer: revision 0 only): exported and reported from its
    # outputs, as before
    assert client.get(f"/api/jobs/{job}/revisions", headers=headers).status_code == 200
    assert post_job(box, "/export", {}).status_code == 200
    assert svc.audit.records(action="export")[-1].details["revisions"] == {}
    assert client.get(f"/api/jobs/{job}/report", headers=headers).get_data(as_text=True) == (
        box["out"] / "report.html").read_text(encoding="utf-8")
    seed = _soft_seed(box)
    lesion = post_job(box, "/lesions", {"seed_lps": seed, "window": [0, 80], "max_radius_mm": 10, "margins_mm": [5],
                                     "name": "tumour"})
    assert lesion.status_code == 201, lesion.get_json()
    measured = post_job(box, "/measurements", {"kind": "point_distance", "a_lps": seed, "b_lps": bone_point(box),
                                            "name": "tumour to bone"}).get_json()
    approve(box, "body", 1)
    approve(box, "bone", 1)
    exports_before = len(svc.audit.records(action="export"))
    r = post_job(box, "/export", {})
    assert r.status_code == 409 and r.get_json()["unapproved"] == ["tumour", "tumour_margin_5mm"]
    usb = post_job(box, "/usb-export", {"medium": "STICK", "formats": ["stl"]})
    assert usb.status_code == 409 and usb.get_json()["unapproved"] == ["tumour", "tumour_margin_5mm"]
    assert client.get(f"/api/jobs/{job}/report", headers=headers).status_code == 409
    for body, field in (({"override_unapproved": True}, "reason"), ({"override_unapproved": "yes"},
                                                                    "override_unapproved")):
        bad = post_job(box, "/export", body)
        assert (bad.status_code, bad.get_json()["field"]) == (400, field)
    assert len(svc.audit.records(action="export")) == exports_before
    assert list((media / "STICK").iterdir()) == [] and svc.audit.records(action="export.override_unapproved") == []
    reason = "tumour checked on the images by Dr Li, approval pending"
    assert post_job(box, "/export", {"override_unapproved": True, "reason": reason}).status_code == 200
    usb = post_job(box, "/usb-export", {"medium": "STICK", "formats": ["stl"], "override_unapproved": True,
                                     "reason": reason})
    assert usb.status_code == 200, usb.get_json()
    assert sorted(usb.get_json()["structures"]) == ["body", "bone", "tumour", "tumour_margin_5mm"]
    overrides = svc.audit.records(action="export.override_unapproved")
    assert [(o.details["export"], o.details["structures"], o.details["reason"]) for o in overrides] == [
        ("dicom", ["tumour", "tumour_margin_5mm"], reason), ("usb", ["tumour", "tumour_margin_5mm"], reason)]
    query = {"override_unapproved": "true", "reason": reason}
    report = client.get(f"/api/jobs/{job}/report", headers=headers, query_string=query).get_data(as_text=True)
    assert "UNAPPROVED STRUCTURES EXPORTED ON OVERRIDE: tumour, tumour_margin_5mm" in report and reason in report
    case = client.get(f"/api/jobs/{job}/case", headers=headers, query_string=query).get_json()
    assert case["export_basis"]["override"]["reason"] == reason
    assert case["lesions"][0]["margin_table"] == lesion.get_json()["margin_table"]
    assert case["lesions"][0]["measurements"] == lesion.get_json()["measurements"]
    assert case["measurements"] == [measured]
    decisions = [(h["structure"], h["decision"], h["actor"], h["revision"]) for h in case["review"]["history"]
                 if h["kind"] == "decision"]
    assert decisions == [("body", "approved", "api:token", 1), ("bone", "approved", "api:token", 1)]
    made = next(h for h in case["review"]["history"] if h["kind"] == "revision" and h["revision"] == 1)
    store = RevisionStore(svc.data_dir / "revisions" / f"job-{job}")
    tumour_ml = float((store.labelmap(1).labels == store.labelmap(1).structure("tumour").label).sum()
                      * store.labelmap(1).voxel_volume_ml)
    assert made["volume_change_ml"]["tumour"] == pytest.approx(tumour_ml, abs=1e-3)
    for text in ("Lesions and resection margins", "tumour to bone", "Review history", "approved Bone",
                 f"{lesion.get_json()['margin_table']['rows'][0]['min_distance_mm']:.1f}"):
        assert text in report, text
    assert json.loads(json.dumps(case["structures"]))[0]["approved"] is True
    for language, heading in (("en", "Lesions and resection margins"), ("zh-CN", "病灶与切除安全边界")):
        pdf_page = build_pdf_html(case, [], {}, f"EDGE3D-job-{job}", language)
        for text in (heading, reason, "tumour to bone", "api:token"):
            assert text in pdf_page, (language, text)
