"""Segmentation outputs on disk: ``labels.nii.gz`` + ``structures.json`` + ``segment.json``, and reading back.

``labels.nii.gz`` holds the integer labels on the source volume's grid (RAS affine, as NIfTI stores it);
``structures.json`` is ``[{"label", "name", "color", "category", "snomed"}]``; ``segment.json`` is the provenance
record (software version, preset and why it was chosen, backend and device, timings per stage, pack versions and
hashes, findings with their requirement IDs, per-structure volumes, lesion and margin tables).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from appliance import __version__
from appliance.core import LabelMap, Structure
from appliance.fsio import atomic_write_text
from appliance.io.nifti import load_volume, save_labelmap
from engines.errors import LabelMapFileError
from engines.presets.base import SegmentationResult

LABELS_FILE = "labels.nii.gz"
STRUCTURES_FILE = "structures.json"
SEGMENT_FILE = "segment.json"


def _write_json_atomic(path: Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    atomic_write_text(path, text, mode=0o644)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


#: Voxels counted per block (a whole 512x512x600 label map as int64 was a 1.2 GB temporary; issue 17).
_COUNT_BLOCK = 1 << 23


def label_counts(labels: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Voxels per label value (index = value), counted block by block; the counts of one ``np.bincount``."""
    flat = np.asarray(labels).reshape(-1)
    counts = np.zeros(1, dtype=np.int64)
    for start in range(0, flat.size, _COUNT_BLOCK):
        block = np.bincount(flat[start : start + _COUNT_BLOCK], minlength=counts.size)
        if block.size > counts.size:
            counts = np.concatenate([counts, np.zeros(block.size - counts.size, dtype=np.int64)])
        counts += block
    return counts


def structure_table(labelmap: LabelMap) -> list[dict[str, Any]]:
    """Per structure: label, name, category, voxel count and volume in ml."""
    counts = label_counts(labelmap.labels)
    rows = []
    for s in labelmap.structures:
        n = int(counts[s.label]) if s.label < counts.size else 0
        rows.append({"label": s.label, "name": s.name, "category": s.category.value, "voxels": n,
                     "volume_ml": round(n * labelmap.voxel_volume_ml, 3)})
    return rows


def write_segmentation(result: SegmentationResult, out_dir: Path,
                       extra: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write the three output files into ``out_dir``; returns their paths by role (``labels``, ...)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lm = result.labelmap
    labels_path = save_labelmap(lm, out_dir / LABELS_FILE)
    structures_path = _write_json_atomic(out_dir / STRUCTURES_FILE, [s.to_dict() for s in lm.structures])
    record: dict[str, Any] = {
        "software": {"name": "or-appliance", "version": __version__},
        "provenance": dict(result.provenance),
        "grid": {"shape": list(lm.shape), "spacing_mm": [round(s, 6) for s in lm.spacing],
                 "affine_lps": lm.affine.tolist()},
        "structures": structure_table(lm),
        "findings": [f.to_dict() for f in result.findings],
        "files": {"labels": LABELS_FILE, "structures": STRUCTURES_FILE},
    }
    if extra:
        record.update(dict(extra))
    segment_path = _write_json_atomic(out_dir / SEGMENT_FILE, record)
    return {"labels": labels_path, "structures": structures_path, "segment": segment_path}


def read_structures(path: Path) -> list[Structure]:
    """Structures from a ``structures.json``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LabelMapFileError(f"cannot read {path}: {exc}; it must be a JSON list of structures") from exc
    if not isinstance(data, list):
        raise LabelMapFileError(f"{path}: expected a JSON list of {{label, name, color, category}} objects")
    out = []
    for i, item in enumerate(data):
        try:
            out.append(Structure.from_dict(item))
        except (KeyError, TypeError, ValueError) as exc:
            raise LabelMapFileError(f"{path} entry {i}: {exc}; each entry needs label, name, color") from exc
    return out


def read_labelmap(labels_path: Path, structures_path: Path) -> LabelMap:
    """A LabelMap from ``labels.nii.gz`` and ``structures.json``; every label value used must be described."""
    try:
        vol = load_volume(Path(labels_path), "SEG", "label")
    except (OSError, ValueError) as exc:
        raise LabelMapFileError(f"cannot read label file {labels_path}: {exc}") from exc
    arr = np.asarray(vol.array)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.allclose(arr, np.round(arr)):
            raise LabelMapFileError(f"{labels_path} holds non-integer values; it is not a label map")
        arr = np.round(arr).astype(np.int32)
    if arr.min(initial=0) < 0:
        raise LabelMapFileError(f"{labels_path} holds negative labels; labels must be 0..65535")
    structures = read_structures(structures_path)
    used = {int(v) for v in np.unique(arr)} - {0}
    described = {s.label for s in structures}
    missing = sorted(used - described)
    if missing:
        raise LabelMapFileError(
            f"{labels_path} uses label value(s) {missing} that {structures_path} does not describe; add them"
        )
    dtype = np.uint8 if max(used, default=0) < 256 else np.uint16
    return LabelMap(arr.astype(dtype), vol.affine, tuple(structures), {"source": Path(labels_path).name})
