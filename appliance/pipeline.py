"""The whole data path as one function: ingest -> segment -> mesh -> post-process -> export (+ report, manifest).

:func:`reconstruct` is what ``appliance reconstruct``, ``appliance demo`` and the service's worker call. It reports
progress as ``progress(stage, fraction)`` with the overall fraction rising from 0 to 1, raises
:class:`~appliance.errors.RefusedInput` (exit code 2) before anything is written when ingest refuses the input,
and returns the manifest it wrote last, atomically, into ``out_dir``::

    out_dir/labels.nii.gz, structures.json          label map on the source grid (engines.labelmap_io)
    out_dir/image.nii.gz                            the image it was made from: same grid and affine, modality
                                                    units (manifest key ``files.image``, appliance.export.image)
    out_dir/meshes/<structure>.<ext>                one file per structure and format (mm, LPS)
    out_dir/scene.glb (+ scene.3mf)                 every structure in one file, for the viewer / printer
    out_dir/report.html                             self-contained report
    out_dir/manifest.json                           the record (appliance.export.manifest)

While the late exports are written, ``out_dir/viewable.json`` describes what the kiosk may already show (the
structures with their QA and GLBs, the image, the findings so far; ``on_viewable`` is called once it is on disk); it
is removed when the manifest, which supersedes it, is written (docs/reconstruct.md, "Meshes viewable").

The stage implementations come from :class:`Components` (the real modules by default); tests inject small fakes
through the ``components`` argument.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import platform
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from appliance import __version__
from appliance.core import Finding, LabelMap, Mesh, Series, Severity, StructureCategory, Volume
from appliance.core.finding import blocking
from appliance.errors import PipelineError, RefusedInput
from appliance.export import FORMATS, WRITERS, parse_formats
from appliance.export.glb import write_glb_parts_and_scene
from appliance.export.image import IMAGE_KEY, IMAGE_NAME, write_image_volume
from appliance.export.manifest import MANIFEST_NAME, VIEWABLE_NAME, json_safe, redact, write_manifest
from appliance.export.report import REPORT_NAME, report_pictures, write_report
from appliance.export.threemf import write_3mf_parts_and_scene
from appliance.fsio import atomic_write_bytes
from appliance.ingest import load_input
from appliance.meshing import mesh_labelmap, mesh_qa
from appliance.typed import Device, ProgressCallback
from engines.labelmap_io import write_segmentation
from engines.presets.base import SegmentationResult
from engines.segmentation import LesionRequest, segment_volume
from kernels.device import device_description, resolve_device

log = logging.getLogger(__name__)

#: Top-level stages, in order, with their share of the progress bar.
STAGE_WEIGHTS: dict[str, float] = {
    "ingest": 0.10,
    "segment": 0.45,
    "mesh": 0.25,
    "postprocess": 0.04,
    "export": 0.10,
    "report": 0.06,
}
STAGES: tuple[str, ...] = tuple(STAGE_WEIGHTS)
#: Opacity of margin shells in scene.glb (the lesion inside stays visible).
MARGIN_OPACITY = 0.35
MESH_DIR = "meshes"
SCENE_GLB = "scene.glb"
SCENE_3MF = "scene.3mf"
#: Extensions a previous run may have left in ``meshes/`` (removed before a new export).
_MESH_EXTENSIONS = (*FORMATS, "mtl")
#: Series tag names (any spelling) whose string values are identifying and must never reach an output.
_IDENTIFYING_TAG = re.compile(r"patient|birth|date|time|uid|accession|institution|physician|operator|"
                              r"station|study_?id|(^|_)id$|^other_?patient", re.IGNORECASE)

#: ``(path, series_uid, override, modality) -> (Volume, findings, Series | None)``.
LoadFunction = Callable[[Path, str | None, bool, str | None], tuple[Volume, list[Finding], Series | None]]
#: ``(volume, preset, device, lesion, margins_mm, progress) -> (SegmentationResult, record)``.
SegmentFunction = Callable[
    [Volume, str, Device, LesionRequest | None, tuple[float, ...], ProgressCallback],
    tuple[SegmentationResult, dict[str, Any]],
]
#: ``(result, out_dir, record) -> anything`` (the result is not used).
WriteSegmentationFunction = Callable[[SegmentationResult, Path, dict[str, Any]], object]
#: ``(mesh, mask, affine) -> QA dict``.
MeshQaFunction = Callable[[Mesh, npt.NDArray[np.bool_], npt.NDArray[np.float64]], dict[str, Any]]


class MeshFunction(Protocol):
    """``mesh_labelmap(labelmap, device=, smoothing_iterations=, target_triangles=, progress=) -> [Mesh]``."""

    def __call__(self, labelmap: LabelMap, *, device: Device, smoothing_iterations: int,
                 target_triangles: int | None, progress: ProgressCallback | None) -> list[Mesh]:
        """Mesh every structure of ``labelmap``."""


def segment_with_engines(volume: Volume, preset: str, device: Device, lesion: LesionRequest | None,
                         margins_mm: tuple[float, ...],
                         progress: ProgressCallback) -> tuple[SegmentationResult, dict[str, Any]]:
    """engines.segmentation.segment_volume: preset (or auto), lesion and margin shells; (result, record)."""
    outcome = segment_volume(volume, preset, device, lesion, margins_mm, progress=progress)
    return outcome.result, dict(outcome.record)


@dataclass(frozen=True)
class Components:
    """The stage implementations the pipeline calls.

    Attributes:
        load_input: ``(path, series_uid, override, modality) -> (Volume, findings, Series | None)``.
        segment: ``(volume, preset, device, lesion, margins_mm, progress) -> (SegmentationResult, record)``;
            ``preset`` may be ``auto``; the record holds the preset choice and its reason, lesion and margins.
        write_segmentation: ``(result, out_dir, record) -> Any``; writes labels.nii.gz, structures.json,
            segment.json.
        mesh_labelmap: ``(labelmap, device=, smoothing_iterations=, target_triangles=, progress=) -> [Mesh]``.
        mesh_qa: ``(mesh, mask, affine) -> dict``; fills QA of meshes that come without it.
        names: module names recorded in the provenance.
    """

    load_input: LoadFunction
    segment: SegmentFunction
    write_segmentation: WriteSegmentationFunction
    mesh_labelmap: MeshFunction
    mesh_qa: MeshQaFunction
    names: dict[str, str] = field(default_factory=dict)


def default_components() -> Components:
    """The real modules: appliance.ingest, engines.segmentation, engines.labelmap_io, appliance.meshing."""

    def _load(path: Path, series_uid: str | None, override: bool,
              modality: str | None) -> tuple[Volume, list[Finding], Series | None]:
        return load_input(path, series_uid=series_uid, override=override, modality=modality)

    return Components(
        load_input=_load,
        segment=segment_with_engines,
        write_segmentation=write_segmentation,
        mesh_labelmap=mesh_labelmap,
        mesh_qa=mesh_qa,
        names={"ingest": "appliance.ingest", "segmentation": "engines.segmentation", "meshing": "appliance.meshing"},
    )


class _Progress:
    """Maps per-stage fractions onto one overall, non-decreasing fraction and forwards it."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.done = 0.0
        self.last = 0.0
        self.timings: dict[str, float] = {}

    def report(self, stage: str, within: float, detail: str = "") -> None:
        fraction = self.done + STAGE_WEIGHTS[stage] * min(max(float(within), 0.0), 1.0)
        self.last = max(self.last, min(fraction, 1.0))
        if self.callback is not None:
            self.callback(f"{stage}: {detail}" if detail else stage, self.last)

    def sub(self, stage: str) -> ProgressCallback:
        """A ``progress(detail, fraction)`` callback for a component running inside ``stage``."""
        return lambda detail, within: self.report(stage, within, detail if detail != stage else "")

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.report(name, 0.0)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        self.done += STAGE_WEIGHTS[name]


