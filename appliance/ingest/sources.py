"""Where the files come from: a folder tree, a zip, a DICOMDIR (USB stick) or single files.

Zips are unpacked into a private temporary folder that lives as long as the :class:`FileSource` that made it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pydicom

from appliance.core import Finding, Severity
from appliance.ingest.findings import decode_failed

log = logging.getLogger(__name__)

#: Media Storage Directory Storage (DICOMDIR).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Refuse to unpack zips larger than this (uncompressed), protecting the appliance's disk.
MAX_ZIP_BYTES = 20 * 1024**3


@dataclass
class FileSource:
    """The candidate files of one input, plus findings about the container itself."""

    root: Path
    files: list[Path]
    findings: list[Finding] = field(default_factory=list)
    tempdir: tempfile.TemporaryDirectory[str] | None = None


def _walk(folder: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            out.append(Path(dirpath) / name)
    return out


def is_dicomdir(path: Path) -> bool:
    """True when ``path`` is a DICOMDIR file (by name or by its media storage SOP class)."""
    if not path.is_file():
        return False
    if path.name.upper() == "DICOMDIR":
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(132 + 512)
    except OSError:
        return False
    return head[128:132] == b"DICM" and DICOMDIR_SOP_CLASS.encode() in head


def dicomdir_files(path: Path) -> tuple[list[Path], list[Finding]]:
    """The image files a DICOMDIR references (paths resolved against its folder), with findings for
    referenced files that are missing."""
    findings: list[Finding] = []
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # any parse error becomes a finding
        return [], [decode_failed(path, f"DICOMDIR unreadable ({exc})")]
    files: list[Path] = []
    for rec in ds.get("DirectoryRecordSequence", []):
        ref = rec.get("ReferencedFileID")
        if not ref:
            continue
        parts = [str(p) for p in ref] if isinstance(ref, pydicom.multival.MultiValue) else [str(ref)]
        candidate = path.parent.joinpath(*parts)
        if not candidate.exists():  # media written upper-case, copied to a case-sensitive disk
            candidate = _case_insensitive(path.parent, parts) or candidate
        if candidate.is_file():
            files.append(candidate)
        else:
            findings.append(decode_failed(candidate, "listed in the DICOMDIR but missing on the medium",
                                          Severity.WARNING))
    return files, findings


def _case_insensitive(base: Path, parts: list[str]) -> Path | None:
    cur = base
    for part in parts:
        try:
            match = next((c for c in cur.iterdir() if c.name.lower() == part.lower()), None)
        except OSError:
            return None
        if match is None:
            return None
        cur = match
    return cur


def _unzip(path: Path) -> FileSource:
    tmp = tempfile.TemporaryDirectory(prefix="appliance-zip-")
    root = Path(tmp.name)
    findings: list[Finding] = []
    with zipfile.ZipFile(path) as zf:
        total = sum(i.file_size for i in zf.infolist())
        if total > MAX_ZIP_BYTES:
            tmp.cleanup()
            return FileSource(path, [], [decode_failed(path, f"zip unpacks to {total} bytes, over the limit")])
        for info in zf.infolist():
            if info.is_dir():
                continue
            rel = PurePosixPath(info.filename)
            if rel.is_absolute() or ".." in rel.parts:  # zip-slip: never write outside the temp folder
                findings.append(decode_failed(Path(info.filename), "unsafe path inside the zip", Severity.WARNING))
                continue
            target = root.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, target.open("wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
                findings.append(decode_failed(Path(info.filename), f"cannot unpack from the zip ({exc})"))
    unpacked = FileSource(root, [], findings, tmp)
    unpacked.files = _files_in(root, unpacked.findings)
    return unpacked


def _files_in(folder: Path, findings: list[Finding]) -> list[Path]:
    files = _walk(folder)
    dicomdirs = [f for f in files if f.name.upper() == "DICOMDIR"]
    if not dicomdirs:
        return files
    listed: set[Path] = set()
    for d in dicomdirs:
        refs, found = dicomdir_files(d)
        listed.update(r.resolve() for r in refs)
        findings.extend(found)
    rest = [f for f in files if f.name.upper() != "DICOMDIR" and f.resolve() not in listed]
    return sorted(listed) + rest


def collect(path: Path) -> FileSource:
    """All candidate files under ``path`` (folder, zip, DICOMDIR or one file). Never raises for bad input."""
    if not path.exists():
        return FileSource(path, [], [decode_failed(path, "the path does not exist", hint="Check the path.")])
    if path.is_dir():
        src = FileSource(path, [])
        src.files = _files_in(path, src.findings)
        return src
    if zipfile.is_zipfile(path):
        try:
            return _unzip(path)
        except (zipfile.BadZipFile, OSError) as exc:
            return FileSource(path, [], [decode_failed(path, f"broken zip ({exc})")])
    if is_dicomdir(path):
        files, findings = dicomdir_files(path)
        return FileSource(path.parent, files, findings)
    return FileSource(path.parent, [path])
