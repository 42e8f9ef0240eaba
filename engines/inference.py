"""Run one model pack on an array: normalise, crop, infer (whole block or sliding window), argmax, put back.

The steps and their parameters come from the pack manifest; this module only sequences them. Label values in the
result are the pack's ``labels[].value`` (0 = background).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from engines.backends import Backend
from engines.errors import InferenceError
from engines.packs import ModelPack
from engines.preprocessing import crop, foreground_box, normalise_intensity, uncrop
from engines.sliding_window import argmax_labels, resample_zoom, sliding_window_probabilities, zoom_factors

log = logging.getLogger(__name__)


@dataclass
class PackOutput:
    """Labels on the input grid plus what happened (crop box, timings)."""

    labels: npt.NDArray[np.uint16]
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def _to_host(array: Any) -> npt.NDArray[Any]:
    return np.asarray(array.get() if hasattr(array, "get") else array)


def label_lookup(pack: ModelPack) -> npt.NDArray[np.uint16]:
    """Channel → label value table (unlisted channels → 0)."""
    lut = np.zeros(max(pack.classes, 1), dtype=np.uint16)
    for lab in pack.labels:
        lut[lab.channel] = lab.structure.label
    return lut


def _postprocess(labels: npt.NDArray[np.uint16], steps: Sequence[Any]) -> npt.NDArray[np.uint16]:
    from scipy import ndimage

    for step in steps:
        if step["step"] == "largest_component":
            fg = labels > 0
            comp, n = ndimage.label(fg)
            if n > 1:
                sizes = np.bincount(comp.ravel())
                sizes[0] = 0
                labels = np.where(comp == int(sizes.argmax()), labels, 0).astype(np.uint16)
        elif step["step"] == "fill_holes":
            fg = labels > 0
            filled = ndimage.binary_fill_holes(fg)
            value = int(step.get("value", np.bincount(labels[fg]).argmax() if fg.any() else 1))
            labels = np.where(filled & ~fg, value, labels).astype(np.uint16)
    return labels


def run_pack(pack: ModelPack, array: npt.NDArray[Any], backend: Backend,
             spacing: Sequence[float] | None = None, mask: npt.NDArray[Any] | None = None) -> PackOutput:
    """Segment ``array`` (already on the pack's grid for ``fixed`` packs) with ``pack`` on ``backend``."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    xp = backend.xp
    x = normalise_intensity(xp.asarray(array), pack.normalisation)
    details: dict[str, Any] = {"normalisation": dict(pack.normalisation)}
    box = None
    for step in pack.preprocessing:
        if step["step"] == "crop_to_foreground":
            box = foreground_box(x, float(step.get("threshold", 0.0)), int(step.get("padding", 0)))
        elif step["step"] == "mask_with_pack":
            if mask is None:
                raise InferenceError(f"pack {pack.name} needs a brain mask from {step.get('pack', 'a mask pack')} "
                                     "first; run it through a preset that provides one")
            box = foreground_box(x, 0.0, int(step.get("padding", 0)), mask=xp.asarray(mask))
    block = crop(x, box) if box is not None else x
    if box is not None:
        details["crop"] = {"start": list(box.start), "stop": list(box.stop), "padding": box.padding}
    if pack.axis_order == "kji":
        block = block.transpose(2, 1, 0)
    timings["preprocess_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    if pack.size_policy == "sliding_window" and pack.patch_size is not None:
        resampled = block
        if spacing is not None:
            factors = zoom_factors(spacing if pack.axis_order == "ijk" else list(spacing)[::-1], pack.spacing_mm)
            resampled = resample_zoom(block, factors, order=1)
        probs = sliding_window_probabilities(backend, resampled, pack.patch_size, pack.overlap, pack.classes)
        channels = argmax_labels(probs)
        if channels.shape != block.shape:
            channels = resample_zoom(channels, [1, 1, 1], order=0, output_shape=block.shape)
    else:
        logits = backend.forward(xp.ascontiguousarray(block[None, None]))
        if int(logits.shape[1]) != pack.classes:
            raise InferenceError(f"pack {pack.name}: network gave {logits.shape[1]} classes, "
                                 f"the manifest says {pack.classes}")
        channels = argmax_labels(logits[0])
    timings["inference_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    if pack.axis_order == "kji":
        channels = channels.transpose(2, 1, 0)
    channels = _to_host(channels)
    if box is not None:
        channels = uncrop(channels, box)
    labels = label_lookup(pack)[channels]
    if mask is not None:
        labels[np.asarray(_to_host(mask)) == 0] = 0
    labels = _postprocess(labels, pack.postprocessing)
    timings["postprocess_s"] = time.perf_counter() - t2
    return PackOutput(labels.astype(np.uint16), timings, details)
