"""Data layout shared by every marching-cubes path (NumPy oracle, compiled CPU build, CUDA kernels).

The padded grid geometry (:class:`Grid`), the label dtypes the kernels read (:data:`LABEL_KINDS`), the raw label
-> compact id lookup table, and step 6 (:func:`split_by_label`, array code run by NumPy and CuPy alike) live here,
so :mod:`kernels.marching_cubes`, :mod:`kernels._native` and :mod:`kernels._cuda` import them from one place and
not from each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import Structure

#: Voxels per bit word along the last axis of the padded grid.
WORD_BITS = 64


@dataclass(frozen=True)
class Grid:
    """Padded grid geometry shared by both implementations."""

    shape: tuple[int, int, int]  # data shape (n0, n1, n2)
    padded: tuple[int, int, int]  # (P0, P1, P2); P2 a multiple of 64
    n_ids: int  # compact label ids 1..n_ids (0 = background / not meshed)

    @classmethod
    def for_shape(cls, shape: Sequence[int], n_ids: int) -> Grid:
        """The grid of a data array of ``shape``: one background voxel on each side, ``P2`` rounded up to 64."""
        n0, n1, n2 = (int(s) for s in shape)
        p2 = -(-(n2 + 2) // WORD_BITS) * WORD_BITS
        return cls((n0, n1, n2), (n0 + 2, n1 + 2, p2), n_ids)

    @property
    def words(self) -> int:
        """64-voxel words per row."""
        return self.padded[2] // WORD_BITS

    @property
    def strides(self) -> tuple[int, int, int]:
        """Flat-index strides of the padded grid."""
        _, p1, p2 = self.padded
        return (p1 * p2, p2, 1)


#: Label dtypes the kernels read as they are -> ``LABEL_KIND`` of ``marching_cubes.cu``.
LABEL_KINDS: dict[np.dtype[Any], int] = {
    np.dtype(np.uint8): 0,
    np.dtype(np.uint16): 1,
    np.dtype(np.int16): 2,
    np.dtype(np.int32): 3,
}


def native_labels(labels: Any, xp: Any = np) -> Any:
    """Labels in a dtype the kernels read: uint8/uint16/int16/int32 unchanged; any other integer type as int32,
    with values outside 0..65535 (which no structure can carry) set to background."""
    if np.dtype(labels.dtype) in LABEL_KINDS:
        return labels
    wide = labels.astype(xp.int64)
    return xp.where((wide < 0) | (wide > 65535), 0, wide).astype(xp.int32)


def label_lut(structures: Sequence[Structure]) -> npt.NDArray[np.uint16]:
    """Raw label value (0..65535) -> compact id (1..K in the order of ``structures``; 0 = not meshed)."""
    lut = np.zeros(65536, dtype=np.uint16)
    for i, s in enumerate(structures):
        lut[s.label] = i + 1
    return lut


def lut_lookup(values: Any, lut: Any, xp: Any = np) -> Any:
    """Compact ids of raw label values (0 for values outside 0..65535)."""
    if values.dtype in (xp.uint8, xp.uint16):
        return lut[values]
    v = values.astype(xp.int64)
    return xp.where((v >= 0) & (v < 65536), lut[xp.clip(v, 0, 65535)], 0)


def _stable_label_order(ids: Any, xp: Any) -> Any:
    """Permutation sorting by label id, ties in index order: a radix sort of 16-bit keys on the CPU; unique
    composite keys on the GPU (so the result does not depend on the sort's stability). Same permutation."""
    if xp is np:
        return np.argsort(ids.astype(np.uint16), kind="stable")
    return xp.argsort(ids.astype(xp.int64) * max(1, ids.shape[0]) + xp.arange(ids.shape[0], dtype=xp.int64))


def split_by_label(
    tri_slots: Any, tri_lab: Any, lo: Any, hi: Any, n_ids: int, xp: Any = np
) -> tuple[Any, Any, Any, Any]:
    """Step 6 (array code shared by NumPy and CuPy): group slots and triangles by label id.

    Returns ``(slot_vertex, slot_offsets, local_faces, tri_offsets)``: the global vertex of each label's slots
    (label after label), ``slot_offsets[id]..slot_offsets[id+1]``, faces renumbered per label, and
    ``tri_offsets`` likewise for the faces.
    """
    slot_lab = xp.stack([lo, hi], axis=1).reshape(-1)
    order = _stable_label_order(slot_lab, xp)
    counts = xp.bincount(slot_lab, minlength=n_ids + 1)
    slot_offsets = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(counts)])
    index_type = xp.int32 if order.size < 2**31 else xp.int64
    inverse = xp.empty(order.size, dtype=index_type)
    inverse[order] = xp.arange(order.size, dtype=index_type)
    tri_order = _stable_label_order(tri_lab, xp)
    faces = inverse[tri_slots[tri_order]] - slot_offsets[tri_lab[tri_order]][:, None]
    tcounts = xp.bincount(tri_lab, minlength=n_ids + 1)
    tri_offsets = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(tcounts)])
    return order // 2, slot_offsets, faces, tri_offsets
