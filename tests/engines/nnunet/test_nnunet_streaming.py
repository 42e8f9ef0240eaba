"""The slab-streamed prediction gives the whole-volume path's labels, bit for bit, with less memory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from appliance.core import Volume
from engines.nnunet.plans import ChannelNormalisation, Resampling
from engines.nnunet.predict import predict_labels
from engines.nnunet.recipe import FoldNetwork, NnUNetRecipe, label_specs
from engines.nnunet.streaming import can_stream

CT = ChannelNormalisation("ct", False, mean=40.0, std=300.0, lower=-1000.0, upper=1500.0)


def _recipe(spacing: tuple[float, float, float], patch: tuple[int, int, int], classes: int, folds: int,
            mirror: tuple[int, ...]) -> NnUNetRecipe:
    return NnUNetRecipe(
        configuration="3d_fullres", spacing=spacing, patch_size=patch, transpose_forward=(0, 1, 2),
        transpose_backward=(0, 1, 2), channels=(CT,), data_resampling=Resampling(3, 0, None),
        probabilities_resampling=Resampling(1, 0, None), mirror_axes=mirror,
        folds=tuple(FoldNetwork(str(k), f"fold_{k}.onnx", "") for k in range(folds)),
        labels=label_specs([(i, f"class_{i}") for i in range(1, classes)]))


def _forward(classes: int, seed: int):  # type: ignore[no-untyped-def]
    """A deterministic stand-in network: class-specific smooth functions of the voxel values."""
    rng = np.random.default_rng(seed)
    freq, phase = rng.uniform(1.0, 4.0, classes), rng.uniform(0, 6.28, classes)

    def forward(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        x = batch[:, :1]
        out = np.sin(x * freq[None, :, None, None, None] + phase[None, :, None, None, None]) * 4
        return out.astype(np.float32)

    return forward


def _ct(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Volume:
    rng = np.random.default_rng(1)
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    array = smooth / smooth.std() * 500
    return Volume(array.astype(np.int16), np.diag([*spacing, 1.0]), "CT", "HU")


@pytest.mark.req("REQ-PERF-950")
@pytest.mark.parametrize(("shape", "spacing", "target", "patch", "folds", "mirror"), [
    ((40, 36, 30), (1.0, 1.1, 1.3), (2.0, 2.0, 2.0), (8, 8, 8), 1, ()),  # plain 3-D zoom back
    ((30, 40, 12), (0.8, 0.8, 4.5), (1.5, 1.5, 4.5), (12, 16, 4), 2, (0, 1, 2)),  # separate z, 2 folds, mirroring
    ((9, 50, 40), (5.0, 1.0, 1.0), (5.0, 2.0, 2.0), (12, 12, 12), 1, (1,)),  # separate axis 0; padded on axis 0
    ((20, 22, 24), (2.0, 2.0, 2.0), (2.0, 2.0, 2.0), (10, 8, 12), 2, ()),  # no resampling
    ((60, 20, 20), (1.0, 1.0, 1.0), (1.2, 1.2, 1.2), (24, 8, 8), 1, ()),  # final rows handed over in chunks
])
def test_streamed_labels_equal_the_whole_volume_path(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                                                      target: tuple[float, float, float], patch: tuple[int, int, int],
                                                      folds: int, mirror: tuple[int, ...]) -> None:
    recipe = _recipe(target, patch, 7, folds, mirror)
    forwards = [_forward(7, k) for k in range(folds)]
    volume = _ct(shape, spacing)
    whole = predict_labels(recipe, forwards, volume, stream_above_bytes=None)
    streamed = predict_labels(recipe, forwards, volume, stream_above_bytes=0)
    assert not whole.details["streamed"] and streamed.details["streamed"]
    assert len(np.unique(whole.labels)) >= 5  # the stand-in network predicts most classes
    assert np.array_equal(streamed.labels, whole.labels)


@pytest.mark.req("REQ-PERF-950")
def test_only_order_one_back_resampling_is_streamed() -> None:
    assert can_stream(Resampling(1, 0, None)) and can_stream(Resampling(1, 0, True))
    assert not can_stream(Resampling(3, 0, None)) and not can_stream(Resampling(1, 1, None))
    recipe = replace(_recipe((2.0, 2.0, 2.0), (8, 8, 8), 3, 1, ()), probabilities_resampling=Resampling(3, 0, None))
    result = predict_labels(recipe, [_forward(3, 0)], _ct((20, 20, 20), (1.0, 1.0, 1.0)), stream_above_bytes=0)
    assert not result.details["streamed"]  # falls back to the whole-volume path


@pytest.mark.req("REQ-PERF-950")
def test_streamed_equals_whole_volume_with_a_real_network_on_real_ct(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("dynamic_network_architectures")
    from helpers.nnunet_models import PARITY_CASES, crop_nifti, write_model_folder

    from appliance.io.nifti import load_volume
    from engines.backends import choose_backend, create_backend
    from engines.nnunet.importer import ImportOptions, import_nnunet

    case = PARITY_CASES[0]  # anisotropic CT model (separate z), random weights
    source = shared_data / case.image
    if not source.is_file():
        pytest.skip(f"real test file {case.image} is absent")
    image = crop_nifti(source, tmp_path / "ct_0000.nii.gz", case.box)
    pack = import_nnunet(write_model_folder(tmp_path / "models", case.spec), tmp_path / "packs",
                         ImportOptions(name=case.spec.name, licence="CC0-1.0"))
    forwards = [create_backend(choose_backend("cpu", "onnxruntime"), pack.onnx_path(k)).forward
                for k in range(len(pack.recipe.folds))]
    volume = load_volume(image, "CT")
    whole = predict_labels(pack.recipe, forwards, volume, stream_above_bytes=None)
    streamed = predict_labels(pack.recipe, forwards, volume, stream_above_bytes=0)
    assert streamed.details["streamed"] and len(np.unique(whole.labels)) == 4
    assert np.array_equal(streamed.labels, whole.labels)
