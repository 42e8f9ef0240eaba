"""nnU-Net's sliding-window prediction with Gaussian blending, mirroring and fold averaging, on any backend.

Reproduced rules (``nnunetv2.inference``; written anew):

* an image smaller than the patch is padded with zeros, centred (the odd voxel after the image);
* tile starts per axis: ``n = ceil((size - patch) / (patch * step)) + 1`` tiles spread evenly over
  ``[0, size - patch]`` and rounded half to even (``numpy.round``); tiles run x-major, z fastest;
* importance map: a unit impulse at ``patch // 2`` blurred with ``scipy.ndimage.gaussian_filter`` (sigma = patch /
  8, zero outside), scaled to a maximum of 10, stored in float16 (via float32, as torch converts), zeros replaced
  by the smallest non-zero value;
* mirroring: the logits of the tile and of every non-empty combination of the mirror axes (singles, pairs, the
  triple, in ``itertools.combinations`` order), flipped back, summed in float32 and divided by their number;
* blending: ``logits += tile * weight`` and ``weights += weight`` in float16 accumulators, then a float16
  division; folds: the per-fold float16 results are summed in float16 and divided by the number of folds
  (a mean of logits, not of probabilities).

Memory: the two float16 accumulators (``classes x`` the resampled, cropped image) plus one batch of tiles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from engines.nnunet.errors import NumericalError
from engines.nnunet.half import accumulate_half, add_half, divide_half, scale_half

#: ``forward(batch [N, 1, *patch] float32) -> logits [N, classes, *patch]`` (a backend's ``forward``).
Forward = Callable[[npt.NDArray[np.float32]], Any]


def tile_starts(size: int, patch: int, step: float) -> list[int]:
    """Start offsets of the tiles along one axis (``size >= patch``)."""
    count = math.ceil((size - patch) / (patch * step)) + 1
    if count <= 1:
        return [0]
    spacing = (size - patch) / (count - 1)
    return [int(np.round(spacing * i)) for i in range(count)]


def importance_map(patch: Sequence[int], sigma_scale: float = 0.125, value_scale: float = 10.0) \
        -> npt.NDArray[np.float16]:
    """nnU-Net's Gaussian importance map (float16)."""
    impulse = np.zeros(tuple(int(p) for p in patch))
    impulse[tuple(int(p) // 2 for p in patch)] = 1
    blurred = ndimage.gaussian_filter(impulse, [int(p) * sigma_scale for p in patch], 0, mode="constant", cval=0)
    blurred /= np.max(blurred) / value_scale
    weight = blurred.astype(np.float32).astype(np.float16)  # torch's double -> half goes through float32
    zero = weight == 0
    if zero.any():
        weight[zero] = weight[~zero].min()
    out: npt.NDArray[np.float16] = weight
    return out


def pad_to_patch(data: npt.NDArray[np.float32], patch: Sequence[int]) \
        -> tuple[npt.NDArray[np.float32], tuple[slice, ...]]:
    """Zero-pad ``[C, X, Y, Z]`` up to ``patch`` (centred) and the slices that undo it."""
    pads = [(0, 0)]
    for size, p in zip(data.shape[1:], patch, strict=True):
        extra = max(int(p) - int(size), 0)
        pads.append((extra // 2, extra - extra // 2))
    if not any(hi or lo for lo, hi in pads):
        return data, tuple(slice(0, s) for s in data.shape[1:])
    padded = np.pad(data, pads, mode="constant", constant_values=0)
    undo = tuple(slice(lo, lo + size) for (lo, _), size in zip(pads[1:], data.shape[1:], strict=True))
    return padded, undo


def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Non-empty combinations of ``axes`` in the order nnU-Net evaluates them."""
    return [c for r in range(1, len(axes) + 1) for c in itertools.combinations(tuple(axes), r)]


def _to_numpy(array: Any) -> npt.NDArray[np.float32]:
    return np.asarray(array.get() if hasattr(array, "get") else array, dtype=np.float32)


def predict_tile(forward: Forward, tile: npt.NDArray[np.float32], mirror_axes: Sequence[int]) \
        -> npt.NDArray[np.float32]:
    """Logits ``[classes, *patch]`` of one ``[C, *patch]`` tile, averaged over its mirrored copies.

    The copies run one at a time (as nnU-Net does), so memory stays at one tile's logits however many classes.
    """
    combos = mirror_combinations(mirror_axes)
    total = _to_numpy(forward(np.ascontiguousarray(tile[None])))[0]
    if not total.flags.writeable:  # blending scales the tile's logits in place
        total = total.copy()
    for combo in combos:
        axes = tuple(a + 1 for a in combo)
        flipped = np.ascontiguousarray(np.flip(tile, axis=axes)[None])
        total += np.flip(_to_numpy(forward(flipped))[0], axis=axes)
    if combos:
        total /= len(combos) + 1
    out: npt.NDArray[np.float32] = total
    return out


def _inside(corner: Sequence[int], patch: Sequence[int], undo: Sequence[slice]) \
        -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The part of the tile at ``corner`` (padded grid) that lies on the image: slices into the tile and the image."""
    tile, image = [], []
    for c, p, u in zip(corner, patch, undo, strict=True):
        lo, hi = max(c, u.start), min(c + p, u.stop)
        tile.append(slice(lo - c, hi - c))
        image.append(slice(lo - u.start, hi - u.start))
    return tuple(tile), tuple(image)


def blend_tile(logits: npt.NDArray[np.float16], weights: npt.NDArray[np.float16],
               prediction: npt.NDArray[np.float32], weight: npt.NDArray[np.float16],
               weight32: npt.NDArray[np.float32], add_weight: bool = True) -> None:
    """nnU-Net's ``logits += prediction * weight; weights += weight`` for one tile's window (views of one shape).

    The float32 product is rounded into the float16 accumulator as torch does (:mod:`engines.nnunet.half`); a
    window no earlier tile touched takes ``0 + product`` without reading the zeros back. ``prediction`` is consumed;
    ``add_weight=False`` leaves ``weights`` alone (another fold's logits share them).
    """
    accumulate_half(logits, prediction, weight32, fresh=not weights.any())
    if add_weight:
        weights += weight


def predict_logits(forward: Forward, data: npt.NDArray[np.float32], patch: Sequence[int], classes: int,
                   step: float = 0.5, mirror_axes: Sequence[int] = (), weight: npt.NDArray[np.float16] | None = None,
                   progress: Callable[[float], None] | None = None) -> npt.NDArray[np.float16]:
    """Blended logits ``[classes, X, Y, Z]`` (float16) of one network over ``data`` ``[C, X, Y, Z]``.

    Tiles run over the zero-padded image as in nnU-Net; only the image's voxels are accumulated (the padding's
    logits are cut away at the end in nnU-Net, and no voxel's value depends on another's).
    """
    patch = tuple(int(p) for p in patch)
    padded, undo = pad_to_patch(data, patch)
    shape = padded.shape[1:]
    weight = importance_map(patch) if weight is None else weight
    weight32 = weight.astype(np.float32)
    image = tuple(int(s) for s in data.shape[1:])
    logits = np.zeros((classes, *image), dtype=np.float16)
    weights = np.zeros(image, dtype=np.float16)
    corners = list(itertools.product(*(tile_starts(s, p, step) for s, p in zip(shape, patch, strict=True))))
    for n, corner in enumerate(corners):
        window = tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))
        tile = np.ascontiguousarray(padded[(slice(None), *window)])
        prediction = predict_tile(forward, tile, mirror_axes)
        inside, target = _inside(corner, patch, undo)
        blend_tile(logits[(slice(None), *target)], weights[target], prediction[(slice(None), *inside)],
                   weight[inside], weight32[inside])
        del prediction
        if progress is not None:
            progress((n + 1) / len(corners))
    divide_half(logits, weights)
    if not np.all(np.isfinite(logits)):
        raise NumericalError("float16 logits overflowed; the network's logits are too large for nnU-Net's "
                             "float16 accumulation")
    return logits


def ensemble_logits(per_fold: Callable[[int], npt.NDArray[np.float16]], folds: int) -> npt.NDArray[np.float16]:
    """nnU-Net's fold average: float16 sum of each fold's logits, then division by the fold count."""
    total = per_fold(0)
    for k in range(1, folds):
        add_half(total, per_fold(k))
    if folds > 1:
        scale_half(total, folds)
    return total


__all__ = ["Forward", "blend_tile", "ensemble_logits", "importance_map", "mirror_combinations", "pad_to_patch",
           "predict_logits", "predict_tile", "tile_starts"]
