"""PyTorch backend: runs the pack's ONNX graph with torch operators (CPU, or CUDA on a lent GPU).

Not a converter library: a small interpreter over the ONNX nodes the packs use (Conv with dilation and padding,
Relu, Elu, Erf-based GELU pieces, InstanceNormalization, Softmax, ArgMax, elementwise arithmetic, Identity,
Concat, Sigmoid, Tanh, Gelu). Initialisers become torch tensors once, on the device. On CUDA the input and output
may be CuPy arrays (exchanged through DLPack, no host copy). ``fp16`` runs convolutions in half precision and
keeps normalisations in fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from appliance.typed import Device
from engines.backends.base import Backend
from engines.backends.registry import register_backend
from engines.errors import BackendError
from kernels.device import cuda_available

log = logging.getLogger(__name__)

SUPPORTED_OPS = frozenset({
    "Conv", "Relu", "Elu", "Erf", "Mul", "Add", "Sub", "Div", "InstanceNormalization", "Softmax", "ArgMax",
    "Identity", "Concat", "Sigmoid", "Tanh", "Gelu", "LeakyRelu", "ConvTranspose", "AveragePool",
})


def _check_exact_form(node: Any, path: Path) -> None:
    """ConvTranspose and AveragePool in the forms torch computes exactly (nnU-Net's decoders: kernel = stride, no
    padding; ResEnc's pooled skips); anything else is refused when the network is loaded, never mid-inference."""
    a = _attrs(node)
    pads = list(a.get("pads", []))
    half = len(pads) // 2
    if "output_shape" in a or str(a.get("auto_pad", b"NOTSET"), "ascii", "replace") not in ("NOTSET", "") \
            or pads[:half] != pads[half:] or len(a.get("kernel_shape", [0, 0, 0])) != 3:
        raise BackendError(f"torch backend cannot run {path.name}: {node.op_type} {node.name!r} uses output_shape, "
                           "auto_pad, asymmetric pads or is not 3D")


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@register_backend
class TorchBackend(Backend):
    """Executes the ONNX graph node by node with ``torch.nn.functional``."""

    name: ClassVar[str] = "torch"
    dependencies: ClassVar[tuple[str, ...]] = ("torch", "onnx")
    devices: ClassVar[tuple[Device, ...]] = ("cpu", "cuda")

    @classmethod
    def is_available(cls, device: Device) -> tuple[bool, str]:
        ok, why = super().is_available(device)
        if not ok:
            return ok, why
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return False, "torch: installed without a usable CUDA device"
            if not cuda_available():
                return False, "torch: CUDA present but CuPy is not, so tiles cannot stay on the device"
            return True, f"torch: CUDA ({torch.cuda.get_device_name(0)})"
        return True, "torch: CPU"

    def __init__(self, onnx_path: Path, device: Device = "cpu", precision: str = "fp32",
                 cache_dir: Path | None = None, sha256: str | None = None) -> None:
        super().__init__(onnx_path, device, precision, cache_dir, sha256)
        import onnx
        import torch
        from onnx import numpy_helper

        model = onnx.load(str(self.onnx_path))
        unsupported = sorted({n.op_type for n in model.graph.node} - SUPPORTED_OPS)
        if unsupported:
            raise BackendError(f"torch backend cannot run {self.onnx_path.name}: unsupported ONNX ops {unsupported}")
        for node in model.graph.node:
            if node.op_type in ("ConvTranspose", "AveragePool"):
                _check_exact_form(node, self.onnx_path)
        self._torch = torch
        self._device = torch.device("cuda" if device == "cuda" else "cpu")
        if device == "cuda" and precision == "fp32":
            # cuDNN would use TF32 tensor cores for fp32 convolutions by default (10-bit mantissa): not fp32
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self.params: dict[str, Any] = {}
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            tensor = torch.from_numpy(np.array(arr)).to(self._device)
            if tensor.is_floating_point() and tensor.ndim >= 1:
                tensor = tensor.to(self._dtype)
            self.params[init.name] = tensor
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in model.graph.node]
        self.input_name = model.graph.input[0].name
        self.output_name = model.graph.output[0].name

    @property
    def xp(self) -> Any:
        if self.device == "cuda":
            import cupy

            return cupy
        return np

    def _op(self, op: str) -> Callable[..., Any]:
        torch = self._torch
        functional = torch.nn.functional

        def conv(x: Any, w: Any, b: Any = None, **a: Any) -> Any:
            pads = list(a.get("pads", [0] * 6))
            half = len(pads) // 2
            begin, end = pads[:half], pads[half:]
            if begin != end:
                flat: list[int] = []
                for lo, hi in zip(reversed(begin), reversed(end), strict=True):
                    flat += [lo, hi]
                x = functional.pad(x, flat)
                begin = [0] * half
            x = x.to(w.dtype)
            return functional.conv3d(x, w, None if b is None else b.to(w.dtype), stride=a.get("strides", 1),
                                     padding=tuple(begin), dilation=a.get("dilations", 1), groups=a.get("group", 1))

        def conv_transpose(x: Any, w: Any, b: Any = None, **a: Any) -> Any:
            half = w.ndim - 2
            pads = list(a.get("pads", [0] * 2 * half))[:half]
            return functional.conv_transpose3d(
                x.to(w.dtype), w, None if b is None else b.to(w.dtype), stride=a.get("strides", 1),
                padding=tuple(pads), output_padding=tuple(a.get("output_padding", [0] * half)),
                groups=a.get("group", 1), dilation=a.get("dilations", 1))

        def average_pool(x: Any, **a: Any) -> Any:
            kernel = list(a["kernel_shape"])
            return functional.avg_pool3d(
                x, kernel, stride=list(a.get("strides", [1, 1, 1])), padding=list(a.get("pads", [0] * 6))[:3],
                ceil_mode=bool(a.get("ceil_mode", 0)), count_include_pad=bool(a.get("count_include_pad", 0)))

        def instance_norm(x: Any, scale: Any, bias: Any, **a: Any) -> Any:
            y = functional.instance_norm(x.float(), eps=float(a.get("epsilon", 1e-5)))
            shape = (1, -1) + (1,) * (x.ndim - 2)
            return (y * scale.float().view(shape) + bias.float().view(shape)).to(x.dtype)

        def argmax(x: Any, **a: Any) -> Any:
            return torch.argmax(x, dim=int(a.get("axis", 0)), keepdim=bool(a.get("keepdims", 1)))

        ops: dict[str, Callable[..., Any]] = {
            "Conv": conv,
            "ConvTranspose": conv_transpose,
            "AveragePool": average_pool,
            "Relu": lambda x, **a: torch.relu(x),
            "Elu": lambda x, **a: functional.elu(x, alpha=float(a.get("alpha", 1.0))),
            "LeakyRelu": lambda x, **a: functional.leaky_relu(x, float(a.get("alpha", 0.01))),
            "Erf": lambda x, **a: torch.erf(x),
            "Gelu": lambda x, **a: functional.gelu(x, approximate=str(a.get("approximate", "none"))),
            "Mul": lambda x, y, **a: x * y.to(x.dtype),
            "Add": lambda x, y, **a: x + y.to(x.dtype),
            "Sub": lambda x, y, **a: x - y.to(x.dtype),
            "Div": lambda x, y, **a: x / y.to(x.dtype),
            "InstanceNormalization": instance_norm,
            "Softmax": lambda x, **a: torch.softmax(x.float(), dim=int(a.get("axis", -1))).to(x.dtype),
            "ArgMax": argmax,
            "Identity": lambda x, **a: x,
            "Concat": lambda *xs, **a: torch.cat(xs, dim=int(a.get("axis", 0))),
            "Sigmoid": lambda x, **a: torch.sigmoid(x),
            "Tanh": lambda x, **a: torch.tanh(x),
        }
        return ops[op]

    def forward(self, x: Any) -> Any:
        torch = self._torch
        if self.device == "cuda" and hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
            tensor = torch.from_dlpack(x)
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self._device)
        env: dict[str, Any] = dict(self.params)
        env[self.input_name] = tensor.to(self._dtype)
        with torch.inference_mode():
            for op, inputs, outputs, attrs in self.nodes:
                args = [env[i] if i else None for i in inputs]
                env[outputs[0]] = self._op(op)(*args, **attrs)
            out = env[self.output_name].float().contiguous()
        if self.device == "cuda":
            import cupy

            return cupy.from_dlpack(out)
        return out.numpy()
