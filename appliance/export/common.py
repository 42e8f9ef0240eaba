"""What every exporter shares: atomic file writes, mesh checks and colour conversion.

Every file the appliance writes goes through :func:`atomic_write_bytes` (or :func:`atomic_output`): the bytes go to
a temporary file in the destination folder, are flushed to disk and then renamed over the target with
``os.replace``, so a run that is killed half-way never leaves a half-written model or manifest behind.

Exports carry geometry only. Their headers name the product, the units (millimetre) and the coordinate system
(DICOM patient coordinates, LPS) and nothing about the patient, the study or the series.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from appliance import fsio
from appliance.core import Mesh
from appliance.export.errors import ExportError

#: Product name written into file headers (the only free text an export header carries).
PRODUCT = "OR-appliance"
#: Units and coordinate system of every export, as said in the headers where the format allows.
UNITS_NOTE = "units: millimetre; coordinates: DICOM patient LPS (x to patient left, y posterior, z superior)"


#: Permissions of written files (owner read/write, others read).
FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; rename it over ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it was (:mod:`appliance.fsio`).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create output folder {path.parent}: {exc}; choose a writable --out") from exc
    # outputs are meant to be read by the UI and USB export, hence FILE_MODE instead of mkstemp's 0600
    with fsio.atomic_output(path, mode=FILE_MODE, sync_dir=False) as handle:
        yield handle


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``)."""
    with atomic_output(path) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_meshes(meshes: Sequence[Mesh], fmt: str) -> None:
    """Refuse to export nothing, empty meshes or non-finite vertices (the message names the structure)."""
    if not meshes:
        raise ExportError(f"{fmt}: no meshes to write; the segmentation produced no structures")
    for mesh in meshes:
        if mesh.n_triangles == 0:
            raise ExportError(f"{fmt}: structure {mesh.name!r} has no triangles; drop it before export")
        if not np.all(np.isfinite(mesh.vertices)):
            raise ExportError(f"{fmt}: structure {mesh.name!r} has non-finite vertex coordinates")


def concatenate(meshes: Sequence[Mesh]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """All meshes as one vertex array and one face array (face indices shifted)."""
    vertices: list[npt.NDArray[np.float64]] = []
    faces: list[npt.NDArray[np.int64]] = []
    offset = 0
    for mesh in meshes:
        vertices.append(mesh.vertices)
        faces.append(mesh.faces + offset)
        offset += len(mesh.vertices)
    return np.concatenate(vertices, axis=0), np.concatenate(faces, axis=0)


def unit_vertex_normals(mesh: Mesh) -> npt.NDArray[np.float64]:
    """Area-weighted unit vertex normals; vertices without a normal (unused) get +z so every normal is unit."""
    normals = mesh.vertex_normals()
    bad = np.linalg.norm(normals, axis=1) < 0.5
    normals[bad] = (0.0, 0.0, 1.0)
    return normals


#: Rows formatted per ``%`` operation: the Python numbers of one block stay small (a whole 5.6 M-triangle body
#: at once held about 600 MB of int objects, twice over while OBJ and 3MF are written side by side; issue 17).
FORMAT_BLOCK_ROWS = 131_072


def format_rows(row_format: str, array: npt.NDArray[np.generic]) -> str:
    """``row_format`` applied to every row of a 2-D array, as one string (one ``%`` operation per block of rows:
    the same text as one operation over all rows)."""
    if array.size == 0:
        return ""
    parts = []
    for start in range(0, int(array.shape[0]), FORMAT_BLOCK_ROWS):
        rows = array[start : start + FORMAT_BLOCK_ROWS]
        parts.append((row_format * int(rows.shape[0])) % tuple(rows.ravel().tolist()))
    return "".join(parts)


def srgb_to_linear(color: tuple[int, int, int]) -> tuple[float, float, float]:
    """8-bit sRGB to linear RGB in 0..1 (glTF's baseColorFactor is linear)."""
    c = np.asarray(color, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return (float(lin[0]), float(lin[1]), float(lin[2]))


def linear_to_srgb(rgb: Sequence[float]) -> tuple[int, int, int]:
    """Inverse of :func:`srgb_to_linear`, rounded to 8 bits."""
    c = np.clip(np.asarray(rgb[:3], dtype=np.float64), 0.0, 1.0)
    s = np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)
    out = np.rint(s * 255.0).astype(int)
    return (int(out[0]), int(out[1]), int(out[2]))
