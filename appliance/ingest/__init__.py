"""Ingest: find every series in what a nurse brings (folder, zip, DICOMDIR, single files, NIfTI/NRRD), check
its geometry, and build :class:`~appliance.core.Volume` objects in patient space, refusing with findings what
would make a wrong model.

Public API::

    result = scan(path)                     # IngestResult: every series + file findings (headers only)
    chosen = select_series(result)          # largest reconstructable series
    volume, findings = load_volume(chosen)  # raises SeriesRefused (RefusedInput) when refused
    volume, findings, series = load_input(path, series_uid=None, override=False)
    chosen, findings = study_verdict(result)  # study-level decision: None + reasons when nothing qualifies
"""

from appliance.ingest.api import load_input, scan, select_series, study_verdict
from appliance.ingest.errors import IngestError, NoSeriesFound, SeriesRefused, UnknownSeries
from appliance.ingest.loader import load_volume
from appliance.ingest.result import IngestResult, ScannedSeries

__all__ = [
    "IngestError",
    "IngestResult",
    "NoSeriesFound",
    "ScannedSeries",
    "SeriesRefused",
    "UnknownSeries",
    "load_input",
    "load_volume",
    "scan",
    "select_series",
    "study_verdict",
]
