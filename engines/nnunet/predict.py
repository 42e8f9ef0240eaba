"""Run an imported nnU-Net pack on an appliance ``Volume``: the equivalent of ``nnUNetPredictor`` on one image.

Order of operations (nnU-Net's): orientation/transpose -> crop to non-zero -> normalise -> resample to the target
spacing (order 3, separate-z rule) -> sliding window per fold (Gaussian blending, mirroring, float16 accumulators)
-> mean of the folds' logits -> resample the logits back to the cropped shape (order 1, float16) -> argmax ->
un-crop -> inverse transpose/orientation. The last resampling and the argmax run one class at a time
(:func:`engines.nnunet.resampling.resample_argmax`), so the image grid never holds every class's logits.
Each fold's ONNX file is checked against its sha256 before it runs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import LabelMap, Volume
from appliance.typed import Device, ProgressCallback
from engines.nnunet.errors import NnUNetPackError
from engines.nnunet.preprocessing import layout_for, preprocess
from engines.nnunet.recipe import NnUNetRecipe, recipe_from_manifest
from engines.nnunet.resampling import new_shape_for, resample, resample_argmax
from engines.nnunet.sliding_window import Forward, ensemble_logits, importance_map, predict_logits
from engines.nnunet.streaming import StreamingArgmax, back_coordinates, can_stream, stream_predict

log = logging.getLogger(__name__)
MANIFEST = "pack.json"


@dataclass(frozen=True)
class NnUNetPack:
    """An installed nnU-Net pack: its folder, manifest and recipe."""

    root: Path
    manifest: dict[str, Any]
    recipe: NnUNetRecipe

    @property
    def name(self) -> str:
        """The pack's name (``--preset pack:NAME``)."""
        return str(self.manifest["name"])

    def onnx_path(self, fold_index: int) -> Path:
        """Absolute path of the ``fold_index``-th fold's ONNX file."""
        return self.root / self.recipe.folds[fold_index].file

    def provenance(self) -> dict[str, Any]:
        """What outputs record about the pack."""
        return {"name": self.name, "version": self.manifest.get("version"), "licence": self.manifest.get("licence"),
                "engine": "nnunet", "configuration": self.recipe.configuration,
                "folds": [{"fold": f.fold, "sha256": f.sha256} for f in self.recipe.folds]}


