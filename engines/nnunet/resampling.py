"""nnU-Net's resampling rules, reproduced: target shape, the separate-z rule, spline zoom with edge handling.

The rules (from ``nnunetv2.preprocessing.resampling.default_resampling``, written anew here):

* new shape = ``round(old_spacing / new_spacing * old_shape)`` per axis;
* an axis is resampled on its own ("separate z") when the current spacing, or else the target spacing, is
  anisotropic (max / min > 3) and exactly one axis has the largest spacing; then each slice across that axis is
  zoomed in 2-D with the spline ``order`` and the slices are combined along the axis with ``order_z`` (0 = nearest);
* zooming follows ``skimage.transform.resize(mode="edge", anti_aliasing=False)``: ``scipy.ndimage.zoom`` with
  ``grid_mode=True`` and ``mode="nearest"``, the result clipped to the input's value range;
* arithmetic is float64 per channel; the result has the input's dtype (float32 images, float16 logits).

One channel is in float64 at a time, so memory stays at the output plus two single-channel copies.
:func:`resample_argmax` goes further for the prediction's way back: it never holds all classes on the image grid,
only a running maximum (float16) and the running argmax, one class resampled at a time (see its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from engines.nnunet.errors import InputMismatch
from engines.nnunet.half import RunningArgmax, argmax_half, store_half
from engines.nnunet.plans import ANISOTROPY_THRESHOLD, Resampling


def new_shape_for(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """Shape after resampling ``shape`` from ``spacing`` to ``target`` (nnU-Net's rounding)."""
    return tuple(round(float(s) / float(t) * int(n)) for n, s, t in zip(shape, spacing, target, strict=True))


def _lowres_axis(spacing: Sequence[float]) -> list[int]:
    top = max(spacing)
    return [i for i, s in enumerate(spacing) if top / s == 1]


def _anisotropic(spacing: Sequence[float], threshold: float) -> bool:
    return bool(max(spacing) / min(spacing) > threshold)


def separate_axis(current: Sequence[float], target: Sequence[float], force: bool | None = None,
                  threshold: float = ANISOTROPY_THRESHOLD) -> int | None:
    """The axis resampled on its own, or ``None`` for a plain 3-D zoom."""
    if force is not None:
        axes = _lowres_axis(current) if force else []
    elif _anisotropic(current, threshold):
        axes = _lowres_axis(current)
    elif _anisotropic(target, threshold):
        axes = _lowres_axis(target)
    else:
        axes = []
    return axes[0] if len(axes) == 1 else None


def zoom_like_skimage(image: npt.NDArray[np.float64], shape: Sequence[int], order: int) -> npt.NDArray[np.float64]:
    """``skimage.transform.resize(image, shape, order, mode="edge", anti_aliasing=False)`` for float64 input."""
    factors = [i / o for i, o in zip(image.shape, shape, strict=True)]
    out: npt.NDArray[np.float64] = ndimage.zoom(image, [1.0 / f for f in factors], order=order, mode="nearest",
                                                grid_mode=True)
    if order > 0:
        np.clip(out, image.min(), image.max(), out=out)
    return out


def _along_axis(block: npt.NDArray[np.float64], axis: int, size: int, order: int) -> npt.NDArray[Any]:
    """Resample ``block`` along ``axis`` only, sampling at ``scale * (k + 0.5) - 0.5`` with edge clamping."""
    scale = float(block.shape[axis]) / size
    coords = scale * (np.arange(size, dtype=np.float64) + 0.5) - 0.5
    if order == 0:
        index = ndimage.map_coordinates(np.arange(block.shape[axis], dtype=np.float64), coords[None], order=0,
                                        mode="nearest").astype(np.intp)
        taken: npt.NDArray[Any] = np.take(block, index, axis=axis)
        return taken
    grid = [np.arange(n, dtype=np.float64) for n in block.shape]
    grid[axis] = coords
    mesh = np.meshgrid(*grid, indexing="ij")
    out: npt.NDArray[Any] = ndimage.map_coordinates(block, np.stack(mesh), order=order, mode="nearest")
    return out


def _resample_channel(channel: npt.NDArray[Any], shape: tuple[int, ...], order: int, order_z: int,
                      axis: int | None) -> npt.NDArray[Any]:
    data = channel.astype(np.float64)
    if axis is None:
        return zoom_like_skimage(data, shape, order)
    plane = [n for i, n in enumerate(shape) if i != axis]
    slices = [zoom_like_skimage(np.take(data, k, axis=axis), plane, order) for k in range(data.shape[axis])]
    stacked = np.stack(slices, axis=axis)
    if data.shape[axis] == shape[axis]:
        return stacked
    return _along_axis(stacked, axis, shape[axis], order_z)


def resample(data: npt.NDArray[Any], shape: Sequence[int], current: Sequence[float], target: Sequence[float],
             rule: Resampling, threshold: float = ANISOTROPY_THRESHOLD) -> npt.NDArray[Any]:
    """Resample ``data`` ``[C, X, Y, Z]`` to ``shape`` as nnU-Net does (same dtype; unchanged if shapes match)."""
    shape = tuple(int(s) for s in shape)
    if tuple(data.shape[1:]) == shape:
        return data
    axis = separate_axis(current, target, rule.force_separate_z, threshold)
    out = np.zeros((data.shape[0], *shape), dtype=data.dtype)
    for c in range(data.shape[0]):
        out[c] = _resample_channel(data[c], shape, rule.order, rule.order_z, axis)
    return out


def resample_argmax(logits: npt.NDArray[np.float16], shape: Sequence[int], current: Sequence[float],
                    target: Sequence[float], rule: Resampling, threshold: float = ANISOTROPY_THRESHOLD) \
        -> npt.NDArray[np.uint16]:
    """``resample(logits, ...).argmax(0)`` as uint16 for float16 logits, holding one resampled class at a time.

    Each class is resampled exactly as :func:`resample` does (float64 arithmetic, then cast to float16) and
    compared with the running maximum (:class:`engines.nnunet.half.RunningArgmax`: a class replaces the running
    argmax only where it is strictly larger, so ties go to the lower class as with ``numpy.argmax``). The labels
    are identical to the all-classes path; the memory on the image grid is the running maximum, the labels and
    one class's float64 copy instead of ``classes x voxels`` logits.
    """
    shape = tuple(int(s) for s in shape)
    if logits.dtype != np.float16:
        raise InputMismatch(f"resample_argmax takes nnU-Net's float16 logits, not {logits.dtype}")
    if tuple(logits.shape[1:]) == shape:
        return argmax_half(logits)
    axis = separate_axis(current, target, rule.force_separate_z, threshold)
    running = RunningArgmax(shape)
    cast = np.empty(shape, dtype=np.float16)
    for c in range(logits.shape[0]):
        channel = _resample_channel(logits[c], shape, rule.order, rule.order_z, axis)
        store_half(cast, channel)
        del channel
        running.update(c, cast)
    return running.labels


__all__ = ["new_shape_for", "resample", "resample_argmax", "separate_axis", "zoom_like_skimage"]
