"""``mesh_labelmap``: LabelMap -> one QA-checked Mesh per structure.

Surface extraction (label-aware discrete marching cubes, :mod:`kernels.marching_cubes`) on the resolved device,
then per structure the post-processing of :mod:`appliance.meshing.postprocessing`. QA
(:mod:`appliance.meshing.qa`) runs before and after post-processing and is attached to each Mesh as ``qa`` (the
after-figures at the top level, the before-figures under ``"before"``).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from appliance.core import LabelMap, Mesh, Structure
from appliance.meshing.errors import MeshingError
from appliance.meshing.postprocessing import postprocess
from appliance.meshing.qa import MaskSurface, mesh_qa, topology
from appliance.typed import Device, ProgressCallback
from kernels import marching_cubes

log = logging.getLogger(__name__)

#: Post-processing and QA tasks run at the same time on the CPU (each holds a mesh and its mask crop).
MAX_PARALLEL_TASKS = 4


class _Prepared(NamedTuple):
    """What the QA before and the post-processing of one structure share."""

    mesh: Mesh
    mask: npt.NDArray[np.bool_]
    affine: npt.NDArray[np.float64]
    surface: MaskSurface
    faces_topology: dict[str, Any] | None


def _bbox_crop(
    mesh: Mesh, labels: npt.NDArray[Any], label: int, affine: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """The structure's mask cropped to the mesh's voxel bounding box (+2), and the crop's affine."""
    ijk = marching_cubes.apply_affine(mesh.vertices, np.linalg.inv(affine))
    lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int) - 2, 0)
    hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 3, np.asarray(labels.shape))
    crop = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == label
    shift = np.eye(4)
    shift[:3, 3] = lo
    return np.asarray(crop), affine @ shift


