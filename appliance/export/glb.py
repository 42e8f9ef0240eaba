"""GLB (binary glTF 2.0) for the viewer: one named node per structure with its colour material.

Layout: scene 0 has one root node ``patient_lps_mm`` whose matrix turns DICOM patient coordinates in millimetres
(LPS) into glTF's convention (metres, +Y up = superior, +Z = anterior, +X = patient left), so any glTF viewer
shows the model upright and life-size. Its children are one node per structure, named like the structure, each
with one mesh whose POSITION data are the structure's vertices in LPS millimetres unchanged (float32), unit
NORMALs and uint32 indices. Each structure has its own material: ``baseColorFactor`` is the structure colour
converted from sRGB to linear (the glTF rule), the 8-bit sRGB colour is kept in the material's ``extras``.
Structures given an opacity below 1 (margins around a lesion) get ``alphaMode: BLEND``.

The file is written by hand (JSON chunk + BIN chunk, 4-byte aligned), no patient data anywhere: the asset's
``generator`` is the product name and ``extras`` state units and coordinates.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.core import Mesh
from appliance.export.common import (
    PRODUCT,
    UNITS_NOTE,
    atomic_write_bytes,
    check_meshes,
    srgb_to_linear,
    unit_vertex_normals,
)
from appliance.export.errors import MismatchedParts

GLB_MAGIC = 0x46546C67  # b"glTF"
CHUNK_JSON = 0x4E4F534A  # b"JSON"
CHUNK_BIN = 0x004E4942  # b"BIN\0"
FLOAT = 5126
UNSIGNED_INT = 5125
ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
TRIANGLES = 4
ROOT_NODE_NAME = "patient_lps_mm"

#: LPS millimetres -> glTF metres (x: left -> +X, z: superior -> +Y, y: posterior -> -Z), right-handed.
LPS_MM_TO_GLTF = np.array(
    [
        [0.001, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.001, 0.0],
        [0.0, -0.001, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


class _BinaryBuffer:
    """Accumulates 4-byte aligned buffer views in one BIN chunk."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.length = 0
        self.views: list[dict[str, Any]] = []

    def add(self, data: bytes, target: int) -> int:
        view = {"buffer": 0, "byteOffset": self.length, "byteLength": len(data), "target": target}
        self.views.append(view)
        pad = (-len(data)) % 4
        self.chunks.append(data + b"\0" * pad)
        self.length += len(data) + pad
        return len(self.views) - 1

    def tobytes(self) -> bytes:
        return b"".join(self.chunks)


@dataclass(frozen=True)
class MeshArrays:
    """The binary data of one structure in a GLB (positions with their bounds, unit normals, indices): made once
    per mesh and shared by its own GLB and the scene's (the normals were most of the GLB cost, issue 17)."""

    positions: bytes
    minimum: list[float]
    maximum: list[float]
    normals: bytes
    indices: bytes
    n_vertices: int
    n_indices: int

    @classmethod
    def of(cls, mesh: Mesh) -> MeshArrays:
        """The arrays of ``mesh`` as stored: float32 little-endian vectors, uint32 indices."""
        positions = mesh.vertices.astype(np.float32)
        return cls(
            np.ascontiguousarray(positions, dtype="<f4").tobytes(),
            [float(v) for v in positions.min(axis=0)],  # required for POSITION; from the float32 values stored
            [float(v) for v in positions.max(axis=0)],
            np.ascontiguousarray(unit_vertex_normals(mesh).astype(np.float32), dtype="<f4").tobytes(),
            np.ascontiguousarray(mesh.faces, dtype="<u4").tobytes(),
            int(positions.shape[0]),
            int(mesh.faces.size),
        )


