"""Lesions: from a label file (same grid or resampled by geometry), or grown from a seed point in a window.

A clinician tapping a nodule gives a seed in patient coordinates (LPS mm) and an intensity window; the lesion is
the connected region of voxels inside the window that holds the seed, bounded by a sphere of ``max_radius_mm``
so that a window touching a neighbouring organ cannot run away (a finding says when the bound was reached).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from appliance.core import Finding, LabelMap, Severity, Structure, StructureCategory, Volume
from engines.errors import LesionError

log = logging.getLogger(__name__)

Mask = npt.NDArray[np.bool_]

LESION_COLOR = (255, 220, 0)
LESION_SNOMED = "52988006"  # Lesion (morphologic abnormality)


@dataclass
class Lesion:
    """A lesion mask on the grid of the volume being segmented, with where it came from."""

    mask: Mask
    name: str = "lesion"
    source: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class LesionRecord:
    """What the manifest and the report keep about a lesion (its voxels live in the label map)."""

    name: str
    label: int
    voxels: int
    volume_ml: float
    source: Mapping[str, Any]
    findings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "label": self.label, "voxels": self.voxels, "volume_ml": self.volume_ml,
                "source": dict(self.source), "findings": list(self.findings)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LesionRecord:
        """Inverse of :meth:`to_dict`; :class:`LesionError` naming what is wrong otherwise."""
        try:
            return cls(str(data["name"]), int(data["label"]), int(data["voxels"]), float(data["volume_ml"]),
                       dict(data["source"]), tuple(str(f) for f in data.get("findings", ())))
        except (KeyError, TypeError, ValueError) as exc:
            raise LesionError(f"malformed lesion record ({type(exc).__name__}: {exc}); it needs name, label, "
                              "voxels, volume_ml and source") from exc


def check_lesion_name(name: str) -> str:
    """``name`` when it can name a structure (ASCII letters, digits, ``_`` or ``-``); :class:`LesionError` else."""
    safe = name.replace("_", "").replace("-", "")
    if not name or not safe.isalnum() or not name.isascii() or len(name) > 64:
        raise LesionError(f"lesion name {name!r} must be 1-64 ASCII letters, digits, '_' or '-' (e.g. nodule_1)")
    return name


def lesion_names(labelmap: LabelMap) -> tuple[str, ...]:
    """Names of the lesions in ``labelmap``, in label order."""
    return tuple(s.name for s in sorted(labelmap.structures, key=lambda s: s.label)
                 if s.category == StructureCategory.LESION)


def describe_lesion(labelmap: LabelMap, name: str, lesion: Lesion | None = None) -> LesionRecord:
    """The record of lesion ``name`` in ``labelmap`` (source and findings from ``lesion`` when given)."""
    if name not in lesion_names(labelmap):
        raise LesionError(f"no lesion {name!r} in the label map; lesions: {list(lesion_names(labelmap))}")
    structure = labelmap.structure(name)
    voxels = int(np.count_nonzero(labelmap.labels == structure.label))
    return LesionRecord(name, structure.label, voxels, round(voxels * labelmap.voxel_volume_ml, 4),
                        dict(lesion.source) if lesion is not None else {},
                        tuple(f.code for f in lesion.findings) if lesion is not None else ())


def _load_label_volume(path: Path) -> Volume:
    name = path.name.lower()
    try:
        if name.endswith(".nrrd") or name.endswith(".nhdr"):
            from appliance.io.nrrd import load_volume as load_nrrd

            return load_nrrd(path, "SEG", "label")
        from appliance.io.nifti import load_volume as load_nifti

        return load_nifti(path, "SEG", "label")
    except (OSError, ValueError) as exc:
        raise LesionError(f"cannot read lesion file {path}: {exc}; give a NIfTI or NRRD label file") from exc


def resample_nearest(source: Volume, target: Volume) -> npt.NDArray[Any]:
    """``source`` values sampled at ``target``'s voxel centres by patient-space geometry (nearest neighbour).

    Voxels of ``target`` outside ``source``'s grid get 0. Only the box of ``target`` covering ``source``'s
    non-zero voxels is sampled, so a small lesion on a large grid stays cheap.
    """
    out = np.zeros(target.shape, dtype=source.array.dtype)
    nz = np.argwhere(np.asarray(source.array) != 0)
    if nz.size == 0:
        return out
    lo, hi = nz.min(axis=0) - 1, nz.max(axis=0) + 1
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])],
                       dtype=np.float64)
    in_target = target.patient_to_voxel(source.voxel_to_patient(corners))
    t_lo = np.clip(np.floor(in_target.min(axis=0)).astype(int) - 1, 0, np.asarray(target.shape))
    t_hi = np.clip(np.ceil(in_target.max(axis=0)).astype(int) + 2, 0, np.asarray(target.shape))
    if np.any(t_hi <= t_lo):
        return out
    grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(t_lo, t_hi, strict=True)], indexing="ij")
    ijk = np.stack([g.ravel() for g in grids], axis=1)
    src = np.rint(source.patient_to_voxel(target.voxel_to_patient(ijk))).astype(np.int64)
    inside = np.all((src >= 0) & (src < np.asarray(source.shape)), axis=1)
    values = np.zeros(len(ijk), dtype=source.array.dtype)
    values[inside] = np.asarray(source.array)[src[inside, 0], src[inside, 1], src[inside, 2]]
    out[t_lo[0]:t_hi[0], t_lo[1]:t_hi[1], t_lo[2]:t_hi[2]] = values.reshape(tuple(t_hi - t_lo))
    return out


def lesion_from_file(path: Path, reference: Volume, label: int | None = None, name: str = "lesion") -> Lesion:
    """Lesion from a label file: non-zero voxels (or those equal to ``label``), put on ``reference``'s grid."""
    check_lesion_name(name)
    path = Path(path)
    src = _load_label_volume(path)
    same_grid = src.shape == reference.shape and np.allclose(src.affine, reference.affine, atol=1e-3)
    values = np.asarray(src.array) if same_grid else resample_nearest(src, reference)
    mask = values != 0 if label is None else values == label
    findings: list[Finding] = []
    if not same_grid:
        findings.append(Finding(
            "lesion_resampled", Severity.INFO,
            "The lesion file is on another grid; it was placed on the image by patient coordinates.",
            "REQ-FUNC-160", {"file": path.name, "file_shape": list(src.shape)},
        ))
    if not mask.any():
        raise LesionError(
            f"lesion file {path.name} has no lesion voxels inside the image"
            + (f" with label {label}" if label is not None else "")
            + "; check that it belongs to this study"
        )
    return Lesion(np.asarray(mask), name, {"kind": "file", "file": path.name, "label": label,
                                           "resampled": not same_grid}, findings)


