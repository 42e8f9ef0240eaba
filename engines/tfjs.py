"""TensorFlow.js *layers* models → ONNX, written with the ``onnx.helper`` API (no TensorFlow needed).

Covers what the brainchop MeshNet networks use: ``InputLayer``, ``Conv3D`` (channels-last, ``same``/``valid``
padding, dilation, inline activation), ``Activation`` (relu, elu, gelu, sigmoid, tanh, softmax, linear) and
``Dropout`` (identity at inference). Two facts the tfjs file does not state are handled explicitly:

* **Group normalisation of mindgrab**: every ``Conv3D`` whose name ends in ``_gn`` is followed by a per-channel
  normalisation over the spatial axes with the affine part switched off (brainchop applies it by hand after the
  layer). In ONNX this is ``InstanceNormalization`` with scale 1, bias 0 and epsilon 1e-5.
* **Axis order**: brainchop transposes the volume before it reaches the tfjs model, so the tfjs depth/height/width
  axes are the NIfTI array's (i, j, k). With ``axis_order="ijk"`` (default) the ONNX model takes the nibabel array
  as it is; ``"kji"`` reverses the kernels instead (what niivue's exported ``model.onnx`` does).

The ONNX graph takes ``input`` ``[N, 1, D, H, W]`` float32 and returns ``logits`` ``[N, classes, D, H, W]``; the
spatial size is dynamic so the same file serves full volumes and sliding-window patches.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from engines.errors import TfjsConversionError

log = logging.getLogger(__name__)

#: ONNX opset of the converted graphs (InstanceNormalization, Elu, Erf: all well inside TensorRT's range).
OPSET = 17
GROUPNORM_SUFFIX = "_gn"
GROUPNORM_EPSILON = 1e-5
_DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "uint16": np.uint16}


@dataclass
class TfjsLayer:
    """One Keras layer as stored in ``model.json``."""

    class_name: str
    name: str
    config: Mapping[str, Any]
    inbound: list[str] = field(default_factory=list)


@dataclass
class TfjsModel:
    """A parsed tfjs layers model: its layers in file order and the weights by name."""

    layers: list[TfjsLayer]
    weights: dict[str, npt.NDArray[np.float32]]
    input_name: str
    output_name: str
    meta: dict[str, Any]

    def layer(self, name: str) -> TfjsLayer:
        """The layer called ``name``."""
        for item in self.layers:
            if item.name == name:
                return item
        raise TfjsConversionError(f"tfjs model has no layer {name!r}")


def _read_weights(model_dir: Path, manifest: Sequence[Mapping[str, Any]]) -> dict[str, npt.NDArray[np.float32]]:
    weights: dict[str, npt.NDArray[np.float32]] = {}
    for group in manifest:
        blobs = []
        for rel in group["paths"]:
            path = model_dir / rel
            if not path.is_file():
                raise TfjsConversionError(f"weight shard {path} named in model.json is missing; copy it next to it")
            blobs.append(path.read_bytes())
        buf = b"".join(blobs)
        offset = 0
        for spec in group["weights"]:
            shape = [int(s) for s in spec["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            if quant:
                qdtype = _DTYPES.get(str(quant["dtype"]))
                if qdtype is None:
                    raise TfjsConversionError(f"weight {spec['name']}: quantisation dtype {quant['dtype']} unsupported")
                nbytes = count * np.dtype(qdtype).itemsize
                q = np.frombuffer(buf, dtype=qdtype, count=count, offset=offset)
                values = (q.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"]))
            else:
                if spec.get("dtype", "float32") != "float32":
                    raise TfjsConversionError(f"weight {spec['name']}: dtype {spec.get('dtype')} unsupported")
                nbytes = count * 4
                values = np.frombuffer(buf, dtype="<f4", count=count, offset=offset).astype(np.float32)
            if offset + nbytes > len(buf):
                raise TfjsConversionError(f"weight shards end before {spec['name']}; the .bin files are truncated")
            offset += nbytes
            weights[str(spec["name"])] = values.reshape(shape)
        if offset != len(buf):
            raise TfjsConversionError(f"weight shards hold {len(buf) - offset} bytes that model.json does not describe")
    return weights


def load_tfjs(model_dir: Path | str) -> TfjsModel:
    """Read ``model.json`` and its weight shards from ``model_dir``."""
    model_dir = Path(model_dir)
    path = model_dir / "model.json"
    if not path.is_file():
        raise TfjsConversionError(f"{model_dir} has no model.json; point at a TensorFlow.js layers-model folder")
    try:
        spec = json.loads(path.read_text())
        if spec.get("format", "layers-model") != "layers-model":
            raise TfjsConversionError(f"{path}: format {spec.get('format')!r}; only 'layers-model' is supported")
        topology = spec["modelTopology"]
        cfg = topology.get("model_config", topology)
        config = cfg["config"]
        raw_layers = config["layers"] if isinstance(config, dict) else config
        manifest = spec["weightsManifest"]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise TfjsConversionError(f"{path} is not a tfjs layers model ({exc})") from exc
    layers: list[TfjsLayer] = []
    for raw in raw_layers:
        lcfg = raw.get("config", {})
        name = str(raw.get("name") or lcfg.get("name"))
        inbound: list[str] = []
        for node in raw.get("inbound_nodes", []) or []:
            for ref in node:
                inbound.append(str(ref[0]))
        layers.append(TfjsLayer(str(raw["class_name"]), name, lcfg, inbound))
    if not layers:
        raise TfjsConversionError(f"{path} has no layers")
    if isinstance(config, dict) and config.get("input_layers"):
        input_name = str(config["input_layers"][0][0])
        output_name = str(config["output_layers"][0][0])
    else:  # Sequential: chain in order
        input_name, output_name = layers[0].name, layers[-1].name
        for prev, cur in itertools.pairwise(layers):
            if not cur.inbound:
                cur.inbound = [prev.name]
    meta = {k: v for k, v in spec.items() if k not in ("modelTopology", "weightsManifest")}
    return TfjsModel(layers, _read_weights(model_dir, manifest), input_name, output_name, meta)


def _conv_pads(cfg: Mapping[str, Any], kernel: Sequence[int], dilation: Sequence[int]) -> list[int]:
    padding = str(cfg.get("padding", "valid"))
    if padding == "valid":
        return [0, 0, 0, 0, 0, 0]
    if padding != "same":
        raise TfjsConversionError(f"Conv3D {cfg.get('name')}: padding {padding!r} unsupported")
    if any(int(s) != 1 for s in cfg.get("strides", [1, 1, 1])):
        raise TfjsConversionError(f"Conv3D {cfg.get('name')}: 'same' padding with strides is not supported")
    total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    begin = [t // 2 for t in total]
    end = [t - b for t, b in zip(total, begin, strict=True)]
    return begin + end


class _GraphBuilder:
    """Accumulates ONNX nodes and initialisers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, value: npt.NDArray[Any]) -> str:
        nm = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), nm))
        return nm

    def node(self, op: str, inputs: Sequence[str], stem: str, **attrs: Any) -> str:
        out = self.name(stem)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def activation(self, kind: str, x: str, where: str) -> str:
        kind = kind.lower()
        if kind in ("linear", "none"):
            return x
        if kind == "relu":
            return self.node("Relu", [x], "relu")
        if kind == "elu":
            return self.node("Elu", [x], "elu", alpha=1.0)
        if kind == "sigmoid":
            return self.node("Sigmoid", [x], "sigmoid")
        if kind == "tanh":
            return self.node("Tanh", [x], "tanh")
        if kind == "softmax":
            return self.node("Softmax", [x], "softmax", axis=1)
        if kind == "gelu":  # exact (erf) GELU, as tfjs-layers and PyTorch define it
            scaled = self.node("Mul", [x, self.const("inv_sqrt2", np.array(1.0 / math.sqrt(2.0), np.float32))], "g")
            erf = self.node("Erf", [scaled], "erf")
            one_plus = self.node("Add", [erf, self.const("one", np.array(1.0, np.float32))], "g")
            half_x = self.node("Mul", [x, self.const("half", np.array(0.5, np.float32))], "g")
            return self.node("Mul", [half_x, one_plus], "gelu")
        raise TfjsConversionError(f"{where}: activation {kind!r} is not supported by the converter")


