"""Lesions and margins through the service API (issue 15 item 4), on the app `appliance serve` builds with a
finished job on a real CT: a lesion grown from a tapped seed becomes the next revision with its margin shells,
margin table and measurements; an existing structure can be taken as the lesion; bad input is refused naming the
field with nothing written; the audit trail names the actor and verifies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from review_case import finished_job_box
from scipy import ndimage

import engines.margin_table
import engines.margins
from appliance.core import LabelMap
from appliance.review.edit import apply_operations
from appliance.review.operations import parse_operations
from appliance.review.store import RevisionStore
from appliance.service.runtime import ApplianceService
from engines.margin_table import margin_table
from kernels.distance import distance_to

pytestmark = pytest.mark.req("REQ-FUNC-1090")


@pytest.fixture
def box(service_factory: Callable[..., ApplianceService], tmp_path: Path, shared_data: Path) -> dict[str, Any]:
    return finished_job_box(service_factory, tmp_path, shared_data)


def _soft_tissue_seed(box: dict[str, Any]) -> tuple[list[float], float]:
    """A voxel of the body well inside soft tissue (20..60 HU, its 3x3x1 neighbourhood too): LPS mm and HU."""
    image = box["volume"].array.astype(np.float32)
    calm = ndimage.minimum_filter(image, (5, 5, 1)) > 20
    calm &= ndimage.maximum_filter(image, (5, 5, 1)) < 60
    ijk = np.argwhere(calm)[len(np.argwhere(calm)) // 2]
    aff = box["volume"].affine
    return [float(v) for v in aff[:3, :3] @ ijk + aff[:3, 3]], float(image[tuple(ijk)])


def test_a_lesion_from_a_seed_becomes_a_revision_with_shells_table_and_measurements(box: dict[str, Any]) -> None:
    client, headers, job, svc = box["client"], box["headers"], box["job"], box["svc"]
    seed, hu = _soft_tissue_seed(box)
    r = client.post(f"/api/jobs/{job}/lesions", headers=headers,
                    json={"seed_lps": seed, "window": [hu - 15, hu + 15], "max_radius_mm": 12,
                          "margins_mm": [10, 5], "name": "tumour", "base": 0})  # fmt: skip
    assert r.status_code == 201, r.get_json()
    answer = r.get_json()
    assert answer["lesion"] == "tumour" and answer["revision"]["revision"] == 1 and answer["margins_mm"] == [5, 10]
    labelmap = RevisionStore(svc.data_dir / "revisions" / f"job-{job}").labelmap(1)
    names = {s.name: s for s in labelmap.structures}
    assert {"tumour", "tumour_margin_5mm", "tumour_margin_10mm"} <= set(names)
    lesion = labelmap.labels == names["tumour"].label
    voxel_ml = abs(float(np.linalg.det(labelmap.affine[:3, :3]))) / 1000
    volume = next(m for m in answer["measurements"] if m["kind"] == "lesion_volume")
    assert volume["value"] == pytest.approx(lesion.sum() * voxel_ml, abs=1e-3) and lesion.sum() > 0
    # the table's minimum distance to bone is the exact anisotropic distance between voxel centres
    spacing = np.linalg.norm(labelmap.affine[:3, :3], axis=0)
    to_lesion = ndimage.distance_transform_edt(~lesion, sampling=spacing)
    bone_min = float(to_lesion[labelmap.labels == names["bone"].label].min())
    row = next(r for r in answer["margin_table"]["rows"] if r["structure"] == "bone")
    assert row["min_distance_mm"] == pytest.approx(bone_min, abs=1e-3)
    listed = client.get(f"/api/jobs/{job}/lesions", headers=headers).get_json()
    assert listed["revision"] == 1 and [x["name"] for x in listed["lesions"]] == ["tumour"]
    assert listed["lesions"][0]["margin_table"] == answer["margin_table"]
    (record,) = svc.audit.records(action="lesion.created")
    assert record.actor == "api:token" and record.details["lesion"] == "tumour" and record.details["revision"] == 1
    assert svc.audit.verify() == []


def test_an_existing_structure_is_taken_as_the_lesion(box: dict[str, Any]) -> None:
    client, headers, job = box["client"], box["headers"], box["job"]
    r = client.post(f"/api/jobs/{job}/lesions", headers=headers,
                    json={"from_structure": "bone", "name": "mass", "margins_mm": [5]})
    assert r.status_code == 201, r.get_json()
    structures = {s["name"]: s for s in r.get_json()["revision"]["structures"]}
    assert structures["mass"]["category"] == "lesion" and "bone" not in structures
    assert "mass_margin_5mm" in structures


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"seed_lps": "here", "window": [0, 50]}, 400, "seed_lps"),
    ({"seed_lps": [0, 0], "window": [0, 50]}, 400, "seed_lps"),
    ({"seed_lps": [0.0, 0.0, 0.0], "window": [0, 50], "margins_mm": [0]}, 400, "ops[2].margins_mm[0]"),
    ({"seed_lps": [0.0, 0.0, 0.0], "window": [0, 50], "margins_mm": "5"}, 400, "ops[2].margins_mm"),
    ({"seed_lps": [1e6, 0.0, 0.0], "window": [0, 50]}, 400, "ops[1].seed_lps"),
    ({"from_structure": "liver"}, 400, "from_structure"),
    ({"from_structure": "bone", "base": 7}, 409, None),
])  # fmt: skip
def test_bad_lesion_requests_are_refused_naming_the_field_and_write_nothing(box: dict[str, Any], body: dict[str, Any],
                                                                           status: int, field: str | None) -> None:
    client, headers, job, svc = box["client"], box["headers"], box["job"], box["svc"]
    r = client.post(f"/api/jobs/{job}/lesions", headers=headers, json=body)
    assert r.status_code == status, r.get_json()
    assert r.get_json().get("field") == field
    revisions = client.get(f"/api/jobs/{job}/revisions", headers=headers).get_json()["revisions"]
    assert [x["revision"] for x in revisions] == [0]
    assert svc.audit.records(action="lesion.created") == []


@pytest.mark.req("REQ-FUNC-1431")
def test_the_margin_table_is_stored_with_the_revision_and_read_back_without_a_distance_map(
        box: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    client, headers, job, svc = box["client"], box["headers"], box["job"], box["svc"]
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return distance_to(*args, **kwargs)

    monkeypatch.setattr(engines.margins, "distance_to", counted)
    monkeypatch.setattr(engines.margin_table, "distance_to", counted)
    seed, hu = _soft_tissue_seed(box)
    ops_body = {"seed_lps": seed, "window": [hu - 15, hu + 15], "max_radius_mm": 12, "margins_mm": [5, 10],
                "name": "tumour"}
    answer = client.post(f"/api/jobs/{job}/lesions", headers=headers, json=ops_body).get_json()
    assert len(calls) == 1  # the margins operation's distance map, not a second one for the answer
    store = RevisionStore(svc.data_dir / "revisions" / f"job-{job}")
    assert store.revision(1).margin_tables == {"tumour": answer["margin_table"]}
    listed = client.get(f"/api/jobs/{job}/lesions", headers=headers).get_json()
    assert len(calls) == 1 and listed["lesions"][0]["margin_table"] == answer["margin_table"]
    # the same numbers as the table computed on its own from the label map the shells were made on
    ops = parse_operations(store.revision(1).ops[:2])
    before = store.labelmap(0)
    grown = apply_operations(before.labels, before.structures, before.affine, ops, box["volume"])
    alone = margin_table(LabelMap(grown.labels, before.affine, grown.structures), "tumour", [5, 10]).to_dict()
    assert alone == answer["margin_table"]
    calls.clear()
    recolour = client.post(f"/api/jobs/{job}/revisions", headers=headers, json={
        "base": 1, "ops": [{"op": "recolour", "structure": "bone", "color": [10, 20, 30]}]})
    assert recolour.status_code == 201 and store.revision(2).margin_tables == {"tumour": answer["margin_table"]}
    assert client.get(f"/api/jobs/{job}/lesions", headers=headers).get_json()["lesions"] == listed["lesions"]
    assert calls == []
    erase = client.post(f"/api/jobs/{job}/revisions", headers=headers, json={
        "base": 2, "ops": [{"op": "erase", "structure": "tumour", "sphere": {"center_lps": seed, "radius_mm": 2}}]})
    assert erase.status_code == 201 and store.revision(3).margin_tables == {}
    after = client.get(f"/api/jobs/{job}/lesions", headers=headers).get_json()["lesions"][0]
    assert len(calls) == 1 and after["margin_table"] == margin_table(store.labelmap(3), "tumour", [5, 10]).to_dict()
