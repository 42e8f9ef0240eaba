"""Read one file's header (never its compressed pixels) into :class:`Instance` records, one per image or frame.

Enhanced multi-frame objects are opened through their per-frame functional groups; Siemens mosaics are split
into their tiles here (geometry from the CSA header, as nibabel reads it). Everything that goes wrong becomes a
:class:`Finding` naming the file.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from appliance.core import Finding, Instance, Severity
from appliance.ingest import findings as fnd
from appliance.ingest.fastheader import read_fast

log = logging.getLogger(__name__)

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
#: Syntaxes whose pixel bytes sit in the file as they are: read straight from the file offset.
NATIVE_SYNTAXES = frozenset({IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE})
PIXEL_DATA = 0x7FE00010
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
#: SOP classes that carry no image to build a volume from, with a word for the finding.
NON_IMAGE_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation (DICOM SEG)",
    "1.2.840.10008.5.1.4.1.1.66": "raw data object",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT plan",
    "1.2.840.10008.5.1.4.1.1.88.67": "radiation dose report",
    "1.2.840.10008.5.1.4.1.1.88.59": "key object selection",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.11.1": "presentation state",
    "1.2.840.10008.1.3.10": "DICOMDIR",
}
LOCALIZER_WORDS = frozenset({"LOCALIZER", "SCOUT", "SURVIEW", "TOPOGRAM", "SCANOGRAM"})
#: ImageType values that make a different kind of image within one classic series (split into stacks); other
#: values (GE's ADD, vendor words) vary along a series without changing what the pixels mean.
SPLITTING_IMAGE_TYPES = frozenset({"M", "P", "R", "I", "MAGNITUDE", "PHASE", "REAL", "IMAGINARY", "FIELD_MAP",
                                   "B0_MAP", "ADC", "FA", "TRACEW", "T1_MAP", "T2_MAP", "MIXED"})


@dataclass
class FileHeader:
    """What one file contributes: series identity, a classification and its images/frames."""

    path: Path
    series_uid: str
    study_uid: str
    modality: str
    description: str
    kind: str  # "image", "localizer", "secondary", "mosaic"
    instances: list[Instance]
    series_tags: dict[str, Any] = field(default_factory=dict)


def _f(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _vec(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _transfer_syntax(ds: Any) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if ts:
        return ts
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        return IMPLICIT_LE
    if implicit:
        return IMPLICIT_LE
    return EXPLICIT_LE if little else EXPLICIT_BE


def _image_type(ds: Any) -> tuple[str, ...]:
    value = ds.get("ImageType")
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip().upper() for v in value.split("\\"))
    return tuple(str(v).strip().upper() for v in value)


def _classify(ds: Any, image_type: tuple[str, ...]) -> str:
    sop = str(ds.get("SOPClassUID", ""))
    if sop.startswith(SECONDARY_CAPTURE_PREFIX) or "SCREEN SAVE" in image_type:
        return "secondary"
    if LOCALIZER_WORDS.intersection(image_type):
        return "localizer"
    if "MOSAIC" in image_type:
        return "mosaic"
    return "image"


def _pixel_tags(ds: Any, path: Path, ts: str) -> tuple[dict[str, Any], Finding | None]:
    """Pixel layout + where the pixel bytes sit in the file (native syntaxes) + truncation check."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    n_frames = int(_f(ds.get("NumberOfFrames", 1), 1.0)) or 1
    bits = int(ds.get("BitsAllocated", 16) or 16)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    tags: dict[str, Any] = {
        "rows": rows,
        "columns": cols,
        "n_frames": n_frames,
        "bits_allocated": bits,
        "bits_stored": int(ds.get("BitsStored", bits) or bits),
        "pixel_representation": int(ds.get("PixelRepresentation", 0) or 0),
        "samples_per_pixel": spp,
        "photometric": str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
        "transfer_syntax": ts,
        "pixel_offset": None,
        "frame_bytes": rows * cols * spp * bits // 8,
    }
    raw = ds._dict.get(pydicom.tag.Tag(PIXEL_DATA))  # the raw element: its file offset, without reading the bytes
    if raw is None:
        return tags, None
    length = int(getattr(raw, "length", 0) or 0)
    tell = getattr(raw, "value_tell", None)
    expected = tags["frame_bytes"] * n_frames
    if ts in NATIVE_SYNTAXES and length != 0xFFFFFFFF:
        size = os.path.getsize(path)
        have = min(length, size - tell) if tell is not None else length
        if have < expected:
            return tags, fnd.truncated_pixel_data(path, have, expected)
        tags["pixel_offset"] = int(tell) if tell is not None else None
    return tags, None


