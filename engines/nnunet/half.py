"""nnU-Net's float16 arithmetic (torch half tensors on the CPU), bit for bit, at NumPy's fast speed.

nnU-Net accumulates logits in float16: every ``half += float32``, ``half / half`` or ``half + half`` is computed in
float32 and rounded to the nearest float16 (ties to even). NumPy gives exactly those bits, but its float16
conversion raises the floating-point underflow flag for every result that is an *inexact* float16 subnormal (below
2^-14 in magnitude) through ``feraiseexcept``, an x87 environment write of about 100 ns per voxel. The Gaussian
importance map reaches 6e-8 at the patch corners, so about a fifth of every weighted tile lands there: on the 3 mm
TotalSegmentator model that was 13 s of CPU per 128^3 tile of 118 classes, half of the network's own time.

The remedy changes no bit: values below 2^-14 are first rounded to the float16 subnormal grid (multiples of 2^-24,
``numpy.rint``: half to even, as the conversion rounds), which makes them exact float16 values; the conversion then
takes its fast path and gives the same bits as converting the unrounded values (signed zeros included). Every
operation runs in chunks of :data:`CHUNK` elements so its temporaries stay in the cache.

Argmax over float16 classes compares integer keys (:func:`order_key`) instead of float16 values: NumPy compares
float16 one element at a time in software.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

#: Elements per chunk (float32 temporaries of 1 MiB).
CHUNK = 1 << 18
#: Smallest normal float16; below it float16 values are multiples of 2^-24.
SMALLEST_NORMAL = 2.0**-14
_SUBNORMAL_STEP = 2.0**-24

Half = npt.NDArray[np.float16]
Float = npt.NDArray[np.floating]

#: Every float16 bit pattern's float32 value (NumPy's own conversion), so widening is one table lookup.
_WIDE = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def _chunks(shape: tuple[int, ...]) -> Iterator[tuple[slice, ...]]:
    """Index tuples that split an array of ``shape`` along its leading axes into blocks of about CHUNK elements."""
    if not shape:
        yield ()
        return
    inner = int(np.prod(shape[1:], dtype=np.int64))
    if inner > CHUNK and len(shape) > 1:
        for i in range(shape[0]):
            for rest in _chunks(shape[1:]):
                yield (slice(i, i + 1), *rest)
        return
    rows = max(1, CHUNK // max(inner, 1))
    for start in range(0, shape[0], rows):
        yield (slice(start, min(start + rows, shape[0])),)


def widen(values: Half) -> npt.NDArray[np.float32]:
    """``values.astype(float32)`` (exact, same bits) by table lookup: NumPy converts float16 one element at a time."""
    out: npt.NDArray[np.float32] = np.take(_WIDE, values.view(np.uint16))
    return out


def snap_subnormals(values: Float) -> None:
    """Round, in place, every value below float16's normal range to the float16 subnormal grid (half to even).

    ``values.astype(float16)`` is unchanged by this (same bits), but no longer takes NumPy's slow path.
    """
    small = np.abs(values) < SMALLEST_NORMAL
    if not small.any():
        return
    grid = values * (1.0 / _SUBNORMAL_STEP)
    np.rint(grid, out=grid)
    grid *= _SUBNORMAL_STEP
    np.copyto(values, grid, where=small)


def store_half(out: Half, values: Float) -> None:
    """``out[...] = values`` (float16 rounding, same bits as NumPy's cast); ``values`` is rounded in place first."""
    for index in _chunks(values.shape):
        part = values[index]
        snap_subnormals(part)
        np.copyto(out[index], part, casting="same_kind")


def accumulate_half(acc: Half, values: npt.NDArray[np.float32], weight: npt.NDArray[np.float32] | None = None,
                    fresh: bool = False) -> None:
    """``acc += values * weight`` as a float16 tensor does it: the float32 sum rounded to float16.

    ``acc`` may be any view (a tile's window of the accumulator); ``values`` has its shape and is consumed;
    ``weight`` (optional) covers its trailing axes. ``fresh``: ``acc`` holds zeros, which are not read back (``0 +
    x`` is ``x`` with ``-0.0`` turned into ``+0.0``, as the float16 sum gives).
    """
    lead = values.ndim - (0 if weight is None else weight.ndim)
    for index in _chunks(values.shape):
        part = values[index]
        if weight is not None:
            part *= weight[index[lead:]]
        if fresh:
            part += np.float32(0.0)
        else:
            part += widen(acc[index])
        snap_subnormals(part)
        np.copyto(acc[index], part, casting="same_kind")


def divide_half(acc: Half, divisor: Half) -> None:
    """``acc /= divisor`` (both float16; ``divisor`` broadcast over ``acc``'s leading axis when it has fewer)."""
    lead = acc.ndim - divisor.ndim
    outer = [()] if lead == 0 else [tuple(int(i) for i in idx) for idx in np.ndindex(*acc.shape[:lead])]
    for prefix in outer:
        block = acc[prefix]
        for index in _chunks(block.shape):
            part = widen(block[index])
            part /= widen(divisor[index])
            store_half(block[index], part)


def add_half(acc: Half, other: Half) -> None:
    """``acc += other`` for two float16 arrays of one shape (the float32 sum rounded to float16)."""
    for index in _chunks(acc.shape):
        part = widen(acc[index])
        part += widen(other[index])
        store_half(acc[index], part)


def scale_half(acc: Half, divisor: float) -> None:
    """``acc /= divisor`` for a float16 array and a number (float32 quotient rounded to float16)."""
    for index in _chunks(acc.shape):
        part = widen(acc[index])
        part /= np.float32(divisor)
        store_half(acc[index], part)


def order_key(values: Half, out: npt.NDArray[np.int16] | None = None) -> npt.NDArray[np.int16]:
    """int16 keys ordered as the float16 values (finite or infinite, not NaN), with ``-0 == +0``.

    The key is the magnitude bits for a positive value and their negation for a negative one.
    """
    bits = values.view(np.int16)
    sign = np.right_shift(bits, 15)  # 0 or -1
    key = np.bitwise_and(sign, 0x7FFF, out=out)
    np.bitwise_xor(key, bits, out=key)
    np.subtract(key, sign, out=key)
    return key


class RunningArgmax:
    """``argmax`` over classes handed in one at a time (float16 values), ties to the lower class as ``numpy.argmax``.

    Holds the labels (uint16) and the best key (int16) of every voxel of ``shape``; classes may come region by
    region (slabs), each region's classes in increasing order starting with 0.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.labels = np.zeros(shape, dtype=np.uint16)
        self._best = np.zeros(shape, dtype=np.int16)

    def update(self, label: int, values: Half, region: tuple[slice, ...] = ()) -> None:
        """Class ``label``'s float16 values on ``region`` of the grid (the whole grid by default)."""
        best, labels = self._best[region], self.labels[region]
        for index in _chunks(values.shape):
            if label == 0:
                order_key(values[index], out=best[index])
                continue
            key = order_key(values[index])
            better = key > best[index]
            np.copyto(labels[index], label, where=better)
            np.maximum(best[index], key, out=best[index])


def argmax_half(logits: Half) -> npt.NDArray[np.uint16]:
    """``logits.argmax(0)`` as uint16 for float16 ``[classes, ...]`` logits (NaN-free), without float16 compares."""
    running = RunningArgmax(tuple(int(s) for s in logits.shape[1:]))
    for c in range(logits.shape[0]):
        running.update(c, logits[c])
    return running.labels


__all__ = ["CHUNK", "SMALLEST_NORMAL", "RunningArgmax", "accumulate_half", "add_half", "argmax_half",
           "divide_half", "order_key", "scale_half", "snap_subnormals", "store_half", "widen"]
