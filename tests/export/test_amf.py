"""AMF (ISO/ASTM 52915 / GB/T 35352) export: valid against the shipped XSD, the structure the print lab reads,
millimetres and patient coordinates kept exactly, colours and names, and an XSD that does reject broken files."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from importlib.resources import as_file
from pathlib import Path

import numpy as np
import pytest
import trimesh
from helpers.xsd import validate

from appliance.core import Mesh
from appliance.export.amf import AMF_XSD, check_amf_structure, encode_amf, write_amf
from appliance.export.errors import ExportError, InvalidAmf


def _meshes() -> list[Mesh]:
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=23.5)
    box = trimesh.creation.box((10.0, 20.0, 30.0))
    liver = np.asarray(sphere.vertices) + np.array([-80.25, 35.5, -612.0])  # off the table centre, like anatomy
    kidney = np.asarray(box.vertices) + np.array([95.0, 60.0, -650.0])
    return [
        Mesh(liver, np.asarray(sphere.faces), "liver", (221, 130, 101)),
        Mesh(kidney, np.asarray(box.faces), "kidney_left", (185, 102, 83)),
    ]


def _broken(data: bytes) -> dict[str, str]:
    """Documents the standard forbids, one fault each."""
    text = data.decode()
    return {
        "unit": text.replace('unit="millimeter"', 'unit="centimetre"', 1),
        "fourth index": text.replace("<v3>", "<v4>", 1).replace("</v3>", "</v4>", 1),
        "no triangles": _drop_all(text, "triangle", object_index=1),
        "unknown material": text.replace('materialid="1"', 'materialid="9"', 1),
        "coordinate text": text.replace("<x>", "<x>left ", 1),
        "object id missing": text.replace('<object id="0">', "<object>", 1),
    }  # fmt: skip


def _drop_all(text: str, tag: str, object_index: int) -> str:
    root = ET.fromstring(text)
    volume = root.findall("object")[object_index].find("mesh/volume")
    assert volume is not None
    for t in volume.findall(tag):
        volume.remove(t)
    return ET.tostring(root, encoding="unicode")


@pytest.mark.req("REQ-OUT-860")
def test_amf_is_valid_and_keeps_geometry_names_colours(tmp_path: Path) -> None:
    meshes = _meshes()
    (path,) = write_amf(meshes, tmp_path / "case.amf")
    data = path.read_bytes()
    assert check_amf_structure(data) == {"liver": meshes[0].n_triangles, "kidney_left": meshes[1].n_triangles}
    root = ET.fromstring(data)
    assert root.attrib == {"unit": "millimeter", "version": "1.2"}
    assert {m.get("type"): m.text for m in root.findall("metadata")}["producer"] == "OR-appliance"
    for obj, mesh in zip(root.findall("object"), meshes, strict=True):
        assert obj.findtext("metadata") == mesh.name
        xyz = np.array([[float(v.findtext(f"coordinates/{a}") or "nan") for a in "xyz"]
                        for v in obj.findall("mesh/vertices/vertex")])  # fmt: skip
        assert np.abs(xyz - mesh.vertices).max() <= 5e-6  # LPS millimetres, 5 decimals
        tri = np.array([[int(t.findtext(k) or -1) for k in ("v1", "v2", "v3")]
                        for t in obj.findall("mesh/volume/triangle")])  # fmt: skip
        assert np.array_equal(tri, mesh.faces)
        material = root.find(f"material[@id='{obj.find('mesh/volume').get('materialid')}']")  # type: ignore[union-attr]
        assert material is not None and material.findtext("metadata") == mesh.name
        rgb = tuple(round(float(material.findtext(f"color/{c}") or "nan") * 255) for c in "rgb")
        assert rgb == mesh.color


@pytest.mark.req("REQ-OUT-860")
def test_xsd_accepts_ours_and_rejects_what_the_standard_forbids(tmp_path: Path) -> None:
    good = tmp_path / "good.amf"
    write_amf(_meshes(), good)
    files = {"good": good}
    for why, text in _broken(good.read_bytes()).items():
        files[why] = tmp_path / f"{why.replace(' ', '_')}.amf"
        files[why].write_text(text, encoding="utf-8")
    with as_file(AMF_XSD) as xsd:
        results = validate(xsd, list(files.values()))
    assert results[good] is None, results[good]
    for why, f in files.items():
        if why != "good":
            assert results[f] is not None, f"the XSD accepted a file with a bad {why}"
            with pytest.raises(InvalidAmf):
                check_amf_structure(f.read_bytes())


@pytest.mark.req("REQ-OUT-860")
def test_amf_refuses_empty_input() -> None:
    with pytest.raises(ExportError):
        encode_amf([])
    with pytest.raises(InvalidAmf):
        check_amf_structure(b"<model/>")
