"""`appliance.pipeline.reconstruct` on a synthetic CT phantom: layout, manifest, progress, refusal, override,
QA findings, privacy, overlay, atomicity, formats, lesion + margins.

Only ingest is replaced (a phantom volume with identifying tags); segmentation runs through the real
engines.segmentation with a small threshold preset registered for the test; label map writing, meshing, QA and
every export are the real modules.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import trimesh

from appliance.core import Finding, Instance, LabelMap, Series, Severity, Structure, StructureCategory, Volume
from appliance.errors import PipelineError, RefusedInput
from appliance.export import ExportError
from appliance.export.manifest import MANIFEST_SCHEMA, read_manifest, validate_manifest
from appliance.meshing.qa import distance_to_mask
from appliance.pipeline import STAGES, Components, default_components, reconstruct
from appliance.typed import Device, ProgressCallback
from engines.presets.base import Preset, SegmentationResult, register_preset

PRESET = "h5-test-phantom"
IDENTIFIERS = {
    "patient_name": "DOE^JANE^QUINCY",
    "patient_id": "PID-0042-XYZ",
    "birth_date": "19500101",
    "study_date": "20240229",
    "accession": "ACC123456",
    "institution": "St Example Hospital",
    "study_uid": "1.2.826.0.1.3680043.99.1",
    "series_uid": "1.2.826.0.1.3680043.99.2",
    "sop_uid": "1.2.826.0.1.3680043.99.3",
    "for_uid": "1.2.826.0.1.3680043.99.4",
    "folder": "DOE_JANE_FOLDER",
}
IDENTITY_HASH = hashlib.sha256(b"study/series of the phantom").hexdigest()
BALL_CENTRE = np.array([-26.0, 22.0, -604.0])
LESION_CENTRE = np.array([-10.0, 12.0, -592.0])


class PhantomPreset(Preset):
    """Thresholds: 30..90 -> organ_ball, > 500 -> bone_box (the lesion at 120 is left to the lesion tools)."""

    name = PRESET
    modalities = ("CT",)

    def run(self, volume: Volume, device: Device, progress: ProgressCallback | None = None,
            options: Mapping[str, Any] | None = None) -> SegmentationResult:
        a = np.asarray(volume.array)
        labels = np.zeros(a.shape, dtype=np.uint8)
        labels[(a > 30) & (a < 90)] = 1
        labels[a > 500] = 2
        if progress is not None:
            progress("threshold", 1.0)
        structures = [Structure(1, "organ_ball", (200, 90, 80), StructureCategory.ORGAN),
                      Structure(2, "bone_box", (240, 235, 220), StructureCategory.BONE)]
        return SegmentationResult(LabelMap.on(volume, labels, structures), [],
                                  {"backend": "test-threshold", "device": device})


@pytest.fixture(scope="module", autouse=True)
def _phantom_preset() -> Iterator[None]:
    """The test preset is registered for this module only."""
    from engines.presets import base

    register_preset(PRESET, PhantomPreset)
    yield
    base._REGISTRY.pop(PRESET, None)


def phantom_volume() -> Volume:
    """48x40x24 CT in HU on a rotated, anisotropic grid with a flipped row axis (not axis-aligned LPS)."""
    angle = np.deg2rad(20.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    spacing = np.array([0.9, 0.9, 2.0])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing * np.array([1.0, -1.0, 1.0]))
    affine[:3, 3] = [-45.0, 30.0, -624.0]
    shape = (48, 40, 24)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    lps = (ijk @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape, 3)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[np.linalg.norm(lps - BALL_CENTRE, axis=-1) <= 10.0] = 60.0
    box = np.all(np.abs(lps - np.array([-8.0, 30.0, -612.0])) <= np.array([4.0, 5.0, 5.0]), axis=-1)
    hu[box] = 800.0
    hu[np.linalg.norm(lps - LESION_CENTRE, axis=-1) <= 4.5] = 120.0
    metadata = {
        "identity_hash": IDENTITY_HASH,
        "series_instance_uid": IDENTIFIERS["series_uid"],
        "study_instance_uid": IDENTIFIERS["study_uid"],
        "sop_instance_uids": [IDENTIFIERS["sop_uid"]],
        "frame_of_reference_uid": IDENTIFIERS["for_uid"],
    }
    return Volume(hu, affine, "CT", "HU", metadata)


def phantom_series(folder: Path) -> Series:
    tags = {"PatientName": IDENTIFIERS["patient_name"], "PatientID": IDENTIFIERS["patient_id"],
            "PatientBirthDate": IDENTIFIERS["birth_date"], "StudyDate": IDENTIFIERS["study_date"],
            "AccessionNumber": IDENTIFIERS["accession"], "InstitutionName": IDENTIFIERS["institution"]}
    instance = Instance(folder / "IM0001.dcm", IDENTIFIERS["sop_uid"], None, (0.0, 0.0, 0.0),
                        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), {"ContentDate": IDENTIFIERS["study_date"]})
    return Series(IDENTIFIERS["series_uid"], IDENTIFIERS["study_uid"], "CT", "phantom", [instance], tags)


def components(findings: list[Finding] | None = None, mesher: Any = None) -> Components:
    """Real components with ingest replaced by the phantom (and optionally the mesher wrapped)."""
    real = default_components()

    def load(path: Path, series_uid: str | None, override: bool,
             modality: str | None) -> tuple[Volume, list[Finding], Series | None]:
        return phantom_volume(), list(findings or []), phantom_series(path)

    return replace(real, load_input=load, mesh_labelmap=mesher or real.mesh_labelmap,
                   names={**real.names, "ingest": "test phantom"})


def chatty_finding(folder: Path) -> Finding:
    """An ingest finding that (wrongly) carries identifying strings, to prove the redaction."""
    return Finding("phantom_note", Severity.INFO, f"read {folder}/IM0001.dcm of {IDENTIFIERS['patient_name']}",
                   None, {"sop": IDENTIFIERS["sop_uid"], "date": IDENTIFIERS["study_date"]})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, list[tuple[str, float]]]:
    """One reconstruction of the phantom with every format; (manifest, out dir, progress calls)."""
    base = tmp_path_factory.mktemp("phantom")
    source = base / IDENTIFIERS["folder"]
    calls: list[tuple[str, float]] = []
    out = base / "out"
    manifest = reconstruct(source, out, preset=PRESET, device="cpu", progress=lambda s, f: calls.append((s, f)),
                           components=components([chatty_finding(source)]))
    return manifest, out, calls


@pytest.mark.req("REQ-FUNC-250", "REQ-OUT-012", "REQ-OUT-009")
def test_output_layout(run: tuple[dict[str, Any], Path, list[tuple[str, float]]]) -> None:
    manifest, out, _ = run
    names = {s["name"] for s in manifest["structures"]}
    assert names == {"organ_ball", "bone_box"}
    expected = {"labels.nii.gz", "image.nii.gz", "structures.json", "segment.json", "scene.glb", "scene.3mf",
                "report.html", "manifest.json"}
    for name in names:
        expected |= {f"meshes/{name}.{ext}" for ext in ("stl", "obj", "mtl", "ply", "3mf", "glb")}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == expected  # nothing else (no temporary files), nothing missing
    listed = set(manifest["files"].values()) | {f for s in manifest["structures"] for f in s["files"].values()}
    assert listed == expected
    labels = nib.load(str(out / "labels.nii.gz"))
    volume = phantom_volume()
    np.testing.assert_allclose(labels.affine, volume.ras_affine(), atol=1e-5)
    structures = json.loads((out / "structures.json").read_text())
    assert {s["name"] for s in structures} == names


@pytest.mark.req("REQ-OUT-700")
def test_image_volume_beside_the_label_map(run: tuple[dict[str, Any], Path, list[tuple[str, float]]]) -> None:
    """files.image names the volume segmentation saw: same grid and affine as the labels, values in HU."""
    from appliance.export.image import IMAGE_KEY, image_bytes, output_file

    manifest, out, _ = run
    path = output_file(out, manifest, IMAGE_KEY)
    assert path == (out / "image.nii.gz").resolve()
    image, labels = nib.load(str(path)), nib.load(str(out / "labels.nii.gz"))
    assert image.shape == labels.shape
    np.testing.assert_array_equal(image.affine, labels.affine)
    volume = phantom_volume()
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), volume.array)
    assert image.header["descrip"].tobytes().rstrip(b"\0") == b"HU"
    assert image.get_data_dtype() == np.int16  # integral HU: stored compactly
    assert path.read_bytes() == image_bytes(volume)  # reproducible: no time stamp in the gzip stream


@pytest.mark.req("REQ-OUT-010", "REQ-SAFE-253")
def test_manifest_keys_schema_and_provenance(run: tuple[dict[str, Any], Path, list[tuple[str, float]]]) -> None:
    manifest, out, _ = run
    on_disk = read_manifest(out / "manifest.json")
    assert on_disk == manifest
    validate_manifest(on_disk)
    assert set(MANIFEST_SCHEMA["required"]) <= set(on_disk)
    assert on_disk["input"] == {"identity_hash": IDENTITY_HASH, "modality": "CT", "units": "HU",
                                "shape": [48, 40, 24], "spacing": [0.9, 0.9, 2.0]}
    assert on_disk["preset"] == PRESET and on_disk["device"] == "cpu" and on_disk["backend"] == "test-threshold"
    assert list(on_disk["timings_s"]) == list(STAGES)
    assert all(v >= 0 for v in on_disk["timings_s"].values())
    prov = on_disk["provenance"]
    assert prov["appliance_version"] == on_disk["appliance_version"]
    assert prov["preset"]["name"] == PRESET and "user" in prov["preset"]["reason"]
    assert prov["device"]["resolved"] == "cpu"
    assert prov["meshing"]["smoothing_iterations"] == 20
    volume = phantom_volume()
    for entry in on_disk["structures"]:
        assert set(MANIFEST_SCHEMA["properties"]["structures"]["items"]["required"]) <= set(entry)
        assert entry["watertight"] and entry["manifold"]
        assert entry["triangles"] > 100
        mask_ml = np.count_nonzero(np.asarray(nib.load(str(out / "labels.nii.gz")).dataobj) == entry["label"]) * (
            0.9 * 0.9 * 2.0 / 1000.0)
        assert entry["volume_ml"] == pytest.approx(mask_ml, rel=1e-6)
        assert 0 <= entry["mean_distance_to_mask_mm"] <= 0.5 * max(volume.spacing)
        stl = trimesh.load(out / entry["files"]["stl"])
        assert len(stl.faces) == entry["triangles"]
        assert stl.area == pytest.approx(entry["surface_area_mm2"], rel=1e-4)


@pytest.mark.req("REQ-FUNC-251")
def test_progress_rises_from_zero_to_one_through_every_stage(
    run: tuple[dict[str, Any], Path, list[tuple[str, float]]],
) -> None:
    _, _, calls = run
    fractions = [f for _, f in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(b >= a for a, b in itertools.pairwise(fractions))
    seen = [s.split(":")[0] for s, _ in calls]
    assert [s for i, s in enumerate(seen) if s not in seen[:i]] == list(STAGES)
    assert any(s == "segment: threshold" for s, _ in calls)  # the preset's own sub-stages come through


@pytest.mark.req("REQ-OUT-007")
def test_no_identifier_in_any_output_byte(run: tuple[dict[str, Any], Path, list[tuple[str, float]]]) -> None:
    manifest, out, _ = run
    blobs: dict[str, bytes] = {}
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        blobs[path.name] = raw
        if path.suffix == ".gz":
            blobs[path.name + ":inflated"] = gzip.decompress(raw)
        if path.suffix == ".3mf":
            with zipfile.ZipFile(path) as zf:
                for member in zf.namelist():
                    blobs[f"{path.name}:{member}"] = zf.read(member)
    assert len(blobs) > 20
    for label, value in IDENTIFIERS.items():
        for variant in {value, value.replace("^", " ")}:
            hits = [name for name, raw in blobs.items() if variant.encode() in raw]
            assert not hits, f"{label} {variant!r} found in {hits}"
    assert IDENTITY_HASH.encode() in blobs["manifest.json"]
    note = next(f for f in manifest["findings"] if f["code"] == "phantom_note")
    assert "[redacted]" in note["message"] and note["details"] == {"sop": "[redacted]", "date": "[redacted]"}


@pytest.mark.req("REQ-SAFE-250")
def test_meshes_overlay_the_images(run: tuple[dict[str, Any], Path, list[tuple[str, float]]]) -> None:
    manifest, out, _ = run
    volume = phantom_volume()
    labels = np.asarray(nib.load(str(out / "labels.nii.gz")).dataobj)
    for entry in manifest["structures"]:
        mesh = trimesh.load(out / entry["files"]["ply"], process=False)
        ijk = volume.patient_to_voxel(np.asarray(mesh.vertices))  # the inverse affine of the source images
        _, d_vox = distance_to_mask(ijk, labels == entry["label"], np.asarray(volume.spacing))
        assert float(np.mean(d_vox)) <= 0.5, entry["name"]
        assert float(np.percentile(d_vox, 95)) <= 1.0, entry["name"]
        # and the mesh sits where the structure is: its centre is the mask's centre in patient space
        centre = volume.voxel_to_patient(np.argwhere(labels == entry["label"]).mean(axis=0))[0]
        np.testing.assert_allclose(np.asarray(mesh.vertices).mean(axis=0), centre, atol=1.5)


@pytest.mark.req("REQ-FUNC-252")
def test_refusal_stops_before_anything_is_written(tmp_path: Path) -> None:
    refusal = Finding("gantry_tilt", Severity.REFUSAL, "Gantry tilt of 18.5 degrees.", "REQ-ACQ-012")
    out = tmp_path / "out"
    with pytest.raises(RefusedInput) as info:
        reconstruct(tmp_path / "in", out, preset=PRESET, device="cpu", components=components([refusal]))
    assert info.value.exit_code == 2 and info.value.findings == [refusal]
    assert "Gantry tilt" in str(info.value)
    assert not out.exists()


@pytest.mark.req("REQ-SAFE-252")
def test_override_is_recorded(tmp_path: Path) -> None:
    refusal = Finding("slice_gap", Severity.REFUSAL, "Slices are missing.", "REQ-ACQ-009")
    manifest = reconstruct(tmp_path / "in", tmp_path / "out", preset=PRESET, device="cpu", formats="stl",
                           override=True, components=components([refusal]))
    assert manifest["provenance"]["override"] == {"overridden": ["slice_gap"], "requirements": ["REQ-ACQ-009"]}
    codes = [f["code"] for f in manifest["findings"]]
    assert "slice_gap" in codes and "refusal_overridden" in codes
    report = (tmp_path / "out" / "report.html").read_text()
    assert "explicit override" in report and "slice_gap" in report


@pytest.mark.req("REQ-SAFE-251")
def test_open_mesh_is_reported_as_warning(tmp_path: Path) -> None:
    real = default_components().mesh_labelmap

    def leaky(*args: Any, **kwargs: Any) -> list[Any]:
        meshes = real(*args, **kwargs)
        first = meshes[0]
        holed = type(first)(first.vertices, first.faces[1:], first.name, first.color)  # QA is recomputed
        return [holed, *meshes[1:]]

    manifest = reconstruct(tmp_path / "in", tmp_path / "out", preset=PRESET, device="cpu", formats="stl",
                           components=components(mesher=leaky))
    first = manifest["structures"][0]
    assert first["watertight"] is False and first["manifold"] is False
    warnings = [f for f in manifest["findings"] if f["code"] == "mesh_not_watertight"]
    assert len(warnings) == 1 and warnings[0]["severity"] == "warning"
    assert warnings[0]["details"]["structure"] == first["name"]
    assert "mesh_not_watertight" in (tmp_path / "out" / "report.html").read_text()
    assert all(s["watertight"] for s in manifest["structures"][1:])


@pytest.mark.req("REQ-FUNC-254")
def test_formats_choice(tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = reconstruct(tmp_path / "in", out, preset=PRESET, device="cpu", formats="ply,stl",
                           components=components())
    for entry in manifest["structures"]:
        assert set(entry["files"]) == {"ply", "stl"}
    assert sorted(p.suffix for p in (out / "meshes").iterdir()) == [".ply", ".ply", ".stl", ".stl"]
    assert (out / "scene.glb").is_file() and not (out / "scene.3mf").exists()
    with pytest.raises(ExportError, match="unknown export format 'fbx'"):
        reconstruct(tmp_path / "in", tmp_path / "out2", preset=PRESET, formats="stl,fbx", components=components())
    assert not (tmp_path / "out2").exists()


@pytest.mark.req("REQ-OUT-008")
def test_failed_rerun_leaves_no_manifest_and_no_partial_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    reconstruct(tmp_path / "in", out, preset=PRESET, device="cpu", formats="stl", components=components())
    assert (out / "manifest.json").is_file()

    def crash(*args: Any, **kwargs: Any) -> list[Any]:
        raise KeyboardInterrupt  # the run is killed while meshing

    with pytest.raises(KeyboardInterrupt):
        reconstruct(tmp_path / "in", out, preset=PRESET, device="cpu", formats="stl",
                    components=components(mesher=crash))
    assert not (out / "manifest.json").exists()  # the old manifest no longer claims the folder is complete
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]


@pytest.mark.req("REQ-FUNC-255")
def test_lesion_from_seed_with_margin_shells(tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = reconstruct(tmp_path / "in", out, preset=PRESET, device="cpu", formats="stl,3mf",
                           seed=tuple(LESION_CENTRE), window=(100.0, 140.0), margins=(5.0,),
                           components=components())
    by_name = {s["name"]: s for s in manifest["structures"]}
    assert by_name["lesion"]["category"] == "lesion"
    margin = by_name["lesion_margin_5mm"]
    assert margin["category"] == "margin" and margin["watertight"]
    lesion_ml = 4.0 / 3.0 * np.pi * 4.5**3 / 1000.0
    assert by_name["lesion"]["volume_ml"] == pytest.approx(lesion_ml, rel=0.25)
    assert (out / "meshes" / "lesion_margin_5mm.stl").is_file()
    assert manifest["provenance"]["lesion"]["source"]["kind"] == "seed"
    assert manifest["provenance"]["margins"]["shells"][0]["outer_mm"] == 5.0
    with pytest.raises(PipelineError, match="--margins needs a lesion"):
        reconstruct(tmp_path / "in", tmp_path / "o2", preset=PRESET, margins=(5.0,), components=components())
    with pytest.raises(PipelineError, match="go together"):
        reconstruct(tmp_path / "in", tmp_path / "o3", preset=PRESET, seed=(0.0, 0.0, 0.0), components=components())


@pytest.mark.req("REQ-OUT-011")
def test_report_tables_pictures_and_no_external_resources(
    run: tuple[dict[str, Any], Path, list[tuple[str, float]]],
) -> None:
    manifest, out, _ = run
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "<link" not in html.lower() and "http" not in html.lower()
    pictures = html.count('src="data:image/png;base64,')
    assert pictures == 2 + 4  # front and left model views; three axial slices and one coronal slice
    for entry in manifest["structures"]:
        row = html[html.index(f"<code>{entry['name']}</code></td>"):]
        row = row[: row.index("</tr>")]
        assert f"{entry['volume_ml']:,.2f}" in row and f"{entry['triangles']:,d}" in row
        assert f"{entry['surface_area_mm2'] / 100:,.1f}" in row and f'href="meshes/{entry["name"]}.stl"' in row
    for stage in manifest["timings_s"]:
        assert f"<td>{stage}</td>" in html
    assert "test-threshold" in html and IDENTITY_HASH[:16] in html


@pytest.mark.req("REQ-FUNC-255")
def test_lesion_from_label_file(tmp_path: Path) -> None:
    volume = phantom_volume()
    lesion = (np.asarray(volume.array) == 120.0).astype(np.uint8)
    path = tmp_path / "lesion.nii.gz"
    nib.save(nib.Nifti1Image(lesion, volume.ras_affine()), str(path))
    manifest = reconstruct(tmp_path / "in", tmp_path / "out", preset=PRESET, device="cpu", formats="glb",
                           lesion=path, components=components())
    entry = next(s for s in manifest["structures"] if s["name"] == "lesion")
    assert entry["volume_ml"] == pytest.approx(int(lesion.sum()) * 0.9 * 0.9 * 2.0 / 1000.0, rel=1e-6)
    assert entry["watertight"] and entry["files"] == {"glb": "meshes/lesion.glb"}
    assert manifest["provenance"]["lesion"]["source"] == {"kind": "file", "file": "lesion.nii.gz", "label": None,
                                                          "resampled": False}
