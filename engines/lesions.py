"""Lesions: from a label file (same grid or resampled by geometry), or grown from a seed point in a window.

A clinician tapping a nodule gives a seed in patient coordinates (LPS mm) and an intensity window; the lesion is
the connected region of voxels inside the window that holds the seed, bounded by a sphere of ``max_radius_mm``
so that a window touching a neighbouring organ cannot run away (a finding says when the bound was reached).
"""

from __future__ import annotations

import logging
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
    """``labelmap`` with the lesion written on top (a new label after the highest one used)."""
    if lesion.mask.shape != labelmap.shape:
        raise LesionError(f"lesion grid {lesion.mask.shape} does not match the label grid {labelmap.shape}")
    if any(s.name == lesion.name for s in labelmap.structures):
        raise LesionError(f"a structure called {lesion.name!r} already exists; give the lesion another name")
    label = max((s.label for s in labelmap.structures), default=0) + 1
    structure = Structure(label, lesion.name, LESION_COLOR, StructureCategory.LESION, LESION_SNOMED)
    labels: npt.NDArray[np.integer[Any]] = labelmap.labels.astype(np.uint8 if label < 256 else np.uint16)
    labels[lesion.mask] = label
    kept = [s for s in labelmap.structures if bool((labels == s.label).any())]
    return LabelMap(labels, labelmap.affine, (*kept, structure), dict(labelmap.metadata))
