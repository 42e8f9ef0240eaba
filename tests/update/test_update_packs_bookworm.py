"""Packs extract on the box's Python (Debian bookworm's CPython 3.11.2 has no tarfile extraction filters): found
booting the image in a VM, where every ``appliance update install`` stopped with "extractall() got an unexpected
keyword argument 'filter'"."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from appliance.update.errors import TamperedTarget
from appliance.update.packs import build_pack, extract_pack, manifest_bytes


@pytest.fixture(params=["with-data-filter", "bookworm-python"])
def python_like(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "bookworm-python":
        monkeypatch.delattr(tarfile, "data_filter")
    return str(request.param)


@pytest.mark.req("REQ-UPD-1477")
def test_a_release_extracts_and_verifies(python_like: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "appliance").write_text("#!/bin/sh\nexit 0\n")
    (src / "bin" / "appliance").chmod(0o4777)  # set-uid and world-writable: never on the box
    (src / "VERSION").write_text("9.0.1")
    pack = build_pack(src, tmp_path / "app.tar", "app", "or-appliance", "9.0.1")
    manifest = extract_pack(pack, tmp_path / "out")
    assert manifest["version"] == "9.0.1" and (tmp_path / "out" / "VERSION").read_text() == "9.0.1"
    mode = (tmp_path / "out" / "bin" / "appliance").stat().st_mode & 0o7777
    assert mode & 0o100 and not mode & 0o7022, oct(mode)


@pytest.mark.req("REQ-UPD-1477")
def test_a_member_outside_the_release_folder_is_refused(python_like: str, tmp_path: Path) -> None:
    pack = tmp_path / "evil.tar"
    with tarfile.open(pack, "w") as tar:
        manifest = manifest_bytes("app", "x", "1.0.0", {}, {})
        for name, data in (("MANIFEST.json", manifest), ("../escaped.txt", b"planted")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(TamperedTarget):
        extract_pack(pack, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
    assert json.loads(manifest)["version"] == "1.0.0"
