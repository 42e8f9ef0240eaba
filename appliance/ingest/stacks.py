"""Group file headers into stacks: by Series Instance UID, then by orientation, frame type and matrix.

Localizers, secondary captures and dose screens stay visible as series (so a nurse sees what was dropped) but are
never reconstructable; each carries the finding that says why.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from appliance.core import Finding, Instance, Series
from appliance.ingest import findings as fnd
from appliance.ingest.geometry import analyse_stack
from appliance.ingest.headers import FileHeader
from appliance.ingest.result import ScannedSeries

#: Two orientations closer than this (max abs difference of direction cosines) are the same.
ORIENTATION_TOLERANCE = 1e-3


def _series_key(h: FileHeader) -> str:
    if h.series_uid:
        return h.series_uid
    # De-identified exports sometimes blank the UID: fall back to what still identifies the series.
    seed = "|".join([h.study_uid, str(h.series_tags.get("frame_of_reference_uid", "")),
                     str(h.series_tags.get("series_number", "")), h.description, h.modality])
    return "anon-" + hashlib.sha256(seed.encode()).hexdigest()[:16]


def _orientation_cluster(clusters: list[tuple[float, ...]], iop: tuple[float, ...] | None) -> int:
    if iop is None:
        return -1
    v = np.asarray(iop)
    for k, ref in enumerate(clusters):
        if float(np.max(np.abs(v - np.asarray(ref)))) < ORIENTATION_TOLERANCE:
            return k
    clusters.append(iop)
    return len(clusters) - 1


def _stack_key(inst: Instance, cluster: int, kind: str) -> tuple[Any, ...]:
    t = inst.tags
    mosaic_file = str(inst.path) if t.get("mosaic") else ""
    spacing = t.get("pixel_spacing")
    spacing_key = tuple(round(float(v), 4) for v in spacing) if spacing else None
    return (kind, cluster, tuple(t.get("frame_type") or ()), t.get("rows"), t.get("columns"),
            t.get("stack_id", ""), mosaic_file, spacing_key)


def _kind_findings(kind: str, n: int, description: str, image_type: tuple[str, ...]) -> list[Finding]:
    if kind == "localizer":
        return [fnd.localizer_excluded(n)]
    if kind == "secondary":
        words = " ".join(image_type).upper() + " " + description.upper()
        what = "dose report screen" if "DOSE" in words else "secondary capture"
        return [fnd.secondary_capture_excluded(n, what)]
    return []


def build_series(headers: Iterable[FileHeader], keepalive: Any = None) -> list[ScannedSeries]:
    """All stacks in the headers, largest first within each series, series in order of appearance."""
    by_series: dict[str, list[FileHeader]] = defaultdict(list)
    for h in headers:
        by_series[_series_key(h)].append(h)
    out: list[ScannedSeries] = []
    for uid, group in by_series.items():
        clusters: list[tuple[float, ...]] = []
        stacks: dict[tuple[Any, ...], list[Instance]] = defaultdict(list)
        kinds: dict[tuple[Any, ...], str] = {}
        for h in group:
            for inst in h.instances:
                key = _stack_key(inst, _orientation_cluster(clusters, inst.orientation), h.kind)
                stacks[key].append(inst)
                kinds[key] = h.kind
        ordered = sorted(stacks.items(), key=lambda kv: (-len(kv[1]), str(kv[0])))
        first = group[0]
        for number, (key, insts) in enumerate(ordered, start=1):
            stack_uid = uid if number == 1 else f"{uid}#{number}"
            kind = kinds[key]
            found = _kind_findings(kind, len(insts), first.description, first.series_tags.get("image_type", ()))
            if len(ordered) > 1 and kind in ("image", "mosaic") and not key[6]:
                found.append(fnd.mixed_orientation(len(ordered), number))
            geometry = None
            placed = [i for i in insts if i.position is not None and i.orientation is not None
                      and i.tags.get("pixel_spacing")]
            if len(placed) < len(insts):
                found.append(fnd.missing_geometry(len(insts) - len(placed)))
            elif len(insts) < 2:
                if kind in ("image", "mosaic"):
                    found.append(fnd.single_image(len(insts)))
            else:
                geometry = analyse_stack(insts, first.series_tags.get("gantry_detector_tilt"))
                found.extend(geometry.findings)
                insts = [insts[i] for i in geometry.order] + [insts[i] for i in geometry.duplicates]
                geometry = analyse_stack(insts, first.series_tags.get("gantry_detector_tilt"))
            tags = dict(first.series_tags)
            tags["kind"] = kind
            tags["files"] = len({str(i.path) for i in insts})
            series = Series(stack_uid, first.study_uid, first.modality, first.description, tuple(insts), tags)
            if keepalive is not None:
                # Files unpacked from a zip live in a temporary folder: tie its lifetime to the Series itself
                # (not to its tags, which callers may serialise), so later readers of the source files
                # (DICOM SEG export) still find them.
                object.__setattr__(series, "_keepalive", keepalive)
            out.append(ScannedSeries(series, found, kind, geometry if kind in ("image", "mosaic") else None,
                                     keepalive))
    return out
