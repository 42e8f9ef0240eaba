"""The revision store and the edit workflow on disk: revision 0 from a job's outputs, immutable revisions with
their records and hashes, re-meshing of the changed structures only, undo/redo, stale bases, racing writers."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.core import LabelMap, Structure, StructureCategory, Volume
from appliance.export.stl import write_stl
from appliance.io.nifti import save_labelmap
from appliance.review import StaleRevision
from appliance.review.errors import NothingToMove, UnknownRevision
from appliance.review.remesh import remesh_structures
from appliance.review.store import RevisionStore, folder_name
from appliance.review.workflow import MeshSettings, create_revision, redo, undo

STRUCTURES = (Structure(1, "bone", (241, 238, 222), StructureCategory.BONE),
              Structure(2, "aorta", (216, 101, 79), StructureCategory.VESSEL))
FAST = MeshSettings("cpu", 2, None)


def _job(tmp_path: Path) -> tuple[RevisionStore, np.ndarray]:
    labels = np.zeros((30, 30, 12), dtype=np.uint8)
    labels[4:14, 4:14, 2:9] = 1
    labels[22:25, 22:25, 2:4] = 1
    labels[15:20, 4:14, 2:9] = 2
    aff = np.diag([0.9, 0.9, 2.0, 1.0])
    aff[:3, 3] = [10.0, -5.0, 40.0]
    out = tmp_path / "job"
    save_labelmap(LabelMap(labels, aff, STRUCTURES), out / "labels.nii.gz")
    meshes = remesh_structures(labels, aff, STRUCTURES, ["bone", "aorta"], "cpu", 2)
    for name, mesh in meshes.items():
        write_stl([mesh], out / "meshes" / f"{name}.stl")
    store = RevisionStore(tmp_path / "revisions" / "job-1")
    store.initialise(out / "labels.nii.gz", STRUCTURES, {n: out / "meshes" / f"{n}.stl" for n in meshes}, "system")
    return store, aff


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _erase_island(aff: np.ndarray) -> list[dict[str, Any]]:
    point = [float(v) for v in aff[:3, :3] @ [23, 23, 3] + aff[:3, 3]]
    return [{"op": "remove_island", "structure": "bone", "point_lps": point}]


def _no_image() -> Volume | None:
    return None


@pytest.mark.req("REQ-TRACE-1002", "REQ-PERF-1007")
def test_revisions_are_immutable_records_with_hashes(tmp_path: Path) -> None:
    store, aff = _job(tmp_path)
    rev0 = store.revision(0)
    assert rev0.parent is None and sorted(rev0.meshes) == ["aorta", "bone"] and store.current() == 0
    frozen = _snapshot(store.root / folder_name(0))
    rev1 = create_revision(store, 0, _erase_island(aff), "small island is noise", "ui:engineer:wang", _no_image, FAST)
    assert (rev1.number, rev1.parent, rev1.author, rev1.role) == (1, 0, "ui:engineer:wang", "engineer")
    assert rev1.changed == ["bone"] and rev1.ops == _erase_island(aff) and rev1.reason == "small island is noise"
    # only bone was re-meshed (with its QA); aorta keeps revision 0's file
    assert rev1.meshes == {"aorta": rev0.meshes["aorta"], "bone": "rev-0001/meshes/bone.stl"}
    assert rev1.mesh_qa["bone"]["watertight"] is True and set(rev1.mesh_qa) == {"bone"}
    assert store.verify(1) == [] and set(rev1.files) == {"labels.nii.gz", "structures.json", "meshes/bone.stl"}
    lm1 = store.labelmap(1)
    assert not np.any(lm1.labels[22:25, 22:25, 2:4]) and np.count_nonzero(lm1.labels == 1) == 10 * 10 * 7
    rev2 = create_revision(store, 1, [{"op": "recolour", "structure": "aorta", "color": [9, 9, 9]}], "", "api:token",
                           _no_image, FAST)
    assert rev2.changed == [] and rev2.restyled == ["aorta"] and rev2.meshes["bone"] == "rev-0001/meshes/bone.stl"
    assert _snapshot(store.root / folder_name(0)) == frozen  # byte for byte
    assert json.loads((store.root / folder_name(2) / "structures.json").read_text())[1]["color"] == [9, 9, 9]
    (store.root / folder_name(1) / "structures.json").chmod(0o644)
    (store.root / folder_name(1) / "structures.json").write_text("[]")
    assert store.verify(1) == ["structures.json"]  # tampering is detected


@pytest.mark.req("REQ-SAFE-1003", "REQ-FUNC-1004")
def test_undo_redo_and_stale_bases(tmp_path: Path) -> None:
    store, aff = _job(tmp_path)
    create_revision(store, 0, _erase_island(aff), "", "ui:engineer", _no_image, FAST)
    with pytest.raises(StaleRevision):
        create_revision(store, 0, _erase_island(aff), "", "ui:engineer", _no_image, FAST)
    assert store.numbers() == [0, 1]
    with pytest.raises(StaleRevision):
        undo(store, 0, "ui:engineer")
    assert undo(store, 1, "ui:engineer")["current"] == 0
    with pytest.raises(NothingToMove):
        undo(store, 0, "ui:engineer")
    assert redo(store, 0, "ui:engineer")["current"] == 1
    with pytest.raises(NothingToMove):
        redo(store, 1, "ui:engineer")
    undo(store, 1, "ui:engineer")
    branch = create_revision(store, 0, [{"op": "delete", "structure": "aorta"}], "", "ui:engineer", _no_image, FAST)
    assert (branch.number, branch.parent, store.current()) == (2, 0, 2)
    assert [e["event"] for e in store.state()["events"]] == ["created", "created", "undo", "redo", "undo", "created"]
    with pytest.raises(UnknownRevision):
        store.revision(7)
    with pytest.raises(UnknownRevision):
        store.file(1, "../rev-0000/labels.nii.gz")


@pytest.mark.req("REQ-SAFE-1003")
def test_racing_writers_on_one_base_exactly_one_wins(tmp_path: Path) -> None:
    store, aff = _job(tmp_path)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def edit() -> None:
        barrier.wait()
        try:
            create_revision(store, 0, _erase_island(aff), "", "ui:engineer", _no_image, FAST)
            outcomes.append("won")
        except StaleRevision:
            outcomes.append("stale")

    threads = [threading.Thread(target=edit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["stale", "stale", "stale", "won"] and store.numbers() == [0, 1]
    assert not [p for p in store.root.iterdir() if p.name.startswith(".rev")]  # no half-written revision left


@pytest.mark.req("REQ-FUNC-1005")
def test_review_states_follow_revisions_and_only_a_surgeon_approves(tmp_path: Path) -> None:
    from appliance.review.errors import ReviewNotAllowed
    from appliance.review.states import record_decision, structure_states

    store, aff = _job(tmp_path)
    assert {s["state"] for s in structure_states(store, 0).values()} == {"automatic"}
    record_decision(store, "bone", 0, "request_correction", "island", "ui:surgeon:li")
    with pytest.raises(ReviewNotAllowed):
        record_decision(store, "bone", 0, "approve", "", "ui:nurse:chen")
    create_revision(store, 0, _erase_island(aff), "", "ui:engineer", _no_image, FAST)
    create_revision(store, 1, [{"op": "recolour", "structure": "aorta", "color": [1, 1, 1]}], "", "ui:engineer",
                    _no_image, FAST)
    states = structure_states(store, 2)
    assert states["bone"]["state"] == "corrected" and states["aorta"]["state"] == "automatic"
    assert structure_states(store, 0)["bone"]["state"] == "correction_requested"  # per revision
    event = record_decision(store, "bone", 2, "approve", "", "ui:surgeon:li")
    assert (event["role"], structure_states(store, 2)["bone"]["state"]) == ("surgeon", "approved")
    assert structure_states(store, 1)["bone"]["state"] == "corrected"
