"""One edit request end to end: check the ops, apply them to the current revision, re-mesh what changed, write
the next revision. Undo and redo move the current pointer. The caller audits (it knows the study).

Everything that can be refused is refused before anything is written; the revision appears whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import Structure, Volume
from appliance.export.stl import encode_stl
from appliance.review.edit import apply_operations
from appliance.review.errors import InvalidOperation, NothingToMove, StaleRevision
from appliance.review.lesion_tables import revision_margin_tables
from appliance.review.operations import GrowFromSeed, Paint, parse_operations
from appliance.review.remesh import qa_summary, remesh_structures
from appliance.review.store import Revision, RevisionStore
from appliance.typed import Device


@dataclass(frozen=True)
class MeshSettings:
    """How the job meshed its structures (re-meshing uses the same)."""

    device: Device = "cpu"
    smoothing_iterations: int = 20
    target_triangles: int | None = None


def create_revision(store: RevisionStore, base: Any, ops_json: Any, reason: Any, actor: str,
                    image: Callable[[], Volume | None], meshing: MeshSettings = MeshSettings(),
                    masks: Mapping[str, npt.NDArray[np.bool_]] | None = None) -> Revision:
    """Apply ``ops_json`` to revision ``base`` (which must be the current one) and write the next revision;
    ``masks``: the voxels of the USB label files its ``paint_label_file`` operations name."""
    if isinstance(base, bool) or not isinstance(base, int):
        raise InvalidOperation("must be the number of the revision the edits were made on", "base")
    if not isinstance(reason, str) or len(reason) > 2000:
        raise InvalidOperation("must be a text of at most 2000 characters", "reason")
    ops = parse_operations(ops_json)
    needs_image = any(isinstance(op, GrowFromSeed) or (isinstance(op, Paint) and op.window is not None) for op in ops)
    volume = image() if needs_image else None
    with store.locked():
        current = store.current()
        if base != current:
            raise StaleRevision(f"base {base} is not the current revision {current}; someone edited meanwhile, "
                                "reload and edit the newest revision")
        parent = store.revision(base)
        lm = store.labelmap(base)
        result = apply_operations(lm.labels, lm.structures, lm.affine, ops, volume, masks=masks)
        meshes = remesh_structures(result.labels, lm.affine, result.structures, result.changed, meshing.device,
                                   meshing.smoothing_iterations, meshing.target_triangles)
        renamed_from = _renames(parent, result.structures)
        inherited: dict[str, str] = {}
        for s in result.structures:
            if s.name in result.changed:
                continue
            old = renamed_from.get(s.name, s.name)
            if old in parent.meshes:
                inherited[s.name] = parent.meshes[old]
        restyled_files: dict[str, bytes | Path] = {
            name: store.root / inherited.pop(name) for name in result.restyled
            if name != renamed_from.get(name, name) and name in inherited}
        files: dict[str, bytes | Path] = {name: encode_stl([m]) for name, m in meshes.items()}
        files.update(restyled_files)
        meta = {"author": actor, "reason": reason, "ops": ops_json, "changed": sorted(result.changed),
                "restyled": sorted(result.restyled), "removed": sorted(result.removed),
                "margin_tables": revision_margin_tables(parent, result),
                "volume_change_ml": volume_changes(lm.labels, lm.structures, result.labels, result.structures,
                                                   result.changed, lm.voxel_volume_ml)}
        return store.write_revision(max(store.numbers()) + 1, base, result.labels,
                                    lm.affine, result.structures, meta, files,
                                    {n: qa_summary(m) for n, m in meshes.items()}, inherited)


def volume_changes(before: npt.NDArray[np.integer[Any]], before_structures: Sequence[Structure],
                   after: npt.NDArray[np.integer[Any]], after_structures: Sequence[Structure],
                   changed: Iterable[str], voxel_ml: float) -> dict[str, dict[str, float]]:
    """Per changed structure its volume before and after the edit and the change, in ml (3 decimals)."""
    old = {s.name: s.label for s in before_structures}
    new = {s.name: s.label for s in after_structures}
    out = {}
    for name in sorted(changed):
        was = float(np.count_nonzero(before == old[name])) * voxel_ml if name in old else 0.0
        now = float(np.count_nonzero(after == new[name])) * voxel_ml if name in new else 0.0
        out[name] = {"before": round(was, 3), "after": round(now, 3), "change": round(now - was, 3)}
    return out


def _renames(parent: Revision, structures: Any) -> Mapping[str, str]:
    """New name -> name in the parent, for structures whose label kept but name changed."""
    by_label = {int(s["label"]): str(s["name"]) for s in parent.structures}
    return {s.name: by_label[s.label] for s in structures if s.label in by_label and by_label[s.label] != s.name}


def _check_current(store: RevisionStore, base: int) -> None:
    current = store.current()
    if base != current:
        raise StaleRevision(f"base {base} is not the current revision {current}; reload")


def undo(store: RevisionStore, base: Any, actor: str) -> dict[str, Any]:
    """Make the current revision's parent current again (recorded as an ``undo`` event)."""
    if isinstance(base, bool) or not isinstance(base, int):
        raise InvalidOperation("must be the current revision number", "base")
    _check_current(store, base)
    parent = store.revision(base).parent
    if parent is None:
        raise NothingToMove("revision 0 is the job's original: there is nothing to undo")
    return store.move(parent, base, actor, "undo")


def redo(store: RevisionStore, base: Any, actor: str) -> dict[str, Any]:
    """Move forward again to the revision the last undo left (recorded as a ``redo`` event)."""
    if isinstance(base, bool) or not isinstance(base, int):
        raise InvalidOperation("must be the current revision number", "base")
    _check_current(store, base)
    undone = [e for e in store.state()["events"] if e["event"] == "undo" and e["revision"] == base]
    if not undone:
        raise NothingToMove(f"nothing was undone from revision {base}: there is nothing to redo")
    return store.move(int(undone[-1]["from"]), base, actor, "redo")