def build_gltf(
    meshes: Sequence[Mesh], opacity: Mapping[str, float] | None = None,
    arrays: Sequence[MeshArrays] | None = None,
) -> tuple[dict[str, Any], bytes]:
    """The glTF JSON document and its binary buffer for ``meshes``; ``arrays``: their :class:`MeshArrays` when
    already made (same bytes)."""
    check_meshes(meshes, "GLB")
    if arrays is not None and len(arrays) != len(meshes):
        raise MismatchedParts("build_gltf: one MeshArrays per mesh is needed")
    opacity = opacity or {}
    buf = _BinaryBuffer()
    accessors: list[dict[str, Any]] = []
    gltf_meshes: list[dict[str, Any]] = []
    materials: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = [
        {
            "name": ROOT_NODE_NAME,
            "matrix": [float(v) for v in LPS_MM_TO_GLTF.T.ravel()],  # glTF matrices are column-major
            "children": list(range(1, len(meshes) + 1)),
            "extras": {"note": "children hold LPS millimetre vertices; this matrix maps them to glTF metres, Y up"},
        }
    ]
    for index, mesh in enumerate(meshes):
        data = arrays[index] if arrays is not None else MeshArrays.of(mesh)
        accessors.append({"bufferView": buf.add(data.positions, ARRAY_BUFFER), "componentType": FLOAT,
                          "count": data.n_vertices, "type": "VEC3", "min": data.minimum, "max": data.maximum})
        accessors.append({"bufferView": buf.add(data.normals, ARRAY_BUFFER), "componentType": FLOAT,
                          "count": data.n_vertices, "type": "VEC3"})
        view = buf.add(data.indices, ELEMENT_ARRAY_BUFFER)
        accessors.append({"bufferView": view, "componentType": UNSIGNED_INT, "count": data.n_indices,
                          "type": "SCALAR"})
        alpha = float(min(max(opacity.get(mesh.name, 1.0), 0.0), 1.0))
        material: dict[str, Any] = {
            "name": mesh.name,
            "pbrMetallicRoughness": {
                "baseColorFactor": [*srgb_to_linear(mesh.color), alpha],
                "metallicFactor": 0.0,
                "roughnessFactor": 0.6,
            },
            "extras": {"srgb": list(mesh.color)},
        }
        if alpha < 1.0:
            material["alphaMode"] = "BLEND"
        materials.append(material)
        first = 3 * index
        gltf_meshes.append(
            {
                "name": mesh.name,
                "primitives": [
                    {
                        "attributes": {"POSITION": first, "NORMAL": first + 1},
                        "indices": first + 2,
                        "material": index,
                        "mode": TRIANGLES,
                    }
                ],
            }
        )
        nodes.append({"name": mesh.name, "mesh": index})
    binary = buf.tobytes()
    document: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": PRODUCT, "extras": {"units": UNITS_NOTE}},
        "scene": 0,
        "scenes": [{"name": "patient", "nodes": [0]}],
        "nodes": nodes,
        "meshes": gltf_meshes,
        "materials": materials,
        "accessors": accessors,
        "bufferViews": buf.views,
        "buffers": [{"byteLength": len(binary)}],
    }
    return document, binary


def encode_glb(meshes: Sequence[Mesh], opacity: Mapping[str, float] | None = None,
               arrays: Sequence[MeshArrays] | None = None) -> bytes:
    """GLB bytes: 12-byte header, JSON chunk (space padded), BIN chunk (zero padded)."""
    document, binary = build_gltf(meshes, opacity, arrays)
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join(
        [
            struct.pack("<III", GLB_MAGIC, 2, total),
            struct.pack("<II", len(text), CHUNK_JSON),
            text,
            struct.pack("<II", len(binary), CHUNK_BIN),
            binary,
        ]
    )


def write_glb(meshes: Sequence[Mesh], path: Path, opacity: Mapping[str, float] | None = None) -> list[Path]:
    """Write ``meshes`` as GLB at ``path`` (atomically); ``opacity`` maps structure names to 0..1."""
    return [atomic_write_bytes(Path(path), encode_glb(meshes, opacity))]


def write_glb_parts_and_scene(meshes: Sequence[Mesh], part_paths: Sequence[Path] | None, scene_path: Path,
                              opacity: Mapping[str, float] | None = None,
                              after_scene: Callable[[], None] | None = None) -> list[Path]:
    """The scene's GLB with every structure and ``opacity``, then one GLB per structure (``part_paths``, same order;
    None: no parts), each mesh's arrays made once (the same bytes as :func:`write_glb` of each); ``after_scene()``
    is called between the two (the kiosk shows the scene: the pipeline's "meshes viewable"). Returns the parts'
    paths, then the scene's."""
    if part_paths is not None and len(part_paths) != len(meshes):
        raise MismatchedParts("write_glb_parts_and_scene: one path per mesh is needed")
    check_meshes(meshes, "GLB")
    arrays = [MeshArrays.of(m) for m in meshes]
    scene = atomic_write_bytes(Path(scene_path), encode_glb(meshes, opacity, arrays))
    if after_scene is not None:
        after_scene()
    written = [atomic_write_bytes(Path(p), encode_glb([m], None, [a]))
               for m, a, p in zip(meshes, arrays, part_paths or (), strict=False)]
    return [*written, scene]