def _frame_value(frame: Dataset, shared: Dataset | None, seq: str, attr: str) -> Any:
    for group in (frame, shared):
        if group is None or seq not in group:
            continue
        items = group[seq].value
        if items and attr in items[0]:
            return items[0][attr].value
    return None


def _enhanced_instances(ds: Dataset, path: Path, base: dict[str, Any]) -> list[Instance]:
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    out: list[Instance] = []
    sop = str(ds.get("SOPInstanceUID", ""))
    for i, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        pos = _vec(_frame_value(frame, shared, "PlanePositionSequence", "ImagePositionPatient"), 3)
        iop = _vec(_frame_value(frame, shared, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        spacing = _vec(_frame_value(frame, shared, "PixelMeasuresSequence", "PixelSpacing"), 2)
        slope = _frame_value(frame, shared, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _frame_value(frame, shared, "PixelValueTransformationSequence", "RescaleIntercept")
        ftype = None
        for seq in ("MRImageFrameTypeSequence", "CTImageFrameTypeSequence", "FrameTypeSequence"):
            ftype = _frame_value(frame, shared, seq, "FrameType")
            if ftype is not None:
                break
        stack_id = _frame_value(frame, shared, "FrameContentSequence", "StackID")
        tags = dict(base)
        tags.update(
            pixel_spacing=spacing,
            slope=_f(slope, 1.0) if slope is not None else base["slope"],
            intercept=_f(intercept, 0.0) if intercept is not None else base["intercept"],
            frame_type=tuple(str(v).upper() for v in ftype) if ftype is not None else base["frame_type"],
            stack_id=str(stack_id) if stack_id is not None else "",
            instance_number=i + 1,
        )
        out.append(Instance(path, sop, i, pos, iop, tags))  # type: ignore[arg-type]
    return out


def _mosaic_instances(ds: Dataset, path: Path, base: dict[str, Any]) -> tuple[list[Instance], Finding | None]:
    """Un-tile a Siemens mosaic: one Instance per tile, positions from the CSA slice normal."""
    import numpy as np
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel warns that its DICOM readers are experimental
        from nibabel.nicom import csareader

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            csa = csareader.get_csa_header(ds, "image")
        n = csareader.get_n_mosaic(csa) if csa else None
        normal = csareader.get_slice_normal(csa) if csa else None
    except Exception as exc:  # damaged private header
        return [], fnd.mosaic_refused(path, f"its Siemens CSA header is unreadable ({exc})")
    if n is None:
        n = ds.get((0x0019, 0x100A)).value if (0x0019, 0x100A) in ds else None
    iop = _vec(ds.get("ImageOrientationPatient"), 6)
    pos = _vec(ds.get("ImagePositionPatient"), 3)
    spacing = _vec(ds.get("PixelSpacing"), 2)
    if not n or iop is None or pos is None or spacing is None:
        return [], fnd.mosaic_refused(path, "the number of tiles or the geometry tags are missing")
    n = int(n)
    tiles = int(np.ceil(np.sqrt(n)))
    rows, cols = int(base["rows"]), int(base["columns"])
    if rows % tiles or cols % tiles:
        return [], fnd.mosaic_refused(path, f"{rows}x{cols} pixels do not split into {tiles}x{tiles} tiles")
    trow, tcol = rows // tiles, cols // tiles
    r = np.asarray(iop[:3])
    c = np.asarray(iop[3:])
    if normal is None:
        normal = np.cross(r, c)
    nvec = np.asarray(normal, dtype=float)
    # ImagePositionPatient names the corner of the whole mosaic; move it to the corner of one tile.
    corner = np.asarray(pos) + r * spacing[1] * (cols - tcol) / 2.0 + c * spacing[0] * (rows - trow) / 2.0
    dz = _f(ds.get("SpacingBetweenSlices"), 0.0) or _f(ds.get("SliceThickness"), 0.0)
    if dz <= 0:
        return [], fnd.mosaic_refused(path, "the slice spacing is unknown")
    sop = str(ds.get("SOPInstanceUID", ""))
    out: list[Instance] = []
    for t in range(n):
        p = corner + t * dz * nvec
        tags = dict(base)
        tags.update(rows=trow, columns=tcol, mosaic={"tiles": tiles, "tile": t, "tile_rows": trow,
                                                       "tile_columns": tcol, "mosaic_rows": rows,
                                                       "mosaic_columns": cols}, instance_number=t + 1)
        out.append(Instance(path, sop, t, (float(p[0]), float(p[1]), float(p[2])), iop, tags))  # type: ignore[arg-type]
    return out, None


def read_header(path: Path) -> tuple[FileHeader | None, list[Finding]]:
    """Read one file. Returns its header (None when it holds no usable image) and findings about it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on every odd value; findings carry what matters
        try:
            return _read_header(path)
        except Exception as exc:  # last line of defence: bad input never crashes a scan
            return None, [fnd.decode_failed(path, f"unexpected content ({type(exc).__name__}: {exc})")]


def _read_header(path: Path) -> tuple[FileHeader | None, list[Finding]]:
    try:
        ds: Any = read_fast(path) or pydicom.dcmread(path, force=True, defer_size=1024)
    except Exception as exc:  # pydicom raises many types on garbage; every one is a finding
        return None, [fnd.decode_failed(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})",
                                        Severity.WARNING)]
    meta = getattr(ds, "file_meta", None)
    media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    sop_class = str(ds.get("SOPClassUID", "")) or media_class
    if sop_class in NON_IMAGE_CLASSES:
        return None, [fnd.non_image(path, NON_IMAGE_CLASSES[sop_class])]
    has_pixels = PIXEL_DATA in ds._dict
    if not has_pixels:
        if len(ds) == 0 and media_class:
            return None, [fnd.truncated_pixel_data(path, 0, None)]
        if "SOPInstanceUID" not in ds and "Modality" not in ds:
            return None, [fnd.decode_failed(path, "not a DICOM file (no DICOM header found)", Severity.WARNING,
                                            hint="It is skipped.")]
        what = str(ds.get("Modality", "")) or "non-image object"
        return None, [fnd.non_image(path, f"{what} object without pixel data")]
    ts = _transfer_syntax(ds)
    if _f(ds.get("Rows"), 0.0) <= 0 or _f(ds.get("Columns"), 0.0) <= 0:
        return None, [fnd.decode_failed(path, "the image has no rows or columns (damaged header)")]
    try:
        pix, problem = _pixel_tags(ds, path, ts)
    except Exception as exc:
        return None, [fnd.decode_failed(path, f"pixel description unreadable ({exc})")]
    if problem is not None:
        return None, [problem]
    image_type = _image_type(ds)
    kind = _classify(ds, image_type)
    spacing = _vec(ds.get("PixelSpacing"), 2) or _vec(ds.get("ImagerPixelSpacing"), 2)
    base: dict[str, Any] = dict(pix)
    base.update(
        pixel_spacing=spacing,
        slope=_f(ds.get("RescaleSlope"), 1.0) if "RescaleSlope" in ds else 1.0,
        intercept=_f(ds.get("RescaleIntercept"), 0.0) if "RescaleIntercept" in ds else 0.0,
        frame_type=tuple(v for v in image_type if v in SPLITTING_IMAGE_TYPES),
        stack_id="",
        instance_number=int(_f(ds.get("InstanceNumber"), 0.0)),
        acquisition_number=int(_f(ds.get("AcquisitionNumber"), 0.0)),
        no_file_meta=meta is None or not meta.get("TransferSyntaxUID"),
    )
    series_uid = str(ds.get("SeriesInstanceUID", "")).strip()
    study_uid = str(ds.get("StudyInstanceUID", "")).strip()
    series_tags: dict[str, Any] = {
        "series_number": int(_f(ds.get("SeriesNumber"), 0.0)) if ds.get("SeriesNumber") is not None else None,
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "gantry_detector_tilt": _f(ds.get("GantryDetectorTilt"), 0.0) if "GantryDetectorTilt" in ds else None,
        "manufacturer": str(ds.get("Manufacturer", "")),
        "image_type": image_type,
        "sop_class_uid": sop_class,
        "patient_position": str(ds.get("PatientPosition", "")),
    }
    header = FileHeader(path, series_uid, study_uid, str(ds.get("Modality", "OT") or "OT"),
                        str(ds.get("SeriesDescription", "") or ""), kind, [], series_tags)
    if "PerFrameFunctionalGroupsSequence" in ds:
        try:
            header.instances = _enhanced_instances(ds, path, base)
        except Exception as exc:
            return None, [fnd.decode_failed(path, f"per-frame functional groups unreadable ({exc})")]
        return header, []
    if kind == "mosaic":
        insts, problem = _mosaic_instances(ds, path, base)
        if problem is not None:
            return None, [problem]
        header.instances = insts
        return header, []
    pos = _vec(ds.get("ImagePositionPatient"), 3)
    iop = _vec(ds.get("ImageOrientationPatient"), 6)
    n_frames = int(base["n_frames"])
    sop = str(ds.get("SOPInstanceUID", ""))
    header.instances = [
        Instance(path, sop, None if n_frames == 1 else f, pos, iop, base)  # type: ignore[arg-type]
        for f in range(n_frames)
    ]
    return header, []
