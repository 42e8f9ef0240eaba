"""TensorRT backend against a fake of the TensorRT / CuPy API boundary (TensorRT cannot be installed here).

The fake records what the backend asks of TensorRT (flags, profiles, tensor addresses) and "executes" the
engine by running the same ONNX file with onnxruntime on the memory behind the addresses it was given, so the
buffer plumbing and the engine cache are tested for real; TensorRT's own kernels are not.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from appliance.cli import main as cli_main
from engines.backends import choose_backend
from engines.backends import tensorrt as trt_backend
from engines.errors import BackendError
from engines.packs import SHIPPED_PACKS, load_pack

MAGIC = b"FAKEPLAN1"


class DevArray(np.ndarray):  # type: ignore[type-arg]
    """A host array posing as a device array: ``.data.ptr`` is its address."""

    @property
    def data(self) -> Any:  # type: ignore[override]
        return types.SimpleNamespace(ptr=self.ctypes.data)


def _dev(a: Any, dtype: Any = None) -> DevArray:
    return np.ascontiguousarray(np.asarray(a, dtype=dtype)).view(DevArray)


def _fake_cupy() -> Any:
    cp: Any = types.ModuleType("cupy")
    cp.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    cp.float32 = np.float32
    cp.ndarray = DevArray
    cp.asarray = lambda a, dtype=None: _dev(a, dtype)
    cp.ascontiguousarray = lambda a: _dev(a)
    cp.empty = lambda shape, dtype=np.float32: np.empty(shape, dtype).view(DevArray)
    stream = types.SimpleNamespace(ptr=1234, synchronize=lambda: None)
    cp.cuda = types.SimpleNamespace(get_current_stream=lambda: stream,
                                    Device=lambda *a: types.SimpleNamespace(compute_capability="90"))
    return cp


class FakeTRT:
    """Just enough of ``tensorrt`` for the backend; counts builds and keeps the last config."""

    def __init__(self, version: str = "10.3.0") -> None:
        self.builds = 0
        self.last_config: Any = None
        self.last_profile: Any = None
        self.fail_parse = False
        fake = self
        self.module = types.ModuleType("tensorrt")
        m: Any = self.module
        m.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
        m.__version__ = version

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                self.level = level

        m.Logger = Logger
        m.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
        m.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        m.BuilderFlag = types.SimpleNamespace(FP16="fp16")
        m.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")

        class Network:
            onnx = b""

        class Parser:
            num_errors = 0

            def __init__(self, network: Network, logger: Logger) -> None:
                self.network = network

            def parse(self, data: bytes) -> bool:
                if fake.fail_parse:
                    self.num_errors = 1
                    return False
                self.network.onnx = data
                return True

            def get_error(self, i: int) -> str:
                return "unsupported node Foo"

        class Profile:
            def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
                self.shape = (name, tuple(lo), tuple(opt), tuple(hi))

        class Config:
            def __init__(self) -> None:
                self.flags: set[str] = set()
                self.pool: dict[str, int] = {}
                self.profiles: list[Profile] = []

            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                self.pool[pool] = size

            def set_flag(self, flag: str) -> None:
                self.flags.add(flag)

            def add_optimization_profile(self, profile: Profile) -> None:
                self.profiles.append(profile)

        class Builder:
            def __init__(self, logger: Logger) -> None:
                pass

            def create_network(self, flags: int) -> Network:
                return Network()

            def create_builder_config(self) -> Config:
                config = Config()
                fake.last_config = config
                return config

            def create_optimization_profile(self) -> Profile:
                profile = Profile()
                fake.last_profile = profile
                return profile

            def build_serialized_network(self, network: Network, config: Config) -> bytes:
                fake.builds += 1
                return MAGIC + network.onnx

        class Context:
            def __init__(self, onnx_bytes: bytes) -> None:
                self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
                self.addr: dict[str, int] = {}
                self.shape: tuple[int, ...] = ()

            def set_input_shape(self, name: str, shape: Any) -> None:
                self.shape = tuple(shape)

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                out = self.session.get_outputs()[0]
                classes = int(out.shape[1])
                return (self.shape[0], classes, *self.shape[2:])

            def set_tensor_address(self, name: str, ptr: int) -> None:
                self.addr[name] = ptr

            def execute_async_v3(self, stream: int) -> bool:
                n_in = int(np.prod(self.shape))
                x = np.ctypeslib.as_array((ctypes.c_float * n_in).from_address(self.addr["input"]))
                y = self.session.run(None, {"input": x.reshape(self.shape)})[0]
                out = np.ctypeslib.as_array((ctypes.c_float * y.size).from_address(self.addr["logits"]))
                out[:] = y.ravel()
                return True

        class Engine:
            num_io_tensors = 2

            def __init__(self, onnx_bytes: bytes) -> None:
                self.onnx = onnx_bytes

            def get_tensor_name(self, i: int) -> str:
                return ["input", "logits"][i]

            def get_tensor_mode(self, name: str) -> str:
                return "in" if name == "input" else "out"

            def create_execution_context(self) -> Context:
                return Context(self.onnx)

        class Runtime:
            def __init__(self, logger: Logger) -> None:
                pass

            def deserialize_cuda_engine(self, plan: bytes) -> Engine | None:
                return Engine(plan[len(MAGIC):]) if plan.startswith(MAGIC) else None

        m.Builder, m.OnnxParser, m.Runtime = Builder, Parser, Runtime


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> FakeTRT:
    fake = FakeTRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    monkeypatch.setattr(trt_backend, "cuda_available", lambda: True)
    return fake


@pytest.fixture
def gw5() -> Any:
    return load_pack(SHIPPED_PACKS / "brainchop-gw-5", verify=True)


@pytest.mark.req("REQ-FUNC-104")
def test_build_cache_and_run_on_device_buffers(fake_trt: FakeTRT, gw5: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((1, 1, 24, 20, 16), dtype=np.float32)
    backend = trt_backend.TensorRTBackend(gw5.onnx_path, "cuda", precision="fp16", cache_dir=tmp_path,
                                          sha256=gw5.sha256)
    out = backend.forward(x)
    assert fake_trt.builds == 1 and backend.built
    assert "fp16" in fake_trt.last_config.flags
    assert fake_trt.last_config.pool["workspace"] > 0
    assert fake_trt.last_profile.shape == ("input", x.shape, x.shape, x.shape)
    oracle = ort.InferenceSession(str(gw5.onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(np.asarray(out), oracle, rtol=1e-6)
    plans = list(tmp_path.glob("*.plan"))
    assert len(plans) == 1
    # a second process finds the engine in the cache and does not rebuild
    again = trt_backend.TensorRTBackend(gw5.onnx_path, "cuda", precision="fp16", cache_dir=tmp_path,
                                        sha256=gw5.sha256)
    np.testing.assert_allclose(np.asarray(again.forward(x)), oracle, rtol=1e-6)
    assert fake_trt.builds == 1 and not again.built
    # fp32 is a different engine
    trt_backend.TensorRTBackend(gw5.onnx_path, "cuda", precision="fp32", cache_dir=tmp_path).forward(x)
    assert fake_trt.builds == 2 and "fp16" not in fake_trt.last_config.flags


@pytest.mark.req("REQ-FUNC-104")
def test_one_ranged_engine_serves_every_crop(fake_trt: FakeTRT, gw5: Any, tmp_path: Path) -> None:
    backend = trt_backend.TensorRTBackend(gw5.onnx_path, "cuda", cache_dir=tmp_path)
    backend.set_profile((1, 1, 8, 8, 8), (1, 1, 16, 16, 16), (1, 1, 32, 32, 32))
    rng = np.random.default_rng(5)
    session = ort.InferenceSession(str(gw5.onnx_path), providers=["CPUExecutionProvider"])
    for shape in [(1, 1, 12, 20, 9), (1, 1, 32, 8, 30), (1, 1, 16, 16, 16)]:
        x = rng.random(shape, dtype=np.float32)
        np.testing.assert_allclose(np.asarray(backend.forward(x)), session.run(None, {"input": x})[0], rtol=1e-6)
    assert fake_trt.builds == 1
    assert fake_trt.last_profile.shape == ("input", (1, 1, 8, 8, 8), (1, 1, 16, 16, 16), (1, 1, 32, 32, 32))
    backend.forward(np.zeros((1, 1, 40, 8, 8), np.float32))  # outside the range: its own exact engine
    assert fake_trt.builds == 2
    with pytest.raises(BackendError, match="min <= opt <= max"):
        backend.set_profile((1, 1, 8, 8, 8), (1, 1, 4, 4, 4), (1, 1, 32, 32, 32))


@pytest.mark.req("REQ-FUNC-104")
def test_cache_key_covers_network_version_gpu_precision_shape() -> None:
    base = ("a" * 64, "10.3.0", "9.0", "fp16", (1, 1, 64, 64, 64))
    key = trt_backend.engine_cache_key(*base)
    for i, other in enumerate(["b" * 64, "10.4.0", "8.9", "fp32", (1, 1, 32, 64, 64)]):
        changed = list(base)
        changed[i] = other
        assert trt_backend.engine_cache_key(*changed) != key  # type: ignore[arg-type]
    assert trt_backend.engine_cache_key(*base) == key


@pytest.mark.req("REQ-FUNC-104")
def test_parse_failure_and_corrupt_cache(fake_trt: FakeTRT, gw5: Any, tmp_path: Path) -> None:
    fake_trt.fail_parse = True
    backend = trt_backend.TensorRTBackend(gw5.onnx_path, "cuda", cache_dir=tmp_path)
    x = np.zeros((1, 1, 8, 8, 8), np.float32)
    with pytest.raises(BackendError, match="unsupported node Foo"):
        backend.forward(x)
    fake_trt.fail_parse = False
    bad = backend.engine_path((1, 1, 8, 8, 8))
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"garbage")
    with pytest.raises(BackendError, match="removed"):
        backend.forward(x)
    assert not bad.exists()
    backend.forward(x)  # rebuilt after removal
    assert fake_trt.builds == 1


@pytest.mark.req("REQ-FUNC-103", "REQ-FUNC-104")
def test_tensorrt_preferred_on_cuda(fake_trt: FakeTRT) -> None:
    choice = choose_backend("cuda")
    assert choice.name == "tensorrt" and choice.device == "cuda"
    assert "tensorrt 10.3.0 on compute capability 9.0" in choice.considered[0]


@pytest.mark.req("REQ-FUNC-102", "REQ-FUNC-104")
def test_cli_compile_with_tensorrt(fake_trt: FakeTRT, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["models", "compile", "brainchop-gw-5", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "compiled brainchop-gw-5 fp16 (1, 1, 256, 256, 256)" in out
    assert fake_trt.last_profile.shape[2:] == ((1, 1, 192, 192, 192), (1, 1, 256, 256, 256))
    assert len(list(tmp_path.glob("*.plan"))) == 1
