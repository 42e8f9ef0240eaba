"""The real thing: `appliance demo` on the bundled 20-slice CT, `appliance reconstruct` refusing a tilted series,
and the terminal progress bar.

The demo run (real ingest, ct-default segmentation, meshing, every export, report, manifest) happens once per
module; the tests then check its outputs against the DICOM images themselves.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import trimesh

from appliance.cli import build_parser, main
from appliance.commands.demo import DEFAULT_OUT, PACKAGE_SAMPLES_ROOT, SAMPLE_RELATIVE
from appliance.commands.reconstruct import ProgressBar
from appliance.export.manifest import read_manifest
from appliance.ingest import load_input
from appliance.meshing.qa import distance_to_mask

SAMPLE = PACKAGE_SAMPLES_ROOT / SAMPLE_RELATIVE


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``appliance demo --out DIR`` once; (DIR, stdout)."""
    if not SAMPLE.is_dir():
        pytest.skip(f"bundled sample {SAMPLE} is absent")
    out = tmp_path_factory.mktemp("demo") / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(["demo", "--out", str(out), "--quiet"])
    assert status == 0
    return out, buf.getvalue()


def _all_bytes(out: Path) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    for path in out.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            blobs[path.relative_to(out).as_posix()] = raw
            if path.suffix == ".gz":
                blobs[f"{path.name}:inflated"] = gzip.decompress(raw)
            if path.suffix == ".3mf":
                with zipfile.ZipFile(path) as zf:
                    for member in zf.namelist():
                        blobs[f"{path.name}:{member}"] = zf.read(member)
    return blobs


@pytest.mark.req("REQ-FUNC-253", "REQ-FUNC-250", "REQ-OUT-012")
def test_demo_reconstructs_the_bundled_sample(demo: tuple[Path, str]) -> None:
    out, stdout = demo
    assert f"Outputs in {out}" in stdout and str(out / "report.html") in stdout
    manifest = read_manifest(out / "manifest.json")
    assert manifest["input"]["modality"] == "CT"
    assert manifest["input"]["shape"] == [512, 512, 20]
    assert manifest["preset"] == "ct-default" and manifest["device"] in ("cpu", "cuda")
    names = {s["name"] for s in manifest["structures"]}
    assert {"body", "bone"} <= names
    for entry in manifest["structures"]:
        for ext in ("stl", "obj", "mtl", "ply", "3mf", "glb"):
            assert (out / entry["files"][ext]).is_file()
    for key in ("labels", "structures", "scene_glb", "scene_3mf", "report", "manifest"):
        assert (out / manifest["files"][key]).is_file()
    assert set(manifest["timings_s"]) == {"ingest", "segment", "mesh", "postprocess", "export", "report"}
    assert build_parser().parse_args(["demo"]).out == str(DEFAULT_OUT) == "out/demo"


@pytest.mark.req("REQ-SAFE-250", "REQ-OUT-006")
def test_demo_meshes_overlay_the_dicom_images(demo: tuple[Path, str]) -> None:
    out, _ = demo
    volume, _, _ = load_input(SAMPLE)
    labels_img = nib.load(str(out / "labels.nii.gz"))
    np.testing.assert_allclose(labels_img.affine, volume.ras_affine(), atol=1e-4)  # same grid as the images
    labels = np.asarray(labels_img.dataobj)
    assert labels.shape == volume.shape
    manifest = read_manifest(out / "manifest.json")
    spacing = np.asarray(volume.spacing)
    for entry in manifest["structures"]:
        mesh = trimesh.load(out / entry["files"]["stl"])
        assert mesh.is_watertight and entry["watertight"] and entry["manifold"], entry["name"]
        assert mesh.volume > 0  # outward winding
        ijk = volume.patient_to_voxel(np.asarray(mesh.vertices))  # inverse affine of the DICOM geometry
        _, d_vox = distance_to_mask(ijk, labels == entry["label"], spacing)
        assert float(np.mean(d_vox)) <= 0.5, entry["name"]
        assert float(np.percentile(d_vox, 95)) <= 1.0, entry["name"]
        assert entry["mean_distance_to_mask_mm"] <= 0.5 * float(spacing.max())


@pytest.mark.req("REQ-OUT-007")
def test_demo_outputs_hold_no_source_identifiers(demo: tuple[Path, str]) -> None:
    out, _ = demo
    first = sorted(SAMPLE.iterdir())[0]
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    needles = {str(ds.StudyDate), str(ds.FrameOfReferenceUID), first.name, first.name.removeprefix("CT.")}
    needles |= {p.name for p in SAMPLE.iterdir()}
    needles = {n for n in needles if len(n) >= 6}
    assert "20221208" in needles
    for name, raw in _all_bytes(out).items():
        for needle in needles:
            assert needle.encode() not in raw, f"{needle!r} found in {name}"


