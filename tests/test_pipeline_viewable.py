"""The point where the models can be shown ("meshes viewable", issue 17) comes before the other exports.

The kiosk shows a case from ``scene.glb`` (and the structures' GLBs) with the QA in the manifest; the pipeline
writes those first, says ``export: meshes viewable`` and records the time, then writes STL, OBJ, PLY and 3MF. A
late export that fails is a named failure of the run (no manifest), never a silently missing file. GLB parts and
scene made together have the bytes of GLBs written one by one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import phantoms
from test_pipeline import PRESET, PhantomPreset, components

from appliance import pipeline
from appliance.export import WRITERS, ExportError
from appliance.export.glb import encode_glb, write_glb_parts_and_scene
from appliance.pipeline import reconstruct
from engines.presets.base import register_preset
from kernels.marching_cubes import extract_numpy

LATE = ("stl", "obj", "mtl", "ply", "3mf")


@pytest.fixture(scope="module", autouse=True)
def _phantom_preset() -> Iterator[None]:
    from engines.presets import base

    register_preset(PRESET, PhantomPreset)
    yield
    base._REGISTRY.pop(PRESET, None)


def _files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


@pytest.mark.req("REQ-FUNC-1821", "REQ-FUNC-1890")
def test_viewer_files_come_first_and_the_time_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "out"
    seen: dict[str, Any] = {}

    def progress(stage: str, fraction: float) -> None:
        if stage == "export: meshes viewable":
            seen["files"], seen["fraction"] = _files(out), fraction

    def on_viewable() -> None:
        seen.setdefault("calls", []).append(json.loads((out / "viewable.json").read_text()))

    manifest = reconstruct(tmp_path / "in", out, preset=PRESET, device="cpu", progress=progress,
                           components=components(), on_viewable=on_viewable)
    at_viewable = seen["files"]
    assert {"scene.glb", "labels.nii.gz", "image.nii.gz", "structures.json", "segment.json",
            "viewable.json"} <= at_viewable
    # nothing the viewer does not need yet: no model file of a structure (the structures' GLBs included), no STL...
    assert not any(f.startswith("meshes/") or f.rsplit(".", 1)[-1] in LATE for f in at_viewable), at_viewable
    assert "manifest.json" not in at_viewable and "report.html" not in at_viewable  # the job is not done
    assert seen["fraction"] < 1.0
    for entry in manifest["structures"]:
        assert list(entry["files"]) == ["stl", "obj", "mtl", "ply", "3mf", "glb"]  # the order of the formats
        assert all((out / f).is_file() for f in entry["files"].values())
    milestones = manifest["provenance"]["milestones_s"]
    assert 0 < milestones["meshes_viewable"] <= milestones["mesh_files_done"]
    # viewable.json (REQ-FUNC-1890): what the kiosk shows, in the manifest's words, superseded by the manifest
    (viewable,) = seen["calls"]
    assert viewable["state"] == "viewable" and viewable["input"] == {k: v for k, v in manifest["input"].items()
                                                                     if k != "identity_hash"}
    assert viewable["files"] == {k: manifest["files"][k] for k in
                                 ("labels", "structures", "segmentation", "image", "scene_glb")}
    for early, final in zip(viewable["structures"], manifest["structures"], strict=True):
        assert early["files"] == {} and early["qa"] == final["qa"] and early["triangles"] == final["triangles"]
        assert {k: v for k, v in early.items() if k != "files"} == {k: v for k, v in final.items() if k != "files"}
    assert viewable["findings"] == [f for f in manifest["findings"] if f["stage"] != "report"]
    assert not (out / "viewable.json").exists()  # the finished folder holds what it held before


@pytest.mark.req("REQ-FUNC-1890")
def test_the_unfinished_folder_always_holds_a_description_for_the_kiosk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest is written before ``viewable.json`` goes: a kiosk reading the folder between the two finds one
    of them, never neither (a 404 for a model already on screen)."""
    out = tmp_path / "out"
    write = pipeline.write_manifest
    at_write: list[set[str]] = []

    def watched(manifest: Any, path: Path) -> Path:
        at_write.append(_files(out))
        written = write(manifest, path)
        from appliance.service.api import viewable_files

        assert viewable_files(out) is not None  # both present now: the folder stays described
        return written

    monkeypatch.setattr(pipeline, "write_manifest", watched)
    reconstruct(tmp_path / "in", out, preset=PRESET, device="cpu", components=components(), on_viewable=lambda: None)
    (before,) = at_write
    assert "viewable.json" in before and "manifest.json" not in before
    assert "manifest.json" in _files(out) and "viewable.json" not in _files(out)


