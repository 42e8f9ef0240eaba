"""Intensity normalisation and foreground cropping for networks: the one place these live.

Array code is written once for NumPy or CuPy (``xp`` is taken from the input). ``quantile`` follows brainchop's
definition (order statistics at ``floor(n*lower)`` and ``ceil(n*upper) - 1`` of all voxels, no clipping unless
asked), ``minmax`` scales to [0, 1], ``zscore`` uses the non-zero voxels, ``ct_window`` clips HU to a window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.errors import PreprocessingError


def _xp(array: Any) -> Any:
    if isinstance(array, np.ndarray):
        return np
    import cupy

    return cupy.get_array_module(array)


def _order_statistic(flat: Any, index: int) -> float:
    xp = _xp(flat)
    return float(xp.partition(flat, index)[index])


def normalise_intensity(array: Any, spec: Mapping[str, Any]) -> Any:
    """Apply the pack's ``normalisation`` table to ``array``; returns float32 in the same array module."""
    xp = _xp(array)
    x = array.astype(xp.float32, copy=False)
    method = str(spec.get("method", "minmax"))
    if method == "none":
        return x
    if method == "minmax":
        lo, hi = float(x.min()), float(x.max())
        return (x - lo) / (hi - lo) if hi > lo else x - lo
    if method == "quantile":
        lower, upper = float(spec.get("lower", 0.05)), float(spec.get("upper", 0.95))
        if not 0.0 <= lower < upper <= 1.0:
            raise PreprocessingError(f"quantile normalisation needs 0 <= lower < upper <= 1, got {lower}, {upper}")
        flat = x.ravel()
        n = flat.size
        qlo = _order_statistic(flat, min(n - 1, math.floor(n * lower)))
        qhi = _order_statistic(flat, max(0, min(n - 1, math.ceil(n * upper) - 1)))
        y = (x - qlo) / (qhi - qlo) if qhi > qlo else x - qlo
        return xp.clip(y, 0.0, 1.0) if spec.get("clip", False) else y
    if method == "zscore":
        fg = x[x != 0]
        if fg.size == 0:
            return x
        mean, std = float(fg.mean()), float(fg.std())
        return (x - mean) / std if std > 0 else x - mean
    if method == "ct_window":
        lo, hi = float(spec.get("lower", -1000.0)), float(spec.get("upper", 1000.0))
        return (xp.clip(x, lo, hi) - lo) / (hi - lo)
    raise PreprocessingError(f"unknown normalisation method {method!r}")


@dataclass(frozen=True)
class CropBox:
    """Where a cropped, zero-padded block came from: ``start``/``stop`` per axis and the added ``padding``."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    padding: int
    full_shape: tuple[int, int, int]


def foreground_box(normalised: Any, threshold: float, padding: int, mask: Any = None) -> CropBox:
    """Bounding box of the foreground: ``mask`` if given, else voxels above ``threshold * max`` (``threshold`` in
    (0, 1]) or above 0 (``threshold`` 0), as brainchop crops before inference."""
    xp = _xp(normalised)
    if mask is not None:
        fg = mask > 0
    elif 0.0 < threshold <= 1.0:
        fg = normalised > float(normalised.max()) * threshold
    else:
        fg = normalised > 0
    shape = tuple(int(s) for s in normalised.shape)
    if not bool(fg.any()):
        return CropBox((0, 0, 0), (shape[0], shape[1], shape[2]), int(padding), (shape[0], shape[1], shape[2]))
    start, stop = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = xp.nonzero(fg.any(axis=other))[0]
        start.append(int(idx[0]))
        stop.append(int(idx[-1]) + 1)
    return CropBox((start[0], start[1], start[2]), (stop[0], stop[1], stop[2]), int(padding),
                   (shape[0], shape[1], shape[2]))


def crop(array: Any, box: CropBox) -> Any:
    """The block inside ``box`` with ``box.padding`` zeros added on every side."""
    xp = _xp(array)
    block = array[box.start[0]:box.stop[0], box.start[1]:box.stop[1], box.start[2]:box.stop[2]]
    if box.padding:
        block = xp.pad(block, box.padding)
    return block


def uncrop(block: Any, box: CropBox, fill: int = 0) -> Any:
    """Inverse of :func:`crop` for a label block: remove padding and place it in a full-size array."""
    xp = _xp(block)
    p = box.padding
    inner = block[p:block.shape[0] - p, p:block.shape[1] - p, p:block.shape[2] - p] if p else block
    full = xp.full(box.full_shape, fill, dtype=block.dtype)
    full[box.start[0]:box.stop[0], box.start[1]:box.stop[1], box.start[2]:box.stop[2]] = inner
    return full