def lesion_from_seed(volume: Volume, seed_lps: tuple[float, float, float], window: tuple[float, float],
                     max_radius_mm: float = 50.0, name: str = "lesion") -> Lesion:
    """Region grown from ``seed_lps`` (mm) over voxels whose value is within ``window`` (inclusive).

    6-connected, holes filled (calcification, necrosis), bounded by a sphere of ``max_radius_mm`` around the seed.
    """
    if len(window) != 2 or not all(math.isfinite(float(v)) for v in window):
        raise LesionError(f"window must be two finite values [low, high], got {window!r}")
    if not (math.isfinite(max_radius_mm) and max_radius_mm > 0):
        raise LesionError(f"max_radius_mm must be a positive number of mm, got {max_radius_mm!r}")
    if len(seed_lps) != 3 or not all(math.isfinite(float(v)) for v in seed_lps):
        raise LesionError(f"seed_lps must be three finite numbers (mm), got {seed_lps!r}")
    check_lesion_name(name)
    lo, hi = float(min(window)), float(max(window))
    ijk = np.rint(volume.patient_to_voxel(np.asarray(seed_lps, dtype=np.float64))[0]).astype(int)
    if np.any(ijk < 0) or np.any(ijk >= np.asarray(volume.shape)):
        voxel = tuple(int(i) for i in ijk)
        raise LesionError(f"seed {tuple(seed_lps)} mm (voxel {voxel}) lies outside the image; tap inside it")
    seed = (int(ijk[0]), int(ijk[1]), int(ijk[2]))
    value = float(volume.array[seed])
    if not lo <= value <= hi:
        raise LesionError(f"the seed's value {value:g} is outside the window {lo:g}..{hi:g}; widen the window "
                          "or tap the lesion itself")
    sp = np.asarray(volume.spacing)
    half = np.ceil(max_radius_mm / sp).astype(int)
    box_lo = np.maximum(ijk - half, 0)
    box_hi = np.minimum(ijk + half + 1, np.asarray(volume.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(box_lo, box_hi, strict=True))
    sub = np.asarray(volume.array[box], dtype=np.float64)
    grids = np.ogrid[tuple(slice(int(a), int(b)) for a, b in zip(box_lo, box_hi, strict=True))]
    r2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, ijk, sp, strict=True))
    ball = r2 <= max_radius_mm**2
    candidate = (sub >= lo) & (sub <= hi) & ball
    lab, _ = ndimage.label(candidate)
    local_seed = tuple(int(i - b) for i, b in zip(ijk, box_lo, strict=True))
    region = ndimage.binary_fill_holes(lab == lab[local_seed])
    findings: list[Finding] = []
    shell = ball & ~ndimage.binary_erosion(ball)
    if bool((region & shell).any()):
        findings.append(Finding(
            "lesion_growth_bounded", Severity.WARNING,
            f"The lesion grown from the seed reached the {max_radius_mm:g} mm limit; the window probably includes "
            "neighbouring tissue. Narrow the window and check the lesion on the images.",
            "REQ-SAFE-151", {"max_radius_mm": max_radius_mm, "window": [lo, hi]},
        ))
    mask = np.zeros(volume.shape, dtype=bool)
    mask[box] = region
    return Lesion(mask, name, {"kind": "seed", "seed_lps_mm": [float(v) for v in seed_lps], "seed_voxel": list(seed),
                               "window": [lo, hi], "max_radius_mm": max_radius_mm}, findings)


