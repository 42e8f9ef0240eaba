"""Pixel reading: uncompressed frames straight from their file offset with numpy (fast path), everything else
through pydicom's decoders (pylibjpeg: JPEG, JPEG-LS, JPEG 2000, RLE; gdcm as fallback). Stored values come back
sign-corrected for BitsStored; rescale to real-world values (HU for CT) is per slice.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import FileMetaDataset

from appliance.core import Instance
from appliance.ingest.errors import PixelDecodeError
from appliance.ingest.headers import EXPLICIT_BE, NATIVE_SYNTAXES

log = logging.getLogger(__name__)


def _workers() -> int:
    """Reader threads: one per core (numpy file reads and arithmetic release the GIL), at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _native_dtype(tags: dict[str, Any] | Any) -> np.dtype[Any] | None:
    bits = int(tags["bits_allocated"])
    if int(tags["samples_per_pixel"]) != 1 or bits not in (8, 16, 32):
        return None
    kind = "i" if int(tags["pixel_representation"]) else "u"
    order = ">" if tags["transfer_syntax"] == EXPLICIT_BE else "<"
    return np.dtype(f"{order}{kind}{bits // 8}")


def _fits_bits(arr: npt.NDArray[Any], tags: Any) -> npt.NDArray[Any]:
    """Apply BitsStored: sign-extend signed data, mask unsigned data (bits above BitsStored are not pixels)."""
    stored = int(tags["bits_stored"])
    width = arr.dtype.itemsize * 8
    if stored >= width or not np.issubdtype(arr.dtype, np.integer):
        return arr
    if not arr.flags.writeable:
        arr = arr.copy()
    if np.issubdtype(arr.dtype, np.signedinteger):
        shift = arr.dtype.type(width - stored)
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)
        return arr
    np.bitwise_and(arr, arr.dtype.type((1 << stored) - 1), out=arr)
    return arr


