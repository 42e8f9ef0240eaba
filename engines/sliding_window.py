"""Sliding-window inference with Gaussian blending, resampling to a pack's spacing and back, softmax/argmax.

Written once for NumPy and CuPy (``xp`` follows the backend's output), so on a GPU the tiles, the weight map and
the accumulators stay on the device; the NumPy path is the oracle. Resampling uses ``scipy.ndimage.zoom`` or
``cupyx.scipy.ndimage.zoom`` with the same arguments.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from engines.backends import Backend
from engines.errors import SlidingWindowError


def _xp(array: Any) -> Any:
    if isinstance(array, np.ndarray):
        return np
    import cupy

    return cupy.get_array_module(array)


def softmax(logits: Any, axis: int = 0) -> Any:
    """Numerically stable softmax along ``axis`` (NumPy or CuPy)."""
    xp = _xp(logits)
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def argmax_labels(scores: Any, axis: int = 0) -> Any:
    """Class index per voxel (uint16), ties to the lower class as ``argmax`` does everywhere."""
    xp = _xp(scores)
    return scores.argmax(axis=axis).astype(xp.uint16)


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 0.125, xp: Any = np) -> Any:
    """Gaussian weight map over a patch (sigma = ``sigma_scale`` x size), max 1, minimum clamped above 0."""
    axes = []
    for n in patch:
        centre = (n - 1) / 2.0
        sigma = max(n * sigma_scale, 1e-6)
        coord = np.arange(n, dtype=np.float64)
        axes.append(np.exp(-0.5 * ((coord - centre) / sigma) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w = w / w.max()
    w = np.maximum(w, w[w > 0].min() if np.any(w > 0) else 1e-6).astype(np.float32)
    return xp.asarray(w)


def tile_starts(size: int, patch: int, step: int) -> list[int]:
    """Start offsets covering ``size`` with windows of ``patch`` every ``step`` (last one flush with the end)."""
    if size <= patch:
        return [0]
    n = math.ceil((size - patch) / step) + 1
    starts = [min(i * step, size - patch) for i in range(n)]
    return sorted(set(starts))


def sliding_window_probabilities(backend: Backend, volume: Any, patch: Sequence[int], overlap: float,
                                 classes: int, batch: int = 1) -> Any:
    """Class probabilities ``[classes, *volume.shape]`` from overlapping patches, Gaussian-weighted.

    ``volume`` is the normalised 3-D array; it is padded (edge values) when smaller than the patch.
    """
    if not 0.0 <= overlap < 1.0:
        raise SlidingWindowError(f"overlap must be in [0, 1), got {overlap}")
    patch = tuple(int(p) for p in patch)
    if len(patch) != 3 or min(patch) < 1:
        raise SlidingWindowError(f"patch must be 3 positive sizes, got {patch}")
    xp = backend.xp
    vol = xp.asarray(volume, dtype=xp.float32)
    orig = tuple(int(s) for s in vol.shape)
    pad = [(0, max(0, p - s)) for p, s in zip(patch, orig, strict=True)]
    if any(hi for _, hi in pad):
        vol = xp.pad(vol, pad, mode="edge")
    shape = tuple(int(s) for s in vol.shape)
    steps = [max(1, round(p * (1.0 - overlap))) for p in patch]
    weight = gaussian_importance(patch, xp=xp)
    acc = xp.zeros((classes, *shape), dtype=xp.float32)
    norm = xp.zeros(shape, dtype=xp.float32)
    corners = list(itertools.product(*(tile_starts(s, p, st) for s, p, st in zip(shape, patch, steps, strict=True))))
    for first in range(0, len(corners), batch):
        group = corners[first:first + batch]
        tiles = xp.stack([vol[c[0]:c[0] + patch[0], c[1]:c[1] + patch[1], c[2]:c[2] + patch[2]] for c in group])
        logits = xp.asarray(backend.forward(tiles[:, None]))
        if logits.shape[1] != classes:
            raise SlidingWindowError(f"network returned {logits.shape[1]} classes, the pack declares {classes}")
        probs = softmax(logits, axis=1)
        for k, c in enumerate(group):
            sl = (slice(c[0], c[0] + patch[0]), slice(c[1], c[1] + patch[1]), slice(c[2], c[2] + patch[2]))
            acc[(slice(None), *sl)] += probs[k] * weight
            norm[sl] += weight
    acc /= norm[None]
    return acc[:, :orig[0], :orig[1], :orig[2]]


def resample_zoom(array: Any, factors: Sequence[float], order: int, output_shape: Sequence[int] | None = None) -> Any:
    """Zoom a 3-D array by ``factors`` (order 1 for intensities, 0 for labels), optionally to an exact shape."""
    xp = _xp(array)
    if xp is np:
        from scipy import ndimage
    else:
        from cupyx.scipy import ndimage
    if output_shape is not None:
        factors = [o / s for o, s in zip(output_shape, array.shape, strict=True)]
    if all(abs(f - 1.0) < 1e-9 for f in factors):
        return array
    out = ndimage.zoom(array, tuple(float(f) for f in factors), order=order, mode="nearest", grid_mode=False)
    if output_shape is not None and tuple(out.shape) != tuple(output_shape):
        fixed = xp.zeros(tuple(output_shape), dtype=out.dtype)
        sl = tuple(slice(0, min(a, b)) for a, b in zip(out.shape, output_shape, strict=True))
        fixed[sl] = out[sl]
        out = fixed
    return out


def zoom_factors(spacing: Sequence[float], target_spacing: Sequence[float]) -> list[float]:
    """Factors that resample from ``spacing`` to ``target_spacing`` (mm per voxel, per axis)."""
    return [float(s) / float(t) for s, t in zip(spacing, target_spacing, strict=True)]
