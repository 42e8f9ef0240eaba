"""Round trips of every mesh writer through independent readers (trimesh, lib3mf, pygltflib)."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import lib3mf
import numpy as np
import pygltflib
import pytest
import trimesh

from appliance.core import Mesh
from appliance.export import FORMATS, ExportError, parse_formats, write_mesh_files
from appliance.export.common import linear_to_srgb, srgb_to_linear
from appliance.export.glb import LPS_MM_TO_GLTF, ROOT_NODE_NAME, encode_glb, write_glb
from appliance.export.obj import write_obj
from appliance.export.ply import write_ply
from appliance.export.stl import HEADER, write_stl
from appliance.export.threemf import write_3mf


def _mesh(tm: trimesh.Trimesh, name: str, color: tuple[int, int, int], offset: tuple[float, float, float]) -> Mesh:
    tm = tm.copy()
    tm.apply_translation(offset)
    return Mesh(np.asarray(tm.vertices), np.asarray(tm.faces), name, color)


@pytest.fixture
def meshes() -> list[Mesh]:
    """Closed meshes placed at negative and positive LPS positions, like real anatomy off the table centre."""
    return [
        _mesh(trimesh.creation.icosphere(subdivisions=3, radius=23.5), "liver", (221, 130, 101),
              (-80.25, 35.5, -612.0)),
        _mesh(trimesh.creation.torus(30.0, 7.5), "aorta", (240, 20, 30), (12.0, -40.0, -580.5)),
        _mesh(trimesh.creation.box((10.0, 20.0, 30.0)), "kidney_left", (185, 102, 83), (95.0, 60.0, -650.0)),
    ]


def _bounds(mesh: Mesh) -> np.ndarray:
    return np.array([mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)])


@pytest.mark.req("REQ-OUT-001", "REQ-OUT-006")
def test_stl_round_trip(tmp_path: Path, meshes: list[Mesh]) -> None:
    for mesh in meshes:
        path = write_stl([mesh], tmp_path / f"{mesh.name}.stl")[0]
        raw = path.read_bytes()
        assert raw[:80] == HEADER and not raw.startswith(b"solid")
        assert struct.unpack("<I", raw[80:84])[0] == mesh.n_triangles
        assert len(raw) == 84 + 50 * mesh.n_triangles
        back = trimesh.load(path, process=True)
        assert len(back.faces) == mesh.n_triangles
        assert len(back.vertices) == len(mesh.vertices)  # shared vertices merge back to the same count
        np.testing.assert_allclose(back.bounds, _bounds(mesh), atol=1e-3)
        assert back.is_watertight and back.is_winding_consistent
        assert back.volume == pytest.approx(mesh.signed_volume_mm3(), rel=1e-4)  # outward winding kept
        normals = np.frombuffer(raw[84:], dtype=np.dtype([("n", "<f4", (3,)), ("rest", "V38")]))["n"]
        np.testing.assert_allclose(normals, mesh.face_normals(), atol=1e-5)


@pytest.mark.req("REQ-OUT-002", "REQ-OUT-006")
def test_obj_mtl_round_trip(tmp_path: Path, meshes: list[Mesh]) -> None:
    written = write_obj(meshes, tmp_path / "scene.obj")
    assert [p.name for p in written] == ["scene.obj", "scene.mtl"]
    assert "mtllib scene.mtl" in written[0].read_text()
    scene = trimesh.load(written[0], process=False, group_material=False, split_objects=True)
    assert isinstance(scene, trimesh.Scene)
    assert set(scene.geometry) == {m.name for m in meshes}
    for mesh in meshes:
        geom = scene.geometry[mesh.name]
        assert len(geom.vertices) == len(mesh.vertices) and len(geom.faces) == mesh.n_triangles
        np.testing.assert_allclose(geom.vertices, mesh.vertices, atol=1e-4)
        np.testing.assert_array_equal(geom.faces, mesh.faces)
        diffuse = np.asarray(geom.visual.material.diffuse)[:3]
        np.testing.assert_allclose(diffuse, mesh.color, atol=1)


@pytest.mark.req("REQ-OUT-003", "REQ-OUT-006")
def test_ply_vertex_colours_round_trip(tmp_path: Path, meshes: list[Mesh]) -> None:
    path = write_ply(meshes, tmp_path / "scene.ply")[0]
    back = trimesh.load(path, process=False)
    n_vert = sum(len(m.vertices) for m in meshes)
    assert len(back.vertices) == n_vert
    assert len(back.faces) == sum(m.n_triangles for m in meshes)
    start = 0
    for mesh in meshes:
        part = slice(start, start + len(mesh.vertices))
        np.testing.assert_allclose(back.vertices[part], mesh.vertices, atol=1e-4)
        assert (back.visual.vertex_colors[part, :3] == mesh.color).all()
        start += len(mesh.vertices)
    single = trimesh.load(write_ply([meshes[0]], tmp_path / "liver.ply")[0], process=False)
    np.testing.assert_allclose(single.bounds, _bounds(meshes[0]), atol=1e-3)


def _read_3mf(path: Path) -> tuple[lib3mf.Model, lib3mf.Reader]:
    wrapper = lib3mf.get_wrapper()
    model = wrapper.CreateModel()
    reader = model.QueryReader("3mf")
    reader.SetStrictModeActive(True)
    reader.ReadFromFile(str(path))
    return model, reader


@pytest.mark.req("REQ-OUT-004", "REQ-OUT-006")
def test_3mf_read_back_with_lib3mf(tmp_path: Path, meshes: list[Mesh]) -> None:
    path = write_3mf(meshes, tmp_path / "scene.3mf")[0]
    model, reader = _read_3mf(path)
    assert reader.GetWarningCount() == 0
    assert model.GetUnit() == lib3mf.ModelUnit.MilliMeter
    by_name = {m.name: m for m in meshes}
    seen = []
    objects = model.GetMeshObjects()
    while objects.MoveNext():
        obj = objects.GetCurrentMeshObject()
        mesh = by_name[obj.GetName()]
        seen.append(obj.GetName())
        assert obj.GetVertexCount() == len(mesh.vertices)
        assert obj.GetTriangleCount() == mesh.n_triangles
        assert obj.IsManifoldAndOriented()
        coords = np.array([v.Coordinates[0:3] for v in obj.GetVertices()])
        np.testing.assert_allclose(coords, mesh.vertices, atol=1e-3)
        tris = np.array([t.Indices[0:3] for t in obj.GetTriangleIndices()])
        np.testing.assert_array_equal(tris, mesh.faces)
        resource_id, property_id, has_property = obj.GetObjectLevelProperty()
        assert has_property
        group = model.GetBaseMaterialGroupByID(resource_id)
        assert group.GetName(property_id) == mesh.name
        colour = group.GetDisplayColor(property_id)
        assert (colour.Red, colour.Green, colour.Blue, colour.Alpha) == (*mesh.color, 255)
    assert seen == [m.name for m in meshes]
    items = model.GetBuildItems()
    n_items = 0
    while items.MoveNext():
        n_items += 1
        transform = items.GetCurrent().GetObjectTransform()
        assert [list(row) for row in transform.Fields] == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert n_items == len(meshes)
    with zipfile.ZipFile(path) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert 'unit="millimeter"' in zf.read("3D/3dmodel.model").decode()


def _glb_chunks(raw: bytes) -> tuple[dict, bytes]:
    magic, version, total = struct.unpack("<III", raw[:12])
    assert (magic, version, total) == (0x46546C67, 2, len(raw))
    json_len, json_type = struct.unpack("<II", raw[12:20])
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    doc = json.loads(raw[20 : 20 + json_len])
    bin_len, bin_type = struct.unpack("<II", raw[20 + json_len : 28 + json_len])
    assert bin_type == 0x004E4942 and bin_len % 4 == 0
    assert 28 + json_len + bin_len == len(raw)
    return doc, raw[28 + json_len :]


@pytest.mark.req("REQ-OUT-005", "REQ-OUT-006")
def test_glb_is_valid_gltf2_with_named_coloured_nodes(tmp_path: Path, meshes: list[Mesh]) -> None:
    path = write_glb(meshes, tmp_path / "scene.glb", opacity={"aorta": 0.4})[0]
    raw = path.read_bytes()
    doc, binary = _glb_chunks(raw)
    assert doc["asset"]["version"] == "2.0"
    assert doc["buffers"] == [{"byteLength": len(binary)}]
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= len(binary)

    gltf = pygltflib.GLTF2().load(str(path))
    root = gltf.nodes[gltf.scenes[gltf.scene].nodes[0]]
    assert root.name == ROOT_NODE_NAME
    matrix = np.array(root.matrix).reshape(4, 4).T
    np.testing.assert_allclose(matrix, LPS_MM_TO_GLTF)
    assert np.linalg.det(matrix[:3, :3]) > 0  # right-handed: no mirror image of the patient
    children = [gltf.nodes[i] for i in root.children]
    assert [n.name for n in children] == [m.name for m in meshes]
    for node, mesh in zip(children, meshes, strict=True):
        prim = gltf.meshes[node.mesh].primitives[0]
        pos_acc = gltf.accessors[prim.attributes.POSITION]
        positions = _accessor_array(gltf, binary, prim.attributes.POSITION, np.float32, 3)
        normals = _accessor_array(gltf, binary, prim.attributes.NORMAL, np.float32, 3)
        indices = _accessor_array(gltf, binary, prim.indices, np.uint32, 1).reshape(-1, 3)
        np.testing.assert_allclose(positions, mesh.vertices, atol=1e-3)
        np.testing.assert_allclose(pos_acc.min, positions.min(axis=0))
        np.testing.assert_allclose(pos_acc.max, positions.max(axis=0))
        np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(indices, mesh.faces)
        material = gltf.materials[prim.material]
        assert material.name == mesh.name
        assert linear_to_srgb(material.pbrMetallicRoughness.baseColorFactor) == mesh.color
        assert material.extras == {"srgb": list(mesh.color)}
        expected_alpha = 0.4 if mesh.name == "aorta" else 1.0
        assert material.pbrMetallicRoughness.baseColorFactor[3] == pytest.approx(expected_alpha)
        assert (material.alphaMode == "BLEND") == (expected_alpha < 1.0)

    scene = trimesh.load(path)
    for mesh in meshes:
        geom = scene.geometry[mesh.name]
        assert len(geom.vertices) == len(mesh.vertices) and len(geom.faces) == mesh.n_triangles
        np.testing.assert_allclose(geom.bounds, _bounds(mesh), atol=1e-3)  # data in LPS mm
    lps_extent = np.ptp(np.concatenate([m.vertices for m in meshes]), axis=0)
    np.testing.assert_allclose(np.ptp(scene.bounds, axis=0), lps_extent[[0, 2, 1]] / 1000.0, atol=1e-6)


def _accessor_array(gltf: pygltflib.GLTF2, binary: bytes, index: int, dtype: type, width: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    start = view.byteOffset + (acc.byteOffset or 0)
    count = acc.count * width if width > 1 else acc.count
    data = np.frombuffer(binary, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=start)
    return data.reshape(acc.count, width) if width > 1 else data


@pytest.mark.req("REQ-OUT-007")
def test_headers_carry_product_and_units_only(tmp_path: Path, meshes: list[Mesh]) -> None:
    files = write_mesh_files(meshes, tmp_path / "scene", FORMATS)
    stl = files["stl"][0].read_bytes()
    assert stl[:80].rstrip(b" ") == b"OR-appliance binary STL mm LPS"
    ply_header = files["ply"][0].read_bytes().split(b"end_header")[0].decode()
    comments = [line for line in ply_header.splitlines() if line.startswith("comment")]
    assert comments == [
        "comment OR-appliance PLY; units: millimetre; coordinates: DICOM patient LPS "
        "(x to patient left, y posterior, z superior)",
        "comment structures: liver aorta kidney_left",
    ]
    doc, _ = _glb_chunks(files["glb"][0].read_bytes())
    assert doc["asset"]["generator"] == "OR-appliance"
    with zipfile.ZipFile(files["3mf"][0]) as zf:
        model = zf.read("3D/3dmodel.model").decode()
    assert model.count("<metadata") == 2 and '<metadata name="Application">OR-appliance</metadata>' in model


def test_colour_conversion_round_trips() -> None:
    for colour in [(0, 0, 0), (255, 255, 255), (10, 128, 250), (221, 130, 101)]:
        assert linear_to_srgb(srgb_to_linear(colour)) == colour
    assert srgb_to_linear((255, 0, 0))[0] == pytest.approx(1.0)
    assert srgb_to_linear((128, 0, 0))[0] == pytest.approx(0.2158605, abs=1e-6)


def test_writers_refuse_empty_and_broken_meshes(tmp_path: Path) -> None:
    empty = Mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), "empty")
    broken = Mesh(np.array([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]]), np.array([[0, 1, 2]]), "broken")
    for fmt in FORMATS:
        with pytest.raises(ExportError, match="empty"):
            write_mesh_files([empty], tmp_path / "x", [fmt])
        with pytest.raises(ExportError, match="broken"):
            write_mesh_files([broken], tmp_path / "x", [fmt])
        with pytest.raises(ExportError, match="no meshes"):
            write_mesh_files([], tmp_path / "x", [fmt])
    assert not any(tmp_path.iterdir())


def test_parse_formats() -> None:
    assert parse_formats("STL, obj,.glb,stl") == ("stl", "obj", "glb")
    assert parse_formats(["3mf"]) == ("3mf",)
    with pytest.raises(ExportError, match="stl,obj,ply,3mf,glb"):
        parse_formats("stl,fbx")
    with pytest.raises(ExportError):
        parse_formats(" , ")


def test_glb_bytes_are_deterministic(meshes: list[Mesh]) -> None:
    assert encode_glb(meshes) == encode_glb(meshes)
