"""Report pictures and page: PNG encoding, orientation of slices and model views, escaping, self-containment."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import pytest
import trimesh

from appliance.core import LabelMap, Mesh, Structure, StructureCategory, Volume
from appliance.export.render import encode_png, render_model, render_slices
from appliance.export.report import build_report_html, report_pictures


def decode_png(data: bytes) -> np.ndarray:
    """Minimal decoder for the 8-bit RGB, filter-0 PNGs that encode_png writes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, 3)


def test_png_round_trip() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(encode_png(image)), image)
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), dtype=np.uint8))


def _marker_volume() -> tuple[Volume, LabelMap]:
    """A CT stored in an unusual array order (axes: superior->inferior, right->left, posterior->anterior)
    with one marker at the patient's left, anterior and superior corner."""
    affine = np.zeros((4, 4))
    affine[:3, 0] = [0.0, 0.0, -2.0]  # axis 0 runs inferior
    affine[:3, 1] = [1.0, 0.0, 0.0]  # axis 1 runs to the patient's left
    affine[:3, 2] = [0.0, -1.0, 0.0]  # axis 2 runs anterior
    affine[:3, 3] = [-30.0, 30.0, 40.0]
    affine[3, 3] = 1.0
    shape = (20, 60, 60)
    hu = np.full(shape, 40.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[2:6, 45:55, 45:55] = 1  # superior (small axis 0), left (large axis 1), anterior (large axis 2)
    volume = Volume(hu, affine, "CT", "HU")
    return volume, LabelMap.on(volume, labels, [Structure(1, "marker", (255, 0, 0), StructureCategory.LESION)])


def test_slices_are_shown_in_the_radiological_convention() -> None:
    volume, labelmap = _marker_volume()
    pictures = render_slices(volume, labelmap)
    axial = [img for caption, img in pictures if caption.startswith("axial")]
    coronal = [img for caption, img in pictures if caption.startswith("coronal")]
    assert axial and len(coronal) == 1
    red = np.argwhere(np.all(axial[0] == (255, 0, 0), axis=-1))
    assert red.size
    h, w, _ = axial[0].shape
    assert red[:, 1].mean() > w / 2  # patient's left on the image's right
    assert red[:, 0].mean() < h / 2  # anterior at the top
    red = np.argwhere(np.all(coronal[0] == (255, 0, 0), axis=-1))
    h, w, _ = coronal[0].shape
    assert red[:, 0].mean() < h / 2 and red[:, 1].mean() > w / 2  # superior at the top, left on the right
    assert h / w == pytest.approx((20 * 2.0) / 60.0, rel=0.1)  # square pixels: 2 mm slices stretched


def _mesh(tm: trimesh.Trimesh, name: str, colour: tuple[int, int, int], at: tuple[float, float, float]) -> Mesh:
    tm = tm.copy()
    tm.apply_translation(at)
    return Mesh(np.asarray(tm.vertices), np.asarray(tm.faces), name, colour)


def test_model_views_are_oriented_and_depth_sorted() -> None:
    ball = _mesh(trimesh.creation.icosphere(3, 30.0), "ball", (200, 40, 40), (0.0, 0.0, 0.0))
    front = _mesh(trimesh.creation.box((10.0, 10.0, 10.0)), "front", (40, 200, 40), (0.0, -60.0, 0.0))
    left = _mesh(trimesh.creation.box((10.0, 10.0, 10.0)), "left", (40, 40, 200), (60.0, 0.0, 0.0))
    scene = [ball, front, left]

    def where(image: np.ndarray, hue: int) -> np.ndarray:
        dominant = np.argmax(image.astype(int), axis=-1) == hue
        saturated = image.max(axis=-1).astype(int) - image.min(axis=-1) > 40
        return np.argwhere(dominant & saturated)

    anterior = render_model(scene, "anterior", size=300)
    _, w, _ = anterior.shape
    red, green, blue = where(anterior, 0), where(anterior, 1), where(anterior, 2)
    assert np.abs(green.mean(axis=0) - red.mean(axis=0)).max() < 3  # the front box hides the ball's centre
    assert blue[:, 1].mean() > w * 0.8  # patient's left on the right when seen from the front
    lateral = render_model(scene, "left lateral", size=300)
    _, w, _ = lateral.shape
    red, green, blue = where(lateral, 0), where(lateral, 1), where(lateral, 2)
    assert green[:, 1].mean() < w * 0.2  # anterior on the left, seen from the patient's left
    assert np.abs(blue.mean(axis=0) - red.mean(axis=0)).max() < 3  # the left box is nearest, hides the ball
    background = np.all(anterior == anterior[0, 0], axis=-1)
    assert 0.1 < background.mean() < 0.7  # drawn surfaces without gaps, on a cropped canvas


@pytest.mark.req("REQ-OUT-011")
def test_report_escapes_text_and_embeds_pictures() -> None:
    volume, labelmap = _marker_volume()
    box = trimesh.creation.box((9.0, 9.0, 8.0))
    box.apply_translation(volume.voxel_to_patient([[3.5, 49.5, 49.5]])[0])
    mesh = Mesh(np.asarray(box.vertices), np.asarray(box.faces), "marker", (255, 0, 0))
    manifest = {
        "appliance_version": "9.9", "preset": "p", "device": "cpu", "backend": "b",
        "input": {"identity_hash": "ab" * 32, "modality": "CT", "shape": [20, 60, 60], "spacing": [2, 1, 1]},
        "timings_s": {"ingest": 0.5},
        "structures": [{"name": "marker", "label": 1, "category": "lesion", "color": [255, 0, 0],
                        "volume_ml": 0.8, "surface_area_mm2": 480.0, "files": {"stl": "meshes/marker.stl"},
                        "triangles": 12, "watertight": True, "manifold": False, "mean_distance_to_mask_mm": 0.1,
                        "qa": {"volume_ml": 0.65, "p95_distance_mm": 0.3}}],
        "findings": [{"code": "x_y", "severity": "warning", "stage": "ingest", "message": "<b>gap</b> & tilt",
                      "requirement": None}],
        "provenance": {"note": "</pre><script>"},
        "files": {"report": "report.html"},
    }
    html = build_report_html(manifest, report_pictures(volume, labelmap, [mesh]))
    assert "&lt;b&gt;gap&lt;/b&gt; &amp; tilt" in html and "<b>gap" not in html
    assert "<script>" not in html and "&lt;/pre&gt;&lt;script&gt;" in html
    assert html.count("data:image/png;base64,") == 2 + 4
    assert '<span class="bad">no</span>' in html and '<span class="ok">yes</span>' in html
    assert "4.8" in html and "0.65" in html and "0.30" in html


@pytest.mark.req("REQ-OUT-704", "REQ-OUT-700")
def test_report_names_structures_from_the_terminology_and_the_image_volume() -> None:
    files = {"image": "image.nii.gz", "report": "report.html"}
    manifest: dict[str, Any] = {
        "appliance_version": "9.9", "preset": "ct-default", "device": "cpu", "backend": "b",
        "input": {"identity_hash": "ab" * 32, "modality": "CT", "units": "HU", "shape": [20, 60, 60],
                  "spacing": [2, 1, 1]},
        "timings_s": {},
        "structures": [{"name": n, "label": i, "category": "organ", "color": [9, 9, 9], "volume_ml": 1.0,
                        "files": {}, "triangles": 12, "watertight": True, "manifold": True}
                       for i, n in enumerate(["lung_left", "lesion_margin_5mm", "phantom_box"], 1)],
        "findings": [], "provenance": {},
        "files": files,
    }
    html = build_report_html(manifest, [])
    assert "Left lung <code>lung_left</code></td><td>44029006 Left lung</td>" in html
    assert "Lesion, 5 mm margin <code>lesion_margin_5mm</code>" in html
    assert "phantom box <code>phantom_box</code></td><td>–</td>" in html  # not in the table: no invented code
    assert "image.nii.gz (HU, the grid and affine of the label map)" in html
    del files["image"]
    assert "Image volume</th><td>not written by this run" in build_report_html(manifest, [])
