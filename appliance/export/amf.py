"""AMF (Additive Manufacturing File Format, ISO/ASTM 52915 / GB/T 35352): the structures for the print lab.

One ``<object>`` per structure, each with ``<metadata type="name">``, its colour and one ``<mesh>`` of
``<vertices>`` (``<vertex><coordinates><x/><y/><z/>``) and one ``<volume materialid=...>`` of ``<triangle>``
(``<v1/><v2/><v3/>``); one ``<material>`` per structure with its name and colour (r, g, b in 0..1);
``unit="millimeter"``, ``version="1.2"``. Vertices stay in patient coordinates (LPS, mm), so the structures stay
registered to each other as in the 3MF assembly. Metadata names the product, the units note and the
structures, never the patient. Written as plain UTF-8 XML (the standard also allows a ZIP; plain is what every
slicer reads). :data:`AMF_XSD` is the schema written from the standard's published structure (package data);
:func:`check_amf_structure` checks a document the way the print lab's software reads it: element nesting, unit,
metadata, index ranges and triangle counts.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from appliance.core import Mesh
from appliance.export.common import PRODUCT, UNITS_NOTE, atomic_write_bytes, check_meshes, format_rows
from appliance.export.errors import InvalidAmf

AMF_VERSION = "1.2"
#: The AMF schema (XSD) shipped with the code.
AMF_XSD: Traversable = files("appliance.export") / "data" / "amf.xsd"


def _channel(value: int) -> str:
    return f"{value / 255.0:.4f}"


def _color_xml(color: tuple[int, int, int]) -> str:
    r, g, b = color
    return f"<color><r>{_channel(r)}</r><g>{_channel(g)}</g><b>{_channel(b)}</b></color>"


def _meta(kind: str, text: str) -> str:
    return f"<metadata type={quoteattr(kind)}>{escape(text)}</metadata>"


def encode_amf(meshes: Sequence[Mesh]) -> bytes:
    """The AMF document of ``meshes`` (one object and one material per mesh), UTF-8 bytes."""
    check_meshes(meshes, "AMF")
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<amf unit="millimeter" version="{AMF_VERSION}">\n',
        _meta("producer", PRODUCT), "\n", _meta("description", UNITS_NOTE), "\n",
        _meta("name", ", ".join(m.name for m in meshes)), "\n",
    ]  # fmt: skip
    for index, mesh in enumerate(meshes):
        parts += [f'<material id="{index + 1}">', _meta("name", mesh.name), _color_xml(mesh.color), "</material>\n"]
    for index, mesh in enumerate(meshes):
        faces = mesh.faces[(mesh.faces[:, 0] != mesh.faces[:, 1]) & (mesh.faces[:, 1] != mesh.faces[:, 2])
                           & (mesh.faces[:, 0] != mesh.faces[:, 2])]  # fmt: skip
        parts += [
            f'<object id="{index}">', _meta("name", mesh.name), _color_xml(mesh.color), "\n<mesh>\n<vertices>\n",
            format_rows("<vertex><coordinates><x>%.5f</x><y>%.5f</y><z>%.5f</z></coordinates></vertex>\n",
                        mesh.vertices),
            "</vertices>\n", f'<volume materialid="{index + 1}">', _meta("name", mesh.name), "\n",
            format_rows("<triangle><v1>%d</v1><v2>%d</v2><v3>%d</v3></triangle>\n", np.asarray(faces, np.int64)),
            "</volume>\n</mesh>\n</object>\n",
        ]  # fmt: skip
    parts.append("</amf>\n")
    return "".join(parts).encode("utf-8")


def write_amf(meshes: Sequence[Mesh], path: Path) -> list[Path]:
    """Write ``meshes`` as one AMF file at ``path`` (atomically); returns the files written."""
    return [atomic_write_bytes(Path(path), encode_amf(meshes))]


def _float(el: ET.Element | None, where: str) -> float:
    if el is None or el.text is None:
        raise InvalidAmf(f"{where}: missing")
    try:
        return float(el.text)
    except ValueError:
        raise InvalidAmf(f"{where}: {el.text!r} is not a number") from None


def check_amf_structure(data: bytes) -> dict[str, int]:
    """Check an AMF document's structure; returns ``{object name: triangle count}``.

    Checks: root ``amf`` in millimetres with a version; producer metadata; each object has an id, a name, one
    mesh with vertices (x, y, z numbers) and at least one volume whose triangles index existing vertices;
    every ``materialid`` names a material. :class:`InvalidAmf` names the first problem.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise InvalidAmf(f"not well-formed XML: {exc}") from exc
    if root.tag != "amf":
        raise InvalidAmf(f"root element is <{root.tag}>, not <amf>")
    if root.get("unit") != "millimeter" or not root.get("version"):
        raise InvalidAmf(f"<amf> needs unit='millimeter' and a version, got {dict(root.attrib)}")
    if not any(m.get("type") == "producer" and m.text for m in root.findall("metadata")):
        raise InvalidAmf("<amf> has no producer metadata")
    materials = {m.get("id") for m in root.findall("material")}
    counts: dict[str, int] = {}
    for obj in root.findall("object"):
        names = [m.text or "" for m in obj.findall("metadata") if m.get("type") == "name"]
        where = f"object {obj.get('id')!r}"
        if obj.get("id") is None or not names:
            raise InvalidAmf(f"{where}: needs an id and a name")
        meshes = obj.findall("mesh")
        if len(meshes) != 1:
            raise InvalidAmf(f"{where}: needs exactly one <mesh>, has {len(meshes)}")
        vertices = meshes[0].findall("vertices/vertex")
        for i, v in enumerate(vertices[:1] + vertices[-1:]):
            for axis in "xyz":
                _float(v.find(f"coordinates/{axis}"), f"{where} vertex {i} {axis}")
        volumes = meshes[0].findall("volume")
        if not vertices or not volumes:
            raise InvalidAmf(f"{where}: a mesh needs vertices and at least one volume")
        triangles = 0
        for volume in volumes:
            if volume.get("materialid") is not None and volume.get("materialid") not in materials:
                raise InvalidAmf(f"{where}: volume names material {volume.get('materialid')} that does not exist")
            tri = volume.findall("triangle")
            idx = np.array([[int(t.findtext(k) or -1) for k in ("v1", "v2", "v3")] for t in tri], dtype=np.int64)
            if not len(tri) or idx.min() < 0 or idx.max() >= len(vertices):
                raise InvalidAmf(f"{where}: triangles missing or indexing vertices outside 0..{len(vertices) - 1}")
            triangles += len(tri)
        counts[names[0]] = triangles
    if not counts:
        raise InvalidAmf("the document has no <object>")
    return counts
