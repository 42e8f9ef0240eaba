"""Reading trained-model folders, refusing what cannot run, importing as a pack (ONNX + manifest)."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers.nnunet_models import ModelSpec, dataset_json, plans_json, write_model_folder

from engines.nnunet.errors import (
    CheckpointError,
    LicenceRequired,
    ModelFolderError,
    NnUNetPackError,
    UnsupportedModel,
)
from engines.nnunet.plans import find_model_folder, read_trained_model


def _json_only(tmp_path: Path, spec: ModelSpec, plans: dict | None = None, dataset: dict | None = None) -> Path:
    folder = tmp_path / spec.folder_name
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not read here")
    (folder / "plans.json").write_text(json.dumps(plans or plans_json(spec)))
    (folder / "dataset.json").write_text(json.dumps(dataset or dataset_json(spec)))
    return folder


def test_reads_configuration_labels_normalisation(tmp_path: Path) -> None:
    spec = ModelSpec(name="m", spacing=(5.0, 1.5, 1.5), transpose_forward=(2, 0, 1))
    model = read_trained_model(_json_only(tmp_path, spec))
    assert model.configuration == "3d_fullres" and model.trainer == "nnUNetTrainer"
    assert model.spacing == (5.0, 1.5, 1.5) and model.patch_size == (32, 32, 32)
    assert model.transpose_forward == (2, 0, 1) and model.transpose_backward == (1, 2, 0)
    assert [lab.name for lab in model.labels] == ["liver", "kidney_left", "spleen"] and model.num_heads == 4
    assert model.channels[0].scheme == "ct" and model.channels[0].upper == 1300.0
    assert model.data_resampling.order == 3 and model.probabilities_resampling.order == 1
    assert model.folds == ("0",)


def test_old_plans_format_and_inheritance(tmp_path: Path) -> None:
    spec = ModelSpec(name="m")
    plans = plans_json(spec)
    config = plans["configurations"]["3d_fullres"]
    arch = config.pop("architecture")["arch_kwargs"]
    config.update({"UNet_class_name": "PlainConvUNet", "UNet_base_num_features": 4, "unet_max_num_features": 16,
                   "n_conv_per_stage_encoder": arch["n_conv_per_stage"],
                   "n_conv_per_stage_decoder": arch["n_conv_per_stage_decoder"], "num_pool_per_axis": [2, 2, 2],
                   "pool_op_kernel_sizes": arch["strides"], "conv_kernel_sizes": arch["kernel_sizes"]})
    plans["configurations"] = {"base": config, "3d_fullres": {"inherits_from": "base", "spacing": [2.0, 2.0, 2.0]}}
    model = read_trained_model(_json_only(tmp_path, spec, plans))
    assert model.spacing == (2.0, 2.0, 2.0)
    assert model.architecture.network == "PlainConvUNet"
    assert model.architecture.kwargs["features_per_stage"] == [4, 8, 16]


@pytest.mark.parametrize(("change", "error", "words"), [
    (lambda p, d: p["configurations"]["3d_fullres"].update(patch_size=[64, 64]), UnsupportedModel, "2D"),
    (lambda p, d: p["configurations"]["3d_fullres"].update(previous_stage="3d_lowres"), UnsupportedModel, "cascade"),
    (lambda p, d: d["labels"].update(liver=[1, 2]), UnsupportedModel, "region"),
    (lambda p, d: d.update(regions_class_order=[1, 2, 3]), UnsupportedModel, "region"),
    (lambda p, d: d["labels"].update(spleen=5), ModelFolderError, "without gaps"),
    (lambda p, d: d["channel_names"].update({"1": "T2"}), ModelFolderError, "per channel"),
    (lambda p, d: p["configurations"]["3d_fullres"].update(normalization_schemes=["MyNorm"]), UnsupportedModel,
     "MyNorm"),
    (lambda p, d: p["configurations"]["3d_fullres"].update(resampling_fn_data="resample_torch_fornnunet"),
     UnsupportedModel, "resampling"),
    (lambda p, d: p["configurations"]["3d_fullres"]["architecture"].update(network_class_name="x.SwinUNETR"),
     UnsupportedModel, "SwinUNETR"),
])
def test_refuses_with_named_errors(tmp_path: Path, change, error: type, words: str) -> None:  # type: ignore[no-untyped-def]
    spec = ModelSpec(name="m")
    plans, dataset = plans_json(spec), dataset_json(spec)
    change(plans, dataset)
    with pytest.raises(error, match=words):
        read_trained_model(_json_only(tmp_path, spec, plans, dataset))


def test_folder_name_and_folds_are_checked(tmp_path: Path) -> None:
    spec = ModelSpec(name="m")
    folder = _json_only(tmp_path, spec)
    with pytest.raises(ModelFolderError, match="fold"):
        read_trained_model(folder, folds=[0, 3])
    odd = folder.rename(tmp_path / "renamed")
    with pytest.raises(ModelFolderError, match="Trainer"):
        read_trained_model(odd)
    assert find_model_folder(tmp_path) == odd
    with pytest.raises(ModelFolderError, match="no trained-model folder"):
        find_model_folder(tmp_path, "3d_lowres")


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("dynamic_network_architectures")
    from engines.nnunet.importer import ImportOptions, import_nnunet

    base = tmp_path_factory.mktemp("nnunet")
    folder = write_model_folder(base / "models", ModelSpec(name="tiny", network="ResidualEncoderUNet", folds=(0, 1),
                                                           patch=(16, 16, 16)))
    archive = base / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*"):
            zf.write(path, path.relative_to(folder.parent.parent))
    pack = import_nnunet(archive, base / "packs", ImportOptions(name="tiny-ct", licence="CC0-1.0"))
    return pack.root, folder


def test_import_writes_a_verified_pack(imported: tuple[Path, Path]) -> None:
    from engines.nnunet.predict import load_nnunet_pack
    from engines.packs import load_pack

    root, _ = imported
    pack = load_nnunet_pack(root)
    recipe = pack.recipe
    assert [f.fold for f in recipe.folds] == ["0", "1"] and recipe.fold_combination == "mean_of_logits"
    assert recipe.mirror_axes == (0, 1, 2) and recipe.tile_step == 0.5 and recipe.gaussian_sigma_scale == 0.125
    assert [s.name for s in recipe.structures] == ["liver", "kidney_left", "spleen"]
    assert pack.manifest["licence"] == "CC0-1.0" and pack.manifest["modality"] == "CT"
    assert pack.manifest["nnunet"]["export_check"]["max_relative_error"] < 1e-3
    generic = load_pack(root, verify=True)  # the common pack schema accepts it (listing, verify)
    assert generic.name == "tiny-ct" and generic.classes == 4


def test_tampered_fold_is_refused(imported: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from engines.nnunet.predict import load_nnunet_pack

    copy = Path(shutil.copytree(imported[0], tmp_path / "copy"))
    with (copy / "fold_1.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(NnUNetPackError, match="sha256"):
        load_nnunet_pack(copy)


def test_licence_is_required_and_unsafe_checkpoints_refused(imported: tuple[Path, Path], tmp_path: Path) -> None:
    from engines.nnunet.importer import ImportOptions, import_nnunet
    from engines.nnunet.network import load_checkpoint

    _, folder = imported
    with pytest.raises(LicenceRequired):
        import_nnunet(folder, tmp_path, ImportOptions(name="x", licence=" "))
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"network_weights": {}, "x": np.random.default_rng(0)}, protocol=2))
    with pytest.raises(CheckpointError, match="safely"):
        load_checkpoint(evil, "0")


def test_no_mirroring_trainer_imports_without_mirror_axes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("dynamic_network_architectures")
    from engines.nnunet.importer import ImportOptions, import_nnunet

    folder = write_model_folder(tmp_path / "m", ModelSpec(name="nm", mirror=False, patch=(16, 16, 16),
                                                          scheme="ZScoreNormalization", channel="T1"))
    pack = import_nnunet(folder, tmp_path / "packs", ImportOptions(name="nm", licence="MIT"))
    assert pack.recipe.mirror_axes == () and pack.manifest["modality"] == "MR"


def test_preset_runs_the_pack_on_a_volume(imported: tuple[Path, Path]) -> None:
    from appliance.core import Volume
    from engines.presets.network_pack import pack_preset, pack_presets

    root, _ = imported
    assert pack_presets([root.parent]) == ["pack:tiny-ct"]
    preset = pack_preset("pack:tiny-ct", [root.parent])
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((20, 18, 9)) * 300).astype(np.int16)
    volume = Volume(array, np.diag([2.0, 2.0, 6.0, 1.0]), "CT", "HU")
    result = preset.run(volume, device="cpu")
    labels = result.labelmap
    assert labels.shape == volume.shape and labels.labels.max() <= 3
    assert [s.name for s in labels.structures] == ["liver", "kidney_left", "spleen"]
    assert result.provenance["pack"]["name"] == "tiny-ct" and result.provenance["backend"]["backend"] == "onnxruntime"


@pytest.mark.req("REQ-FUNC-957")
def test_torch_backend_runs_an_imported_pack_like_onnxruntime(imported: tuple[Path, Path]) -> None:
    """The torch backend (the CUDA path's CPU twin) executes nnU-Net's decoder (ConvTranspose) and gives the same
    logits and the same labels as onnxruntime."""
    from appliance.core import Volume
    from engines.backends.onnxruntime import OnnxRuntimeBackend
    from engines.backends.torch import TorchBackend
    from engines.presets.network_pack import pack_preset

    root, _ = imported
    rng = np.random.default_rng(1)
    tile = rng.standard_normal((1, 1, 16, 16, 16)).astype(np.float32)
    reference = OnnxRuntimeBackend(root / "fold_0.onnx").forward(tile)
    ours = TorchBackend(root / "fold_0.onnx").forward(tile)
    assert ours.shape == reference.shape == (1, 4, 16, 16, 16)
    assert float(np.abs(ours - reference).max()) <= 1e-4 * max(1.0, float(np.abs(reference).max()))
    preset = pack_preset("pack:tiny-ct", [root.parent])
    array = (rng.standard_normal((20, 18, 9)) * 300).astype(np.int16)
    volume = Volume(array, np.diag([2.0, 2.0, 6.0, 1.0]), "CT", "HU")
    by_ort = preset.run(volume, device="cpu").labelmap.labels
    by_torch = preset.run(volume, device="cpu", options={"backend": "torch"}).labelmap.labels
    assert float((by_ort == by_torch).mean()) >= 0.9999


@pytest.mark.gpu
@pytest.mark.req("REQ-FUNC-957")
def test_imported_pack_on_cuda_equals_the_cpu(imported: tuple[Path, Path]) -> None:
    """The CUDA path (torch backend on the GPU, fp32) gives the CPU oracle's labels."""
    from appliance.core import Volume
    from engines.presets.network_pack import pack_preset

    root, _ = imported
    preset = pack_preset("pack:tiny-ct", [root.parent])
    rng = np.random.default_rng(2)
    volume = Volume((rng.standard_normal((40, 36, 18)) * 300).astype(np.int16), np.diag([2.0, 2.0, 6.0, 1.0]), "CT",
                    "HU")  # fmt: skip
    cpu = preset.run(volume, device="cpu").labelmap.labels
    gpu = preset.run(volume, device="cuda", options={"backend": "torch"}).labelmap.labels
    assert float((cpu == gpu).mean()) >= 0.9999
