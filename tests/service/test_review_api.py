"""Model review through the service API of the app `appliance serve` builds: a finished job's revisions, the
surgeon's correction request, the engineer's island removal and brush erase, approval, the worklist, refusals
naming the field, stale bases, racing posts, byte-identical earlier revisions and a verifying audit trail."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from review_case import finished_job_box
from scipy import ndimage

from appliance.io.nifti import load_volume
from appliance.service.runtime import ApplianceService


@pytest.fixture
def box(service_factory: Callable[..., ApplianceService], tmp_path: Path, shared_data: Path) -> dict[str, Any]:
    return finished_job_box(service_factory, tmp_path, shared_data)


def _small_bone_island(box: dict[str, Any]) -> tuple[list[float], int]:
    """The LPS position of a voxel of the smallest bone piece, and that piece's size in voxels."""
    components, _ = ndimage.label(box["labelmap"].labels == 2, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(components.ravel())[1:]
    smallest = int(np.argmin(sizes)) + 1
    ijk = np.argwhere(components == smallest)[0]
    aff = box["volume"].affine
    return [float(v) for v in aff[:3, :3] @ ijk + aff[:3, 3]], int(sizes[smallest - 1])


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.req("REQ-FUNC-1005", "REQ-FUNC-1006", "REQ-TRACE-1002", "REQ-PERF-1007")
def test_correction_loop_through_the_api(box: dict[str, Any]) -> None:
    client, headers, job, svc = box["client"], box["headers"], box["job"], box["svc"]
    listed = client.get(f"/api/jobs/{job}/revisions", headers=headers).get_json()
    assert listed["current"] == 0 and [r["revision"] for r in listed["revisions"]] == [0]
    assert {f["path"] for f in listed["revisions"][0]["files"]} >= {"labels.nii.gz", "structures.json",
                                                                    "meshes/bone.stl"}
    rev0_dir = svc.data_dir / "revisions" / f"job-{job}" / "rev-0000"
    frozen = _snapshot(rev0_dir)
    r = client.post(f"/api/jobs/{job}/structures/bone/review", headers=headers,
                    json={"revision": 0, "decision": "request_correction", "note": "remove the loose fragment"})
    assert r.status_code == 201 and r.get_json()["state"] == "correction_requested"
    (item,) = client.get("/api/review/worklist", headers=headers).get_json()["corrections"]
    assert (item["job_id"], item["structure"], item["note"]) == (job, "bone", "remove the loose fragment")

    point, size = _small_bone_island(box)
    bone_before = int(np.count_nonzero(box["labelmap"].labels == 2))
    brush = {"center_lps": point, "radius_mm": 7.0}
    r = client.post(f"/api/jobs/{job}/revisions", headers=headers, json={
        "base": 0, "reason": "fragment is noise",
        "ops": [{"op": "remove_island", "structure": "bone", "point_lps": point},
                {"op": "erase", "structure": "body", "sphere": brush}]})
    assert r.status_code == 201, r.get_json()
    rev1 = r.get_json()
    assert (rev1["revision"], rev1["parent"], rev1["author"], rev1["role"]) == (1, 0, "api:token", "api")
    assert rev1["changed"] == ["body", "bone"] and rev1["mesh_qa"]["bone"]["watertight"] is True
    bone_ml = rev1["volume_change_ml"]["bone"]
    assert bone_ml["change"] < 0 and bone_ml["after"] - bone_ml["before"] == pytest.approx(bone_ml["change"], abs=2e-3)
    stl = client.get(f"/api/jobs/{job}/revisions/1/files/meshes/bone.stl", headers=headers)
    assert stl.status_code == 200
    assert hashlib.sha256(stl.data).hexdigest() == {f["path"]: f["sha256"] for f in rev1["files"]}["meshes/bone.stl"]
    detail = client.get(f"/api/jobs/{job}/revisions/1", headers=headers).get_json()
    assert detail["review"]["bone"]["state"] == "corrected"
    assert client.get("/api/review/worklist", headers=headers).get_json()["corrections"] == []
    r = client.post(f"/api/jobs/{job}/structures/bone/review", headers=headers,
                    json={"revision": 1, "decision": "approve", "note": ""})
    assert r.status_code == 201
    detail = client.get(f"/api/jobs/{job}/revisions/1", headers=headers).get_json()
    assert detail["review"]["bone"]["state"] == "approved" and detail["review"]["body"]["state"] == "corrected"
    labels_file = client.get(f"/api/jobs/{job}/revisions/1/files/labels.nii.gz", headers=headers)
    assert labels_file.status_code == 200
    store_labels = svc.data_dir / "revisions" / f"job-{job}" / "rev-0001" / "labels.nii.gz"
    assert int(np.count_nonzero(load_volume(store_labels).array == 2)) == bone_before - size

    actions = [r.action for r in svc.audit.records()]
    assert actions.count("revision.created") == 2 and "structure.approved" in actions
    assert "structure.correction_requested" in actions and svc.audit.verify() == []
    assert _snapshot(rev0_dir) == frozen


@pytest.mark.req("REQ-SAFE-1001", "REQ-SAFE-1003", "REQ-FUNC-1004", "REQ-FUNC-1006")
def test_bad_edits_are_refused_naming_the_field_and_nothing_is_written(box: dict[str, Any]) -> None:
    client, headers, job, svc = box["client"], box["headers"], box["job"], box["svc"]
    url = f"/api/jobs/{job}/revisions"
    point, _ = _small_bone_island(box)
    good = {"op": "erase", "structure": "bone", "sphere": {"center_lps": point, "radius_mm": 5}}
    for body, field in (
        ({"base": 0, "ops": [{**good, "structure": "liver"}]}, "ops[0].structure"),
        ({"base": 0, "ops": [{**good, "sphere": {"center_lps": [9999, 0, 0], "radius_mm": 5}}]},
         "ops[0].sphere.center_lps"),
        ({"base": 0, "ops": [{**good, "sphere": {"center_lps": point, "radius_mm": 0}}]}, "ops[0].sphere.radius_mm"),
        ({"base": 0, "ops": [{**good, "sphere": {"center_lps": point, "radius_mm": "5"}}]},
         "ops[0].sphere.radius_mm"),
        ({"base": "0", "ops": [good]}, "base"),
        ({"base": 0, "ops": good}, "ops"),
        ({"base": 0, "ops": [good, {"op": "rename", "structure": "bone", "name": "body"}]}, "ops[1].name"),
        ({"base": 0, "ops": [good], "reason": 5}, "reason"),
        ({"base": 0, "ops": [good, {"op": "smooth", "structure": "bone", "method": "median", "radius_mm": 25}]},
         "ops[1].radius_mm"),
        ({"base": 0, "ops": [{"op": "scissors", "structure": "bone", "polygon_lps": [point, point, point],
                              "view_direction": [0, 0, 1]}]}, "ops[0].polygon_lps"),
        ({"base": 0, "ops": [{"op": "fill_between", "structure": "bone", "view": "axial", "from_lps": point,
                              "to_lps": point}]}, "ops[0].to_lps"),
    ):
        r = client.post(url, headers=headers, json=body)
        assert r.status_code == 400 and r.get_json()["field"] == field, (body, r.get_json())
    assert client.post(url, headers=headers, data="[]", content_type="application/json").status_code == 400
    assert [r["revision"] for r in client.get(url, headers=headers).get_json()["revisions"]] == [0]
    assert client.post(url, headers=headers, json={"base": 0, "ops": [good]}).status_code == 201
    stale = client.post(url, headers=headers, json={"base": 0, "ops": [good]})
    assert stale.status_code == 409 and "current revision 1" in stale.get_json()["error"]
    assert client.post(f"{url}/undo", headers=headers, json={"base": 0}).status_code == 409
    assert client.post(f"{url}/undo", headers=headers, json={"base": 1}).get_json()["current"] == 0
    assert client.post(f"{url}/undo", headers=headers, json={"base": 0}).status_code == 409  # nothing to undo
    assert client.post(f"{url}/redo", headers=headers, json={"base": 0}).get_json()["current"] == 1
    for path in ("../rev-0000/labels.nii.gz", "..%2F..%2Fsecret.key", "nothing.stl"):
        assert client.get(f"{url}/1/files/{path}", headers=headers).status_code == 404, path
    assert client.get(f"{url}/9", headers=headers).status_code == 404
    assert client.get("/api/jobs/999/revisions", headers=headers).status_code == 404
    review = f"/api/jobs/{job}/structures/bone/review"
    for body, field in (({"revision": 1, "decision": "maybe"}, "decision"),
                        ({"revision": 1, "decision": "request_correction", "note": " "}, "note"),
                        ({"revision": "1", "decision": "approve"}, "revision")):
        r = client.post(review, headers=headers, json=body)
        assert r.status_code == 400 and r.get_json()["field"] == field
    r = client.post(f"/api/jobs/{job}/structures/liver/review", headers=headers,
                    json={"revision": 1, "decision": "approve"})
    assert r.status_code == 400 and r.get_json()["field"] == "structure"
    assert client.get(url).status_code == 401  # same access rule as the service API
    assert [r.action for r in svc.audit.records() if r.action.startswith("revision.")] == [
        "revision.created", "revision.created", "revision.undo", "revision.redo"]


@pytest.mark.req("REQ-SAFE-1003")
def test_concurrent_posts_on_one_base_exactly_one_wins(box: dict[str, Any]) -> None:
    app, headers, job = box["app"], box["headers"], box["job"]
    point, _ = _small_bone_island(box)
    box["client"].get(f"/api/jobs/{job}/revisions", headers=headers)
    statuses: list[int] = []
    barrier = threading.Barrier(3)

    def post() -> None:
        client = app.test_client()
        barrier.wait()
        r = client.post(f"/api/jobs/{job}/revisions", headers=headers, json={
            "base": 0, "ops": [{"op": "remove_island", "structure": "bone", "point_lps": point}]})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=post) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201, 409, 409]
    listed = box["client"].get(f"/api/jobs/{job}/revisions", headers=headers).get_json()
    assert [r["revision"] for r in listed["revisions"]] == [0, 1] and listed["current"] == 1


@pytest.mark.req("REQ-FUNC-1006")
def test_review_routes_are_documented_and_need_the_session_or_the_token(box: dict[str, Any]) -> None:
    client = box["client"]
    spec = client.get("/api/openapi.json").get_json()
    rules = [r for r in box["app"].url_map.iter_rules() if r.endpoint.startswith("appliance_review_api.")]
    assert len(rules) == 10  # 8 review routes, the exported report and case manifest
    for rule in rules:
        documented = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule).replace("{job_id}", "{id}")
        documented = documented.replace("{number}", "{n}").replace("{relpath}", "{path}")
        methods = sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"})
        assert all(m.lower() in spec["paths"][documented] for m in methods), documented
        url = re.sub(r"<(?:([^:<>]+):)?[^<>]+>", lambda m: "1" if m.group(1) == "int" else "x", rule.rule)
        for method in methods:
            reply = client.open(url, method=method, json={})
            assert reply.status_code == 401 and "api_token" in reply.get_json()["error"], (method, url)
