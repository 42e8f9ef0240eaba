"""Pixel reading: uncompressed frames straight from their file offset with numpy (fast path), everything else
through pydicom's decoders (pylibjpeg: JPEG, JPEG-LS, JPEG 2000, RLE; gdcm as fallback). Stored values come back
sign-corrected for BitsStored; rescale to real-world values (HU for CT) is per slice.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import FileMetaDataset

from appliance.core import Instance
from appliance.ingest.errors import IngestError
from appliance.ingest.headers import EXPLICIT_BE, NATIVE_SYNTAXES

log = logging.getLogger(__name__)


class PixelDecodeError(IngestError):
    """One file's pixels could not be decoded; ``path`` names it."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path.name}: {why}")
        self.path = path
        self.why = why


def _workers() -> int:
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


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
    if np.issubdtype(arr.dtype, np.signedinteger):
        shift = width - stored
        signed: npt.NDArray[Any] = (arr << shift) >> shift
        return signed
    masked: npt.NDArray[Any] = arr & np.asarray((1 << stored) - 1, dtype=arr.dtype)
    return masked


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


def read_stored(instances: Sequence[Instance]) -> list[npt.NDArray[Any]]:
    """Stored pixel values (BitsStored applied, no rescale) of each instance, as (rows, cols) arrays."""
    out: list[npt.NDArray[Any] | None] = [None] * len(instances)
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
        out[k] = _fits_bits(_read_native(instances[k], dtype), instances[k].tags)

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
            out[k] = _fits_bits(arr, inst.tags)

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        list(pool.map(run_fast, fast, chunksize=16))
        list(pool.map(run_slow, list(slow)))
    result: list[npt.NDArray[Any]] = []
    for k, arr in enumerate(out):
        if arr is None:  # pragma: no cover - every index is filled above or an exception was raised
            raise PixelDecodeError(instances[k].path, "no pixels read")
        result.append(arr)
    return result


def rescale(stored: Sequence[npt.NDArray[Any]], instances: Sequence[Instance]) -> npt.NDArray[Any]:
    """Stack slices as (slices, rows, cols) in real-world values: slope/intercept per slice.

    Integer output when every slope is 1 and every intercept whole (int16 when it fits, e.g. CT HU), the stored
    type when there is no rescale at all, float32 otherwise.
    """
    slopes = np.asarray([float(i.tags.get("slope", 1.0)) for i in instances])
    inters = np.asarray([float(i.tags.get("intercept", 0.0)) for i in instances])
    first = stored[0]
    if np.all(slopes == 1.0) and np.all(inters == 0.0):
        return np.stack(stored)
    if np.all(slopes == 1.0) and np.all(inters == np.round(inters)) and np.issubdtype(first.dtype, np.integer):
        smallest_possible = min(int(min(a.min() for a in stored)) + int(inters.min()), 0)
        largest_possible = max(int(max(a.max() for a in stored)) + int(inters.max()), 0)
        target: type[np.integer[Any]] = np.int16
        if not (np.iinfo(np.int16).min <= smallest_possible and largest_possible <= np.iinfo(np.int16).max):
            target = np.int32
        vol = np.empty((len(stored), *first.shape), dtype=target)
        for k, a in enumerate(stored):
            np.add(a.astype(target, copy=False), target(int(inters[k])), out=vol[k])
        return vol
    vol32 = np.empty((len(stored), *first.shape), dtype=np.float32)
    for k, a in enumerate(stored):
        vol32[k] = a.astype(np.float32) * np.float32(slopes[k]) + np.float32(inters[k])
    return vol32
