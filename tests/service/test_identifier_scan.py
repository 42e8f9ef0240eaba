"""The last check before a job's outputs are published: no file may hold the patient's name or ID. Text files are
searched whole, in overlapping pieces (a 512x512x600 case's OBJ is hundreds of MB and is never held whole)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.service import worker
from appliance.service.worker import HEADER_BYTES, identifiers_in_outputs

NAME = "ZHAO^LEI"


@pytest.mark.req("REQ-FUNC-302")
@pytest.mark.parametrize("chunk", [5, 7, 64, 1 << 22])
def test_a_name_anywhere_in_a_text_file_is_found_across_piece_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(worker, "SCAN_CHUNK_BYTES", chunk)
    body = b"v 1.0 2.0 3.0\n" * 50
    for offset in range(0, len(body) + 1, 37):
        (tmp_path / "m.obj").write_bytes(body[:offset] + b"o ZHAO LEI\n" + body[offset:])
        assert identifiers_in_outputs(tmp_path, [NAME, "PID-001"]) == ["m.obj"], (chunk, offset)
    (tmp_path / "m.obj").write_bytes(body + b"o ZHAO LE")  # a name cut short at the end is not a match
    assert identifiers_in_outputs(tmp_path, [NAME, "PID-001"]) == []


@pytest.mark.req("REQ-FUNC-302")
@pytest.mark.parametrize("chunk", [5, 1 << 22])
def test_binary_files_are_searched_in_their_header_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(worker, "SCAN_CHUNK_BYTES", chunk)
    payload = bytes(HEADER_BYTES - 4)
    (tmp_path / "across.stl").write_bytes(payload + b"PID-001")  # runs past the header: not searched
    (tmp_path / "in_payload.stl").write_bytes(payload + bytes(8) + b"PID-001")  # past it: a chance match
    assert identifiers_in_outputs(tmp_path, [NAME, "PID-001"]) == []
    (tmp_path / "header.stl").write_bytes(b"solid PID-001" + payload)
    assert identifiers_in_outputs(tmp_path, [NAME, "PID-001"]) == ["header.stl"]