def mesh_labelmap(
    labelmap: LabelMap,
    device: Device,
    smoothing_iterations: int = 20,
    target_triangles: int | None = None,
    progress: ProgressCallback | None = None,
    check_before: bool = True,
) -> list[Mesh]:
    """Mesh every structure of ``labelmap``; each Mesh carries its QA before and after post-processing.

    Args:
        labelmap: labels, affine (voxel -> LPS mm) and structures.
        device: ``cpu`` | ``cuda``, already resolved (:func:`kernels.device.resolve_device` maps ``auto``).
        smoothing_iterations: windowed-sinc iterations (0 = no smoothing; the volume-restoring offset still applies).
        target_triangles: triangle budget per structure (None = no decimation).
        progress: ``progress(stage, fraction)`` callback.
        check_before: also run QA on the raw surface (``qa["before"]``); re-meshing after an edit skips it and
            keeps only the QA of the mesh it delivers.

    Returns:
        Meshes in the order of ``labelmap.structures``; structures without voxels are left out (logged).
    """
    if device not in ("cpu", "cuda"):
        raise MeshingError(f"device must be a resolved device ('cpu' or 'cuda'), got {device!r}; "
                           "resolve it with kernels.device.resolve_device first")
    if smoothing_iterations < 0:
        raise MeshingError(f"smoothing_iterations must be >= 0, got {smoothing_iterations}")
    if target_triangles is not None and target_triangles < 4:
        raise MeshingError(f"target_triangles must be >= 4 or None, got {target_triangles}")
    report = progress or (lambda stage, fraction: None)
    report("surface extraction", 0.0)
    t0 = time.perf_counter()
    extract = marching_cubes.extract_gpu if device == "cuda" else marching_cubes.extract_cpu
    raw = extract(labelmap.labels, labelmap.affine, list(labelmap.structures))
    t_extract = time.perf_counter() - t0
    missing = [s.name for s in labelmap.structures if s.name not in raw]
    if missing:
        log.info("structures without voxels, not meshed: %s", ", ".join(missing))
    min_spacing = float(min(labelmap.spacing))
    present = [s for s in labelmap.structures if s.name in raw]

    def prepare(s: Structure) -> _Prepared:
        """The structure's mask crop and its boundary surface (shared by both QA runs)."""
        mesh = raw[s.name]
        mask, crop_affine = _bbox_crop(mesh, labelmap.labels, s.label, labelmap.affine)
        surface = MaskSurface.of(mask, np.linalg.norm(crop_affine[:3, :3], axis=0))
        return _Prepared(mesh, mask, crop_affine, surface, None)

    def faces_topology(s: Structure) -> dict[str, Any]:
        """The raw surface's face topology (shared by both QA runs: smoothing moves vertices only)."""
        return topology(raw[s.name].faces, raw[s.name].vertices.shape[0])

    def with_topology(prep: _Prepared, topo: Future[dict[str, Any]] | None) -> _Prepared:
        # a topology task was queued before any task that waits for it here: it runs or ran on another thread
        return prep._replace(faces_topology=topo.result()) if topo is not None else prep

    def qa_before(prep: _Prepared, topo: Future[dict[str, Any]] | None) -> dict[str, Any]:
        prep = with_topology(prep, topo)
        return mesh_qa(prep.mesh, prep.mask, prep.affine, prep.surface, prep.faces_topology)

    def post_and_qa(prep: _Prepared, topo: Future[dict[str, Any]] | None) -> Mesh:
        mesh = prep.mesh
        t1 = time.perf_counter()
        mask_ml = float(np.count_nonzero(prep.mask)) * labelmap.voxel_volume_ml
        post, done = postprocess(mesh, device, mask_ml, min_spacing, smoothing_iterations, target_triangles)
        t_post = time.perf_counter() - t1
        same_faces = post.vertices.shape == mesh.vertices.shape and (
            post.faces is mesh.faces or bool(np.array_equal(post.faces, mesh.faces)))  # smoothing moves vertices only
        prep = with_topology(prep, topo) if same_faces else prep
        after = mesh_qa(post, prep.mask, prep.affine, prep.surface, prep.faces_topology)
        qa = {**after, **done, "method": marching_cubes.METHOD, "device": device,
              "timings_s": {"postprocess": t_post, "extraction_all_structures": t_extract}}
        return post.with_qa(qa)

    # structures, and per structure its mask surface beside its face topology and its QA before beside its
    # post-processing, are independent, and NumPy/SciPy release the GIL in their array work: on the CPU they run
    # side by side on the machine's cores (the GPU path keeps one stream of work). The largest structure's chain
    # (crop and mask surface -> post-processing -> QA) is the stage's critical path: its tasks are queued first,
    # and each structure's post-processing is queued as soon as its mask surface is ready (no wait for the
    # others). Every figure is computed as before: results are the same in any order.
    workers = 1 if device == "cuda" else max(1, min(2 * len(present), os.cpu_count() or 1, MAX_PARALLEL_TASKS))
    order = sorted(range(len(present)), key=lambda i: -raw[present[i].name].n_triangles)
    afters: dict[int, Future[Mesh]] = {}
    befores: dict[int, Future[dict[str, Any]]] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        preparing: dict[Future[_Prepared], int] = {}
        topologies: dict[int, Future[dict[str, Any]] | None] = {}
        for i in order:
            preparing[pool.submit(prepare, present[i])] = i
            topologies[i] = pool.submit(faces_topology, present[i]) if check_before else None
        while preparing:
            ready, _ = wait(preparing, return_when=FIRST_COMPLETED)
            for future in ready:
                i = preparing.pop(future)
                prep = future.result()
                report(f"post-processing {present[i].name}", (len(afters) + 0.5) / max(1, len(present)))
                afters[i] = pool.submit(post_and_qa, prep, topologies[i])
                if check_before:
                    befores[i] = pool.submit(qa_before, prep, topologies[i])
        out: list[Mesh] = []
        for i in range(len(present)):
            mesh = afters[i].result()
            if i in befores:
                mesh = mesh.with_qa({**mesh.qa, "before": befores[i].result()})
            out.append(mesh)
    report("meshing done", 1.0)
    log.info("meshed %d structures on %s in %.2f s (extraction %.2f s)", len(out), device,
             time.perf_counter() - t0, t_extract)
    return out
