"""One DICOM series holding slices in two orientations is split into stacks, each reported."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from helpers.data import require

from appliance.ingest import scan, select_series


@pytest.mark.req("REQ-ACQ-005")
def test_series_with_two_orientations_is_split_and_reported(shared_data: Path, tmp_path: Path) -> None:
    src = require(shared_data / "ct" / "totalsegmentator" / "example_ct_dicom")
    files = sorted(p for p in src.iterdir() if p.is_file())
    for n, path in enumerate(files):
        ds = pydicom.dcmread(path)
        if n >= len(files) - 4:  # the last four slices become a sagittal stack of the same series
            ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
            ds.ImagePositionPatient = [float(n * 3), -100.0, 100.0]
        ds.save_as(tmp_path / path.name)
    result = scan(tmp_path)
    uids = sorted(s.series.series_instance_uid for s in result.series)
    assert len(uids) == 2 and uids[1] == uids[0] + "#2"
    sizes = sorted(s.series.n_instances for s in result.series)
    assert sizes == [4, len(files) - 4]
    for s in result.series:
        assert "mixed_orientation" in {f.code for f in s.findings}, s.series.series_instance_uid
        assert all(f.requirement == "REQ-ACQ-005" for f in s.findings if f.code == "mixed_orientation")
    chosen = select_series(result)
    assert chosen is not None and chosen.series.n_instances == len(files) - 4
