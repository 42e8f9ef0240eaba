"""Export to USB for the print lab, from a real-CT case: the real CLI writes STL/3MF/AMF/PDF with file names free
of patient data, every file read back and hash-checked before the folder appears, then 'safe to remove';
nothing is ever overwritten; a failed read-back leaves the medium as it was; every export is audited."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.data import ROOT
from helpers.print_case import make_case

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.core import Mesh
from appliance.export.amf import check_amf_structure
from appliance.export.errors import UsbExportError
from appliance.export.usb import case_meshes, export_for_printing, parse_print_formats, read_case_manifest
from appliance.service.print_export import audited_print_export, folder_label

APPLIANCE = [sys.executable, "-m", "appliance.cli"]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, dict[str, Mesh]]:
    folder = tmp_path_factory.mktemp("case")
    return folder, make_case(shared_data, folder)


def _corners(mesh: Mesh) -> np.ndarray:
    """The mesh's triangles as sorted float32 corner rows (what an STL holds), for order-free comparison."""
    tri = mesh.vertices[mesh.faces].astype(np.float32).reshape(-1, 9)
    return tri[np.lexsort(tri.T[::-1])]


@pytest.mark.req("REQ-OUT-861", "REQ-SAFE-862", "REQ-TRACE-863", "REQ-FUNC-865")
def test_cli_export_writes_verified_print_files(case: tuple[Path, dict[str, Mesh]], tmp_path: Path) -> None:
    case_dir, meshes = case
    stick = tmp_path / "usb"
    stick.mkdir()
    run = subprocess.run(
        [*APPLIANCE, "export", str(case_dir), "--to", str(stick), "--formats", "stl,3mf,amf,pdf", "--languages", "en",
         "--data-dir", str(tmp_path / "data"), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    label = folder_label(case_dir)
    folder = stick / label
    assert result["safe_to_remove"] is True and Path(result["folder"]) == folder
    assert sorted(p.name for p in stick.iterdir()) == [label]  # no staging folder left behind
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([f"{label}_body.stl", f"{label}_bone.stl", f"{label}.3mf", f"{label}.amf",
                            f"{label}_report_en.pdf", "SHA256SUMS"])  # fmt: skip
    assert all(n.startswith((label, "SHA256SUMS")) for n in names)  # label + structure only: no patient data
    sums = dict(reversed(line.split("  ")) for line in (folder / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == set(names) - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    listed = {f["name"]: f for f in result["files"]}
    assert listed["SHA256SUMS"]["sha256"] == hashlib.sha256((folder / "SHA256SUMS").read_bytes()).hexdigest()
    # geometry survives: STL triangles equal the case's, AMF has the structure, 3MF declares millimetres
    exported = {m.name: m for m in case_meshes(folder.parent, {"structures": [
        {"name": n, "files": {"stl": f"{label}/{label}_{n}.stl"}} for n in meshes]}, None)}  # fmt: skip
    for name, mesh in meshes.items():
        assert np.array_equal(_corners(exported[name]), _corners(mesh)), name
    assert check_amf_structure((folder / f"{label}.amf").read_bytes()) == {
        n: m.n_triangles for n, m in meshes.items()}  # fmt: skip
    with zipfile.ZipFile(folder / f"{label}.3mf") as z:
        model = z.read("3D/3dmodel.model").decode()
    assert 'unit="millimeter"' in model and 'name="body"' in model and 'name="bone"' in model
    assert (folder / f"{label}_report_en.pdf").read_bytes().startswith(b"%PDF-")
    (record,) = AuditLog(tmp_path / "data" / AUDIT_FILENAME).records(action="export.usb")
    assert record.actor.startswith("cli:") and record.requirement == "REQ-OUT-861"
    assert {f["name"]: f["sha256"] for f in record.details["files"]} == {n: f["sha256"] for n, f in listed.items()}
    assert record.details["safe_to_remove"] is True
    assert AuditLog(tmp_path / "data" / AUDIT_FILENAME).verify() == []


@pytest.mark.req("REQ-OUT-861", "REQ-SAFE-862")
def test_chosen_structures_and_never_overwrite(case: tuple[Path, dict[str, Mesh]], tmp_path: Path) -> None:
    case_dir, _ = case
    first = export_for_printing(case_dir, tmp_path, "EDGE3D-job-3", ["stl", "amf"], ["bone"])
    second = export_for_printing(case_dir, tmp_path, "EDGE3D-job-3", ["stl", "amf"], ["bone"])
    assert (first.folder.name, second.folder.name) == ("EDGE3D-job-3", "EDGE3D-job-3-2")
    assert sorted(p.name for p in first.folder.iterdir()) == ["EDGE3D-job-3.amf", "EDGE3D-job-3_bone.stl",
                                                              "SHA256SUMS"]  # fmt: skip
    assert first.structures == ("bone",) and first.formats == ("stl", "amf")
    steps: list[str] = []
    export_for_printing(case_dir, tmp_path, "EDGE3D-job-4", "stl", ["body"], progress=lambda s, f: steps.append(s))
    assert steps[0] == "make" and "verify" in steps and steps[-1] == "done"


@pytest.mark.req("REQ-SAFE-862", "REQ-TRACE-863")
def test_failed_read_back_leaves_the_medium_as_it_was(case: tuple[Path, dict[str, Mesh]], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    case_dir, _ = case
    stick = tmp_path / "usb"
    stick.mkdir()
    (stick / "holiday.jpg").write_bytes(b"kept")
    monkeypatch.setattr("appliance.export.usb._read_back", lambda path: "0" * 64)  # the stick returns other bytes
    audit = AuditLog(tmp_path / AUDIT_FILENAME)
    with pytest.raises(UsbExportError, match="differs from what was written"):
        audited_print_export(audit, "ui:nurse", "ab" * 32, case_dir, stick, "EDGE3D-job-5", ["stl"])
    assert sorted(p.name for p in stick.iterdir()) == ["holiday.jpg"]  # no partial folder, nothing touched
    (failed,) = audit.records(action="export.usb_failed")
    assert failed.actor == "ui:nurse" and "differs" in failed.details["error"]


@pytest.mark.req("REQ-SAFE-862")
def test_bad_requests_write_nothing(case: tuple[Path, dict[str, Mesh]], tmp_path: Path) -> None:
    case_dir, _ = case
    bad: list[dict[str, Any]] = [
        {"formats": ["stl", "gcode"]}, {"formats": []}, {"structures": ["liver"]}, {"label": "DOE^JANE"},
        {"languages": ["fr"]}, {"target": tmp_path / "not-plugged-in"}, {"case_dir": tmp_path / "nothing"},
    ]
    for change in bad:
        args: dict[str, Any] = {"case_dir": case_dir, "target": tmp_path, "label": "EDGE3D-job-9",
                                "formats": ["stl", "pdf"], "structures": None, "languages": ["en"]}  # fmt: skip
        args.update(change)
        with pytest.raises(UsbExportError):
            export_for_printing(**args)
    assert list(tmp_path.iterdir()) == []
    assert parse_print_formats("STL, .amf") == ("stl", "amf")
    assert folder_label(case_dir) == f"EDGE3D-case-{read_case_manifest(case_dir)['input']['identity_hash'][:12]}"
