"""3MF (3D Manufacturing Format, core specification 1.x): one object per structure with its name and colour.

Written as the specification's OPC package by hand (a ZIP of XML parts):
``[Content_Types].xml``, ``_rels/.rels`` and ``3D/3dmodel.model`` with ``unit="millimeter"``, one
``<basematerials>`` group holding a named base material per structure (``displaycolor`` = structure colour), one
``<object type="model" name=...>`` per structure referencing its material, and one build item per object with the
identity transform, so vertices stay in patient coordinates (LPS, mm) and the structures stay registered to each
other. Metadata carries the product name and the units note only.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import numpy.typing as npt

from appliance.core import Mesh
from appliance.export.common import PRODUCT, UNITS_NOTE, atomic_output, check_meshes, format_rows
from appliance.export.errors import MismatchedParts

log = logging.getLogger(__name__)

CORE_NS = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
MODEL_REL_TYPE = "http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"
MODEL_PATH = "3D/3dmodel.model"
#: ZIP entries carry this fixed time stamp, so identical meshes give identical bytes.
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
#: Deflate level: 1 is about 3x faster than the default 6 on mesh XML for files about 25% larger.
ZIP_LEVEL = 1

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="model" ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/>'
    "</Types>"
)
RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    f'<Relationship Target="/{MODEL_PATH}" Id="rel0" Type="{MODEL_REL_TYPE}"/>'
    "</Relationships>"
)


def _proper_faces(mesh: Mesh) -> npt.NDArray[np.int64]:
    """Faces with three distinct vertices (the specification forbids repeated indices in a triangle)."""
    f = mesh.faces
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    dropped = int(len(f) - np.count_nonzero(keep))
    if dropped:
        log.warning("3MF: dropped %d degenerate triangle(s) of %s", dropped, mesh.name)
    return np.asarray(f[keep], dtype=np.int64)


def mesh_body_xml(mesh: Mesh) -> str:
    """The ``<mesh>`` element of one structure (the expensive part; reusable across packages)."""
    return "".join([
        "<mesh>\n<vertices>\n",
        format_rows('<vertex x="%.4f" y="%.4f" z="%.4f"/>\n', mesh.vertices),
        "</vertices>\n<triangles>\n",
        format_rows('<triangle v1="%d" v2="%d" v3="%d"/>\n', _proper_faces(mesh)),
        "</triangles>\n</mesh>",
    ])


def encode_model_xml(meshes: Sequence[Mesh], bodies: Sequence[str] | None = None) -> str:
    """The ``3D/3dmodel.model`` part; ``bodies`` are the meshes' :func:`mesh_body_xml` when already made."""
    check_meshes(meshes, "3MF")
    if bodies is not None and len(bodies) != len(meshes):
        raise MismatchedParts("encode_model_xml: one body per mesh is needed")
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<model unit="millimeter" xml:lang="en-US" xmlns="{CORE_NS}">\n',
        f'<metadata name="Application">{PRODUCT}</metadata>\n',
        f"<metadata name=\"Description\">{UNITS_NOTE}</metadata>\n",
        "<resources>\n",
        '<basematerials id="1">\n',
    ]
    for mesh in meshes:
        r, g, b = mesh.color
        parts.append(f'<base name={quoteattr(mesh.name)} displaycolor="#{r:02X}{g:02X}{b:02X}FF"/>\n')
    parts.append("</basematerials>\n")
    for index, mesh in enumerate(meshes):
        parts.append(f'<object id="{index + 2}" type="model" name={quoteattr(mesh.name)} pid="1" pindex="{index}">')
        parts.append(bodies[index] if bodies is not None else mesh_body_xml(mesh))
        parts.append("</object>\n")
    parts.append("</resources>\n<build>\n")
    for index in range(len(meshes)):
        parts.append(f'<item objectid="{index + 2}"/>\n')
    parts.append("</build>\n</model>\n")
    return "".join(parts)


def _write_package(model: str, path: Path) -> Path:
    with atomic_output(path) as handle, zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED,
                                                         compresslevel=ZIP_LEVEL) as zf:
        for name, text in (("[Content_Types].xml", CONTENT_TYPES), ("_rels/.rels", RELS), (MODEL_PATH, model)):
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)  # no run date in the package: reproducible
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text, compresslevel=ZIP_LEVEL)
    return path


def write_3mf(meshes: Sequence[Mesh], path: Path) -> list[Path]:
    """Write ``meshes`` as a 3MF package at ``path`` (atomically); returns the files written."""
    return [_write_package(encode_model_xml(meshes), Path(path))]


def write_3mf_parts_and_scene(meshes: Sequence[Mesh], part_paths: Sequence[Path], scene_path: Path) -> list[Path]:
    """One package per structure (``part_paths``, same order) and one with every structure, each mesh's XML
    made once. Returns the parts' paths, then the scene's."""
    if len(part_paths) != len(meshes):
        raise MismatchedParts("write_3mf_parts_and_scene: one path per mesh is needed")
    check_meshes(meshes, "3MF")
    bodies = [mesh_body_xml(m) for m in meshes]
    written = [_write_package(encode_model_xml([m], [b]), Path(p))
               for m, b, p in zip(meshes, bodies, part_paths, strict=True)]
    written.append(_write_package(encode_model_xml(meshes, bodies), Path(scene_path)))
    return written
