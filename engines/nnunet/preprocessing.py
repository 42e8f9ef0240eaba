"""From an appliance ``Volume`` to nnU-Net's preprocessed array, and the way back for the labels.

Axis order: nnU-Net reads a NIfTI with SimpleITK (or NibabelIO, which gives the same array) as ``[z, y, x]`` of
the file, i.e. the stored voxel array transposed ``(2, 1, 0)``, with the spacing reversed the same way. The
appliance's ``Volume.array`` is the stored order of the NIfTI the appliance writes for it, so a pack whose
``input_orientation`` is ``stored`` gets ``volume.array.transpose(2, 1, 0)``; a pack trained on reoriented images
(``RAS`` for TotalSegmentator) first gets the volume turned to that closest canonical orientation (axis flips and
swaps only, never interpolated). Then, as nnU-Net does: ``transpose_forward``, crop to the bounding box of the
non-zero voxels (holes filled), per-channel normalisation (inside that mask when the plans say so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from appliance.core import Volume
from engines.nnunet.errors import InputMismatch
from engines.nnunet.plans import ChannelNormalisation
from engines.nnunet.recipe import STORED

_EPS = 1e-8


@dataclass(frozen=True)
class Layout:
    """How the volume's voxel axes map to nnU-Net's: an optional reorientation, then the two transposes.

    ``forward`` / ``backward`` are nibabel orientation transforms (volume axes -> pack orientation and back), or
    ``None`` when the volume is used in its stored order.
    """

    forward: npt.NDArray[np.float64] | None
    backward: npt.NDArray[np.float64] | None
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]

    def to_network(self, array: npt.NDArray[Any], spacing: Sequence[float]) \
            -> tuple[npt.NDArray[Any], tuple[float, float, float]]:
        """``array`` (volume order) and its spacing in nnU-Net's order after ``transpose_forward``."""
        sp = [float(s) for s in spacing]
        if self.forward is not None:
            from nibabel.orientations import apply_orientation

            array = apply_orientation(array, self.forward)
            sp = [sp[int(i)] for i in np.argsort(self.forward[:, 0])]
        zyx, zyx_spacing = array.transpose(2, 1, 0), sp[::-1]
        t = self.transpose_forward
        return zyx.transpose(t), (zyx_spacing[t[0]], zyx_spacing[t[1]], zyx_spacing[t[2]])

    def to_volume(self, labels: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Inverse of :meth:`to_network` for a label array."""
        array = labels.transpose(self.transpose_backward).transpose(2, 1, 0)
        if self.backward is not None:
            from nibabel.orientations import apply_orientation

            array = apply_orientation(array, self.backward)
        return np.ascontiguousarray(array)


def layout_for(volume: Volume, orientation: str, transpose_forward: Sequence[int],
               transpose_backward: Sequence[int]) -> Layout:
    """The :class:`Layout` of ``volume`` for a pack asking for ``orientation`` (``stored`` or e.g. ``RAS``)."""
    fwd = (int(transpose_forward[0]), int(transpose_forward[1]), int(transpose_forward[2]))
    bwd = (int(transpose_backward[0]), int(transpose_backward[1]), int(transpose_backward[2]))
    if orientation == STORED:
        return Layout(None, None, fwd, bwd)
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    try:
        target = axcodes2ornt(tuple(orientation.upper()))
    except ValueError as exc:
        raise InputMismatch(f"pack orientation {orientation!r} is not 'stored' or three axis codes") from exc
    current = io_orientation(volume.ras_affine())
    forward = ornt_transform(current, target)
    if np.array_equal(forward, [[0, 1], [1, 1], [2, 1]]):
        return Layout(None, None, fwd, bwd)
    return Layout(forward, ornt_transform(target, current), fwd, bwd)


@dataclass(frozen=True)
class Crop:
    """The bounding box nnU-Net crops to (half-open, per axis) and the shape before cropping."""

    box: tuple[tuple[int, int], ...]
    shape_before: tuple[int, ...]

    @property
    def slices(self) -> tuple[slice, ...]:
        """Slices selecting the box."""
        return tuple(slice(a, b) for a, b in self.box)

    def uncrop(self, labels: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Put ``labels`` back into a zero array of the shape before cropping."""
        out = np.zeros(self.shape_before, dtype=labels.dtype)
        out[self.slices] = labels
        return out


def nonzero_crop(data: npt.NDArray[Any]) -> tuple[Crop, npt.NDArray[np.bool_]]:
    """Bounding box of the non-zero voxels of any channel (holes filled) and that mask inside the box.

    An image without non-zero voxels keeps its full extent, as in nnU-Net.
    """
    mask = np.zeros(data.shape[1:], dtype=bool)
    for channel in data:
        mask |= channel != 0
    mask = ndimage.binary_fill_holes(mask)
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        box.append((int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, mask.shape[axis]))
    crop = Crop(tuple(box), tuple(int(s) for s in mask.shape))
    return crop, mask[crop.slices]


def normalise_channel(image: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_],
                      norm: ChannelNormalisation) -> npt.NDArray[np.float32]:
    """nnU-Net's normalisation of one float32 channel, in place (same operations, same order, same precision)."""
    if norm.scheme == "ct":
        if norm.lower is None or norm.upper is None or norm.mean is None or norm.std is None:
            raise InputMismatch("CT normalisation needs the foreground intensity properties in the pack")
        np.clip(image, norm.lower, norm.upper, out=image)
        image -= norm.mean
        image /= max(norm.std, _EPS)
    elif norm.scheme == "zscore":
        if norm.use_mask:
            inside = image[mask]
            mean, std = inside.mean(), inside.std()
            image[mask] = (image[mask] - mean) / max(std, _EPS)
        else:
            mean, std = image.mean(), image.std()
            image -= mean
            image /= max(std, _EPS)
    elif norm.scheme == "rescale_0_1":
        image -= image.min()
        image /= np.clip(image.max(), a_min=_EPS, a_max=None)
    elif norm.scheme != "none":
        raise InputMismatch(f"normalisation scheme {norm.scheme!r} is unknown")
    return image


def preprocess(volume: Volume, layout: Layout, channels: Sequence[ChannelNormalisation]) \
        -> tuple[npt.NDArray[np.float32], tuple[float, float, float], Crop]:
    """``[1, X, Y, Z]`` float32 in nnU-Net order, cropped and normalised; its spacing; the crop."""
    if len(channels) != 1:
        raise InputMismatch(f"the pack expects {len(channels)} input channels; the appliance gives one volume")
    array, spacing = layout.to_network(np.asarray(volume.array), volume.spacing)
    data = np.ascontiguousarray(array, dtype=np.float32)[None]
    crop, mask = nonzero_crop(data)
    data = np.ascontiguousarray(data[(slice(None), *crop.slices)])
    for c, norm in enumerate(channels):
        data[c] = normalise_channel(data[c], mask, norm)
    return data, spacing, crop


__all__ = ["Crop", "Layout", "layout_for", "nonzero_crop", "normalise_channel", "preprocess"]
