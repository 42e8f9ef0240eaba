"""ONNX Runtime backend: the CPU execution provider always (the oracle), the CUDA provider when installed."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from appliance.typed import Device
from engines.backends.base import Backend
from engines.backends.registry import register_backend
from engines.errors import BackendError

log = logging.getLogger(__name__)


def _providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


@register_backend
class OnnxRuntimeBackend(Backend):
    """``onnxruntime.InferenceSession`` on the pack's ONNX file."""

    name: ClassVar[str] = "onnxruntime"
    dependencies: ClassVar[tuple[str, ...]] = ("onnxruntime",)
    devices: ClassVar[tuple[Device, ...]] = ("cpu", "cuda")

    @classmethod
    def is_available(cls, device: Device) -> tuple[bool, str]:
        ok, why = super().is_available(device)
        if not ok:
            return ok, why
        if device == "cuda" and "CUDAExecutionProvider" not in _providers():
            return False, "onnxruntime: CUDAExecutionProvider not installed (onnxruntime-gpu absent)"
        return True, f"onnxruntime: {'CUDA' if device == 'cuda' else 'CPU'} execution provider"

    def __init__(self, onnx_path: Path, device: Device = "cpu", precision: str = "fp32",
                 cache_dir: Path | None = None, sha256: str | None = None) -> None:
        super().__init__(onnx_path, device, precision, cache_dir, sha256)
        import onnxruntime as ort

        if precision != "fp32":
            raise BackendError("the onnxruntime backend runs the pack's fp32 graph only; "
                               "use torch or tensorrt for fp16")
        opts = ort.SessionOptions()
        threads = int(os.environ.get("APPLIANCE_ORT_THREADS", "0"))
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime cannot load {self.onnx_path}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Any) -> Any:
        if hasattr(x, "get"):  # CuPy array → host (this backend copies; TensorRT and torch do not)
            x = x.get()
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return out
