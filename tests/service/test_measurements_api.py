"""Measurements saved with the case through the service API (issue 15 items 3 and 4), on the app `appliance serve`
builds with a finished job on a real CT: each kind is measured on a revision and kept with it, the author comes from
the token (a name in the body is ignored), every bad field is refused naming it with nothing saved, and the audit
trail holds each saved measurement and verifies."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from review_case import finished_job_box
from scipy import ndimage

from appliance.review.measurements import MEASUREMENTS_FILE
from appliance.service.runtime import ApplianceService

pytestmark = pytest.mark.req("REQ-FUNC-1430")


@pytest.fixture
def box(service_factory: Callable[..., ApplianceService], tmp_path: Path, shared_data: Path) -> dict[str, Any]:
    return finished_job_box(service_factory, tmp_path, shared_data)


def _lps(box: dict[str, Any], ijk: tuple[int, int, int]) -> list[float]:
    aff = box["volume"].affine
    return [float(v) for v in aff[:3, :3] @ np.asarray(ijk, dtype=float) + aff[:3, 3]]


def _centre_points(box: dict[str, Any]) -> tuple[list[float], list[float], list[float]]:
    shape = box["volume"].shape
    c = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
    return _lps(box, c), _lps(box, (c[0] + 3, c[1], c[2])), _lps(box, (c[0], c[1] + 2, c[2]))


def test_each_kind_is_measured_on_its_revision_and_kept_with_the_case(box: dict[str, Any]) -> None:
    client, headers, job, svc, lm = box["client"], box["headers"], box["job"], box["svc"], box["labelmap"]
    a, b, c = _centre_points(box)
    bodies = [
        {"kind": "point_distance", "a_lps": a, "b_lps": b, "name": "ruler", "author": "someone else"},
        {"kind": "angle", "a_lps": b, "vertex_lps": a, "c_lps": c},
        {"kind": "lesion_volume", "structure": "bone", "revision": 0},
        {"kind": "structure_distance", "structures": ["bone", "body"]},
        {"kind": "axial_diameters", "structure": "bone"},
    ]
    answers = []
    for body in bodies:
        r = client.post(f"/api/jobs/{job}/measurements", headers=headers, json=body)
        assert r.status_code == 201, r.get_json()
        answers.append(r.get_json())
    distance, angle, volume, between, recist = answers
    assert distance["value"] == pytest.approx(math.dist(a, b), abs=1e-3) and distance["name"] == "ruler"
    assert angle["value"] == pytest.approx(90.0, abs=1e-3) and angle["unit"] == "deg"
    spacing = np.linalg.norm(lm.affine[:3, :3], axis=0)
    bone = lm.labels == lm.structure("bone").label
    assert volume["value"] == pytest.approx(bone.sum() * float(np.prod(spacing)) / 1000, abs=1e-3)
    to_bone = ndimage.distance_transform_edt(~bone, sampling=spacing)
    assert between["value"] == pytest.approx(float(to_bone[lm.labels == lm.structure("body").label].min()), abs=1e-3)
    assert recist["perpendicular_mm"] > 0 and recist["value"] >= recist["perpendicular_mm"]
    assert [m["measurement_id"] for m in answers] == ["m-0001", "m-0002", "m-0003", "m-0004", "m-0005"]
    assert {(m["author"], m["role"], m["revision"]) for m in answers} == {("api:token", "api", 0)}
    listed = client.get(f"/api/jobs/{job}/measurements", headers=headers).get_json()
    assert listed["measurements"] == answers and listed["current"] == 0
    saved = json.loads((svc.data_dir / "revisions" / f"job-{job}" / MEASUREMENTS_FILE).read_text(encoding="utf-8"))
    assert saved == answers
    records = svc.audit.records(action="measurement.saved")
    assert [(x.actor, x.details["measurement_id"], x.details["value"]) for x in records] == [
        ("api:token", m["measurement_id"], m["value"]) for m in answers]
    assert svc.audit.verify() == []


def test_a_measurement_on_a_later_revision_names_that_revision(box: dict[str, Any]) -> None:
    client, headers, job = box["client"], box["headers"], box["job"]
    a, _, _ = _centre_points(box)
    r = client.post(f"/api/jobs/{job}/revisions", headers=headers,
                    json={"base": 0, "ops": [{"op": "erase", "structure": "bone",
                                              "sphere": {"center_lps": a, "radius_mm": 30}}]})
    assert r.status_code == 201, r.get_json()
    first = client.post(f"/api/jobs/{job}/measurements", headers=headers,
                        json={"kind": "lesion_volume", "structure": "bone"}).get_json()
    old = client.post(f"/api/jobs/{job}/measurements", headers=headers,
                      json={"kind": "lesion_volume", "structure": "bone", "revision": 0}).get_json()
    assert first["revision"] == 1 and old["revision"] == 0 and first["value"] <= old["value"]


BAD = [
    ("not an object", "body"),
    ({"kind": "weight"}, "kind"),
    ({"kind": "point_distance", "a_lps": [0, 0], "b_lps": [0, 0, 0]}, "a_lps"),
    ({"kind": "point_distance", "a_lps": "here", "b_lps": "centre"}, "a_lps"),
    ({"kind": "point_distance", "a_lps": "centre", "b_lps": [1e6, 0, 0]}, "b_lps"),
    ({"kind": "angle", "a_lps": "centre", "vertex_lps": "centre", "c_lps": "centre"}, "a_lps"),
    ({"kind": "lesion_volume", "structure": "liver"}, "structure"),
    ({"kind": "lesion_volume"}, "structure"),
    ({"kind": "structure_distance", "structures": ["bone"]}, "structures"),
    ({"kind": "structure_distance", "structures": ["bone", "bone"]}, "structures[1]"),
    ({"kind": "structure_distance", "structures": ["bone", "spleen"]}, "structures[1]"),
    ({"kind": "lesion_volume", "structure": "bone", "revision": 3}, "revision"),
    ({"kind": "lesion_volume", "structure": "bone", "revision": True}, "revision"),
    ({"kind": "lesion_volume", "structure": "bone", "name": "x" * 201}, "name"),
]  # fmt: skip


def test_bad_measurements_are_refused_naming_the_field_and_save_nothing(box: dict[str, Any]) -> None:
    client, headers, job, svc = box["client"], box["headers"], box["job"], box["svc"]
    centre, _, _ = _centre_points(box)
    for body, field in BAD:
        sent = {k: (centre if v == "centre" else v) for k, v in body.items()} if isinstance(body, dict) else body
        r = client.post(f"/api/jobs/{job}/measurements", headers=headers, json=sent)
        assert (r.status_code, r.get_json()["field"]) == (400, field), (body, r.get_json())
    assert client.get(f"/api/jobs/{job}/measurements", headers=headers).get_json()["measurements"] == []
    assert not (svc.data_dir / "revisions" / f"job-{job}" / MEASUREMENTS_FILE).exists()
    assert svc.audit.records(action="measurement.saved") == []


def test_measurements_of_an_unknown_job_are_404(box: dict[str, Any]) -> None:
    r = box["client"].get("/api/jobs/999/measurements", headers=box["headers"])
    assert r.status_code == 404
    assert box["client"].get("/api/jobs/1/measurements").status_code == 401
