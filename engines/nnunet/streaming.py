"""Slab-streamed prediction: nnU-Net's sliding window, fold mean and way back, without the whole logits volume.

:func:`engines.nnunet.predict.predict_labels` normally holds the float16 logits of every class over the whole
network grid (``classes x voxels x 2 B``: 6.3 GiB for 118 outputs on a 512x512x600 trunk CT at 1.5 mm). Tiles run
x-major (the first network axis slowest), so once every tile starting at ``x = s`` has run, the rows before the
next start are final. This module keeps only the rows still being accumulated (at most one patch deep, per fold),
finalises the rows behind the window exactly as the whole-volume path does (float16 division by the Gaussian
weights, float16 sum of the folds, division by their number), and resamples them back to the image grid in slabs
of output rows, one class at a time with a running argmax.

The way back is the order-1 spline of :func:`engines.nnunet.resampling.resample` (with a separately resampled
axis taken by nearest neighbour, order 0, as nnU-Net's plans set it) evaluated with
``scipy.ndimage.map_coordinates``' arithmetic (:func:`engines.nnunet.grid_linear.linear_on_grid`) at the very
coordinates ``ndimage.zoom`` uses, on the slab of input rows each output slab needs; for order 1 this gives
bit-identical values (the interpolation is local and needs no spline prefilter), so the labels equal the
whole-volume path's. A slab's output rows are shared between threads. Other resampling orders are not streamed
(:func:`can_stream`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from engines.nnunet.errors import NumericalError
from engines.nnunet.grid_linear import linear_on_grid
from engines.nnunet.half import RunningArgmax, add_half, divide_half, scale_half, store_half
from engines.nnunet.plans import ANISOTROPY_THRESHOLD, Resampling
from engines.nnunet.resampling import separate_axis
from engines.nnunet.sliding_window import Forward, blend_tile, pad_to_patch, predict_tile, tile_starts

#: Output rows resampled together (bounded further so one slab's coordinates stay near 64 MiB).
SLAB_ROWS = 16
#: Threads of the way back (each takes a share of a slab's output rows).
WORKERS = max(1, min(os.cpu_count() or 1, 4))
#: Final network-grid rows handed to the way back at a time.
FINAL_ROWS = 8


def can_stream(rule: Resampling) -> bool:
    """Whether the way back can be streamed with identical labels (order-1 splines, separate axis order 0)."""
    return rule.order == 1 and rule.order_z == 0


def _zoom_coordinates(size_in: int, size_out: int) -> npt.NDArray[np.float64]:
    """Input coordinates ``ndimage.zoom(grid_mode=True)`` samples for each output index along one axis."""
    scale = float(np.divide(np.array([size_in]), np.array([size_out]))[0])
    coords: npt.NDArray[np.float64] = (np.arange(size_out, dtype=np.float64) + 0.5) * scale - 0.5
    return coords


def back_coordinates(shape_in: Sequence[int], shape_out: Sequence[int], current: Sequence[float],
                     target: Sequence[float], rule: Resampling, threshold: float = ANISOTROPY_THRESHOLD) \
        -> list[npt.NDArray[np.float64]]:
    """Per axis, where each output index samples the input (as :func:`engines.nnunet.resampling.resample`)."""
    axis = separate_axis(current, target, rule.force_separate_z, threshold)
    coords = []
    for a, (n_in, n_out) in enumerate(zip(shape_in, shape_out, strict=True)):
        if a == axis and n_in == n_out:
            coords.append(np.arange(n_in, dtype=np.float64))
        elif a == axis and rule.order_z == 0:
            rows = ndimage.map_coordinates(np.arange(n_in, dtype=np.float64), _zoom_coordinates(n_in, n_out)[None],
                                           order=0, mode="nearest")
            coords.append(np.asarray(rows, dtype=np.float64))
        else:
            coords.append(_zoom_coordinates(n_in, n_out))
    return coords


class StreamingArgmax:
    """Receives final network-grid logits row by row (axis 0) and writes the labels of the output rows they allow."""

    def __init__(self, classes: int, shape_in: Sequence[int], coords: list[npt.NDArray[np.float64]]) -> None:
        self.shape_in = tuple(int(s) for s in shape_in)
        self.coords = coords
        self.labels = np.zeros(tuple(len(c) for c in coords), dtype=np.uint16)
        plane = max(len(coords[1]) * len(coords[2]), 1)
        self.rows = max(1, min(SLAB_ROWS, (64 << 20) // (24 * plane)))
        self.buffer = np.zeros((classes, 0, *self.shape_in[1:]), dtype=np.float16)
        self.first_row = 0  # network-grid row of buffer[:, 0]
        self.done_rows = 0  # output rows written
        self.final_rows = 0  # network-grid rows received

    def _need(self, o0: int, o1: int) -> tuple[int, int]:
        x = self.coords[0][o0:o1]
        lo = max(int(np.floor(x.min())), 0)
        hi = min(int(np.floor(x.max())) + 2, self.shape_in[0])
        return lo, hi

    def add(self, rows: npt.NDArray[np.float16]) -> None:
        """Append the next final rows ``[classes, n, Y, Z]`` and resample every output slab they complete."""
        self.buffer = np.concatenate([self.buffer, rows], axis=1) if self.buffer.shape[1] else rows
        self.final_rows += rows.shape[1]
        total = len(self.coords[0])
        while self.done_rows < total:
            o0, o1 = self.done_rows, min(self.done_rows + self.rows, total)
            lo, hi = self._need(o0, o1)
            if hi > self.final_rows:
                break
            self._resample(o0, o1, lo, hi)
            self.done_rows = o1
            if self.done_rows < total:
                keep_from = self._need(o1, min(o1 + self.rows, total))[0]
                drop = keep_from - self.first_row
                if drop > 0:
                    self.buffer = self.buffer[:, drop:].copy()
                    self.first_row = keep_from

    def _resample(self, o0: int, o1: int, lo: int, hi: int) -> None:
        """Output rows ``[o0, o1)`` from network-grid rows ``[lo, hi)``, split between :data:`WORKERS` threads."""
        block = self.buffer[:, lo - self.first_row:hi - self.first_row]
        bounds = np.linspace(o0, o1, min(WORKERS, o1 - o0) + 1).astype(int)
        parts = list(itertools.pairwise(int(b) for b in bounds))
        if len(parts) == 1:
            self._resample_rows(block, lo, o0, o1)
            return
        with ThreadPoolExecutor(len(parts)) as pool:  # NumPy releases the GIL; the rows are disjoint
            list(pool.map(lambda p: self._resample_rows(block, lo, p[0], p[1]), parts))

    def _resample_rows(self, block: npt.NDArray[np.float16], lo: int, o0: int, o1: int) -> None:
        coords = [self.coords[0][o0:o1] - lo, self.coords[1], self.coords[2]]
        shape = (o1 - o0, len(coords[1]), len(coords[2]))
        cast = np.empty(shape, dtype=np.float16)
        running = RunningArgmax(shape)  # the slab's running maximum only, not the whole grid's
        for c in range(block.shape[0]):
            store_half(cast, linear_on_grid(block[c], coords))
            running.update(c, cast)
        self.labels[o0:o1] = running.labels


def stream_predict(forwards: Sequence[Forward], data: npt.NDArray[np.float32], patch: Sequence[int], classes: int,
                   step: float, mirror_axes: Sequence[int], weight: npt.NDArray[np.float16],
                   sink: StreamingArgmax, progress: Callable[[float], None] | None = None) -> None:
    """Run every fold's sliding window over ``data`` ``[C, X, Y, Z]`` x-slab by x-slab and feed the fold mean of
    the final rows to ``sink`` (the same float16 operations, per voxel and in the same order, as the
    whole-volume path)."""
    patch = tuple(int(p) for p in patch)
    padded, undo = pad_to_patch(data, patch)
    shape = padded.shape[1:]
    starts = [tile_starts(s, p, step) for s, p in zip(shape, patch, strict=True)]
    weight32 = weight.astype(np.float32)
    folds = len(forwards)
    depth = patch[0]
    # the window: padded rows [x0, x0 + depth) of the current tile row; x0 is also the first row not yet final
    logits = [np.zeros((classes, depth, *shape[1:]), dtype=np.float16) for _ in range(folds)]
    weights = np.zeros((depth, *shape[1:]), dtype=np.float16)
    total_tiles = len(starts[0]) * len(starts[1]) * len(starts[2])
    done = 0
    for i, x0 in enumerate(starts[0]):
        for y0, z0 in itertools.product(starts[1], starts[2]):
            window = (slice(0, depth), slice(y0, y0 + patch[1]), slice(z0, z0 + patch[2]))
            tile = np.ascontiguousarray(padded[:, x0:x0 + depth, y0:y0 + patch[1], z0:z0 + patch[2]])
            for k in range(folds):
                prediction = predict_tile(forwards[k], tile, mirror_axes)
                # every fold's window is untouched exactly when the weights' is, so each fold sees them before
                # they are added to (the last fold adds them)
                blend_tile(logits[k][(slice(None), *window)], weights[window], prediction, weight, weight32,
                           add_weight=k == folds - 1)
                del prediction
            done += 1
            if progress is not None:
                progress(done / total_tiles)
        final = (starts[0][i + 1] if i + 1 < len(starts[0]) else shape[0]) - x0
        for r0 in range(0, final, FINAL_ROWS):  # hand the final rows over a few at a time
            r1 = min(r0 + FINAL_ROWS, final)
            lo, hi = max(x0 + r0, undo[0].start), min(x0 + r1, undo[0].stop)
            if hi <= lo:
                continue
            rows = slice(lo - x0, hi - x0)
            sink.add(_fold_mean([acc[:, rows, undo[1], undo[2]] for acc in logits], weights[rows, undo[1], undo[2]]))
        for acc in [*logits, weights]:  # move the rows still accumulating to the window's start, row by row
            axis_rows = acc if acc.ndim == 3 else acc.transpose(1, 0, 2, 3)
            for r in range(depth - final):
                axis_rows[r] = axis_rows[r + final]
            axis_rows[max(depth - final, 0):] = 0


def _fold_mean(per_fold: list[npt.NDArray[np.float16]], weights: npt.NDArray[np.float16]) -> npt.NDArray[np.float16]:
    """nnU-Net's per-fold float16 division by the weights, float16 sum over the folds, division by their number."""
    total: npt.NDArray[np.float16] | None = None
    for acc in per_fold:
        part = np.array(acc, dtype=np.float16)
        divide_half(part, weights)
        if not np.all(np.isfinite(part)):
            raise NumericalError("float16 logits overflowed; the network's logits are too large for nnU-Net's "
                                 "float16 accumulation")
        if total is None:
            total = part
        else:
            add_half(total, part)
    if total is None:
        raise NumericalError("no fold ran")
    if len(per_fold) > 1:
        scale_half(total, len(per_fold))
    return total


__all__ = ["FINAL_ROWS", "SLAB_ROWS", "StreamingArgmax", "back_coordinates", "can_stream", "stream_predict"]
