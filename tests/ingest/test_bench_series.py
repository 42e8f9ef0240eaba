"""The 600-slice series ``bench/service_viewable.py`` sends must be the volume it was made from: otherwise the
service's timing would be measured on another image (issue 17, last slice in -> meshes viewable)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from helpers.data import ROOT, SHARED_DATA, require

from appliance.ingest import load_volume, scan, select_series
from appliance.io.nifti import load_volume as load_nifti

CT = SHARED_DATA / "ct" / "totalsegmentator"


@pytest.mark.req("REQ-PERF-751")
def test_bench_series_reads_back_as_the_volume_it_was_written_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(CT / "example_ct.nii.gz")
    template = sorted(require(CT / "example_ct_dicom").iterdir())[0]
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bench = importlib.import_module("service_viewable")
    segment = importlib.import_module("segment")
    vol = segment.large_ct(load_nifti(CT / "example_ct.nii.gz", "CT", "HU"), (96, 80, 12))
    files = bench.write_series(vol, template, tmp_path / "series")
    assert len(files) == 12
    back, findings = load_volume(select_series(scan(tmp_path / "series")))
    assert findings == []  # geometry QA finds nothing: evenly spaced, untilted, one series
    assert back.shape == vol.shape
    assert np.array_equal(np.asarray(back.array), np.asarray(vol.array))
    assert np.allclose(back.affine, vol.affine, atol=1e-3)
