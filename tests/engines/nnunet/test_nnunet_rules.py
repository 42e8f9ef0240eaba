"""nnU-Net's numerical rules, checked piece by piece against nnunetv2's own functions (when installed)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.nnunet.plans import ChannelNormalisation, Resampling
from engines.nnunet.preprocessing import nonzero_crop, normalise_channel
from engines.nnunet.resampling import new_shape_for, resample, resample_argmax, separate_axis
from engines.nnunet.sliding_window import (
    ensemble_logits,
    importance_map,
    mirror_combinations,
    pad_to_patch,
    predict_logits,
    tile_starts,
)


def _nnunet(module: str) -> object:
    return pytest.importorskip(module)


@pytest.mark.parametrize(("size", "patch"), [(32, 32), (33, 32), (110, 64), (97, 48), (200, 128), (47, 16)])
def test_tile_starts_match_nnunet(size: int, patch: int) -> None:
    sw = _nnunet("nnunetv2.inference.sliding_window_prediction")
    expected = sw.compute_steps_for_sliding_window((size,), (patch,), 0.5)[0]  # type: ignore[attr-defined]
    assert tile_starts(size, patch, 0.5) == expected


@pytest.mark.parametrize("patch", [(32, 32, 32), (16, 48, 40), (20, 33, 17)])
def test_importance_map_matches_nnunet(patch: tuple[int, int, int]) -> None:
    torch = pytest.importorskip("torch")
    sw = _nnunet("nnunetv2.inference.sliding_window_prediction")
    expected = sw.compute_gaussian(patch, 1 / 8, 10, torch.float16, torch.device("cpu"))  # type: ignore[attr-defined]
    assert np.array_equal(importance_map(patch), expected.numpy())


def test_pad_to_patch_centres_with_the_odd_voxel_after() -> None:
    data = np.ones((1, 5, 40, 3), dtype=np.float32)
    padded, undo = pad_to_patch(data, (8, 32, 8))
    assert padded.shape == (1, 8, 40, 8)
    assert undo == (slice(1, 6), slice(0, 40), slice(2, 5))
    assert np.array_equal(padded[(slice(None), *undo)], data)


def test_mirror_order_is_singles_then_pairs_then_triple() -> None:
    assert mirror_combinations((0, 1, 2)) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert mirror_combinations(()) == []


@pytest.mark.parametrize(("shape", "patch", "mirror"), [((20, 37, 30), (16, 16, 16), (0, 1, 2)),
                                                     ((12, 9, 40), (16, 16, 16), ()),
                                                     ((24, 40, 33), (8, 16, 24), (1, 2))])
def test_sliding_window_matches_nnunet_bit_for_bit(shape: tuple[int, ...], patch: tuple[int, ...],
                                                   mirror: tuple[int, ...]) -> None:
    """Same network, same tiles: nnUNetPredictor's sliding window and ours give identical float16 logits."""
    torch = pytest.importorskip("torch")
    predict = _nnunet("nnunetv2.inference.predict_from_raw_data")
    from types import SimpleNamespace

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1), torch.nn.LeakyReLU(), torch.nn.Conv3d(3, 3, 1))
    predictor = predict.nnUNetPredictor(  # type: ignore[attr-defined]
        perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.network = net
    predictor.configuration_manager = SimpleNamespace(patch_size=list(patch))
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=3)
    predictor.allowed_mirroring_axes = mirror or None
    data = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    expected = predictor.predict_sliding_window_return_logits(torch.from_numpy(data)).numpy()

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]

    got = predict_logits(forward, data, patch, 3, mirror_axes=mirror)
    assert got.dtype == np.float16 and got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_folds_are_averaged_in_float16() -> None:
    mean = ensemble_logits(lambda k: np.full((1, 2, 2, 2), k + 1, dtype=np.float16), 3)
    assert mean.dtype == np.float16 and np.all(mean == 2)


def test_separate_axis_rule() -> None:
    assert separate_axis((3.0, 0.8, 0.8), (1.0, 1.0, 1.0)) == 0
    assert separate_axis((1.0, 1.0, 1.0), (1.0, 4.0, 1.0)) == 1
    assert separate_axis((1.0, 1.0, 1.0), (2.0, 2.0, 2.0)) is None
    assert separate_axis((0.24, 1.25, 1.25), (1.0, 1.0, 1.0)) is None  # two axes share the largest spacing
    assert new_shape_for((100, 51, 7), (1.0, 0.7, 5.0), (2.0, 1.0, 1.0)) == (50, 36, 35)


