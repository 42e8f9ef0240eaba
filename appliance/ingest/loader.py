"""Build a :class:`Volume` from one scanned stack: pixels, per-slice rescale, the LPS affine, and the
refusal policy (gaps, uneven spacing, duplicates, tilt) with its explicit, recorded override.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from appliance.core import Finding, Series, Severity, Volume
from appliance.ingest import findings as fnd
from appliance.ingest.errors import PixelDecodeError, SeriesRefused
from appliance.ingest.geometry import StackGeometry, analyse_stack, regular_grid
from appliance.ingest.pixels import load_pixels
from appliance.ingest.result import ScannedSeries

log = logging.getLogger(__name__)


def _scanned(series: ScannedSeries | Series) -> ScannedSeries:
    if isinstance(series, ScannedSeries):
        return series
    rebuilt = ScannedSeries(series, [], str(series.tags.get("kind", "image")))
    insts = list(series.instances)
    if len(insts) >= 2 and all(i.position is not None and i.orientation is not None and i.tags.get("pixel_spacing")
                               for i in insts):
        rebuilt.geometry = analyse_stack(insts, series.tags.get("gantry_detector_tilt"))
        rebuilt.findings.extend(rebuilt.geometry.findings)
    else:
        rebuilt.findings.append(fnd.single_image(len(insts)) if len(insts) < 2 else fnd.missing_geometry(len(insts)))
    return rebuilt


def _deshear_and_resample(
    slices: npt.NDArray[Any], geom: StackGeometry, spacing: float
) -> npt.NDArray[Any]:
    """Shift each slice in-plane onto the first slice's grid (removes gantry-tilt shear) and interpolate
    linearly along the normal onto slices ``spacing`` apart. ``slices`` is (k, j, i)."""
    _, weights = regular_grid(geom.distances, spacing)
    background = float(slices.min())
    work = slices.astype(np.float32)
    shifted: dict[int, npt.NDArray[np.float32]] = {}

    def aligned(k: int) -> npt.NDArray[np.float32]:
        if k not in shifted:
            di, dj = geom.inplane_offsets[k]
            if abs(di) < 1e-6 and abs(dj) < 1e-6:
                shifted[k] = work[k]
            else:  # source voxel (i - di, j - dj) lands on target (i, j); array axes are (j, i)
                shifted[k] = ndimage.shift(work[k], (dj, di), order=1, mode="constant", cval=background)
        return shifted[k]

    out = np.empty((len(weights), *slices.shape[1:]), dtype=np.float32)
    for t, w in enumerate(weights):
        if w.lower == w.upper or w.weight_upper == 0.0:
            out[t] = aligned(w.lower)
        else:
            out[t] = (1.0 - w.weight_upper) * aligned(w.lower) + w.weight_upper * aligned(w.upper)
    if np.issubdtype(slices.dtype, np.integer):
        info = np.iinfo(slices.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(slices.dtype)
    return out.astype(slices.dtype)


def load_volume(series: ScannedSeries | Series, override: bool = False) -> tuple[Volume, list[Finding]]:
    """The volume of one stack and the findings that apply to it.

    Raises :class:`SeriesRefused` when a finding blocks reconstruction: errors always, refusals (gap, uneven
    spacing, duplicates, gantry tilt) unless ``override`` is True. With ``override`` the stack is de-sheared
    and resampled onto a regular grid at its median spacing (linear interpolation), duplicates keep the first
    image, and the override is recorded in ``Volume.metadata["override"]`` and as an ``override_applied`` finding.
    """
    scanned = _scanned(series)
    found = list(scanned.findings)
    errors = [f for f in found if f.severity == Severity.ERROR]
    refusals = [f for f in found if f.severity == Severity.REFUSAL]
    if errors or scanned.geometry is None:
        name = scanned.series.description or scanned.series.series_instance_uid
        raise SeriesRefused(f"series {name!r} cannot be used: {fnd.refusal_summary(errors or found)}",
                            errors or found)
    if refusals and not override:
        raise SeriesRefused(f"series {scanned.series.description!r} {fnd.refusal_summary(refusals)}; an "
                            "override (--allow-gaps) resamples it and is recorded, use it only if a clinician "
                            "accepts this", refusals)
    geom = scanned.geometry
    used = [scanned.series.instances[k] for k in range(geom.n_slices)]
    try:
        slices = load_pixels(used)  # (k, j, i)
    except PixelDecodeError as exc:
        finding = fnd.decode_failed(exc.path, exc.why)
        raise SeriesRefused(finding.message, [finding]) from exc
    modality = scanned.series.modality or "OT"
    metadata: dict[str, Any] = {
        "series_instance_uid": scanned.series.series_instance_uid,
        "study_instance_uid": scanned.series.study_instance_uid,
        "description": scanned.series.description,
        "modality": modality,
        "source_files": int(scanned.series.tags.get("files", len({str(i.path) for i in used}))),
        "identity_hash": scanned.series.identity_hash(),
        "frame_of_reference_uid": str(scanned.series.tags.get("frame_of_reference_uid", "")),
        "sop_instance_uids": [i.sop_instance_uid for i in used],
        "frames": [i.frame for i in used],
        "tilt_deg": geom.tilt_deg,
    }
    if refusals:
        codes = sorted({f.code for f in refusals})
        spacing = geom.nominal_spacing
        slices = _deshear_and_resample(slices, geom, spacing)
        affine = geom.orthogonal_affine(spacing)
        action = (f"{'de-sheared and ' if geom.tilt_deg else ''}resampled onto {slices.shape[0]} slices "
                  f"{spacing:.3f} mm apart along the slice normal by linear interpolation")
        metadata["override"] = {"codes": codes, "action": action}
        metadata["sop_instance_uids"] = []  # resampled slices no longer correspond to source instances
        found = [fnd.overridden(f) if f.severity == Severity.REFUSAL and f.code != "gantry_tilt" else f
                 for f in found if f.code != "gantry_tilt"]
        if geom.tilt_deg:
            tag = scanned.series.tags.get("gantry_detector_tilt")
            found.append(fnd.gantry_tilt(round(geom.tilt_deg, 2), tag, deshear=True))
        found.append(fnd.override_applied(codes, action))
    else:
        affine = geom.affine()
    units = "HU" if modality == "CT" else "arbitrary"
    array = np.transpose(slices, (2, 1, 0))  # (k, j, i) -> (i, j, k): affine @ [i, j, k, 1] = LPS
    return Volume(array, affine, modality, units, metadata), found
