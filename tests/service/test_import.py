"""USB / folder import: DICOMDIR and loose files, nothing outside the medium read, skipped files with reasons,
zeroed preambles, the medium left untouched."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet
from svc_helpers import FakeReconstruct, prepare_ct_series

from appliance.service.importer import ImportWatcher, import_medium
from appliance.service.runtime import ApplianceService


def _tree_digest(root: Path) -> dict[str, tuple[str, int, int]]:
    """Content hash, size and modification time of every entry (links not followed)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
        out[str(p.relative_to(root))] = (digest, st.st_size, st.st_mtime_ns)
    return out


def _medium(shared_data: Path, tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """A USB stick: 6 CT slices in a DICOMDIR file set, 4 loose ones, and the traps."""
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "src", n=10)
    medium = tmp_path / "watch" / "USBSTICK"
    fs = FileSet()
    for f in files[:6]:
        ds = pydicom.dcmread(f)
        ds.StudyID = ds.StudyID or "1"  # the DICOMDIR study record needs one
        ds.SeriesNumber = ds.get("SeriesNumber") or 1
        ds.InstanceNumber = ds.get("InstanceNumber") or 1
        fs.add(ds)
    fs.write(medium)
    loose = medium / "EXTRA"
    loose.mkdir()
    for i, f in enumerate(files[6:]):
        data = bytearray(f.read_bytes())
        data[:128] = b"MZ\x90\x00" + b"\xcc" * 124  # a preamble carrying "executable" bytes
        (loose / f"IMG{i}").write_bytes(bytes(data))
    (medium / "README.TXT").write_text("not a dicom file")
    outside_uid, outside = prepare_ct_series(shared_data, tmp_path / "outside", n=1)
    (medium / "LINK.DCM").symlink_to(outside[0])  # a link to a file outside the medium
    (medium / "LINKDIR").symlink_to(outside[0].parent, target_is_directory=True)
    big = medium / "BIG.DCM"
    big.write_bytes(files[0].read_bytes() + b"\0" * 3_000_000)
    # a DICOMDIR record pointing outside the medium
    dicomdir = pydicom.dcmread(medium / "DICOMDIR")
    dicomdir.DirectoryRecordSequence[-1].ReferencedFileID = ["..", "..", "outside", "ct000.dcm"]
    dicomdir.save_as(medium / "DICOMDIR")
    sops = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    return medium, {"study": study_uid, "sops": sops, "outside_study": outside_uid}


@pytest.mark.req("REQ-ACQ-304")
def test_medium_import(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc = service_factory(FakeReconstruct(), **{"import": {"max_file_bytes": 2_000_000}})
    medium, info = _medium(shared_data, tmp_path)
    before = _tree_digest(medium)
    report = import_medium(svc.import_context, medium)
    assert _tree_digest(medium) == before  # the medium is only read (contents, sizes, mtimes unchanged)
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert "README.TXT" in reasons and "not" in reasons["README.TXT"]
    assert "BIG.DCM" in reasons and "larger than the import limit" in reasons["BIG.DCM"]
    assert "symbolic link" in reasons["LINK.DCM"] and "symbolic link" in reasons["LINKDIR"]
    assert any("path traversal" in r for r in reasons.values()), reasons
    stored = {p.stem for p in (svc.data_dir / "studies").rglob("*.dcm")}
    # the DICOMDIR's last record was redirected outside; that instance is still found by walking the medium
    sops = info["sops"]
    assert isinstance(sops, list) and stored == set(sops)
    assert report.stored == 10 and report.studies == {info["study"]}
    assert svc.catalogue.studies()[0].study_uid == info["study"]  # nothing of the outside study
    for p in (svc.data_dir / "studies").rglob("*.dcm"):
        head = p.read_bytes()[:132]
        assert head[:128] == b"\0" * 128 and head[128:] == b"DICM"
    (rec,) = svc.audit.records(action="import.medium")
    assert rec.actor == "usb:USBSTICK" and rec.details["stored"] == 10 and rec.requirement == "REQ-ACQ-304"
    again = import_medium(svc.import_context, medium)
    assert again.stored == 0 and again.already_present == 10


@pytest.mark.req("REQ-ACQ-304", "REQ-FUNC-304")
def test_watcher_imports_each_medium_once_and_study_completes(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    svc = service_factory(FakeReconstruct(), **{"import": {"watch_dir": str(watch), "poll_seconds": 0.1}})
    watcher = ImportWatcher(svc.import_context)
    assert watcher.scan_once() == []
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "src", n=3)
    stick = watch / "STICK"
    stick.mkdir()
    for f in files:
        shutil.copy(f, stick / f.name)
    (first,) = watcher.scan_once()
    assert first.stored == 3
    assert watcher.scan_once() == []  # imported once while it stays plugged in
    svc.monitor.tick(now=time.time() + 5)
    assert svc.catalogue.study(study_uid).state == "complete"
    assert svc.catalogue.jobs(study_uid=study_uid)[0].requested_by == "auto"
    shutil.rmtree(stick)  # pulled out
    assert watcher.scan_once() == []
