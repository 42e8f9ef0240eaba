"""A lesion from a label file brought on USB (issue 15): the import keeps a NIfTI/NRRD label found next to the study
(audited, linked to the medium's study), ``POST lesions {"from_usb_label": ID}`` places it on the job's grid after
the geometry checks. Real data: the pyradiomics breast MR and its tumour label (the job's image), the brain tumour
label of another study (refused: its voxels lie outside this image)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.print_case import STRUCTURES
from review_case import finished_job_box

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.core import LabelMap, Volume
from appliance.export.image import write_image_volume
from appliance.io.nifti import save_labelmap, save_volume
from appliance.io.nrrd import load_volume as load_nrrd
from appliance.review.store import RevisionStore
from appliance.service.importer import import_medium
from appliance.service.runtime import ApplianceService

pytestmark = pytest.mark.req("REQ-FUNC-1553", "REQ-SAFE-1554")
PYRADIOMICS = Path("labelled/pyradiomics/data")


@pytest.fixture
def box(service_factory: Callable[..., ApplianceService], tmp_path: Path, shared_data: Path) -> dict[str, Any]:
    """A finished job whose image is the real breast MR (a body label map on its grid), and a USB stick with the
    job's DICOM slices, the breast tumour's label (NRRD), the same label on a flipped grid (NIfTI) and a brain
    tumour's label, imported by the service's own import."""
    found = finished_job_box(service_factory, tmp_path, shared_data)
    data = shared_data / PYRADIOMICS
    image = load_nrrd(data / "breast1_image.nrrd", "MR", "arbitrary")
    out = Path(found["svc"].catalogue.job(found["job"]).output_dir)
    body = (np.asarray(image.array) > np.percentile(image.array, 30)).astype(np.uint8)
    save_labelmap(LabelMap.on(image, body, STRUCTURES[:1]), out / "labels.nii.gz")
    (out / "structures.json").write_text(json.dumps([STRUCTURES[0].to_dict()]), encoding="utf-8")
    write_image_volume(image, out / "image.nii.gz")
    shutil.rmtree(out / "meshes", ignore_errors=True)
    stick = tmp_path / "watch" / "STICK"
    shutil.copytree(tmp_path / "ct", stick)  # the job's study, as claimed_job stored it
    shutil.copy(data / "breast1_label.nrrd", stick / "tumour.nrrd")
    label = load_nrrd(data / "breast1_label.nrrd", "SEG", "label")
    flipped = np.ascontiguousarray(np.asarray(label.array)[::-1])  # i reversed: same patient points, other affine
    affine = label.affine.copy()
    affine[:3, 3] += affine[:3, 0] * (label.shape[0] - 1)
    affine[:3, 0] *= -1
    save_volume(Volume(flipped.astype(np.uint8), affine, "SEG", "label"), stick / "tumour_flipped.nii.gz")
    shutil.copy(data / "brain1_label.nrrd", stick / "other_patient.nrrd")
    report = import_medium(found["svc"].import_context, stick)
    found.update(report=report, label=label, image=image)
    return found


def _labels(box: dict[str, Any]) -> dict[str, str]:
    r = box["client"].get(f"/api/jobs/{box['job']}/usb-labels", headers=box["headers"])
    assert r.status_code == 200, r.get_json()
    return {x["file"]: x["id"] for x in r.get_json()["labels"] if x["with_this_study"]}


def test_label_found_next_to_the_study_is_kept_and_offered(box: dict[str, Any]) -> None:
    report = box["report"]
    assert len(report.label_files) == 3 and report.stored == 0 and report.already_present > 0, report.to_dict()
    assert not [s for s in report.skipped if s["path"].endswith((".nrrd", ".nii.gz"))]
    assert set(_labels(box)) == {"tumour.nrrd", "tumour_flipped.nii.gz", "other_patient.nrrd"}
    log = AuditLog(box["svc"].data_dir / AUDIT_FILENAME)
    kept = [r for r in log.records() if r.action == "import.label_file"]
    assert len(kept) == 3 and all(r.details["studies"] for r in kept)  # each linked to the stick's study (hashed)
    assert log.verify() == []


def test_real_label_on_its_image_becomes_a_lesion_voxel_for_voxel(box: dict[str, Any]) -> None:
    client, headers, job = box["client"], box["headers"], box["job"]
    ids = _labels(box)
    r = client.post(f"/api/jobs/{job}/lesions", headers=headers,
                    json={"from_usb_label": ids["tumour.nrrd"], "name": "tumour", "margins_mm": [5], "base": 0})
    assert r.status_code == 201, r.get_json()
    answer = r.get_json()
    assert (answer["lesion"], answer["resampled"], answer["file"]) == ("tumour", False, "tumour.nrrd")
    store = RevisionStore(box["svc"].data_dir / "revisions" / f"job-{job}")
    labelmap = store.labelmap(1)
    lesion = labelmap.labels == labelmap.structure("tumour").label
    assert np.array_equal(lesion, np.asarray(box["label"].array) != 0)  # exactly the file's voxels
    assert answer["voxels"] == int(lesion.sum()) > 0
    assert "tumour_margin_5mm" in [s.name for s in labelmap.structures]
    assert store.revision(1).ops[1]["op"] == "paint_label_file"  # the revision names the file and its SHA-256
    undo = client.post(f"/api/jobs/{job}/revisions/undo", headers=headers, json={"base": 1})
    assert undo.status_code == 200, undo.get_json()
    r = client.post(f"/api/jobs/{job}/lesions", headers=headers,
                    json={"from_usb_label": ids["tumour_flipped.nii.gz"], "name": "tumour_b", "margins_mm": [5]})
    assert r.status_code == 201 and r.get_json()["resampled"] is True, r.get_json()  # other grid, same points
    again = store.labelmap(2)
    assert np.array_equal(again.labels == again.structure("tumour_b").label, lesion)  # placed on the same voxels
    created = [x for x in AuditLog(box["svc"].data_dir / AUDIT_FILENAME).records() if x.action == "lesion.created"]
    assert [(x.details["usb_label"], x.details["resampled"]) for x in created] == [
        (ids["tumour.nrrd"], False), (ids["tumour_flipped.nii.gz"], True)]


def test_label_of_another_geometry_is_refused_by_name_and_nothing_is_written(box: dict[str, Any]) -> None:
    client, headers, job = box["client"], box["headers"], box["job"]
    ids = _labels(box)
    before = client.get(f"/api/jobs/{job}/revisions", headers=headers).get_json()
    for body, kind in [({"from_usb_label": ids["other_patient.nrrd"]}, "LabelGeometryMismatch"),
                       ({"from_usb_label": "0123456789abcdef"}, "UnknownUsbLabel"),
                       ({"from_usb_label": ids["tumour.nrrd"], "usb_label_value": 7}, "EmptyUsbLabel")]:
        r = client.post(f"/api/jobs/{job}/lesions", headers=headers, json={**body, "margins_mm": [5]})
        assert r.status_code == 400 and r.get_json()["field"] == "from_usb_label", r.get_json()
        assert r.get_json()["kind"] == kind, r.get_json()
    assert "outside this case's image" in client.post(
        f"/api/jobs/{job}/lesions", headers=headers, json={"from_usb_label": ids["other_patient.nrrd"]}).get_json()[
        "error"]
    r = client.post(f"/api/jobs/{job}/revisions", headers=headers, json={"base": 0, "ops": [  # not without its checks
        {"op": "paint_label_file", "structure": "body", "usb_label": ids["tumour.nrrd"], "sha256": "0" * 64}]})
    assert r.status_code == 400 and r.get_json()["field"] == "ops[0].usb_label", r.get_json()
    assert client.get(f"/api/jobs/{job}/revisions", headers=headers).get_json() == before
