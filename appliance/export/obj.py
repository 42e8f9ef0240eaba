"""Wavefront OBJ + MTL: one object (``o``) per structure with its colour as a material, millimetres, LPS.

The OBJ and its MTL share the stem (``liver.obj`` + ``liver.mtl``); the OBJ names the MTL with ``mtllib``.
Normals are left out (viewers compute them from the outward winding; this halves the file).
Comments name the product, units and coordinate system only.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from appliance.core import Mesh
from appliance.export.common import (
    PRODUCT,
    UNITS_NOTE,
    atomic_write_text,
    check_meshes,
    format_rows,
)


def encode_mtl(meshes: Sequence[Mesh]) -> str:
    """MTL text: one material per structure, named like the structure, diffuse colour = structure colour."""
    out = io.StringIO()
    out.write(f"# {PRODUCT} materials\n")
    for mesh in meshes:
        r, g, b = (c / 255.0 for c in mesh.color)
        out.write(f"\nnewmtl {mesh.name}\nKa 0 0 0\nKd {r:.6f} {g:.6f} {b:.6f}\nKs 0.1 0.1 0.1\nNs 20\nd 1\nillum 2\n")
    return out.getvalue()


def encode_obj(meshes: Sequence[Mesh], mtl_name: str) -> str:
    """OBJ text referencing the material library ``mtl_name``."""
    check_meshes(meshes, "OBJ")
    out = io.StringIO()
    out.write(f"# {PRODUCT} OBJ; {UNITS_NOTE}\nmtllib {mtl_name}\n")
    offset = 1  # OBJ indices are 1-based and global across objects
    for mesh in meshes:
        out.write(f"o {mesh.name}\nusemtl {mesh.name}\n")
        out.write(format_rows("v %.4f %.4f %.4f\n", mesh.vertices))
        out.write(format_rows("f %d %d %d\n", mesh.faces + offset))
        offset += len(mesh.vertices)
    return out.getvalue()


def write_obj(meshes: Sequence[Mesh], path: Path) -> list[Path]:
    """Write ``path`` (OBJ) and the MTL beside it with the same stem; returns both paths."""
    path = Path(path)
    mtl_path = path.with_suffix(".mtl")
    text = encode_obj(meshes, mtl_path.name)
    atomic_write_text(mtl_path, encode_mtl(meshes))
    atomic_write_text(path, text)
    return [path, mtl_path]
