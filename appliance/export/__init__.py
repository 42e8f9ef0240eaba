"""Exports: meshes to files in millimetres and patient coordinates (LPS), with no patient data in any header.

One module per format: :mod:`~appliance.export.stl` (binary STL), :mod:`~appliance.export.obj` (OBJ + MTL),
:mod:`~appliance.export.ply` (PLY with vertex colours), :mod:`~appliance.export.threemf` (3MF),
:mod:`~appliance.export.glb` (GLB for the viewer); :mod:`~appliance.export.report` (HTML report) and
:mod:`~appliance.export.manifest` (``manifest.json``). Every writer takes ``(meshes, path)`` and returns the files
it wrote; every write is atomic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from appliance.core import Mesh
from appliance.export.errors import ExportError
from appliance.export.glb import write_glb
from appliance.export.obj import write_obj
from appliance.export.ply import write_ply
from appliance.export.stl import write_stl
from appliance.export.threemf import write_3mf

MeshWriter = Callable[[Sequence[Mesh], Path], list[Path]]

#: Format name (also the file extension) -> writer.
WRITERS: dict[str, MeshWriter] = {
    "stl": write_stl,
    "obj": write_obj,
    "ply": write_ply,
    "3mf": write_3mf,
    "glb": write_glb,
}
#: The formats in the order they are written and listed.
FORMATS: tuple[str, ...] = tuple(WRITERS)


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"stl,obj"`` or ``["stl", "obj"]`` -> validated, de-duplicated format names (lower case)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        name = item.strip().lower().lstrip(".")
        if not name:
            continue
        if name not in WRITERS:
            raise ExportError(f"unknown export format {item!r}; choose from {','.join(FORMATS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ExportError(f"no export format given; choose from {','.join(FORMATS)}")
    return tuple(out)


def write_mesh_files(meshes: Sequence[Mesh], stem: Path, formats: Sequence[str]) -> dict[str, list[Path]]:
    """Write ``meshes`` once per format as ``stem.<ext>``; returns ``{ext: [files written]}``."""
    return {fmt: WRITERS[fmt](meshes, stem.with_name(f"{stem.name}.{fmt}")) for fmt in parse_formats(formats)}


__all__ = ["FORMATS", "WRITERS", "ExportError", "MeshWriter", "parse_formats", "write_mesh_files"]