def convert(
    model: TfjsModel,
    *,
    groupnorm_suffix: str | None = GROUPNORM_SUFFIX,
    axis_order: str = "ijk",
    graph_name: str = "meshnet",
) -> onnx.ModelProto:
    """Build the ONNX model for a parsed tfjs layers model.

    Args:
        model: from :func:`load_tfjs`.
        groupnorm_suffix: convolutions whose name ends with it get a per-channel normalisation without affine
            (mindgrab's ``_gn``); ``None`` disables that.
        axis_order: ``"ijk"`` (ONNX spatial axes = tfjs axes) or ``"kji"`` (kernels reversed).
    """
    if axis_order not in ("ijk", "kji"):
        raise TfjsConversionError(f"axis_order must be 'ijk' or 'kji', got {axis_order!r}")
    g = _GraphBuilder()
    tensor_of: dict[str, str] = {model.input_name: "input"}
    channels_of: dict[str, int] = {}
    inp = model.layer(model.input_name)
    shape = inp.config.get("batch_input_shape") or [None, None, None, None, 1]
    if len(shape) != 5:
        raise TfjsConversionError(f"input {inp.name}: expected a 5-D channels-last input, got {shape}")
    channels_of[model.input_name] = int(shape[-1] or 1)
    used_weights: set[str] = set()
    pending = [layer for layer in model.layers if layer.name != model.input_name]
    while pending:
        progressed = False
        for layer in list(pending):
            if not all(src in tensor_of for src in layer.inbound):
                continue
            pending.remove(layer)
            progressed = True
            where = f"layer {layer.name!r} ({layer.class_name})"
            if not layer.inbound:
                raise TfjsConversionError(f"{where} has no inbound node")
            if layer.class_name in ("Add", "Concatenate"):
                srcs = [tensor_of[s] for s in layer.inbound]
                if layer.class_name == "Add":
                    out = srcs[0]
                    for other in srcs[1:]:
                        out = g.node("Add", [out, other], "add")
                    channels_of[layer.name] = channels_of[layer.inbound[0]]
                else:
                    out = g.node("Concat", srcs, "concat", axis=1)
                    channels_of[layer.name] = sum(channels_of[s] for s in layer.inbound)
                tensor_of[layer.name] = out
                continue
            if len(layer.inbound) != 1:
                raise TfjsConversionError(f"{where}: expected one input, got {layer.inbound}")
            x = tensor_of[layer.inbound[0]]
            cin = channels_of[layer.inbound[0]]
            cfg = layer.config
            if layer.class_name == "Conv3D":
                if cfg.get("data_format", "channels_last") != "channels_last":
                    raise TfjsConversionError(f"{where}: only channels_last is supported")
                if int(cfg.get("groups", 1)) != 1:
                    raise TfjsConversionError(f"{where}: grouped convolution unsupported")
                kname = f"{layer.name}/kernel"
                if kname not in model.weights:
                    raise TfjsConversionError(f"{where}: weight {kname} missing from the shards")
                kernel = model.weights[kname]  # [kd, kh, kw, cin, cout]
                used_weights.add(kname)
                if kernel.ndim != 5 or kernel.shape[3] != cin:
                    raise TfjsConversionError(f"{where}: kernel shape {kernel.shape} does not fit {cin} input channels")
                w = kernel.transpose(4, 3, 0, 1, 2)
                if axis_order == "kji":
                    w = w.transpose(0, 1, 4, 3, 2)
                ksize = [int(k) for k in w.shape[2:]]
                dil = [int(d) for d in cfg.get("dilation_rate", [1, 1, 1])]
                strides = [int(s) for s in cfg.get("strides", [1, 1, 1])]
                if axis_order == "kji":
                    dil, strides = dil[::-1], strides[::-1]
                inputs = [x, g.const(f"{layer.name}.weight", w.astype(np.float32))]
                if cfg.get("use_bias", True):
                    bname = f"{layer.name}/bias"
                    if bname not in model.weights:
                        raise TfjsConversionError(f"{where}: bias {bname} missing from the shards")
                    used_weights.add(bname)
                    inputs.append(g.const(f"{layer.name}.bias", model.weights[bname].astype(np.float32)))
                y = g.node(
                    "Conv", inputs, "conv", dilations=dil, kernel_shape=ksize, strides=strides,
                    pads=_conv_pads(cfg, ksize, dil), group=1,
                )
                cout = int(w.shape[0])
                if groupnorm_suffix and layer.name.endswith(groupnorm_suffix):
                    y = g.node(
                        "InstanceNormalization",
                        [y, g.const("gn_scale", np.ones(cout, np.float32)),
                         g.const("gn_bias", np.zeros(cout, np.float32))],
                        "groupnorm", epsilon=GROUPNORM_EPSILON,
                    )
                y = g.activation(str(cfg.get("activation", "linear")), y, where)
                channels_of[layer.name] = cout
                tensor_of[layer.name] = y
            elif layer.class_name == "Activation":
                tensor_of[layer.name] = g.activation(str(cfg.get("activation", "linear")), x, where)
                channels_of[layer.name] = cin
            elif layer.class_name in ("Dropout", "SpatialDropout3D"):
                tensor_of[layer.name] = x
                channels_of[layer.name] = cin
            else:
                raise TfjsConversionError(f"{where}: layer type not supported by the tfjs→ONNX converter")
        if not progressed:
            raise TfjsConversionError(f"tfjs graph has unresolvable inputs for {[p.name for p in pending]}")
    unused = sorted(set(model.weights) - used_weights)
    if unused:
        raise TfjsConversionError(f"weights {unused[:5]} are not used by any layer; the model.json and shards disagree")
    final = tensor_of[model.output_name]
    g.nodes.append(helper.make_node("Identity", [final], ["logits"], name="logits"))
    classes = channels_of[model.output_name]
    graph = helper.make_graph(
        g.nodes,
        graph_name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["N", channels_of[model.input_name], "D", "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes, "D", "H", "W"])],
        g.inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="appliance.tfjs")
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    return onnx_model


def output_classes(model: onnx.ModelProto) -> int:
    """Number of output channels (classes) of a converted model."""
    dim = model.graph.output[0].type.tensor_type.shape.dim[1]
    return int(dim.dim_value)
