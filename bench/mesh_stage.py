"""Meshing-stage benchmark and profile: ``mesh_labelmap`` on a reconstructed case (default: the demo sample).

Prints, for the label map of a ``reconstruct`` output folder (``labels.nii.gz`` + ``structures.json``):

* the per-step profile, one structure after another in one thread, process CPU seconds: surface extraction (all
  structures), mask crop, mask-surface grids, topology, QA before post-processing, smoothing, volume
  restoration, QA after post-processing;
* ``mesh_labelmap`` (the pipeline's meshing stage, structures side by side) median wall and process CPU seconds;
* the anchor in the same run: peer-style meshing (scikit-image marching cubes per structure + STL through
  trimesh, no smoothing, no QA), median wall seconds, and the ratio anchor / ours.

Without ``--case`` the demo sample (``appliance/samples/ct_abdomen_20slices``) is reconstructed once on the CPU
into a temporary folder first. The machine may be shared: read the CPU seconds and the ratio. Never passes or
fails on time.

Usage: ``python bench/mesh_stage.py [--case DIR] [--reps N] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Requirements this benchmark gives evidence for (read by `appliance trace`).
REQUIREMENTS = ("REQ-PERF-1541",)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconstruct import peer_meshing  # noqa: E402  (bench/ is sys.path[0] when run as a script)

from appliance.core import LabelMap, Mesh  # noqa: E402
from appliance.meshing import mesh_labelmap  # noqa: E402
from appliance.meshing.postprocessing import MAX_OFFSET_VOXELS, restore_volume  # noqa: E402
from appliance.meshing.qa import MaskSurface, mesh_qa, topology  # noqa: E402
from appliance.meshing.surfaces import _bbox_crop  # noqa: E402
from appliance.pipeline import reconstruct  # noqa: E402
from engines.labelmap_io import read_labelmap  # noqa: E402
from kernels import marching_cubes, smoothing  # noqa: E402

DEMO = ROOT / "appliance" / "samples" / "ct_abdomen_20slices" / "dicom"


def profile_steps(labelmap: LabelMap, smoothing_iterations: int) -> dict[str, Any]:
    """Process CPU seconds per step, every structure one after another in this thread."""
    steps: dict[str, float] = {}

    def step(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.process_time()
        out = fn(*args)
        steps[name] = steps.get(name, 0.0) + time.process_time() - t0
        return out

    raw = step("surface extraction", marching_cubes.extract_cpu, labelmap.labels, labelmap.affine,
               list(labelmap.structures))
    cap_mm = MAX_OFFSET_VOXELS * float(min(labelmap.spacing))
    sizes = {}
    for s in labelmap.structures:
        if s.name not in raw:
            continue
        mesh = raw[s.name]
        mask, affine = step("mask crop", _bbox_crop, mesh, labelmap.labels, s.label, labelmap.affine)
        surface = step("mask surface", MaskSurface.of, mask, np.linalg.norm(affine[:3, :3], axis=0))
        topo = step("topology", topology, mesh.faces, mesh.vertices.shape[0])
        step("QA before (area, volume, distance)", mesh_qa, mesh, mask, affine, surface, topo)
        moved = step("smoothing", smoothing.smooth_cpu, mesh.vertices, mesh.faces, smoothing_iterations)
        mask_ml = float(np.count_nonzero(mask)) * labelmap.voxel_volume_ml
        post = step("volume restoration", restore_volume, Mesh(moved, mesh.faces, mesh.name), mask_ml, cap_mm)
        step("QA after (area, volume, distance)", mesh_qa, post, mask, affine, surface, topo)
        sizes[s.name] = {"triangles": mesh.n_triangles, "crop": list(mask.shape)}
    return {"steps_cpu_s": steps, "total_cpu_s": sum(steps.values()), "structures": sizes}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures (and write them as JSON with ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", type=Path, help="a reconstruct output folder (labels.nii.gz, structures.json)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--smoothing", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-mesh-stage-") as tmp:
        case = args.case
        if case is None:
            case = Path(tmp) / "demo"
            reconstruct(DEMO, case, device="cpu", formats="stl")
        labelmap = read_labelmap(case / "labels.nii.gz", case / "structures.json")
        profile = profile_steps(labelmap, args.smoothing)
        mesh_labelmap(labelmap, "cpu", args.smoothing)  # warm-up (native build cache, thread pool)
        walls, cpus, peers = [], [], []
        for _ in range(args.reps):
            t0, c0 = time.perf_counter(), time.process_time()
            meshes = mesh_labelmap(labelmap, "cpu", args.smoothing)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            peers.append(peer_meshing(case / "labels.nii.gz", Path(tmp)))
    ours = statistics.median(walls)
    anchor = statistics.median(peers)
    report = {
        "case": str(args.case or "demo sample (ct_abdomen_20slices, reconstructed on the CPU)"),
        "shape": list(labelmap.shape), "structures": [m.name for m in meshes],
        "triangles": {m.name: m.n_triangles for m in meshes}, **profile,
        "mesh_labelmap_wall_s": round(ours, 3), "mesh_labelmap_all_wall_s": [round(t, 3) for t in walls],
        "mesh_labelmap_cpu_s": round(statistics.median(cpus), 3),
        "anchor_peer_meshing_s": round(anchor, 3), "ratio_anchor_over_ours": round(anchor / ours, 2),
        "note": "shared machine: compare CPU seconds and the ratio measured in this run",
    }
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
