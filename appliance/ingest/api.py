"""The public entry points: :func:`scan`, :func:`select_series`, :func:`load_input`."""

from __future__ import annotations

import logging
from pathlib import Path

from appliance.core import Finding, Series, Volume
from appliance.ingest.errors import NoSeriesFound, SeriesRefused, UnknownSeries
from appliance.ingest.findings import no_series, refusal_summary
from appliance.ingest.headers import FileHeader, read_header
from appliance.ingest.loader import load_volume
from appliance.ingest.research import is_research_file, load_research
from appliance.ingest.result import IngestResult, ScannedSeries
from appliance.ingest.sources import collect
from appliance.ingest.stacks import build_series

log = logging.getLogger(__name__)


def scan(path: Path) -> IngestResult:
    """Every series in a folder tree, zip, DICOMDIR or single file, with findings for files not used.

    Reads headers only (pixels are read by :func:`load_volume`). Never raises for bad input.
    """
    path = Path(path)
    source = collect(path)
    headers: list[FileHeader] = []
    findings: list[Finding] = list(source.findings)
    for f in source.files:
        header, found = read_header(f)
        findings.extend(found)
        if header is not None and header.instances:
            headers.append(header)
    series = build_series(headers, keepalive=source.tempdir)
    log.info("scanned %s: %d file(s), %d series, %d file finding(s)", path, len(source.files), len(series),
             len(findings))
    return IngestResult(str(path), series, findings, len(source.files), source.tempdir)


def _voxels(s: ScannedSeries) -> int:
    x, y, z = s.shape_xyz
    return x * y * z


def select_series(result: IngestResult, override: bool = False) -> ScannedSeries:
    """The largest reconstructable series (most voxels; then most slices). With ``override``, series refused
    only for overridable reasons (gaps, spacing, tilt) are candidates too.

    Raises :class:`NoSeriesFound` naming what was found when none qualifies.
    """
    candidates = [s for s in result.series if s.reconstructable]
    if not candidates and override:
        candidates = [s for s in result.series if s.overridable]
    if not candidates:
        refused = [s for s in result.series if s.overridable]
        found = [f for s in result.series for f in s.findings] + list(result.findings)
        if refused:
            best = max(refused, key=_voxels)
            blocking = [f for f in best.findings if f.blocks_reconstruction]
            raise SeriesRefused(f"the only usable series was {refusal_summary(blocking)}", blocking)
        raise NoSeriesFound(
            f"no reconstructable image series in {result.source} ({len(result.series)} series, "
            f"{result.files_seen} file(s)); run 'appliance inspect' to see why", found)
    return max(candidates, key=lambda s: (_voxels(s), s.shape_xyz[2]))


def study_verdict(result: IngestResult, override: bool = False) -> tuple[ScannedSeries | None, list[Finding]]:
    """What a study-level decision (the service's auto-reconstruction) should use: the series that would be
    chosen and the findings that apply to it. A localizer or a screen capture beside a good CT does not block
    the study (their own ERROR findings describe those series only); when nothing qualifies the series is None
    and the findings say why (``refusal``/``error`` severities).
    """
    try:
        chosen = select_series(result, override)
    except SeriesRefused as exc:
        return None, list(exc.refusal_findings)
    except NoSeriesFound as exc:
        blocking = [f for f in exc.findings if f.blocks_reconstruction]
        return None, blocking or [no_series(result.source)]
    return chosen, list(chosen.findings)


def load_input(path: Path, series_uid: str | None = None, override: bool = False,
               modality: str | None = None) -> tuple[Volume, list[Finding], Series | None]:
    """One call for every input: DICOM folder/zip/DICOMDIR/file, or a NIfTI/NRRD volume.

    Returns the volume, the findings that apply to it (including the scan's file findings) and the DICOM
    series (None for NIfTI/NRRD). ``modality`` labels NIfTI/NRRD inputs (``CT`` gives HU units); None infers it
    from the values (:func:`appliance.ingest.modality.infer_modality`).
    """
    path = Path(path)
    if is_research_file(path):
        vol, found = load_research(path, modality)
        return vol, found, None
    result = scan(path)
    if series_uid:
        chosen = result.by_uid(series_uid)
        if chosen is None:
            known = ", ".join(s.series.series_instance_uid for s in result.series) or "none"
            raise UnknownSeries(f"series {series_uid} is not in {path}; series found: {known}")
    else:
        chosen = select_series(result, override)
    vol, found = load_volume(chosen, override)
    return vol, found + list(result.findings), chosen.series
