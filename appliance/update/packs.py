"""Artifact packs: a deterministic tar of a folder plus ``MANIFEST.json`` (every file's size and SHA-256).

The same bytes come out for the same folder content (sorted entries, zero times and owners, normalised
modes), so a rebuilt release has the same TUF hash. Extraction refuses links, devices and paths outside the
destination (``tarfile`` data filter) and then checks every file against the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from appliance.update.errors import TamperedTarget, UpdateError
from appliance.update.policy import MANIFEST_NAME, compare_manifest, parse_manifest

_CHUNK = 1 << 20


def file_digest(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of a file, streamed."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def scan_tree(root: Path, skip_manifest: bool = True) -> dict[str, tuple[int, str]]:
    """``{relative posix path: (size, sha256)}`` for every regular file under ``root``."""
    out: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if skip_manifest and rel == MANIFEST_NAME:
                continue
            if full.is_symlink() or not full.is_file():
                raise UpdateError(f"{full} is not a regular file; packs hold regular files only")
            out[rel] = file_digest(full)
    return out


def manifest_bytes(
    kind: str, name: str, version: str, files: dict[str, tuple[int, str]], meta: dict[str, Any]
) -> bytes:
    """The canonical MANIFEST.json for a pack."""
    doc = {
        "kind": kind,
        "name": name,
        "version": version,
        "meta": meta,
        "files": {rel: {"size": size, "sha256": sha} for rel, (size, sha) in sorted(files.items())},
    }
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _tarinfo(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_pack(
    source: Path, dest: Path, kind: str, name: str, version: str, meta: dict[str, Any] | None = None
) -> Path:
    """Pack ``source`` (a folder) into the deterministic tar ``dest``; returns ``dest``."""
    if not source.is_dir():
        raise UpdateError(f"pack source {source} is not a folder")
    files = scan_tree(source)
    manifest = manifest_bytes(kind, name, version, files, meta or {})
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tarinfo(MANIFEST_NAME, len(manifest), 0o644), io.BytesIO(manifest))
        for rel in sorted(files):
            full = source / rel
            mode = 0o755 if os.access(full, os.X_OK) else 0o644
            with open(full, "rb") as fh:
                tar.addfile(_tarinfo(rel, files[rel][0], mode), fh)
    os.replace(tmp, dest)
    return dest


def _checked_members(pack: Path, members: list[tarfile.TarInfo], dest: Path) -> list[tarfile.TarInfo]:
    """What the ``data`` filter enforces, for a Python without it: every path stays inside ``dest``, no
    set-uid/set-gid/sticky or group/world-writable modes, owners not taken from the pack."""
    top = os.path.realpath(dest)
    for member in members:
        target = os.path.realpath(os.path.join(top, member.name))
        if os.path.isabs(member.name) or ".." in Path(member.name).parts or os.path.commonpath([top, target]) != top:
            raise TamperedTarget(f"{pack.name}: member {member.name!r} points outside the release folder")
        member.mode &= 0o755
        member.uid = member.gid = os.getuid()
        member.uname = member.gname = ""
    return members


def extract_pack(pack: Path, dest: Path) -> dict[str, Any]:
    """Extract ``pack`` into the (new, empty) folder ``dest`` and verify every file; returns the manifest."""
    try:
        with tarfile.open(pack, "r:") as tar:
            members = tar.getmembers()
            for member in members:
                if not (member.isfile() or member.isdir()):
                    raise TamperedTarget(f"{pack.name}: member {member.name!r} is not a regular file or folder")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # CPython before 3.11.4 (Debian bookworm's 3.11.2, the box's runtime) has no extraction filters
                tar.extractall(dest, members=_checked_members(pack, members, dest))
    except (tarfile.TarError, EOFError) as exc:
        raise TamperedTarget(f"{pack.name} is not a complete pack ({exc}); copy it again") from exc
    return verify_release_dir(dest)


def verify_release_dir(root: Path) -> dict[str, Any]:
    """Re-hash every file of an extracted release against its MANIFEST.json; returns the manifest."""
    try:
        raw = (root / MANIFEST_NAME).read_bytes()
    except OSError as exc:
        raise TamperedTarget(f"{root} has no readable {MANIFEST_NAME}: {exc}") from exc
    expected = parse_manifest(raw)
    compare_manifest(expected, scan_tree(root))
    doc: dict[str, Any] = json.loads(raw)
    return doc
