"""TensorRT backend: builds an engine from the pack's ONNX, caches it, runs it on CuPy device buffers.

Written against the TensorRT Python API (8.6 / 10.x names): ``trt.Builder`` → ``create_network`` →
``trt.OnnxParser.parse`` → ``IBuilderConfig`` (workspace pool limit, ``BuilderFlag.FP16`` where the pack allows it,
one optimisation profile: the caller's (min, opt, max) range, e.g. every crop of a 256^3 conformed volume, or the
exact patch shape) → ``build_serialized_network``. The serialised plan is cached under a key made of (ONNX sha256,
TensorRT version, GPU compute capability, precision, profile),
loaded with ``trt.Runtime.deserialize_cuda_engine``, and executed with ``set_input_shape``, ``set_tensor_address``
and ``execute_async_v3`` on a CuPy stream, so sliding-window tiles never leave the GPU.

TensorRT cannot be installed in the development workplace: this module is exercised there against a fake of the
API boundary (tests/engines/test_backends_tensorrt.py) and stays behind :meth:`TensorRTBackend.is_available`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

from appliance.typed import Device
from engines.backends.base import Backend
from engines.backends.registry import register_backend
from engines.errors import BackendError, BackendUnavailable
from engines.packs import sha256_file
from kernels.device import cuda_available

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("APPLIANCE_ENGINE_CACHE", "/var/cache/appliance/trt"))
WORKSPACE_BYTES = 2 << 30


def compute_capability() -> str:
    """``"major.minor"`` of the current CUDA device (via CuPy)."""
    import cupy

    cc = str(cupy.cuda.Device().compute_capability)  # e.g. "90"
    return f"{cc[:-1]}.{cc[-1]}"


Shape = tuple[int, ...]
#: (min, opt, max) input shapes of a TensorRT optimisation profile.
Profile = tuple[Shape, Shape, Shape]


def engine_cache_key(onnx_sha256: str, trt_version: str, capability: str, precision: str,
                     shape: Shape | Profile) -> str:
    """File stem of a cached engine: any change of network, TensorRT, GPU generation, precision or shapes misses."""
    text = json.dumps([onnx_sha256, trt_version, capability, precision, shape])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _trt() -> Any:
    import tensorrt

    return tensorrt


def build_engine(onnx_path: Path, profile: Profile, fp16: bool, input_name: str = "input") -> bytes:
    """Parse the ONNX file and build a serialised engine for inputs within ``profile`` (min, opt, max)."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and int(str(trt.__version__).split(".")[0]) < 10:
        flags = 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {'; '.join(errors)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(input_name, *profile)
    config.add_optimization_profile(opt_profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"TensorRT failed to build an engine for {onnx_path} (see the TensorRT log above)")
    return bytes(plan)


@register_backend
class TensorRTBackend(Backend):
    """TensorRT engine per (network, optimisation profile), built once and cached on disk.

    Without :meth:`set_profile` each new input shape gets its own exact-shape engine (right for sliding-window
    patches); with it, one engine serves every shape inside the (min, opt, max) range (crops of a fixed grid).
    """

    name: ClassVar[str] = "tensorrt"
    dependencies: ClassVar[tuple[str, ...]] = ("tensorrt", "cupy")
    devices: ClassVar[tuple[Device, ...]] = ("cuda",)

    @classmethod
    def is_available(cls, device: Device) -> tuple[bool, str]:
        ok, why = super().is_available(device)
        if not ok:
            return ok, why
        if not cuda_available():
            return False, "tensorrt: no CUDA device visible to CuPy"
        return True, f"tensorrt {_trt().__version__} on compute capability {compute_capability()}"

    def __init__(self, onnx_path: Path, device: Device = "cuda", precision: str = "fp32",
                 cache_dir: Path | None = None, sha256: str | None = None) -> None:
        super().__init__(onnx_path, device, precision, cache_dir, sha256)
        ok, why = self.is_available(device)
        if not ok:
            raise BackendUnavailable(why)
        self.cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE
        self.sha256 = sha256 or sha256_file(self.onnx_path)
        trt = _trt()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engines: dict[Profile, tuple[Any, Any]] = {}
        self.profile: Profile | None = None
        self.built: list[str] = []  # cache keys built (not loaded) by this instance

    @property
    def xp(self) -> Any:
        import cupy

        return cupy

    def set_profile(self, min_shape: Shape, opt_shape: Shape, max_shape: Shape) -> None:
        """Build one engine for all input shapes between ``min_shape`` and ``max_shape`` (tuned for ``opt_shape``)."""
        if not all(lo <= op <= hi for lo, op, hi in zip(min_shape, opt_shape, max_shape, strict=True)):
            raise BackendError(f"profile needs min <= opt <= max per axis, got {min_shape}, {opt_shape}, {max_shape}")
        self.profile = (tuple(min_shape), tuple(opt_shape), tuple(max_shape))

    def profile_for(self, shape: Shape) -> Profile:
        """The configured profile when it covers ``shape``, else an exact-shape profile."""
        if self.profile is not None and len(shape) == len(self.profile[0]) and all(
                lo <= s <= hi for lo, s, hi in zip(self.profile[0], shape, self.profile[2], strict=True)):
            return self.profile
        return (shape, shape, shape)

    def engine_path(self, shape: Shape) -> Path:
        """Where the engine that runs ``shape`` is cached."""
        key = engine_cache_key(self.sha256 or "", str(_trt().__version__), compute_capability(), self.precision,
                               self.profile_for(shape))
        return Path(self.cache_dir or DEFAULT_CACHE) / f"{key}.plan"

    def _context(self, shape: Shape) -> tuple[Any, Any]:
        profile = self.profile_for(shape)
        if profile in self._engines:
            return self._engines[profile]
        path = self.engine_path(shape)
        if path.is_file():
            plan = path.read_bytes()
            log.info("TensorRT engine loaded from cache %s", path)
        else:
            plan = build_engine(self.onnx_path, profile, fp16=self.precision == "fp16")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(plan)
            tmp.replace(path)
            self.built.append(path.stem)
            log.info("TensorRT engine built for %s %s and cached at %s", self.onnx_path.name, profile, path)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            path.unlink(missing_ok=True)
            raise BackendError(f"cached TensorRT engine {path} cannot be loaded; it was removed, run again to rebuild")
        context = engine.create_execution_context()
        self._engines[profile] = (engine, context)
        return engine, context

    def compile(self, shape: Shape) -> Path:
        """Build (or find) the engine that runs ``shape``; returns the cache file."""
        self._context(shape)
        return self.engine_path(shape)

    def forward(self, x: Any) -> Any:
        import cupy

        x_dev = cupy.ascontiguousarray(cupy.asarray(x, dtype=cupy.float32))
        shape = tuple(int(s) for s in x_dev.shape)
        engine, context = self._context(shape)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        trt = _trt()
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"engine for {self.onnx_path.name} has inputs {inputs} and outputs {outputs}; "
                               "need exactly one of each")
        context.set_input_shape(inputs[0], shape)
        out_shape = tuple(int(s) for s in context.get_tensor_shape(outputs[0]))
        out = cupy.empty(out_shape, dtype=cupy.float32)
        context.set_tensor_address(inputs[0], int(x_dev.data.ptr))
        context.set_tensor_address(outputs[0], int(out.data.ptr))
        stream = cupy.cuda.get_current_stream()
        if not context.execute_async_v3(stream.ptr):
            raise BackendError(f"TensorRT execution failed for {self.onnx_path.name}")
        stream.synchronize()
        return out
