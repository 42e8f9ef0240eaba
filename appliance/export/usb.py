"""Export of one case for the 3D printing lab onto removable media: STL, 3MF, AMF and the PDF report.

``export_for_printing(case_dir, target, label, formats, ...)`` writes, for the chosen structures of a finished
reconstruction folder: one binary STL per structure, one 3MF and one AMF holding all of them (registered to each
other, millimetres, patient LPS), and the PDF report in each language, plus ``SHA256SUMS`` (``sha256sum -c``
format). File names are the case label and structure identifiers only (``EDGE3D-job-7_bone.stl``): no patient
data. The sequence guarantees nothing half-written is ever left as the result:

1. every file is made on the box's own disk and hashed;
2. each is copied to a hidden staging folder on the medium (temporary file, fsync, rename), the folder fsynced;
3. the medium's page cache for each file is dropped (``posix_fadvise DONTNEED``) and the file read back from the
   medium and compared with its hash;
4. only then is the staging folder renamed to ``<label>`` (never over an existing folder: ``<label>-2`` ...), the
   medium's folder fsynced and everything flushed (``os.sync``): the result says ``safe_to_remove``.

Any failure removes the staging folder and raises :class:`UsbExportError` naming the cause; the medium holds
what it held before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance import fsio
from appliance.core import Mesh
from appliance.export.amf import write_amf
from appliance.export.errors import ExportError, UsbExportError
from appliance.export.pdf_report import write_pdf_report
from appliance.export.report_text import LANGUAGES
from appliance.export.stl import write_stl
from appliance.export.threemf import write_3mf

#: What the print lab can ask for, in the order they are written.
PRINT_FORMATS: tuple[str, ...] = ("stl", "3mf", "amf", "pdf")
CHECKSUMS_NAME = "SHA256SUMS"
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_CHUNK = 1 << 20

#: ``progress(step, fraction)`` as the export goes (``make``, ``copy``, ``verify``, ``done``).
ExportProgress = Callable[[str, float], None]


@dataclass(frozen=True)
class ExportedFile:
    """One file on the medium, as verified."""

    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class PrintExport:
    """The result: the case folder on the medium, its verified files, and whether the medium may be removed."""

    folder: Path
    files: tuple[ExportedFile, ...]
    structures: tuple[str, ...]
    formats: tuple[str, ...]
    safe_to_remove: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"folder": str(self.folder), "files": [f.__dict__ for f in self.files],
                "structures": list(self.structures), "formats": list(self.formats),
                "safe_to_remove": self.safe_to_remove}  # fmt: skip


def parse_print_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"stl,amf"`` or a list -> known formats in writing order; :class:`UsbExportError` for unknown or none."""
    items = [i.strip().lower().lstrip(".") for i in (text.split(",") if isinstance(text, str) else text)]
    unknown = sorted({i for i in items if i and i not in PRINT_FORMATS})
    if unknown:
        raise UsbExportError(f"unknown print format(s) {', '.join(unknown)}; choose from {','.join(PRINT_FORMATS)}")
    chosen = tuple(f for f in PRINT_FORMATS if f in items)
    if not chosen:
        raise UsbExportError(f"no print format given; choose from {','.join(PRINT_FORMATS)}")
    return chosen


