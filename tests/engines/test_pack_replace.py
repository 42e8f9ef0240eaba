"""Replacing an installed folder (model pack, nnU-Net import): a reader never finds a half-copied folder or none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_packs_support import make_pack

from appliance import fsio
from engines.packs import import_pack, list_packs


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "content.txt").write_text(text)
    return path


@pytest.mark.req("REQ-SAFE-1600")
def test_replace_dir_swaps_complete_folders(tmp_path: Path) -> None:
    target = _folder(tmp_path / "pack", "old")
    fsio.replace_dir(_folder(tmp_path / ".staging-1", "new"), target)
    assert (target / "content.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack"]  # nothing left beside it
    fsio.replace_dir(_folder(tmp_path / ".staging-2", "first"), tmp_path / "fresh")
    assert (tmp_path / "fresh" / "content.txt").read_text() == "first"


@pytest.mark.req("REQ-SAFE-1600")
def test_replace_dir_fallback_restores_the_old_folder_when_the_new_cannot_be_placed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsio, "_exchange", lambda a, b: False)  # a file system without RENAME_EXCHANGE
    target = _folder(tmp_path / "pack", "old")
    real_rename = os.rename

    def failing_rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src).name.startswith(".staging"):
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="No space"):
        fsio.replace_dir(_folder(tmp_path / ".staging", "new"), target)
    assert (target / "content.txt").read_text() == "old"
    monkeypatch.setattr(os, "rename", real_rename)
    fsio.replace_dir(tmp_path / ".staging", target)
    assert (target / "content.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack"]


@pytest.mark.req("REQ-SAFE-1600")
def test_a_pack_being_imported_or_set_aside_is_not_listed(tmp_path: Path) -> None:
    dest = tmp_path / "installed"
    import_pack(make_pack(tmp_path / "src", "tiny", [("white_matter", "organ")]), dest)
    hidden = make_pack(tmp_path / "src2", "tiny", [("grey_matter", "organ")])
    os.rename(hidden, dest / ".tiny-staging")  # what a concurrent import holds before its rename
    packs = list_packs([dest])
    assert [p.name for p in packs] == ["tiny"]
    assert [lab.structure.name for lab in packs[0].labels] == ["white_matter"]
    import_pack(tmp_path / "src", dest, replace=True)
    assert sorted(p.name for p in dest.iterdir()) == [".tiny-staging", "tiny"]