def is_nnunet_pack(root: Path) -> bool:
    """Whether ``root`` holds a ``pack.json`` of engine ``nnunet``."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("engine") == "nnunet")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def load_nnunet_pack(root: Path, verify: bool = True) -> NnUNetPack:
    """Read the pack in ``root``; ``verify`` rechecks every fold's sha256."""
    from engines.packs import sha256_file

    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NnUNetPackError(f"{root / MANIFEST} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict):
        raise NnUNetPackError(f"{root / MANIFEST} must hold a JSON object")
    recipe = recipe_from_manifest(manifest)
    for fold in recipe.folds:
        path = root / fold.file
        if not path.is_file() or path.parent.resolve() != root.resolve():
            raise NnUNetPackError(f"pack {manifest.get('name')!r}: fold {fold.fold} file {fold.file!r} is missing")
        if verify and sha256_file(path) != fold.sha256:
            raise NnUNetPackError(f"pack {manifest.get('name')!r}: {fold.file} does not match its sha256; the file "
                                  "was altered or damaged: import the model again")
    return NnUNetPack(root, manifest, recipe)


@dataclass
class Prediction:
    """Labels on the volume's grid (values = nnU-Net label values) and what happened."""

    labels: npt.NDArray[np.uint16]
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


#: Above this many bytes of network-grid float16 logits (classes x voxels x folds x 2 B) the prediction is streamed
#: in slabs (:mod:`engines.nnunet.streaming`); below it the whole-volume path runs (same labels either way).
STREAM_ABOVE_BYTES = 1 << 30


def predict_labels(recipe: NnUNetRecipe, forwards: Sequence[Forward], volume: Volume,
                   progress: ProgressCallback | None = None,
                   stream_above_bytes: int | None = STREAM_ABOVE_BYTES) -> Prediction:
    """nnU-Net's prediction of ``volume`` with one ``forward`` per fold (in the recipe's fold order).

    ``stream_above_bytes``: stream when the network-grid logits would be larger (``None``: never; ``0``: always,
    where the resampling rule allows it).
    """
    if len(forwards) != len(recipe.folds):
        raise NnUNetPackError(f"{len(forwards)} networks given for {len(recipe.folds)} folds")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    layout = layout_for(volume, recipe.input_orientation, recipe.transpose_forward, recipe.transpose_backward)
    data, spacing, crop = preprocess(volume, layout, recipe.channels)
    cropped_shape = tuple(int(s) for s in data.shape[1:])
    target_shape = new_shape_for(cropped_shape, spacing, recipe.spacing)
    data = resample(data, target_shape, spacing, recipe.spacing, recipe.data_resampling, recipe.anisotropy_threshold)
    timings["preprocess_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    weight = importance_map(recipe.patch_size, recipe.gaussian_sigma_scale, recipe.gaussian_value_scale)
    logit_bytes = recipe.num_heads * int(np.prod(target_shape)) * 2 * len(forwards)
    streamed = (stream_above_bytes is not None and logit_bytes > stream_above_bytes
                and can_stream(recipe.probabilities_resampling))
    if streamed:
        cropped_labels = _streamed(recipe, forwards, data, weight, cropped_shape, spacing, progress)
        timings["inference_and_back_s"] = time.perf_counter() - t1
    else:
        cropped_labels = _whole_volume(recipe, forwards, data, weight, cropped_shape, spacing, progress, timings)
    del data
    t2 = time.perf_counter()
    labels = layout.to_volume(crop.uncrop(cropped_labels))
    del cropped_labels
    timings["postprocess_s"] = time.perf_counter() - t2
    details = {"spacing_in": list(spacing), "shape_cropped": list(cropped_shape), "shape_network": list(target_shape),
               "crop": [list(b) for b in crop.box], "mirror_axes": list(recipe.mirror_axes),
               "folds": [f.fold for f in recipe.folds], "fold_combination": recipe.fold_combination,
               "streamed": streamed, "network_logits_gib": round(logit_bytes / 2**30, 3)}
    return Prediction(labels, timings, details)


def _whole_volume(recipe: NnUNetRecipe, forwards: Sequence[Forward], data: npt.NDArray[np.float32],
                  weight: npt.NDArray[np.float16], cropped_shape: tuple[int, ...], spacing: Sequence[float],
                  progress: ProgressCallback | None, timings: dict[str, float]) -> npt.NDArray[np.uint16]:
    """Every fold's logits over the whole network grid, their mean, then back one class at a time."""
    t1 = time.perf_counter()

    def fold_logits(k: int) -> npt.NDArray[np.float16]:
        def step(fraction: float) -> None:
            if progress is not None:
                progress("nnunet", (k + fraction) / len(forwards))

        return predict_logits(forwards[k], data, recipe.patch_size, recipe.num_heads, recipe.tile_step,
                              recipe.mirror_axes, weight, step)

    logits = ensemble_logits(fold_logits, len(forwards))
    timings["inference_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    labels = resample_argmax(logits, cropped_shape, recipe.spacing, spacing, recipe.probabilities_resampling,
                             recipe.anisotropy_threshold)
    timings["back_s"] = time.perf_counter() - t2
    return labels


def _streamed(recipe: NnUNetRecipe, forwards: Sequence[Forward], data: npt.NDArray[np.float32],
              weight: npt.NDArray[np.float16], cropped_shape: tuple[int, ...], spacing: Sequence[float],
              progress: ProgressCallback | None) -> npt.NDArray[np.uint16]:
    """The same labels, slab by slab (:mod:`engines.nnunet.streaming`)."""
    coords = back_coordinates(data.shape[1:], cropped_shape, recipe.spacing, spacing,
                              recipe.probabilities_resampling, recipe.anisotropy_threshold)
    sink = StreamingArgmax(recipe.num_heads, data.shape[1:], coords)

    def step(fraction: float) -> None:
        if progress is not None:
            progress("nnunet", fraction)

    stream_predict(forwards, data, recipe.patch_size, recipe.num_heads, recipe.tile_step, recipe.mirror_axes,
                   weight, sink, step)
    return sink.labels


def run_nnunet_pack(pack: NnUNetPack, volume: Volume, device: Device = "cpu", backend: str = "onnxruntime",
                    progress: ProgressCallback | None = None) -> LabelMap:
    """Segment ``volume`` with ``pack`` on ``backend`` (onnxruntime by default) and return a named LabelMap."""
    from engines.backends import choose_backend, create_backend

    choice = choose_backend(device, backend)
    runners = [create_backend(choice, pack.onnx_path(k), sha256=f.sha256) for k, f in enumerate(pack.recipe.folds)]
    result = predict_labels(pack.recipe, [r.forward for r in runners], volume, progress)
    metadata = {"preset": f"pack:{pack.name}", "pack": pack.provenance(), "backend": choice.as_dict(),
                "timings": result.timings, "nnunet": result.details}
    log.info("nnU-Net pack %s: %s", pack.name, {k: round(v, 2) for k, v in result.timings.items()})
    return LabelMap.on(volume, result.labels, pack.recipe.structures, metadata)


__all__ = ["MANIFEST", "STREAM_ABOVE_BYTES", "NnUNetPack", "Prediction", "is_nnunet_pack", "load_nnunet_pack",
           "predict_labels", "run_nnunet_pack"]
