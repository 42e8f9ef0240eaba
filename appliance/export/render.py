"""Pictures for the report, drawn with numpy alone: shaded views of the model and slices with outlines.

Everything is oriented from the patient's affine, not from array order: slices are shown in the radiological
convention (patient's right on the image's left, anterior at the top of axial images, superior at the top of
coronal images), and the model is seen from the front (anterior view) and from the patient's left. Pictures are
encoded as PNG by :func:`encode_png` (zlib only), so the report needs no plotting library.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from appliance.core import LabelMap, Mesh, Volume
from appliance.export.errors import InvalidImage

RGBImage = npt.NDArray[np.uint8]

#: Model views: name -> (image column axis, its sign, image row axis, its sign, depth axis, sign towards viewer).
#: LPS axes: 0 = x (left), 1 = y (posterior), 2 = z (superior). Rows grow downwards, so superior has sign -1.
VIEWS: dict[str, tuple[int, float, int, float, int, float]] = {
    "anterior": (0, 1.0, 2, -1.0, 1, -1.0),  # viewer in front: patient's right on the left of the picture
    "left lateral": (1, 1.0, 2, -1.0, 0, 1.0),  # viewer at the patient's left: anterior on the left
}
BACKGROUND = np.array([250, 250, 250], dtype=np.uint8)


def encode_png(image: RGBImage) -> bytes:
    """8-bit RGB image (H, W, 3) as PNG bytes."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidImage(f"encode_png needs an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    height, width = int(image.shape[0]), int(image.shape[1])
    rows = np.concatenate([np.zeros((height, 1), dtype=np.uint8), image.reshape(height, width * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


def _barycentric_grid(level: int) -> npt.NDArray[np.float64]:
    """Barycentric weights (S, 3) of a triangular grid with ``level`` steps per edge."""
    i, j = np.meshgrid(np.arange(level + 1), np.arange(level + 1), indexing="ij")
    keep = i + j <= level
    i, j = i[keep], j[keep]
    return np.stack([level - i - j, i, j], axis=1).astype(np.float64) / level


def render_model(meshes: Sequence[Mesh], view: str = "anterior", size: int = 420) -> RGBImage:
    """Orthographic, Gouraud-shaded picture of ``meshes`` (LPS mm) from ``view`` (a key of :data:`VIEWS`).

    The longer side of the picture is ``size`` pixels; the other follows the model's aspect ratio.

    Front-facing triangles are sampled on a barycentric grid finer than one pixel and drawn through a depth
    buffer (the nearest sample wins), so the picture has no gaps whatever the triangle size.
    """
    col_axis, col_sign, row_axis, row_sign, depth_axis, depth_sign = VIEWS[view]
    drawn = [m for m in meshes if m.n_triangles]
    if not drawn:
        return np.tile(BACKGROUND, (size, size, 1))
    towards_viewer = np.zeros(3)
    towards_viewer[depth_axis] = depth_sign
    light = towards_viewer.copy()
    light[2] += 0.6  # a little from above
    light /= np.linalg.norm(light)
    all_points = np.concatenate([m.vertices for m in drawn])
    u_all = all_points[:, col_axis] * col_sign
    v_all = all_points[:, row_axis] * row_sign
    margin = 4
    extent = max(float(np.ptp(u_all)), float(np.ptp(v_all)), 1e-6)
    scale = (size - 2 * margin) / extent
    width = max(int(np.ceil(float(np.ptp(u_all)) * scale)) + 2 * margin, 16)
    height = max(int(np.ceil(float(np.ptp(v_all)) * scale)) + 2 * margin, 16)
    u0 = float(u_all.min()) - (width - float(np.ptp(u_all)) * scale) / 2 / scale
    v0 = float(v_all.min()) - (height - float(np.ptp(v_all)) * scale) / 2 / scale
    image = np.tile(BACKGROUND, (height, width, 1))
    pix: list[npt.NDArray[np.int64]] = []
    depths: list[npt.NDArray[np.float64]] = []
    colours: list[npt.NDArray[np.uint8]] = []
    for mesh in drawn:
        front = mesh.face_normals() @ towards_viewer > 0
        faces = mesh.faces[front]
        if not len(faces):
            continue
        tri = mesh.vertices[faces]  # (F, 3, 3)
        uv = np.stack([(tri[..., col_axis] * col_sign - u0) * scale, (tri[..., row_axis] * row_sign - v0) * scale],
                      axis=-1)
        depth = -tri[..., depth_axis] * depth_sign  # smaller = nearer the viewer
        intensity = (0.3 + 0.7 * np.clip(mesh.vertex_normals() @ light, 0.0, 1.0))[faces]  # (F, 3)
        edge = np.max(np.linalg.norm(uv - np.roll(uv, 1, axis=1), axis=-1), axis=1)
        levels = np.clip(np.ceil(edge * 1.2), 1, 2 * size).astype(np.int64)
        colour = np.asarray(mesh.color, dtype=np.float64)
        for level in np.unique(levels):
            sel = levels == level
            bary = _barycentric_grid(int(level))
            p = np.einsum("sk,fkd->fsd", bary, uv[sel]).reshape(-1, 2)
            pix.append(np.clip(p[:, 1].astype(np.int64), 0, height - 1) * width
                       + np.clip(p[:, 0].astype(np.int64), 0, width - 1))
            depths.append(np.einsum("sk,fk->fs", bary, depth[sel]).ravel())
            shade = np.einsum("sk,fk->fs", bary, intensity[sel]).ravel()
            colours.append(np.clip(shade[:, None] * colour, 0, 255).astype(np.uint8))
    if not pix:
        return image
    flat = np.concatenate(pix)
    depth_all = np.concatenate(depths)
    zbuffer = np.full(width * height, np.inf)
    np.minimum.at(zbuffer, flat, depth_all)
    winners = depth_all <= zbuffer[flat]  # the nearest sample(s) of each pixel
    image.reshape(-1, 3)[flat[winners]] = np.concatenate(colours)[winners]
    return image


def canonical_axes(affine: npt.NDArray[np.float64]) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For LPS axes x, y, z: the array axis closest to each and whether it must be flipped to increase along it."""
    direction = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    order: list[int] = []
    flips: list[bool] = []
    remaining = [0, 1, 2]
    for lps_axis in range(3):
        best = max(remaining, key=lambda a: abs(direction[lps_axis, a]))
        remaining.remove(best)
        order.append(best)
        flips.append(bool(direction[lps_axis, best] < 0))
    return (order[0], order[1], order[2]), (flips[0], flips[1], flips[2])


def to_lps_grid(array: npt.NDArray[Any], affine: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
    """``array`` transposed and flipped so that axes 0, 1, 2 grow towards patient left, posterior, superior."""
    order, flips = canonical_axes(affine)
    out = np.transpose(array, order)
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis=axis)
    return out


def grey_window(volume: Volume) -> tuple[float, float]:
    """(low, high) grey window: soft tissue (W 400, L 40) for CT in HU, 1st-99th percentile otherwise.

    Percentiles come from a strided sample of at most about a million voxels, so large volumes stay cheap.
    """
    if volume.modality == "CT" and volume.units == "HU":
        return 40.0 - 200.0, 40.0 + 200.0
    data = np.asarray(volume.array)
    step = max(1, round((data.size / 1e6) ** (1 / 3)))
    sample = np.asarray(data[::step, ::step, ::step], dtype=np.float64)
    low, high = (float(v) for v in np.percentile(sample, [1.0, 99.0]))
    return low, (high if high > low else low + 1.0)


def _grey(values: npt.NDArray[Any], window: tuple[float, float]) -> npt.NDArray[np.float64]:
    low, high = window
    return np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


def _outline(labels2d: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.bool_]:
    """Pixels of a label whose 4-neighbourhood holds another value."""
    edge = np.zeros(labels2d.shape, dtype=bool)
    edge[1:, :] |= labels2d[1:, :] != labels2d[:-1, :]
    edge[:-1, :] |= labels2d[:-1, :] != labels2d[1:, :]
    edge[:, 1:] |= labels2d[:, 1:] != labels2d[:, :-1]
    edge[:, :-1] |= labels2d[:, :-1] != labels2d[:, 1:]
    return edge & (labels2d > 0)


def render_slice(
    grey: npt.NDArray[np.float64],
    labels: npt.NDArray[np.integer[Any]],
    lut: npt.NDArray[np.uint8],
    pixel_mm: tuple[float, float],
    max_size: int = 420,
) -> RGBImage:
    """One slice (rows, columns) in grey with structure outlines in their colours, resampled to square pixels."""
    row_mm, col_mm = pixel_mm
    base = min(row_mm, col_mm)
    zoom = [row_mm / base, col_mm / base]
    big = max(grey.shape[0] * zoom[0], grey.shape[1] * zoom[1])
    factor = min(max(max_size / big, 0.1), 4.0)
    zoom = [z * factor for z in zoom]
    grey_z = ndimage.zoom(grey, zoom, order=1)
    labels_z = ndimage.zoom(labels, zoom, order=0)
    rgb = np.repeat((grey_z * 255).astype(np.uint8)[..., None], 3, axis=2)
    edge = _outline(labels_z)
    if factor >= 1.5:  # thicker lines on enlarged pictures
        edge = ndimage.binary_dilation(edge) & (labels_z > 0)
    rgb[edge] = lut[labels_z[edge]]
    return rgb


def label_lut(labelmap: LabelMap) -> npt.NDArray[np.uint8]:
    """Colour table indexed by label value."""
    top = max([int(labelmap.labels.max()) if labelmap.labels.size else 0] + [s.label for s in labelmap.structures])
    lut = np.full((top + 1, 3), 255, dtype=np.uint8)
    for s in labelmap.structures:
        lut[s.label] = s.color
    return lut


def render_slices(volume: Volume, labelmap: LabelMap, n_axial: int = 3) -> list[tuple[str, RGBImage]]:
    """Axial slices through the labelled region and one coronal slice, each with outlines; (caption, image)."""
    grey = to_lps_grid(np.asarray(volume.array), volume.affine)  # a view: only drawn slices are windowed
    window = grey_window(volume)
    labels = to_lps_grid(np.asarray(labelmap.labels), labelmap.affine)
    order, _ = canonical_axes(volume.affine)
    spacing = np.asarray(volume.spacing)[list(order)]  # mm along x (left), y (posterior), z (superior)
    lut = label_lut(labelmap)
    per_z = np.count_nonzero(labels, axis=(0, 1))
    labelled = np.flatnonzero(per_z)
    if labelled.size:
        lo, hi = int(labelled[0]), int(labelled[-1])
        picks = sorted({int(np.argmax(per_z))} | {round(lo + f * (hi - lo)) for f in (0.25, 0.75)})
    else:
        picks = [labels.shape[2] // 2]
    out: list[tuple[str, RGBImage]] = []
    for k in picks[:n_axial]:
        # axial: rows = posterior direction (anterior at top), columns = patient left (right on the image left)
        image = render_slice(_grey(grey[:, :, k].T, window), labels[:, :, k].T, lut,
                             (float(spacing[1]), float(spacing[0])))
        out.append((f"axial slice {k + 1} of {labels.shape[2]} (from inferior)", image))
    per_y = np.count_nonzero(labels, axis=(0, 2))
    j = int(np.argmax(per_y)) if per_y.any() else labels.shape[1] // 2
    coronal_grey = _grey(grey[:, j, ::-1].T, window)  # rows: superior at top
    coronal_labels = labels[:, j, ::-1].T
    image = render_slice(coronal_grey, coronal_labels, lut, (float(spacing[2]), float(spacing[0])))
    out.append((f"coronal slice {j + 1} of {labels.shape[1]} (from anterior)", image))
    return out