def read_case_manifest(case_dir: Path) -> dict[str, Any]:
    """The manifest of a finished reconstruction folder (:class:`UsbExportError` when there is none)."""
    try:
        manifest: dict[str, Any] = json.loads((case_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsbExportError(f"{case_dir} is not a finished reconstruction (no readable manifest.json): {exc}") from exc
    return manifest


def _read_stl(path: Path, name: str, color: tuple[int, int, int]) -> Mesh:
    """A binary STL as an indexed mesh (identical float32 corners welded into one vertex)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsbExportError(f"cannot read the mesh of {name!r} ({path.name}): {exc}") from exc
    count = int.from_bytes(data[80:84], "little") if len(data) >= 84 else -1
    if count < 1 or len(data) != 84 + 50 * count:
        raise UsbExportError(f"the mesh of {name!r} ({path.name}) is not a complete binary STL")
    records = np.frombuffer(data, dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]),
                            count=count, offset=84)  # fmt: skip
    vertices, inverse = weld_corners(records["v"].reshape(-1, 3))
    return Mesh(vertices.astype(np.float64), inverse.reshape(-1, 3), name, color)


def weld_corners(corners: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Unique corners (bit-identical float32 after ``-0.0 -> 0.0``) and the index of each corner among them.

    Sorting the corners' bit patterns as two integer keys is several times faster than ``np.unique(axis=0)``.
    """
    points = np.ascontiguousarray(corners, dtype=np.float32) + np.float32(0.0)
    bits = points.view(np.uint32).reshape(-1, 3)
    high = (bits[:, 0].astype(np.uint64) << np.uint64(32)) | bits[:, 1].astype(np.uint64)
    order = np.lexsort((bits[:, 2], high))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (high[order][1:] != high[order][:-1]) | (bits[order, 2][1:] != bits[order, 2][:-1])
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return points[order[first]], inverse


def case_meshes(case_dir: Path, manifest: Mapping[str, Any], structures: Sequence[str] | None) -> list[Mesh]:
    """The chosen structures' meshes (all when ``structures`` is None), read from their STL files."""
    listed = {str(s["name"]): s for s in manifest.get("structures", []) if "name" in s}
    wanted = list(listed) if structures is None else list(dict.fromkeys(structures))
    unknown = [s for s in wanted if s not in listed]
    if unknown or not wanted:
        raise UsbExportError(f"no structure {', '.join(unknown) or '(none chosen)'} in this case; "
                             f"it has {', '.join(listed) or 'no structures'}")  # fmt: skip
    meshes = []
    for name in wanted:
        entry = listed[name]
        rel = (entry.get("files") or {}).get("stl") or f"meshes/{name}.stl"
        color = tuple(int(c) for c in (entry.get("color") or (200, 200, 200))[:3])
        meshes.append(_read_stl(case_dir / str(rel), name, (color[0], color[1], color[2])))
    return meshes


def _read_back(path: Path) -> str:
    """SHA-256 of the file as the medium returns it (its cached pages dropped first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        digest = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def _make_files(case_dir: Path, work: Path, label: str, meshes: Sequence[Mesh], formats: Sequence[str],
                languages: Sequence[str], reviews: Sequence[Mapping[str, Any]]) -> list[Path]:
    made: list[Path] = []
    if "stl" in formats:
        for mesh in meshes:
            made += write_stl([mesh], work / f"{label}_{mesh.name}.stl")
    if "3mf" in formats:
        made += write_3mf(meshes, work / f"{label}.3mf")
    if "amf" in formats:
        made += write_amf(meshes, work / f"{label}.amf")
    if "pdf" in formats:
        for lang in languages:
            made.append(write_pdf_report(case_dir, work / f"{label}_report_{lang}.pdf", label, lang, reviews))
    return made


def _free_name(target: Path, label: str) -> Path:
    for n in range(1, 1000):
        candidate = target / (label if n == 1 else f"{label}-{n}")
        if not candidate.exists():
            return candidate
    raise UsbExportError(f"{target} already holds 999 exports of {label}; clear the medium")


def export_for_printing(
    case_dir: Path, target: Path, label: str, formats: Sequence[str], structures: Sequence[str] | None = None,
    languages: Sequence[str] = LANGUAGES, reviews: Sequence[Mapping[str, Any]] = (),
    progress: ExportProgress | None = None,
) -> PrintExport:
    """Write the case's print files into ``target/<label>``, verified; see the module documentation."""
    report = progress or (lambda step, fraction: None)
    if not _LABEL_RE.match(label):
        raise UsbExportError(f"case label {label!r} must be letters, digits, '_' or '-' (it names the files)")
    chosen = parse_print_formats(formats)
    bad_lang = [lang for lang in languages if lang not in LANGUAGES]
    if bad_lang or ("pdf" in chosen and not languages):
        raise UsbExportError(f"report languages must be among {', '.join(LANGUAGES)}, got {list(languages)}")
    if not target.is_dir() or not os.access(target, os.W_OK):
        raise UsbExportError(f"{target} is not a writable folder; is the USB stick plugged in and not read-only?")
    manifest = read_case_manifest(case_dir)
    meshes = case_meshes(case_dir, manifest, structures)
    staging = target / f".{label}.partial-{os.getpid()}"
    try:
        with tempfile.TemporaryDirectory(prefix="appliance-print-") as tmp:
            report("make", 0.0)
            made = _make_files(case_dir, Path(tmp), label, meshes, chosen, languages, reviews)
            expected = {p.name: (fsio.sha256_file(p), p.stat().st_size) for p in made}
            sums = "".join(f"{digest}  {name}\n" for name, (digest, _) in expected.items()).encode()
            (Path(tmp) / CHECKSUMS_NAME).write_bytes(sums)
            expected[CHECKSUMS_NAME] = (hashlib.sha256(sums).hexdigest(), len(sums))
            made.append(Path(tmp) / CHECKSUMS_NAME)
            staging.mkdir()
            for i, src in enumerate(made):
                report("copy", i / len(made))
                with open(src, "rb") as fh, fsio.atomic_output(staging / src.name, mode=0o644) as out:
                    shutil.copyfileobj(fh, out, _CHUNK)
        fsio.fsync_dir(staging)
        files = []
        for i, (name, (digest, size)) in enumerate(expected.items()):
            report("verify", i / len(expected))
            got = _read_back(staging / name)
            if got != digest or (staging / name).stat().st_size != size:
                raise UsbExportError(f"{name} read back from the medium differs from what was written "
                                     "(faulty or full stick?); nothing was kept, try another stick")  # fmt: skip
            files.append(ExportedFile(name, size, digest))
        final = _free_name(target, label)
        os.rename(staging, final)
        fsio.fsync_dir(target)
        os.sync()
    except (OSError, ExportError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, UsbExportError):
            raise
        raise UsbExportError(f"export to {target} failed and was removed again: {exc}") from exc
    report("done", 1.0)
    return PrintExport(final, tuple(files), tuple(m.name for m in meshes), chosen, safe_to_remove=True)