@pytest.mark.req("REQ-FUNC-1822")
@pytest.mark.parametrize("fmt", ["stl", "3mf"])
def test_a_failing_late_export_fails_the_run_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     fmt: str) -> None:
    def broken(meshes: Any, path: Any, *more: Any) -> list[Path]:
        raise ExportError(f"{fmt.upper()}: cannot write the model: no space left on device")

    if fmt == "3mf":  # written on the export's side thread: its error still fails the run
        monkeypatch.setattr(pipeline, "write_3mf_parts_and_scene", broken)
    else:
        monkeypatch.setitem(WRITERS, fmt, broken)
    out = tmp_path / "out"
    stages: list[str] = []
    with pytest.raises(ExportError, match=rf"{fmt.upper()}: cannot write the model: no space left"):
        reconstruct(tmp_path / "in", out, preset=PRESET, device="cpu", progress=lambda s, f: stages.append(s),
                    components=components())
    assert "export: meshes viewable" in stages  # the viewer files were there, the run still fails
    assert not (out / "manifest.json").exists()  # never published as finished


@pytest.mark.req("REQ-FUNC-1821")
def test_glb_parts_and_scene_have_the_bytes_of_single_writes(tmp_path: Path) -> None:
    labels = phantoms.ellipsoids((30, 28, 24), 3, seed=4)
    meshes = list(extract_numpy(labels, np.diag([0.8, 0.9, 1.5, 1.0]), phantoms.structures_for(3)).values())
    opacity = {meshes[1].name: 0.35}
    parts = [tmp_path / f"{m.name}.glb" for m in meshes]
    at_scene: list[set[str]] = []
    written = write_glb_parts_and_scene(meshes, parts, tmp_path / "scene.glb", opacity,
                                        after_scene=lambda: at_scene.append({p.name for p in tmp_path.iterdir()}))
    assert written == [*parts, tmp_path / "scene.glb"]
    assert at_scene == [{"scene.glb"}]  # the scene first (the kiosk's), then the structures' own GLBs
    for mesh, path in zip(meshes, parts, strict=True):
        assert path.read_bytes() == encode_glb([mesh])
    assert (tmp_path / "scene.glb").read_bytes() == encode_glb(meshes, opacity)
    assert write_glb_parts_and_scene(meshes, None, tmp_path / "only.glb") == [tmp_path / "only.glb"]


@pytest.mark.req("REQ-PERF-1823")
def test_rows_formatted_in_blocks_give_the_text_of_one_operation(monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.export import common

    rng = np.random.default_rng(3)
    vertices = rng.normal(0.0, 300.0, (50, 3))
    faces = rng.integers(0, 5_000_000, (50, 3))
    monkeypatch.setattr(common, "FORMAT_BLOCK_ROWS", 7)  # 7 full blocks and a partial one
    for row_format, array in (("v %.4f %.4f %.4f\n", vertices), ('<triangle v1="%d" v2="%d" v3="%d"/>\n', faces)):
        whole = (row_format * array.shape[0]) % tuple(array.ravel().tolist())
        assert common.format_rows(row_format, array) == whole
        assert common.format_rows(row_format, array[:7]) == whole[: len(common.format_rows(row_format, array[:7]))]