def sensitive_strings(volume: Volume, series: Series | None, input_path: Path) -> set[str]:
    """Identifying strings of this input that must not appear in any output: UIDs, names, IDs, dates, the path."""
    out: set[str] = {str(input_path), str(Path(input_path).resolve()), Path(input_path).name}

    def collect(key: str, value: Any) -> None:
        if isinstance(value, str):
            if _IDENTIFYING_TAG.search(key):
                out.add(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(key, item)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                collect(str(k), v)
        elif value is not None and _IDENTIFYING_TAG.search(key) and not isinstance(value, (bool, int, float)):
            out.add(str(value))  # pydicom PersonName, dates...

    for key, value in volume.metadata.items():
        if key != "identity_hash":
            collect(str(key), value)
    if series is not None:
        out.update({series.series_instance_uid, series.study_instance_uid})
        for key, value in series.tags.items():
            collect(str(key), value)
        for instance in series.instances:
            out.add(instance.sop_instance_uid)
            out.add(str(instance.path))
            out.add(Path(instance.path).name)
            for key, value in instance.tags.items():
                collect(str(key), value)
    return {s for s in out if s and s.strip()}


def identity_hash(volume: Volume, series: Series | None) -> str:
    """The series identity as SHA-256: ingest's hash, else the Series', else a hash of the voxels and geometry."""
    given = volume.metadata.get("identity_hash")
    if isinstance(given, str) and re.fullmatch(r"[0-9a-f]{64}", given):
        return given
    if series is not None:
        return series.identity_hash()
    h = hashlib.sha256(np.ascontiguousarray(volume.array).tobytes())
    h.update(np.asarray(volume.affine, dtype=np.float64).tobytes())
    return h.hexdigest()


def _finding_dict(finding: Finding, stage: str) -> dict[str, Any]:
    return {**finding.to_dict(), "stage": stage}


def _mesh_findings(meshes: Sequence[Mesh]) -> list[Finding]:
    """Warnings for meshes that are not watertight or not manifold (REQ-SAFE-251)."""
    found: list[Finding] = []
    for mesh in meshes:
        if not mesh.qa.get("watertight", False):
            found.append(Finding(
                "mesh_not_watertight", Severity.WARNING,
                f"The model of {mesh.name} has holes or flipped triangles; check it before printing.",
                "REQ-SAFE-251", {"structure": mesh.name, "boundary_edges": mesh.qa.get("boundary_edges")}))
        elif not mesh.qa.get("manifold", False):
            found.append(Finding(
                "mesh_not_manifold", Severity.WARNING,
                f"The model of {mesh.name} has pinched vertices; check it before printing.",
                "REQ-SAFE-251", {"structure": mesh.name, "nonmanifold_vertices": mesh.qa.get("nonmanifold_vertices")}))
    return found


def postprocess_meshes(
    meshes: Sequence[Mesh], labelmap: LabelMap, mesh_qa: MeshQaFunction
) -> tuple[list[Mesh], list[Finding]]:
    """Keep meshes with triangles, make sure each carries QA, and turn failed QA into findings."""
    by_name = {s.name: s for s in labelmap.structures}
    out: list[Mesh] = []
    found: list[Finding] = []
    for mesh in meshes:
        structure = by_name.get(mesh.name)
        if structure is None:
            raise PipelineError(f"meshing returned {mesh.name!r}, which is not a structure of the label map")
        if mesh.n_triangles == 0:
            found.append(Finding("structure_not_meshed", Severity.INFO,
                                 f"{mesh.name} gave no surface and is not exported.", None, {"structure": mesh.name}))
            continue
        if "watertight" not in mesh.qa or "mean_distance_mm" not in mesh.qa:
            mesh = mesh.with_qa({**mesh.qa, **mesh_qa(mesh, labelmap.labels == structure.label, labelmap.affine)})
        out.append(mesh)
    meshed = {m.name for m in out}
    for s in labelmap.structures:
        if s.name not in meshed and not any(f.details.get("structure") == s.name for f in found):
            found.append(Finding("structure_empty", Severity.INFO,
                                 f"{s.name} was not found in this volume; no model is made for it.", None,
                                 {"structure": s.name}))
    return out, found + _mesh_findings(out)


def _clear_stale_meshes(mesh_dir: Path) -> None:
    """Remove model files a previous run left in ``meshes/`` (only the extensions the exporters write)."""
    if not mesh_dir.is_dir():
        return
    for path in mesh_dir.iterdir():
        if path.is_file() and path.suffix.lstrip(".").lower() in _MESH_EXTENSIONS:
            path.unlink()


def export_meshes(
    meshes: Sequence[Mesh], labelmap: LabelMap, out_dir: Path, formats: Sequence[str],
    progress: ProgressCallback | None = None,
    on_viewable: Callable[[Mapping[str, Mapping[str, str]], Mapping[str, str]], None] | None = None,
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Write every structure in every format and the scene files; returns per-structure and scene file maps.

    The file the kiosk shows the models from comes first (``scene.glb``; every mesh's GLB arrays made once, shared
    with the structures' GLBs), then ``on_viewable(per_structure_files, scene_files)`` (the files written so far) is
    called and ``progress`` says ``meshes viewable``; each structure's GLB (when ``glb`` is asked for), STL, OBJ,
    PLY and the 3MF parts and scene follow (docs/reconstruct.md, "Meshes viewable").
    """
    mesh_dir = out_dir / MESH_DIR
    _clear_stale_meshes(mesh_dir)
    per_structure: dict[str, dict[str, str]] = {m.name: {} for m in meshes}
    scene: dict[str, str] = {}

    def record(name: str, path: Path) -> None:
        per_structure[name][path.suffix.lstrip(".")] = path.relative_to(out_dir).as_posix()

    steps = len(meshes) + 2
    categories = {s.name: s.category for s in labelmap.structures}
    opacity = {m.name: MARGIN_OPACITY for m in meshes if categories.get(m.name) == StructureCategory.MARGIN}
    parts = [mesh_dir / f"{m.name}.glb" for m in meshes] if "glb" in formats else None

    def scene_written() -> None:
        scene["scene_glb"] = SCENE_GLB
        if on_viewable is not None:
            on_viewable({name: dict(files) for name, files in per_structure.items()}, dict(scene))
        if progress is not None:
            progress("meshes viewable", 1 / steps)

    # scene.glb is what the kiosk shows: the structures' own GLBs (an export format) follow "meshes viewable"
    written = write_glb_parts_and_scene(meshes, parts, out_dir / SCENE_GLB, opacity, after_scene=scene_written)
    for mesh, path in zip(meshes, written[:-1], strict=False):
        record(mesh.name, path)
    # the 3MF parts and scene.3mf (XML, then deflate, which releases the GIL) on a side thread while STL, OBJ and
    # PLY are written here: the same files, the two halves overlapping on the machine's cores
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-3mf") as side:
        threemf = side.submit(write_3mf_parts_and_scene, meshes, [mesh_dir / f"{m.name}.3mf" for m in meshes],
                              out_dir / SCENE_3MF) if "3mf" in formats else None
        for n, mesh in enumerate(meshes):
            for fmt in formats:
                if fmt not in ("3mf", "glb"):  # GLB above, 3MF on the side thread
                    for path in WRITERS[fmt]([mesh], mesh_dir / f"{mesh.name}.{fmt}"):
                        record(mesh.name, path)
            if progress is not None:
                progress(mesh.name, (n + 2) / steps)
        if threemf is not None:
            written = threemf.result()  # its error, if any, fails the export by name
            for mesh, path in zip(meshes, written, strict=False):
                record(mesh.name, path)
            scene["scene_3mf"] = written[-1].relative_to(out_dir).as_posix()
    order = [ext for fmt in formats for ext in ((fmt, "mtl") if fmt == "obj" else (fmt,))]
    ordered = {name: {ext: files[ext] for ext in sorted(files, key=order.index)}
               for name, files in per_structure.items()}  # the order of ``formats``, whatever was written first
    return ordered, scene


def _structure_entry(mesh: Mesh, labelmap: LabelMap, files: Mapping[str, str]) -> dict[str, Any]:
    structure = labelmap.structure(mesh.name)
    qa = dict(mesh.qa)
    mask_ml = qa.get("mask_volume_ml")
    volume_ml = float(mask_ml) if isinstance(mask_ml, (int, float)) else labelmap.volume_ml(mesh.name)
    return {
        "name": structure.name,
        "label": structure.label,
        "category": structure.category.value,
        "color": list(structure.color),
        "snomed": structure.snomed,
        "volume_ml": volume_ml,
        "surface_area_mm2": float(qa.get("area_mm2", mesh.area_mm2())),
        "files": dict(files),
        "triangles": mesh.n_triangles,
        "watertight": bool(qa.get("watertight", False)),
        "manifold": bool(qa.get("manifold", False)),
        "mean_distance_to_mask_mm": qa.get("mean_distance_mm"),
        "qa": qa,
    }


def reconstruct(
    input_path: Path | str,
    out_dir: Path | str,
    preset: str = "auto",
    device: str = "auto",
    formats: Sequence[str] | str = FORMATS,
    lesion: Path | str | None = None,
    seed: tuple[float, float, float] | None = None,
    window: tuple[float, float] | None = None,
    margins: Sequence[float] = (),
    progress: ProgressCallback | None = None,
    override: bool = False,
    *,
    series_uid: str | None = None,
    modality: str | None = None,
    smoothing_iterations: int = 20,
    target_triangles: int | None = None,
    components: Components | None = None,
    on_viewable: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Reconstruct ``input_path`` (DICOM folder/zip/file, NIfTI, NRRD) into ``out_dir``; returns the manifest.

    Args:
        input_path: what to reconstruct.
        out_dir: output folder (created); see the module docstring for its layout.
        preset: segmentation preset name, or ``auto`` (chosen from the volume, the reason is recorded).
        device: ``auto`` | ``cpu`` | ``cuda``; resolved once and used by every stage.
        formats: mesh formats per structure (any of ``stl, obj, ply, 3mf, glb``); scene.glb is always written.
        lesion: label file of a lesion on the source grid; or give ``seed`` (+ ``window``) for seeded growing.
        seed: point inside the lesion (LPS mm). window: intensity window for growing. margins: shell distances, mm.
        progress: ``progress(stage, overall_fraction)``.
        override: reconstruct input that ingest refused for overridable reasons; recorded in the manifest.
        series_uid: the series to use when the input holds several. modality: labels NIfTI/NRRD input.
        smoothing_iterations, target_triangles: meshing parameters.
        components: stage implementations (default: the real modules).
        on_viewable: called once when the models can be shown (``viewable.json`` and every file it names are on
            disk), before the late exports; the service publishes the job to the kiosk then (REQ-FUNC-1890).

    Raises:
        RefusedInput: ingest refused the input (exit code 2); nothing is written.
    """
    comps = components or default_components()
    fmts = parse_formats(formats)
    margins_mm = tuple(float(m) for m in margins)
    lesion_request = _lesion_request(lesion, seed, window)
    if margins_mm and lesion_request is None:
        raise PipelineError("--margins needs a lesion: give --lesion FILE or --seed X,Y,Z --window LOW,HIGH")
    input_path = Path(input_path)
    out = Path(out_dir)
    resolved = resolve_device(device)  # fail fast when --device cuda has no GPU
    tracker = _Progress(progress)
    started = time.perf_counter()
    milestones: dict[str, float] = {}

    records: list[dict[str, Any]] = []

    with tracker.stage("ingest"):
        volume, ingest_findings, series = comps.load_input(input_path, series_uid, override, modality)
    records += [_finding_dict(f, "ingest") for f in ingest_findings]
    refusals = blocking(ingest_findings)
    if refusals and not override:
        reasons = "; ".join(f.message for f in refusals)
        raise RefusedInput(f"input refused: {reasons}", list(refusals))
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # never leave an old manifest beside new, partial outputs

    with tracker.stage("segment"):
        result, seg_record = comps.segment(volume, preset, resolved, lesion_request, margins_mm,
                                           tracker.sub("segment"))
        labelmap = result.labelmap
        if labelmap.shape != volume.shape or not np.allclose(labelmap.affine, volume.affine, atol=1e-6):
            raise PipelineError("the label map is not on the image's grid; the image cannot be shown under the model")
        # labels.nii.gz and image.nii.gz are written while the meshes are made (gzip releases the GIL: 16 s of a
        # 512x512x600 CT's segment stage, issue 17); both are on disk before the first model file
        writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="segment-files")
        writes: list[Future[Any]] = [writer.submit(comps.write_segmentation, result, out, seg_record),
                                     writer.submit(write_image_volume, volume, out / IMAGE_NAME)]
    records += [_finding_dict(f, "segment") for f in result.findings]
    choice = seg_record.get("preset", {}) if isinstance(seg_record.get("preset"), Mapping) else {}
    preset_name = str(choice.get("name", preset))
    preset_reason = str(choice.get("reason", "chosen by the user"))

    try:
        with tracker.stage("mesh"):
            meshes = comps.mesh_labelmap(labelmap, device=resolved, smoothing_iterations=smoothing_iterations,
                                         target_triangles=target_triangles, progress=tracker.sub("mesh"))
        with tracker.stage("postprocess"):
            meshes, mesh_findings = postprocess_meshes(meshes, labelmap, comps.mesh_qa)
    finally:
        writer.shutdown(wait=True)
    records += [_finding_dict(f, "postprocess") for f in mesh_findings]

    with tracker.stage("export"):
        for write in writes:
            write.result()  # a failed label or image write fails the run here, naming its cause
        sensitive = sensitive_strings(volume, series, input_path)

        def meshes_viewable(viewer_files: Mapping[str, Mapping[str, str]], scene: Mapping[str, str]) -> None:
            _write_viewable(out, volume, preset_name, meshes, labelmap, viewer_files, scene, records, sensitive)
            milestones["meshes_viewable"] = round(time.perf_counter() - started, 3)
            if on_viewable is not None:
                on_viewable()

        per_structure, scene_files = export_meshes(meshes, labelmap, out, fmts, tracker.sub("export"),
                                                   meshes_viewable)
    milestones["mesh_files_done"] = round(time.perf_counter() - started, 3)

    files = _segment_files(out)
    files.update(scene_files)
    files["report"] = REPORT_NAME
    files["manifest"] = MANIFEST_NAME
    provenance: dict[str, Any] = {
        "created_utc": created,
        "appliance_version": __version__,
        "python": platform.python_version(),
        "preset": {"name": preset_name, "reason": preset_reason, "requested": preset},
        "device": {"requested": device, "resolved": resolved, "name": _device_name(resolved)},
        "segmentation": dict(result.provenance),
        "meshing": {"module": comps.names.get("meshing", getattr(comps.mesh_labelmap, "__module__", "?")),
                    "smoothing_iterations": smoothing_iterations, "target_triangles": target_triangles},
        "components": dict(comps.names),
        "formats": list(fmts),
        "coordinates": "millimetre, DICOM patient coordinates (LPS); meshes overlay the source images",
        "milestones_s": milestones,
    }
    for key in ("lesion", "margins"):
        if key in seg_record:
            provenance[key] = seg_record[key]
    if refusals:  # only reachable with override
        provenance["override"] = {"overridden": [f.code for f in refusals],
                                  "requirements": sorted({f.requirement for f in refusals if f.requirement})}
        records.append(_finding_dict(Finding(
            "refusal_overridden", Severity.WARNING,
            "This input was refused (" + ", ".join(f.code for f in refusals) + ") and reconstructed on explicit "
            "override; check the model against the images.", "REQ-SAFE-252"), "ingest"))
    manifest: dict[str, Any] = {
        "appliance_version": __version__,
        "input": {"identity_hash": identity_hash(volume, series), "modality": volume.modality,
                  "units": volume.units, "shape": list(volume.shape),
                  "spacing": [round(float(s), 6) for s in volume.spacing]},
        "preset": preset_name,
        "device": resolved,
        "backend": str(result.provenance.get("backend", preset_name)),
        "timings_s": {},
        "structures": [_structure_entry(m, labelmap, per_structure[m.name]) for m in meshes],
        "findings": records,
        "provenance": provenance,
        "files": files,
    }
    manifest = redact(json_safe(manifest), sensitive)

    with tracker.stage("report"):
        manifest["timings_s"] = {k: round(v, 3) for k, v in tracker.timings.items()}
        write_report(out / REPORT_NAME, manifest, report_pictures(volume, labelmap, meshes))
    manifest["timings_s"] = {k: round(v, 3) for k, v in tracker.timings.items()}
    write_manifest(manifest, out / MANIFEST_NAME)
    # the manifest supersedes it; removed only now, so a kiosk reading the unfinished folder always finds one of them
    (out / VIEWABLE_NAME).unlink(missing_ok=True)
    tracker.report("report", 1.0, "done")
    return manifest


def _segment_files(out: Path) -> dict[str, str]:
    """The label map's and image's files present in ``out`` under their manifest keys."""
    return {key: name for key, name in (("labels", "labels.nii.gz"), ("structures", "structures.json"),
                                        ("segmentation", "segment.json"), (IMAGE_KEY, IMAGE_NAME))
            if (out / name).is_file()}


def _write_viewable(out: Path, volume: Volume, preset_name: str, meshes: Sequence[Mesh], labelmap: LabelMap,
                    viewer_files: Mapping[str, Mapping[str, str]], scene: Mapping[str, str],
                    records: Sequence[Mapping[str, Any]], sensitive: set[str]) -> None:
    """``viewable.json``: what the kiosk shows before the job is done, in the manifest's words (structures with
    their QA and GLB files, the image, findings so far), redacted like the manifest; written atomically."""
    viewable = {
        "appliance_version": __version__,
        "state": "viewable",
        "input": {"modality": volume.modality, "units": volume.units, "shape": list(volume.shape),
                  "spacing": [round(float(s), 6) for s in volume.spacing]},
        "preset": preset_name,
        "structures": [_structure_entry(m, labelmap, viewer_files.get(m.name, {})) for m in meshes],
        "findings": list(records),
        "files": {**_segment_files(out), **scene},
    }
    text = json.dumps(redact(json_safe(viewable), sensitive), indent=1)
    atomic_write_bytes(out / VIEWABLE_NAME, text.encode("utf-8"))


def _lesion_request(lesion: Path | str | None, seed: Sequence[float] | None,
                    window: Sequence[float] | None) -> LesionRequest | None:
    """engines.segmentation's LesionRequest from the lesion options, or None when no lesion was asked for."""
    if lesion is not None and seed is not None:
        raise PipelineError("give either --lesion FILE or --seed X,Y,Z, not both")
    if lesion is not None:
        return LesionRequest(file=Path(lesion))
    if seed is not None or window is not None:
        if seed is None or window is None or len(seed) != 3 or len(window) != 2:
            raise PipelineError("--seed X,Y,Z (patient LPS mm) and --window LOW,HIGH go together")
        x, y, z = (float(v) for v in seed)
        lo, hi = (float(v) for v in window)
        return LesionRequest(seed_lps=(x, y, z), window=(lo, hi))
    return None


def _device_name(device: Device) -> str:
    try:
        return device_description(device)
    except Exception as exc:  # a GPU name is nice to have, never a reason to fail
        log.debug("device description failed: %s", exc)
        return device
