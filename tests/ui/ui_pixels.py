"""Pixel helpers for the browser tests: decode screenshots and count coloured pixels."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image


def rgb(png: bytes) -> npt.NDArray[np.int16]:
    """(H, W, 3) int16 array of a PNG screenshot."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def mask_dominant(img: npt.NDArray[np.int16], channel: int, margin: int = 50, floor: int = 90) -> npt.NDArray[np.bool_]:
    """Pixels where ``channel`` (0 red, 1 green, 2 blue) exceeds ``floor`` and both others by ``margin``."""
    others = [c for c in range(3) if c != channel]
    c = img[..., channel]
    return (c > floor) & (c - img[..., others[0]] > margin) & (c - img[..., others[1]] > margin)


def non_background(img: npt.NDArray[np.int16], threshold: int = 24) -> int:
    """Pixels brighter than a black background."""
    return int((img.max(axis=2) > threshold).sum())


def bbox(mask: npt.NDArray[np.bool_]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the True pixels (inclusive)."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("no pixels in mask")
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def changed_fraction(a: npt.NDArray[np.int16], b: npt.NDArray[np.int16], threshold: int = 30) -> float:
    """Fraction of pixels whose colour changed by more than ``threshold`` in some channel."""
    return float((np.abs(a - b).max(axis=2) > threshold).mean())
