"""Edit -> updated mesh benchmark: one brush erase on one structure of a synthetic 512x512x300 CT label map,
the changed structure re-meshed through the box's meshing path (with QA), against re-meshing the whole label map in
the same run (the anchor; ratio = anchor time / edit time, > 1 means the edit path is faster).

Three figures, medians of ``--reps`` runs (the anchor of ``--anchor-reps``):

* ``edit_and_remesh_s``: apply the operation (pure core) + re-mesh the changed structure (in memory);
* ``revision_on_disk_s``: the whole server path of ``POST /revisions`` below the HTTP layer
  (:func:`appliance.review.workflow.create_revision`: load the base revision, apply, re-mesh, write the new
  revision with its labels file, STL and SHA-256s);
* ``whole_labelmap_remesh_s``: :func:`appliance.meshing.mesh_labelmap` of every structure (the anchor).

The machine may be shared with other work: read ratios, not absolute times. Never passes or fails on time.

Usage: ``python bench/edit_remesh.py [--reps N] [--anchor-reps N] [--structures N] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Requirements this benchmark verifies (read by `appliance trace`).
REQUIREMENTS = ("REQ-PERF-1007",)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.core import LabelMap, Structure, StructureCategory, Volume  # noqa: E402
from appliance.io.nifti import save_labelmap  # noqa: E402
from appliance.meshing import mesh_labelmap  # noqa: E402
from appliance.review import apply_operations, parse_operations  # noqa: E402
from appliance.review.remesh import remesh_structures  # noqa: E402
from appliance.review.store import RevisionStore  # noqa: E402
from appliance.review.workflow import MeshSettings, create_revision  # noqa: E402
from tests.helpers import phantoms  # noqa: E402

SHAPE = (512, 512, 300)
SPACING = (0.78, 0.78, 1.25)


def timed(fn: Callable[[], Any], reps: int) -> tuple[float, list[float], Any]:
    """Median seconds of ``reps`` calls, every time, and the last result."""
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def _no_image() -> Volume | None:
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--anchor-reps", type=int, default=1)
    ap.add_argument("--structures", type=int, default=12)
    ap.add_argument("--smoothing", type=int, default=20, help="windowed-sinc iterations (the pipeline's default)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    labels = phantoms.ellipsoids(SHAPE, args.structures, seed=3)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [-200.0, -200.0, -180.0]
    structures = [Structure(i, f"structure_{i}", (200, 100 + i, 50), StructureCategory.ORGAN)
                  for i in range(1, args.structures + 1)]
    counts = np.bincount(labels.ravel(), minlength=args.structures + 1)
    target = int(np.argmax(counts[1:])) + 1  # the largest structure: the slowest single re-mesh
    inside = np.argwhere(labels[::4, ::4, ::4] == target) * 4
    picks = iter(inside[(n + 1) * len(inside) // (2 * args.reps + 2)] for n in range(2 * args.reps))

    def erase_op() -> dict[str, Any]:
        """An erase at another place of the structure each time (so every revision really changes it)."""
        centre = [float(v) for v in affine[:3, :3] @ next(picks) + affine[:3, 3]]
        return {"op": "erase", "structure": f"structure_{target}",
                "sphere": {"center_lps": centre, "radius_mm": 10.0}}

    settings = MeshSettings("cpu", args.smoothing, None)

    def edit() -> Any:
        result = apply_operations(labels, structures, affine, parse_operations([erase_op()]))
        if result.changed != {f"structure_{target}"}:
            raise SystemExit(f"the erase changed {sorted(result.changed)}; the benchmark is broken")
        return remesh_structures(result.labels, affine, result.structures, result.changed, "cpu", args.smoothing)

    edit_s, edit_all, meshes = timed(edit, args.reps)
    (mesh,) = meshes.values()

    with tempfile.TemporaryDirectory() as tmp:
        save_labelmap(LabelMap(labels, affine, tuple(structures)), Path(tmp) / "labels.nii.gz")
        store = RevisionStore(Path(tmp) / "store")
        store.initialise(Path(tmp) / "labels.nii.gz", structures, {}, "bench")

        def revision() -> Any:
            rev = create_revision(store, store.current(), [erase_op()], "bench", "bench", _no_image, settings)
            if rev.changed != [f"structure_{target}"]:
                raise SystemExit(f"revision {rev.number} changed {rev.changed}; the benchmark is broken")
            return rev

        disk_s, disk_all, _ = timed(revision, args.reps)

    whole_labelmap = LabelMap(labels, affine, tuple(structures))
    anchor_s, anchor_all, all_meshes = timed(
        lambda: mesh_labelmap(whole_labelmap, "cpu", smoothing_iterations=args.smoothing), args.anchor_reps)
    report = {
        "shape": list(SHAPE), "spacing_mm": list(SPACING), "structures": args.structures,
        "edited_structure_voxels": int(counts[target]), "edited_structure_triangles": mesh.n_triangles,
        "edited_mesh_watertight": bool(mesh.qa.get("watertight")), "cores": len(os.sched_getaffinity(0)),
        "reps": args.reps, "anchor_reps": args.anchor_reps,
        "edit_and_remesh_s": round(edit_s, 3), "edit_and_remesh_all_s": [round(t, 3) for t in edit_all],
        "revision_on_disk_s": round(disk_s, 3), "revision_on_disk_all_s": [round(t, 3) for t in disk_all],
        "whole_labelmap_remesh_s": round(anchor_s, 3), "whole_labelmap_all_s": [round(t, 3) for t in anchor_all],
        "whole_labelmap_meshes": len(all_meshes),
        "ratio_anchor_over_edit": round(anchor_s / edit_s, 2),
        "ratio_anchor_over_revision_on_disk": round(anchor_s / disk_s, 2),
        "note": "shared machine: compare the ratios measured in this run, not absolute seconds",
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
