"""Shared builders for the engines tests: small tfjs models, small ONNX packs, small volumes (no tests here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engines.packs import sha256_file, write_manifest

BRAINCHOP = Path("models/brainchop/public/models")
T1 = Path("models/brainchop/public/t1_crop.nii.gz")
NIIVUE = Path("models/niivue-onnx/model.onnx")


def write_tfjs(folder: Path, layers: list[dict[str, Any]], weights: list[tuple[str, np.ndarray]],
               shards: int = 1) -> Path:
    """A tfjs layers-model folder: ``layers`` (after the input) chained, ``weights`` in manifest order."""
    folder.mkdir(parents=True, exist_ok=True)
    topo_layers: list[dict[str, Any]] = [{"class_name": "InputLayer", "name": "input", "inbound_nodes": [],
                                          "config": {"name": "input", "batch_input_shape": [None, 8, 8, 8, 1]}}]
    prev = "input"
    for layer in layers:
        topo_layers.append({"class_name": layer["class_name"], "name": layer["config"]["name"],
                            "config": layer["config"], "inbound_nodes": [[[prev, 0, 0, {}]]]})
        prev = layer["config"]["name"]
    blob = b"".join(np.ascontiguousarray(w, dtype="<f4").tobytes() for _, w in weights)
    cut = len(blob) // shards // 4 * 4
    paths = []
    for i in range(shards):
        part = blob[i * cut:(i + 1) * cut] if i < shards - 1 else blob[i * cut:]
        name = f"group1-shard{i + 1}of{shards}.bin"
        (folder / name).write_bytes(part)
        paths.append(name)
    spec = {
        "format": "layers-model",
        "modelTopology": {"model_config": {"class_name": "Functional", "config": {
            "name": "m", "layers": topo_layers, "input_layers": [["input", 0, 0]], "output_layers": [[prev, 0, 0]]}}},
        "weightsManifest": [{"paths": paths, "weights": [
            {"name": n, "shape": list(w.shape), "dtype": "float32"} for n, w in weights]}],
    }
    (folder / "model.json").write_text(json.dumps(spec))
    return folder


def conv(name: str, filters: int, kernel: int = 3, dilation: int = 1, bias: bool = True,
         activation: str = "linear") -> dict[str, Any]:
    """A Conv3D layer entry."""
    return {"class_name": "Conv3D", "config": {
        "name": name, "filters": filters, "kernel_size": [kernel] * 3, "dilation_rate": [dilation] * 3,
        "padding": "same", "strides": [1, 1, 1], "activation": activation, "use_bias": bias,
        "data_format": "channels_last"}}


def act(name: str, kind: str) -> dict[str, Any]:
    """An Activation layer entry."""
    return {"class_name": "Activation", "config": {"name": name, "activation": kind}}


def threshold_onnx(path: Path, thresholds: list[float]) -> Path:
    """A pointwise ONNX 'network': class c wins where the intensity passes thresholds[c-1] (1x1x1 Conv)."""
    classes = len(thresholds) + 1
    slope = np.arange(classes, dtype=np.float32) * 10.0
    # logit_c = 10*c*x - 10*sum(thr[:c]) → argmax = number of thresholds passed (thresholds ascending)
    bias = -10.0 * np.concatenate([[0.0], np.cumsum(thresholds)]).astype(np.float32)
    w = slope.reshape(classes, 1, 1, 1, 1)
    node = helper.make_node("Conv", ["input", "w", "b"], ["logits"], kernel_shape=[1, 1, 1])
    graph = helper.make_graph(
        [node], "threshold",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "D", "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes, "D", "H", "W"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def make_pack(root: Path, name: str, labels: list[tuple[str, str]], thresholds: list[float] | None = None,
              **overrides: Any) -> Path:
    """A valid pack folder with a threshold network; ``labels`` = [(name, category), ...] for channels 1..n."""
    root.mkdir(parents=True, exist_ok=True)
    thresholds = thresholds or [0.5 + 0.1 * i for i in range(len(labels))]
    onnx_path = threshold_onnx(root / "model.onnx", thresholds)
    manifest: dict[str, Any] = {
        "schema": 1, "name": name, "version": "0.1.0", "licence": "CC0-1.0", "modality": "MR",
        "body_region": "head",
        "model": {"file": "model.onnx", "sha256": sha256_file(onnx_path)},
        "input": {"spacing_mm": [1, 1, 1], "orientation": "LIA", "size_policy": "fixed", "shape": [256, 256, 256]},
        "normalisation": {"method": "minmax"},
        "labels": [{"channel": i + 1, "name": n, "color": [10 * i, 20, 30], "category": c}
                   for i, (n, c) in enumerate(labels)],
        "preprocessing": [{"step": "crop_to_foreground", "threshold": 0.0, "padding": 2}],
    }
    manifest.update(overrides)
    write_manifest(root, manifest)
    return root
