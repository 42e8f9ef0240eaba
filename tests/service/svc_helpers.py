"""Helpers of the service tests: real CT slices prepared as a scanner would send them, a pipeline stand-in."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from appliance.config import ApplianceConfig, load_config
from appliance.errors import RefusedInput

CT_DIR = Path("ct/totalsegmentator/example_ct_dicom")
PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "PID-4711-X"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_ct_series(
    shared_data: Path, out: Path, study_uid: str | None = None, n: int | None = None
) -> tuple[str, list[Path]]:
    """The real J2K CT slices with the UIDs a scanner would send (the public copy has them blanked).

    Returns the Study Instance UID and the written files. Pixel data stays exactly as in the source.
    """
    src = sorted((shared_data / CT_DIR).iterdir())[: n or None]
    if not src:
        pytest.skip(f"real CT series {shared_data / CT_DIR} is absent")
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, path in enumerate(src):
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        target = out / f"ct{i:03d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        files.append(target)
    return study_uid, files


class FakeReconstruct:
    """Stands in for ``appliance.pipeline.reconstruct`` where the test is about the queue, not the pipeline.

    It reads the study folder it is given (so a lost study fails), reports progress and writes a manifest and one
    mesh file; ``behaviour`` lets a test make it refuse, fail, or run out of GPU memory.
    """

    def __init__(self, behaviour: str = "ok") -> None:
        self.behaviour = behaviour
        #: ``hold_viewable``: the late exports wait for this after ``on_viewable`` (``late_fail``: they fail).
        self.release = threading.Event()
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self,
        input_path: Path,
        out_dir: Path,
        *,
        preset: str = "auto",
        device: str = "auto",
        formats: Sequence[str] = (),
        progress: Callable[..., None] | None = None,
        override: bool = False,
        on_viewable: Callable[[], None] | None = None,
    ) -> Mapping[str, Any]:
        self.calls.append({"input": input_path, "out": out_dir, "device": device, "override": override})
        files = sorted(Path(input_path).rglob("*.dcm"))
        if not files:
            raise FileNotFoundError(f"no DICOM files under {input_path}")
        if progress:
            progress("segment", 0.5)
        if self.behaviour == "refuse":
            raise RefusedInput(
                "refused", [{"code": "slice_gap", "severity": "refusal", "message": "A slice is missing."}]
            )
        if self.behaviour == "oom" and device != "cpu":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.behaviour == "fail":
            raise ValueError("synthetic failure")
        (out_dir / "meshes").mkdir()
        if self.behaviour in ("hold_viewable", "late_fail"):  # the models first, as the pipeline writes them
            (out_dir / "meshes" / "body.glb").write_bytes(b"glTF-body")
            (out_dir / "scene.glb").write_bytes(b"glTF-scene")
            (out_dir / "viewable.json").write_text(json.dumps({
                "state": "viewable", "files": {"scene_glb": "scene.glb"},
                "structures": [{"name": "body", "files": {"glb": "meshes/body.glb"}, "qa": {"watertight": True}}],
            }))  # fmt: skip
            assert on_viewable is not None, "the worker passes on_viewable"
            on_viewable()
            if self.behaviour == "late_fail":
                raise OSError(28, "No space left on device", str(out_dir / "meshes" / "body.3mf"))
            if not self.release.wait(60):  # the test looks at the viewable job, then lets the exports finish
                raise TimeoutError("the test never released the late exports")
            (out_dir / "viewable.json").unlink(missing_ok=True)
        (out_dir / "meshes" / "body.stl").write_bytes(b"\0" * 84)
        report = "<html>report</html>" if self.behaviour != "leak" else f"<html>{PATIENT_NAME}</html>"
        (out_dir / "report.html").write_text(report)
        manifest: dict[str, Any] = {
            "device": "cpu" if device != "cuda" else "cuda", "n_files": len(files), "findings": [],
        }  # fmt: skip
        (out_dir / "manifest.json").write_text(json.dumps(manifest))
        if progress:
            progress("export", 1.0)
        return manifest


def make_config(data_dir: Path, **sections: Mapping[str, Any]) -> ApplianceConfig:
    """A configuration for tests: data in ``data_dir``, receiver disabled unless given, no disk reserve."""
    overrides: dict[str, Any] = {
        "storage": {"data_dir": str(data_dir)},
        "dicom": {"port": 0, "min_free_bytes": 0, "study_stable_seconds": 0.5},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(None, overrides)


def claimed_job(svc: Any, shared_data: Path, tmp_path: Path, n: int) -> tuple[str, int, Path]:
    """``(study_uid, job_id, output folder)``: ``n`` real CT slices stored in the started service ``svc``, a
    reconstruction requested and claimed as the worker would, its (empty) output folder made."""
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "ct", n=n)
    for f in files:
        svc.store.store_file(f, "test")
    job_id = svc.request_reconstruction(study_uid, "test")
    svc.catalogue.claim_job()
    out = svc.worker.final_dir(job_id)
    out.mkdir(parents=True)
    return study_uid, job_id, out
