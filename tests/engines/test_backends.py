"""Backend registry and the torch backend against the onnxruntime CPU oracle (real brainchop networks)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from test_packs_support import T1

from engines.backends import (
    Backend,
    available_backends,
    backend_class,
    choose_backend,
    create_backend,
    register_backend,
)
from engines.backends.onnxruntime import OnnxRuntimeBackend
from engines.backends.torch import TorchBackend
from engines.errors import BackendUnavailable
from engines.packs import SHIPPED_PACKS, load_pack
from kernels.device import Device

PACKS = SHIPPED_PACKS


def _t1_block(shared_data: Path, size: int = 48) -> np.ndarray:
    """A normalised block from the middle of the real T1 (deep grey and white matter)."""
    import nibabel as nib

    data = np.asarray(nib.load(str(shared_data / T1)).dataobj).astype(np.float32) / 255.0
    c = 128 - size // 2
    return np.ascontiguousarray(data[c:c + size, c - 10:c - 10 + size, c:c + size])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    labels = [v for v in np.union1d(np.unique(a), np.unique(b)) if v != 0]
    scores = [2 * np.sum((a == v) & (b == v)) / (np.sum(a == v) + np.sum(b == v)) for v in labels]
    return float(np.mean(scores))


@pytest.mark.req("REQ-FUNC-103")
def test_automatic_choice_on_cpu_records_reason(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="engines.backends"):
        choice = choose_backend("cpu")
    assert choice.name == "onnxruntime" and choice.device == "cpu"
    assert "first usable backend" in choice.reason
    assert choice.reason in caplog.text
    record = choice.as_dict()
    assert set(record) == {"backend", "device", "reason", "considered"}
    assert available_backends("cpu")[:2] == ["onnxruntime", "torch"]


@pytest.mark.req("REQ-FUNC-103")
def test_explicit_and_unavailable_backends() -> None:
    assert choose_backend("cpu", "torch").name == "torch"
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        choose_backend("cpu", "tensorrt")
    with pytest.raises(BackendUnavailable, match="registered"):
        backend_class("nonesuch")
    ok, why = backend_class("tensorrt").is_available("cpu")
    assert not ok and "tensorrt" in why


@pytest.mark.req("REQ-FUNC-103")
def test_plugin_with_missing_dependency_is_skipped() -> None:
    @register_backend
    class Imaginary(Backend):
        name: ClassVar[str] = "imaginary"
        dependencies: ClassVar[tuple[str, ...]] = ("no_such_package_xyz",)
        devices: ClassVar[tuple[Device, ...]] = ("cpu",)

        def forward(self, x: Any) -> Any:
            return x

    ok, why = Imaginary.is_available("cpu")
    assert not ok and "no_such_package_xyz" in why
    assert "imaginary" not in available_backends("cpu")
    choice = choose_backend("cpu")
    assert choice.name == "onnxruntime"


@pytest.mark.req("REQ-PERF-100")
@pytest.mark.parametrize(("pack_name", "size"), [("brainchop-gw-5", 40), ("brainchop-mindgrab", 40),
                                                  ("brainchop-subcortical-18-21ch", 72)])
def test_torch_fp32_labels_identical_to_onnxruntime(shared_data: Path, pack_name: str, size: int) -> None:
    pack = load_pack(PACKS / pack_name, verify=True)
    x = _t1_block(shared_data, size)[None, None]
    oracle = OnnxRuntimeBackend(pack.onnx_path).forward(x)
    torch_out = create_backend(choose_backend("cpu", "torch"), pack.onnx_path).forward(x)
    assert torch_out.shape == oracle.shape == (1, pack.classes, size, size, size)
    np.testing.assert_allclose(torch_out, oracle, rtol=1e-3, atol=1e-3)
    assert np.array_equal(torch_out.argmax(1), oracle.argmax(1))
    assert len(np.unique(oracle.argmax(1))) > 1  # the block is not all one class


@pytest.mark.req("REQ-PERF-100")
def test_torch_fp16_dice(shared_data: Path) -> None:
    pack = load_pack(PACKS / "brainchop-gw-5")
    x = _t1_block(shared_data, 32)[None, None]
    oracle = OnnxRuntimeBackend(pack.onnx_path).forward(x).argmax(1)
    try:
        half = TorchBackend(pack.onnx_path, precision="fp16").forward(x).argmax(1)
    except RuntimeError as exc:  # some CPU builds of torch lack half-precision conv3d
        pytest.skip(f"torch on this CPU has no fp16 conv3d: {exc}")
    assert _dice(half, oracle) >= 0.999


@pytest.mark.gpu
@pytest.mark.req("REQ-PERF-100")
@pytest.mark.parametrize("pack_name", ["brainchop-gw-5", "brainchop-mindgrab", "brainchop-subcortical-18-21ch"])
def test_torch_cuda_matches_cpu_oracle_full_volume(shared_data: Path, pack_name: str) -> None:
    import cupy

    pack = load_pack(PACKS / pack_name)
    x = _t1_block(shared_data, 128)[None, None]
    oracle = OnnxRuntimeBackend(pack.onnx_path).forward(x).argmax(1)
    gpu = TorchBackend(pack.onnx_path, "cuda")
    out = gpu.forward(cupy.asarray(x))
    assert isinstance(out, cupy.ndarray)
    fp32 = cupy.asnumpy(out.argmax(1))
    assert np.array_equal(fp32, oracle)
    half = cupy.asnumpy(TorchBackend(pack.onnx_path, "cuda", precision="fp16").forward(cupy.asarray(x)).argmax(1))
    assert _dice(half, oracle) >= 0.999