@pytest.mark.parametrize(("shape", "current", "target", "order", "dtype"), [
    ((1, 30, 41, 25), (3.0, 3.0, 3.0), (4.0, 4.0, 4.0), 3, np.float32),
    ((1, 12, 40, 38), (5.0, 1.0, 1.0), (3.0, 1.4, 1.4), 3, np.float32),
    ((1, 30, 30, 30), (3.0, 3.0, 3.0), (9.0, 2.5, 2.5), 3, np.float32),
    ((3, 14, 30, 33), (9.0, 2.5, 2.5), (3.0, 3.0, 3.0), 1, np.float16),
    ((2, 20, 22, 18), (2.0, 2.0, 2.0), (1.5, 1.5, 1.5), 1, np.float16),
])
def test_resampling_matches_nnunet(shape: tuple[int, ...], current: tuple[float, ...], target: tuple[float, ...],
                                   order: int, dtype: type) -> None:
    rs = _nnunet("nnunetv2.preprocessing.resampling.default_resampling")
    rng = np.random.default_rng(1)
    data = (rng.standard_normal(shape) * 5).astype(dtype)
    new = new_shape_for(shape[1:], current, target)
    expected = rs.resample_data_or_seg_to_shape(  # type: ignore[attr-defined]
        data, new, current, target, is_seg=False, order=order, order_z=0, force_separate_z=None)
    got = resample(data, new, current, target, Resampling(order, 0, None))
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_crop_matches_nnunet() -> None:
    cropping = _nnunet("nnunetv2.preprocessing.cropping.cropping")
    data = np.zeros((1, 30, 40, 20), dtype=np.float32)
    data[0, 5:25, 8:30, 3:17] = 1.0
    data[0, 10:15, 15:20, 8:12] = 0.0  # a hole: filled, so inside the mask
    expected, seg, bbox = cropping.crop_to_nonzero(data.copy())  # type: ignore[attr-defined]
    crop, mask = nonzero_crop(data)
    assert np.array_equal(data[(slice(None), *crop.slices)], expected)
    assert [list(b) for b in crop.box] == [list(b) for b in bbox]
    assert np.array_equal(mask, seg[0] >= 0)
    assert crop.uncrop(np.ones(mask.shape, np.uint8)).sum() == mask.size
    empty_crop, _ = nonzero_crop(np.zeros((1, 4, 5, 6), np.float32))
    assert empty_crop.box == ((0, 4), (0, 5), (0, 6))


@pytest.mark.parametrize(("scheme", "use_mask"), [("CTNormalization", False), ("ZScoreNormalization", False),
                                                  ("ZScoreNormalization", True)])
def test_normalisation_matches_nnunet(scheme: str, use_mask: bool) -> None:
    norms = _nnunet("nnunetv2.preprocessing.normalization.default_normalization_schemes")
    rng = np.random.default_rng(2)
    image = (rng.standard_normal((20, 21, 22)) * 400).astype(np.float32)
    mask = rng.random(image.shape) > 0.3
    props = {"mean": 60.0, "std": 280.0, "percentile_00_5": -1000.0, "percentile_99_5": 1300.0}
    expected = getattr(norms, scheme)(use_mask, props).run(image.copy(), np.where(mask, 0, -1))
    ours = ChannelNormalisation("ct", False, 60.0, 280.0, -1000.0, 1300.0) if scheme == "CTNormalization" \
        else ChannelNormalisation("zscore", use_mask)
    assert np.array_equal(normalise_channel(image.copy(), mask, ours), expected)


@pytest.mark.req("REQ-PERF-950")
@pytest.mark.parametrize(("current", "target", "shape"), [
    ((1.5, 1.5, 1.5), (0.8, 0.8, 1.0), (21, 19, 17)),  # plain 3-D zoom
    ((5.0, 1.5, 1.5), (3.0, 0.7, 0.7), (9, 26, 24)),  # separate z: 2-D zoom per slice, nearest along z
    ((2.0, 2.0, 2.0), (2.0, 2.0, 2.0), (11, 12, 10)),  # same shape: argmax only
])
def test_resample_argmax_equals_argmax_of_all_classes(current: tuple[float, float, float],
                                                      target: tuple[float, float, float],
                                                      shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(3)
    source = new_shape_for(shape, target, current)
    logits = (rng.standard_normal((6, *source)) * 3).astype(np.float16)
    logits[2, :2] = logits[1, :2]  # exact ties: the lower class must win, as with numpy.argmax
    rule = Resampling(order=1, order_z=0, force_separate_z=None)
    expected = resample(logits, shape, current, target, rule).argmax(0)
    labels = resample_argmax(logits, shape, current, target, rule)
    assert labels.dtype == np.uint16 and labels.shape == shape
    assert np.array_equal(labels, expected)
