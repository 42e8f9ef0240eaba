"""Damaged files never crash ingest: random truncations and byte flips of a real CT file."""

from __future__ import annotations

import pytest
from helpers.data import SHARED_DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.errors import ApplianceError
from appliance.ingest import load_volume, scan
from appliance.ingest.errors import PixelDecodeError
from appliance.ingest.headers import read_header
from appliance.ingest.pixels import read_stored

SOURCE = SHARED_DATA / "dicom-edge" / "pydicom-data" / "pydicom_bundled_test_files" / "CT_small.dcm"
ORIGINAL = SOURCE.read_bytes() if SOURCE.is_file() else b""


@pytest.mark.req("REQ-SAFE-001")
@pytest.mark.skipif(not ORIGINAL, reason=f"real test file {SOURCE} is absent")
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=len(ORIGINAL) or 1),
       flips=st.lists(st.tuples(st.integers(min_value=0, max_value=max(len(ORIGINAL) - 1, 0)),
                                st.integers(min_value=0, max_value=255)), max_size=8))
def test_damaged_file_becomes_findings_not_a_crash(tmp_path_factory: pytest.TempPathFactory, cut: int,
                                                   flips: list[tuple[int, int]]) -> None:
    data = bytearray(ORIGINAL[:cut])
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "damaged.dcm"
    path.write_bytes(bytes(data))
    header, found = read_header(path)
    assert header is not None or found, "an unusable file must produce a finding"
    for f in found:
        assert "damaged.dcm" in f.message
    if header is not None:
        try:
            read_stored(header.instances)  # pixels of a damaged file: decoded or a named PixelDecodeError
        except PixelDecodeError as exc:
            assert exc.path == path
    result = scan(folder)
    for s in result.series:
        try:
            load_volume(s, override=True)
        except ApplianceError:
            pass  # a refusal with findings is a correct outcome; any other exception fails the test