def add_lesion(labelmap: LabelMap, lesion: Lesion) -> LabelMap:
    """``labelmap`` with the lesion written on top (a new label after the highest one used).

    Several lesions may share a label map, each under its own name; a lesion overlapping another lesion is
    refused (nothing is overwritten): remove or replace the other one first.
    """
    check_lesion_name(lesion.name)
    if lesion.mask.shape != labelmap.shape:
        raise LesionError(f"lesion grid {lesion.mask.shape} does not match the label grid {labelmap.shape}")
    if not lesion.mask.any():
        raise LesionError(f"lesion {lesion.name!r} has no voxels")
    if any(s.name == lesion.name for s in labelmap.structures):
        raise LesionError(f"a structure called {lesion.name!r} already exists; give the lesion another name")
    for other in lesion_names(labelmap):
        overlap = int(np.count_nonzero(lesion.mask & (labelmap.labels == labelmap.structure(other).label)))
        if overlap:
            raise LesionError(f"lesion {lesion.name!r} overlaps lesion {other!r} by {overlap} voxels; remove or "
                              f"replace {other!r} first")
    label = max((s.label for s in labelmap.structures), default=0) + 1
    structure = Structure(label, lesion.name, LESION_COLOR, StructureCategory.LESION, LESION_SNOMED)
    labels: npt.NDArray[np.integer[Any]] = labelmap.labels.astype(np.uint8 if label < 256 else np.uint16)
    labels[lesion.mask] = label
    kept = [s for s in labelmap.structures if bool((labels == s.label).any())]
    return LabelMap(labels, labelmap.affine, (*kept, structure), dict(labelmap.metadata))


def mark_as_lesion(labelmap: LabelMap, structure: str) -> LabelMap:
    """``labelmap`` with ``structure`` (e.g. a lesion class of a network pack) recorded as a lesion.

    The voxels and the label stay; only the category becomes ``lesion`` (colour and SNOMED code of a lesion), so
    margins and measurements can be taken around it. A structure that already is a lesion is returned unchanged.
    """
    try:
        found = labelmap.structure(structure)
    except KeyError:
        raise LesionError(f"no structure {structure!r} to take as a lesion; structures: "
                          f"{[s.name for s in labelmap.structures]}") from None
    if found.category == StructureCategory.LESION:
        return labelmap
    if found.category == StructureCategory.MARGIN:
        raise LesionError(f"{structure!r} is a margin shell, not a lesion")
    if not bool((labelmap.labels == found.label).any()):
        raise LesionError(f"structure {structure!r} has no voxels")
    lesion = Structure(found.label, found.name, LESION_COLOR, StructureCategory.LESION, LESION_SNOMED)
    structures = tuple(lesion if s.label == found.label else s for s in labelmap.structures)
    return LabelMap(labelmap.labels, labelmap.affine, structures, dict(labelmap.metadata))


def remove_lesion(labelmap: LabelMap, name: str) -> LabelMap:
    """``labelmap`` without lesion ``name`` (its voxels become background; margins of it are removed too).

    The lesion's voxels had overwritten whatever lay under them, so they become background, not the organ.
    """
    if name not in lesion_names(labelmap):
        raise LesionError(f"no lesion {name!r} in the label map; lesions: {list(lesion_names(labelmap))}")
    prefix = f"{name}_margin_"
    gone = [s for s in labelmap.structures if s.name == name
            or (s.category == StructureCategory.MARGIN and s.name.startswith(prefix))]
    labels = labelmap.labels.copy()
    labels[np.isin(labels, [s.label for s in gone])] = 0
    kept = tuple(s for s in labelmap.structures if s not in gone)
    return LabelMap(labels, labelmap.affine, kept, dict(labelmap.metadata))


def replace_lesion(labelmap: LabelMap, lesion: Lesion) -> LabelMap:
    """``labelmap`` with lesion ``lesion.name`` replaced by ``lesion`` (after a re-grow); added when new."""
    base = remove_lesion(labelmap, lesion.name) if lesion.name in lesion_names(labelmap) else labelmap
    return add_lesion(base, lesion)
