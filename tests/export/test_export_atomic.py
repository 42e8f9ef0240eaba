"""Atomic writes: a failure half-way leaves the previous file (or none), never a partial one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.core import Mesh
from appliance.export.common import atomic_output, atomic_write_bytes
from appliance.export.stl import write_stl


@pytest.mark.req("REQ-OUT-008")
def test_failed_write_keeps_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    atomic_write_bytes(target, b'{"complete": true}')
    with pytest.raises(RuntimeError), atomic_output(target) as handle:
        handle.write(b'{"compl')  # the process "dies" here
        raise RuntimeError("killed")
    assert target.read_bytes() == b'{"complete": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


@pytest.mark.req("REQ-OUT-008")
def test_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "meshes" / "liver.stl"
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as handle:
        handle.write(b"x" * 100)
        raise KeyboardInterrupt
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


@pytest.mark.req("REQ-OUT-008")
def test_rewrite_replaces_whole_file(tmp_path: Path) -> None:
    big = Mesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float),
               np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]] * 50), "tet")
    small = Mesh(big.vertices, big.faces[:4], "tet")
    path = write_stl([big], tmp_path / "tet.stl")[0]
    assert path.stat().st_size == 84 + 50 * 200
    write_stl([small], path)
    assert path.stat().st_size == 84 + 50 * 4
    assert [p.name for p in tmp_path.iterdir()] == ["tet.stl"]