@pytest.mark.req("REQ-OUT-011")
def test_demo_report_is_self_contained(demo: tuple[Path, str]) -> None:
    out, _ = demo
    html = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|iframe|object|embed)\b", html, re.IGNORECASE)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html, re.IGNORECASE)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 5  # two model views, three or more slices
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    for heading in ("Summary", "Findings", "Structures", "Pictures", "Timings", "Provenance"):
        assert f"<h2>{heading}</h2>" in html
    assert "body" in html and "bone" in html and "ct-default" in html


@pytest.mark.req("REQ-FUNC-252")
def test_reconstruct_refuses_tilted_series_with_exit_2(shared_data: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    ge = shared_data / "dicom-edge" / "dcm_qa_ct" / "In" / "GE"
    if not ge.is_dir():
        pytest.skip(f"{ge} is absent")
    out = tmp_path / "out"
    status = main(["reconstruct", str(ge), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert "input refused" in err and "gantry_tilt" in err and "slice_gap" in err and "REQ-ACQ-012" in err
    assert "--override" in err
    assert not out.exists()


class _FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.req("REQ-FUNC-251")
def test_progress_bar_shows_stage_and_percentage() -> None:
    tty = _FakeTty()
    bar = ProgressBar(tty)
    for stage, fraction in [("ingest", 0.0), ("segment: body", 0.234), ("report: done", 1.0)]:
        bar(stage, fraction)
    bar.close()
    text = tty.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n")
    assert "[" + "#" * 7 + "-" * 23 + "]  23%  segment: body" in text
    assert "[" + "#" * 30 + "] 100%  report: done" in text
    log = io.StringIO()
    bar = ProgressBar(log)
    for stage, fraction in [("ingest", 0.0), ("segment", 0.1), ("segment: body", 0.2), ("mesh", 0.55)]:
        bar(stage, fraction)
    assert log.getvalue().splitlines() == [
        "[------------------------------]   0%  ingest",
        "[###---------------------------]  10%  segment",
        "[################--------------]  55%  mesh",
    ]


@pytest.mark.slow
@pytest.mark.req("REQ-OUT-007")
def test_identifiers_injected_into_real_dicom_never_reach_outputs(tmp_path: Path) -> None:
    """The sample with a patient name, IDs, dates and UIDs written into every file; none may come out."""
    if not SAMPLE.is_dir():
        pytest.skip(f"bundled sample {SAMPLE} is absent")
    source = tmp_path / "DOE_JANE_Q"
    source.mkdir()
    identifiers: dict[str, Any] = {
        "PatientName": "DOE^JANE^QUINCY", "PatientID": "PID-0042-XYZ", "PatientBirthDate": "19500101",
        "AccessionNumber": "ACC123456", "InstitutionName": "St Example Hospital",
        "StudyInstanceUID": "1.2.826.0.1.3680043.99.1", "SeriesInstanceUID": "1.2.826.0.1.3680043.99.2",
        "StudyDate": "20240229", "SeriesDate": "20240229", "AcquisitionDate": "20240229",
        "ContentDate": "20240229", "ReferringPhysicianName": "HOUSE^GREGORY",
    }
    for n, path in enumerate(sorted(SAMPLE.iterdir())):
        ds = pydicom.dcmread(path)
        for key, value in identifiers.items():
            setattr(ds, key, value)
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.3.{n + 1}"
        ds.save_as(source / f"IM{n:04d}.dcm")
    out = tmp_path / "out"
    assert main(["reconstruct", str(source), "--out", str(out), "--formats", "stl,obj,ply,3mf,glb",
                 "--quiet"]) == 0
    needles = {str(v) for v in identifiers.values()} | {"DOE JANE", "DOE_JANE_Q", "1.2.826.0.1.3680043.99.3"}
    for name, raw in _all_bytes(out).items():
        for needle in needles:
            assert needle.encode() not in raw, f"{needle!r} found in {name}"
    shutil.rmtree(out)


@pytest.mark.req("REQ-FUNC-253")
def test_demo_serve_hook_starts_the_ui_on_the_outputs(demo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask

    from appliance.commands.demo import serve_outputs

    started: dict[str, Any] = {}

    def fake_run(self: Flask, host: str | None = None, port: int | None = None, **kwargs: Any) -> None:
        started.update(app=self, host=host, port=port)

    monkeypatch.setattr(Flask, "run", fake_run)  # do not block the test in a server loop
    out, _ = demo
    assert serve_outputs(out, 8765) == 0
    assert started["host"] == "127.0.0.1" and started["port"] == 8765
    assert started["app"].extensions["ui_demo"] is True  # the UI publishes the folder as a finished job
