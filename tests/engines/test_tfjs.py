"""tfjs layers → ONNX conversion: synthetic models against a NumPy/torch reference, and the real brainchop nets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from test_packs_support import BRAINCHOP, NIIVUE, T1, act, conv, write_tfjs

from engines.errors import TfjsConversionError
from engines.packs import SHIPPED_PACKS, load_pack, sha256_file
from engines.tfjs import convert, load_tfjs


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"input": x})[0])


def _reference(x: np.ndarray, weights: dict[str, np.ndarray], plan: list[tuple[str, ...]]) -> np.ndarray:
    """Independent forward pass in torch with the tfjs layouts (kernel [kd,kh,kw,cin,cout], channels-last)."""
    t = torch.from_numpy(x)
    for step in plan:
        if step[0] == "conv":
            _, name, dil, gn = step
            k = torch.from_numpy(weights[f"{name}/kernel"]).permute(4, 3, 0, 1, 2)
            b = weights.get(f"{name}/bias")
            d = int(dil)  # 0 marks a 1x1x1 kernel
            t = torch.nn.functional.conv3d(t, k, None if b is None else torch.from_numpy(b), padding=d,
                                           dilation=max(d, 1))
            if gn == "gn":
                mean = t.mean(dim=(2, 3, 4), keepdim=True)
                var = t.var(dim=(2, 3, 4), keepdim=True, unbiased=False)
                t = (t - mean) / torch.sqrt(var + 1e-5)
        elif step[0] == "gelu":
            t = 0.5 * t * (1 + torch.erf(t / np.sqrt(2.0)))
        elif step[0] == "elu":
            t = torch.nn.functional.elu(t)
        elif step[0] == "relu":
            t = torch.relu(t)
    return t.numpy()


@pytest.mark.req("REQ-FUNC-106")
def test_groupnorm_gelu_model_matches_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weights = [("a_gn/kernel", rng.normal(size=(3, 3, 3, 1, 4)).astype(np.float32)),
               ("b/kernel", rng.normal(size=(3, 3, 3, 4, 3)).astype(np.float32) * 0.3),
               ("b/bias", rng.normal(size=3).astype(np.float32)),
               ("out/kernel", rng.normal(size=(1, 1, 1, 3, 2)).astype(np.float32)),
               ("out/bias", rng.normal(size=2).astype(np.float32))]
    folder = write_tfjs(tmp_path / "m", [conv("a_gn", 4, dilation=2, bias=False), act("g", "gelu"),
                                         conv("b", 3, activation="elu"), conv("out", 2, kernel=1)], weights, shards=2)
    model = convert(load_tfjs(folder))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("InstanceNormalization") == 1  # only after the *_gn convolution
    x = rng.random((1, 1, 9, 10, 11), dtype=np.float32)
    got = _run(model, x)
    want = _reference(x, dict(weights), [("conv", "a_gn", "2", "gn"), ("gelu",), ("conv", "b", "1", ""), ("elu",),
                                         ("conv", "out", "0", "")])
    assert got.shape == (1, 2, 9, 10, 11)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.req("REQ-FUNC-106")
def test_axis_order_kji_reverses_spatial_axes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    weights = [("c/kernel", rng.normal(size=(3, 3, 3, 1, 2)).astype(np.float32)),
               ("c/bias", np.zeros(2, np.float32))]
    folder = write_tfjs(tmp_path / "m", [conv("c", 2, activation="relu")], weights)
    tm = load_tfjs(folder)
    x = rng.random((1, 1, 7, 8, 9), dtype=np.float32)
    ijk = _run(convert(tm, axis_order="ijk"), x)
    kji = _run(convert(tm, axis_order="kji"), np.ascontiguousarray(x.transpose(0, 1, 4, 3, 2)))
    np.testing.assert_allclose(ijk, kji.transpose(0, 1, 4, 3, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.req("REQ-FUNC-106")
def test_conversion_errors_name_the_problem(tmp_path: Path) -> None:
    w = [("c/kernel", np.zeros((3, 3, 3, 1, 2), np.float32)), ("c/bias", np.zeros(2, np.float32))]
    folder = write_tfjs(tmp_path / "pool", [conv("c", 2), {"class_name": "MaxPooling3D", "config": {"name": "p"}}], w)
    with pytest.raises(TfjsConversionError, match="MaxPooling3D"):
        convert(load_tfjs(folder))
    folder = write_tfjs(tmp_path / "act", [conv("c", 2, activation="swishy")], w)
    with pytest.raises(TfjsConversionError, match="swishy"):
        convert(load_tfjs(folder))
    folder = write_tfjs(tmp_path / "extra", [conv("c", 2)], [*w, ("ghost/kernel", np.zeros(4, np.float32))])
    with pytest.raises(TfjsConversionError, match="ghost"):
        convert(load_tfjs(folder))
    (folder / "group1-shard1of1.bin").unlink()
    with pytest.raises(TfjsConversionError, match="missing"):
        load_tfjs(folder)
    with pytest.raises(TfjsConversionError, match=r"no model\.json"):
        load_tfjs(tmp_path / "nowhere")


@pytest.mark.req("REQ-FUNC-106")
def test_mindgrab_gets_groupnorm_after_every_gn_conv(shared_data: Path) -> None:
    tm = load_tfjs(shared_data / BRAINCHOP / "mindgrab")
    model = convert(tm)
    gn_convs = [layer for layer in tm.layers if layer.class_name == "Conv3D" and layer.name.endswith("_gn")]
    ops = [n.op_type for n in model.graph.node]
    assert len(gn_convs) == 25
    assert ops.count("InstanceNormalization") == 25
    assert ops.count("Erf") == 25  # exact GELU after each normalised convolution
    for node in model.graph.node:
        if node.op_type == "InstanceNormalization":
            eps = next(a.f for a in node.attribute if a.name == "epsilon")
            assert eps == pytest.approx(1e-5)


@pytest.mark.req("REQ-TRACE-101")
def test_shipped_packs_rebuild_to_the_same_hash(shared_data: Path, tmp_path: Path) -> None:
    from engines.brainchop import BRAINCHOP_SETTINGS, build_pack_from_tfjs

    for folder, settings in BRAINCHOP_SETTINGS.items():
        shipped = load_pack(SHIPPED_PACKS / settings["name"], verify=True)
        rebuilt = build_pack_from_tfjs(shared_data / BRAINCHOP / folder, tmp_path / folder)
        assert rebuilt.sha256 == shipped.sha256, folder
        assert shipped.licence == "MIT" and "brainchop" in shipped.attribution
        assert (shipped.root / "LICENSE").is_file()
        assert shipped.manifest["source"]["model_json_sha256"] == sha256_file(
            shared_data / BRAINCHOP / folder / "model.json")


@pytest.mark.req("REQ-FUNC-106")
def test_converted_grey_white_network_gives_exactly_the_niivue_labels(shared_data: Path) -> None:
    """Key acceptance check: the shipped brainchop-gw-5 pack vs niivue's own ONNX export, full 256^3 T1.

    niivue's export reverses the kernels' spatial axes (it is fed the NIfTI buffer as [k, j, i]); the pack takes the
    nibabel array [i, j, k] as brainchop feeds its tfjs model after transposing. Same network: the labels of the
    pack on the array equal niivue's labels on the transposed array, voxel for voxel.
    """
    import nibabel as nib

    data = np.asarray(nib.load(str(shared_data / T1)).dataobj).astype(np.float32)
    x = (data - data.min()) / (data.max() - data.min())
    opts = ort.SessionOptions()
    pack = load_pack(SHIPPED_PACKS / "brainchop-gw-5", verify=True)
    ours = ort.InferenceSession(str(pack.onnx_path), opts, providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(str(shared_data / NIIVUE), opts, providers=["CPUExecutionProvider"])
    got = np.asarray(ours.run(None, {"input": x[None, None]})[0])[0].argmax(0)
    xt = np.ascontiguousarray(x.transpose(2, 1, 0))
    want = np.asarray(ref.run(None, {"input": xt[None, None]})[0])[0].argmax(0).transpose(2, 1, 0)
    assert got.shape == (256, 256, 256)
    assert np.array_equal(got, want)
    assert (got == 1).sum() > 100_000 and (got == 2).sum() > 100_000  # white and grey matter both present