def _tile(frame: npt.NDArray[Any], mosaic: dict[str, int]) -> npt.NDArray[Any]:
    t, tiles = int(mosaic["tile"]), int(mosaic["tiles"])
    h, w = int(mosaic["tile_rows"]), int(mosaic["tile_columns"])
    r0, c0 = (t // tiles) * h, (t % tiles) * w
    return frame[r0:r0 + h, c0:c0 + w]


def _read_native(inst: Instance, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    t = inst.tags
    mosaic = t.get("mosaic")
    rows = int(mosaic["mosaic_rows"]) if mosaic else int(t["rows"])
    cols = int(mosaic["mosaic_columns"]) if mosaic else int(t["columns"])
    frame = 0 if (inst.frame is None or mosaic) else inst.frame
    offset = int(t["pixel_offset"]) + frame * rows * cols * dtype.itemsize
    arr = np.fromfile(inst.path, dtype=dtype, count=rows * cols, offset=offset)
    if arr.size != rows * cols:
        raise PixelDecodeError(inst.path, f"pixel data ends early ({arr.size} of {rows * cols} values)")
    arr = arr.reshape(rows, cols)
    if mosaic:
        arr = _tile(arr, mosaic)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def decode_file(path: Path, transfer_syntax: str) -> npt.NDArray[Any]:
    """All frames of one file through pydicom's decoders, as (frames, rows, cols)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
            if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
                meta = getattr(ds, "file_meta", None) or FileMetaDataset()
                meta.TransferSyntaxUID = transfer_syntax
                ds.file_meta = meta
            arr = np.asarray(ds.pixel_array)
    except Exception as exc:  # decoders raise many types; each becomes a named finding upstream
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PixelDecodeError(path, f"pixel data could not be decoded ({why})") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if arr.ndim == 2 or (frames == 1 and arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1) or 1) > 1):
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise PixelDecodeError(path, f"colour or unexpected pixel layout {arr.shape}; only grey-scale volumes")
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _iter_stored(instances: Sequence[Instance], sink: Callable[[int, npt.NDArray[Any]], None]) -> None:
    """Read every instance's stored values (BitsStored applied) and hand each to ``sink(index, array)``.

    Uncompressed frames are read straight from their file offset; other files are decoded once each (all
    their frames), in a thread pool.
    """
    slow: dict[Path, list[int]] = defaultdict(list)
    fast: list[tuple[int, np.dtype[Any]]] = []
    for k, inst in enumerate(instances):
        t = inst.tags
        dtype = _native_dtype(t)
        if t.get("transfer_syntax") in NATIVE_SYNTAXES and t.get("pixel_offset") is not None and dtype is not None:
            fast.append((k, dtype))
        else:
            slow[inst.path].append(k)

    def run_fast(item: tuple[int, np.dtype[Any]]) -> None:
        k, dtype = item
        sink(k, _fits_bits(_read_native(instances[k], dtype), instances[k].tags))

    def run_slow(path: Path) -> None:
        idx = slow[path]
        frames = decode_file(path, str(instances[idx[0]].tags.get("transfer_syntax", "")))
        for k in idx:
            inst = instances[k]
            mosaic = inst.tags.get("mosaic")
            f = 0 if (inst.frame is None or mosaic) else inst.frame
            if f >= frames.shape[0]:
                raise PixelDecodeError(path, f"frame {f + 1} missing (file has {frames.shape[0]})")
            arr = frames[f]
            if mosaic:
                arr = _tile(arr, mosaic)
            sink(k, _fits_bits(arr, inst.tags))

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        list(pool.map(run_fast, fast))
        list(pool.map(run_slow, list(slow)))


def read_stored(instances: Sequence[Instance]) -> list[npt.NDArray[Any]]:
    """Stored pixel values (BitsStored applied, no rescale) of each instance, as (rows, cols) arrays."""
    out: list[npt.NDArray[Any]] = [np.empty(0)] * len(instances)
    _iter_stored(instances, out.__setitem__)
    return out


def _stored_range(tags: Any) -> tuple[int, int] | None:
    """Smallest and largest stored value BitsStored allows (None for non-integer layouts)."""
    dtype = _native_dtype(tags)
    if dtype is None:
        return None
    bits = int(tags["bits_stored"])
    if int(tags["pixel_representation"]):
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _output_dtype(instances: Sequence[Instance]) -> tuple[np.dtype[Any], bool]:
    """The voxel type of the rescaled volume, and whether it must be narrowed to int16 after reading.

    No rescale at all: the stored type. Slope 1 and whole intercepts: int16 when the stored range plus the
    intercepts fits, else int32 (narrowed to int16 afterwards when the actual values fit). Otherwise float32.
    """
    slopes = {float(i.tags.get("slope", 1.0)) for i in instances}
    inters = [float(i.tags.get("intercept", 0.0)) for i in instances]
    first = instances[0].tags
    native = _native_dtype(first)
    if slopes == {1.0} and not any(inters) and native is not None:
        return native.newbyteorder("="), False
    if slopes == {1.0} and all(v == round(v) for v in inters):
        rng = _stored_range(first)
        if rng is not None:
            lo, hi = rng[0] + min(inters), rng[1] + max(inters)
            if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
                return np.dtype(np.int16), False
            return np.dtype(np.int32), True
    return np.dtype(np.float32), False


def _rescale_into(out: npt.NDArray[Any], arr: npt.NDArray[Any], slope: float, intercept: float) -> None:
    if slope == 1.0 and intercept == 0.0:
        out[...] = arr
    elif np.issubdtype(out.dtype, np.integer):
        np.add(arr, out.dtype.type(intercept), out=out, casting="unsafe")
    else:
        np.multiply(arr, np.float32(slope), out=out, casting="unsafe")
        out += np.float32(intercept)


def _narrow(vol: npt.NDArray[Any], narrow: bool) -> npt.NDArray[Any]:
    info = np.iinfo(np.int16)
    if narrow and vol.size and int(vol.min()) >= info.min and int(vol.max()) <= info.max:
        return vol.astype(np.int16)
    return vol


def load_pixels(instances: Sequence[Instance]) -> npt.NDArray[Any]:
    """The stack as (slices, rows, cols) in real-world values (per-slice slope/intercept; HU for CT)."""
    dtype, narrow = _output_dtype(instances)
    first = instances[0].tags
    vol = np.empty((len(instances), int(first["rows"]), int(first["columns"])), dtype=dtype)

    def sink(k: int, arr: npt.NDArray[Any]) -> None:
        if arr.shape != vol.shape[1:]:
            raise PixelDecodeError(instances[k].path, f"image size {arr.shape} differs from the stack {vol.shape[1:]}")
        tags = instances[k].tags
        _rescale_into(vol[k], arr, float(tags.get("slope", 1.0)), float(tags.get("intercept", 0.0)))

    _iter_stored(instances, sink)
    return _narrow(vol, narrow)


def rescale(stored: Sequence[npt.NDArray[Any]], instances: Sequence[Instance]) -> npt.NDArray[Any]:
    """Stack already-read stored slices as (slices, rows, cols) in real-world values (see :func:`load_pixels`)."""
    dtype, narrow = _output_dtype(instances)
    vol = np.empty((len(stored), *stored[0].shape), dtype=dtype)
    for k, (arr, inst) in enumerate(zip(stored, instances, strict=True)):
        _rescale_into(vol[k], arr, float(inst.tags.get("slope", 1.0)), float(inst.tags.get("intercept", 0.0)))
    return _narrow(vol, narrow)
