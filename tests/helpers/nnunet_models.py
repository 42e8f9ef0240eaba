"""Random-weight nnU-Net v2 trained-model folders, nnU-Net's own prediction of them, and the parity measure.

Used by ``tests/engines/nnunet`` and ``bench/nnunet_parity.py``. A folder written here is what nnU-Net writes
after training (``dataset.json``, ``plans.json``, ``fold_N/checkpoint_final.pth`` in its checkpoint format, the
training log's NumPy scalars included), with small networks so that CPU runs stay short. The segmentation layer's
weights are scaled so the logits are decisive (ties between classes would otherwise dominate the comparison).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

CT_INTENSITIES = {"mean": 60.0, "std": 280.0, "percentile_00_5": -1000.0, "percentile_99_5": 1300.0,
                  "median": 40.0, "min": -1024.0, "max": 3000.0}


@dataclass(frozen=True)
class ModelSpec:
    """One random-weight trained model (all axis-ordered values in nnU-Net's order)."""

    name: str
    network: str = "PlainConvUNet"
    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0)
    patch: tuple[int, int, int] = (32, 32, 32)
    strides: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (2, 2, 2), (2, 2, 2))
    kernels: tuple[tuple[int, int, int], ...] = ((3, 3, 3), (3, 3, 3), (3, 3, 3))
    features: tuple[int, ...] = (4, 8, 16)
    transpose_forward: tuple[int, int, int] = (0, 1, 2)
    folds: tuple[int, ...] = (0,)
    mirror: bool = True
    scheme: str = "CTNormalization"
    use_mask: bool = False
    channel: str = "CT"
    labels: tuple[str, ...] = ("liver", "kidney_left", "spleen")
    configuration: str = "3d_fullres"
    seed: int = 0
    logit_scale: float = 8.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trainer(self) -> str:
        """Trainer class name (a real nnU-Net trainer, so nnUNetPredictor can find it)."""
        return "nnUNetTrainer" if self.mirror else "nnUNetTrainerNoMirroring"

    @property
    def folder_name(self) -> str:
        """``<Trainer>__<Plans>__<configuration>``."""
        return f"{self.trainer}__nnUNetPlans__{self.configuration}"


def _arch(spec: ModelSpec) -> dict[str, Any]:
    n = len(spec.features)
    kwargs: dict[str, Any] = {
        "n_stages": n, "features_per_stage": list(spec.features), "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [list(k) for k in spec.kernels], "strides": [list(s) for s in spec.strides],
        "n_conv_per_stage_decoder": [1 if spec.network == "ResidualEncoderUNet" else 2] * (n - 1),
        "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    }
    if spec.network == "ResidualEncoderUNet":
        kwargs["n_blocks_per_stage"] = [1] + [2] * (n - 1)
        module = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    else:
        kwargs["n_conv_per_stage"] = [2] * n
        module = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    return {"network_class_name": module, "arch_kwargs": kwargs,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def plans_json(spec: ModelSpec) -> dict[str, Any]:
    """A ``plans.json`` as nnU-Net's default planner writes it, for ``spec``."""
    backward = [int(i) for i in np.argsort(spec.transpose_forward)]
    config = {
        "data_identifier": f"nnUNetPlans_{spec.configuration}", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2, "patch_size": list(spec.patch), "median_image_size_in_voxels": [100, 100, 100],
        "spacing": list(spec.spacing), "normalization_schemes": [spec.scheme], "use_mask_for_norm": [spec.use_mask],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": _arch(spec), "batch_dice": False,
    }
    config.update(spec.extra)
    props = CT_INTENSITIES if spec.scheme == "CTNormalization" else {"mean": 0.0, "std": 1.0}
    return {
        "dataset_name": "Dataset999_Parity", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spec.spacing),
        "original_median_shape_after_transp": [100, 100, 100], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(spec.transpose_forward), "transpose_backward": backward,
        "configurations": {spec.configuration: config}, "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {"0": props},
    }


def dataset_json(spec: ModelSpec) -> dict[str, Any]:
    """A ``dataset.json`` for ``spec``."""
    labels = {"background": 0, **{name: i + 1 for i, name in enumerate(spec.labels)}}
    return {"channel_names": {"0": spec.channel}, "labels": labels, "numTraining": 10, "file_ending": ".nii.gz"}


def _network(spec: ModelSpec, fold: int) -> Any:
    import torch

    from engines.nnunet.network import build_network
    from engines.nnunet.plans import Architecture

    arch = _arch(spec)
    torch.manual_seed(spec.seed * 100 + fold)
    net = build_network(Architecture(spec.network, arch["arch_kwargs"]), 1, len(spec.labels) + 1)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.InstanceNorm3d) and module.affine:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
        head = net.decoder.seg_layers[-1]
        head.weight.mul_(spec.logit_scale)
        head.bias.zero_()
        # centre each class's logit on a smooth random image so every class wins somewhere
        from scipy import ndimage

        rng = np.random.default_rng(spec.seed)
        probe = ndimage.gaussian_filter(rng.standard_normal(spec.patch), 2.0)
        probe = (probe / probe.std()).astype(np.float32)
        logits = net(torch.from_numpy(probe)[None, None])[0]
        head.bias.copy_(-logits.mean(dim=(1, 2, 3)))
    return net


def write_model_folder(parent: Path, spec: ModelSpec) -> Path:
    """Write the trained-model folder for ``spec`` under ``parent``; returns its path."""
    import torch

    folder = parent / spec.name / spec.folder_name
    folder.mkdir(parents=True, exist_ok=True)
    plans, dataset = plans_json(spec), dataset_json(spec)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    for fold in spec.folds:
        net = _network(spec, fold)
        checkpoint = {
            "network_weights": net.state_dict(), "optimizer_state": {"state": {}, "param_groups": []},
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.5), np.float64(0.6)], "ema_fg_dice": [np.float64(0.55)],
                        "train_losses": [0.1], "epoch_start_timestamps": [1.0]},
            "_best_ema": np.float64(0.6), "current_epoch": 1000,
            "init_args": {"plans": plans, "configuration": spec.configuration, "fold": fold,
                          "dataset_json": dataset, "device": torch.device("cpu")},
            "trainer_name": spec.trainer,
            "inference_allowed_mirroring_axes": (0, 1, 2) if spec.mirror else None,
        }
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def nnunet_reference(folder: Path, folds: Sequence[int], image: Path) -> tuple[npt.NDArray[Any], float]:
    """nnU-Net's own labels for ``image`` (CPU, nothing on device), in the stored voxel order, and seconds taken."""
    import nnunetv2.inference.predict_from_raw_data as nnunet_predict
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
        nnUNetTrainerNoMirroring,
    )

    # nnU-Net finds the trainer class by importing every trainer module, some of which need timm (not installed
    # here); the two trainers used by these models are handed over directly instead. Prediction is unchanged.
    trainers = {"nnUNetTrainer": nnUNetTrainer, "nnUNetTrainerNoMirroring": nnUNetTrainerNoMirroring}
    nnunet_predict.recursive_find_trainer_class_by_name = trainers.__getitem__
    torch.set_num_threads(1)  # nnU-Net keeps the current count; more threads than free cores only slow it down
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints progress notes
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(folder), use_folds=tuple(folds),
                                                       checkpoint_name="checkpoint_final.pth")
        data, props = SimpleITKIO().read_images([str(image)])
        seg = predictor.predict_single_npy_array(data, {"spacing": props["spacing"]}, None, None, False)
    return np.asarray(seg).transpose(2, 1, 0), time.perf_counter() - start


@dataclass(frozen=True)
class Parity:
    """Agreement of two label arrays: the lowest per-class Dice, each class's Dice, identical voxels."""

    dice_min: float
    dice: dict[int, float]
    identical: float


def parity(ours: npt.NDArray[Any], reference: npt.NDArray[Any], labels: Sequence[int]) -> Parity:
    """Per-class Dice (1.0 when a class is absent from both) and the fraction of identical voxels."""
    scores = {}
    for value in labels:
        a, b = ours == value, reference == value
        total = int(a.sum()) + int(b.sum())
        scores[int(value)] = 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total
    return Parity(min(scores.values()), scores, float((ours == reference).mean()))


def crop_nifti(source: Path, dest: Path, box: Sequence[tuple[int, int]]) -> Path:
    """Write the ``box`` (voxel index ranges) of ``source`` to ``dest`` with a correctly shifted affine."""
    import nibabel as nib

    img = nib.load(str(source))
    sub = img.slicer[tuple(slice(a, b) for a, b in box)]
    out = nib.Nifti1Image(np.asarray(sub.dataobj), sub.affine)
    out.set_sform(sub.affine, code=1)
    out.set_qform(sub.affine, code=1)
    nib.save(out, str(dest))
    return dest


CT_IMAGE = "ct/totalsegmentator/example_ct.nii.gz"
MR_IMAGE = "models/brainchop/public/t1_crop.nii.gz"
_ANISO = {"spacing": (9.0, 2.5, 2.5), "patch": (16, 48, 48), "kernels": ((1, 3, 3), (3, 3, 3), (3, 3, 3)),
          "strides": ((1, 1, 1), (1, 2, 2), (2, 2, 2))}


@dataclass(frozen=True)
class ParityCase:
    """One parity configuration: the model, the real image (under ``../shared/data``) and the crop used."""

    spec: ModelSpec
    image: str
    box: tuple[tuple[int, int], ...]
    slow: bool = True


PARITY_CASES = (
    ParityCase(ModelSpec("ct-aniso-plain-1fold-nomirror", mirror=False, **_ANISO), CT_IMAGE,  # type: ignore[arg-type]
               ((30, 78), (20, 68), (30, 78)), slow=False),
    ParityCase(ModelSpec("ct-iso-plain-1fold-mirror-transposed", transpose_forward=(2, 0, 1)), CT_IMAGE,
               ((25, 97), (15, 87), (20, 92))),
    ParityCase(ModelSpec("ct-aniso-plain-2fold-nomirror", mirror=False, folds=(0, 1), **_ANISO),  # type: ignore[arg-type]
               CT_IMAGE, ((25, 97), (15, 87), (20, 92))),
    ParityCase(ModelSpec("ct-iso-resenc-2fold-mirror", network="ResidualEncoderUNet", folds=(0, 1)), CT_IMAGE,
               ((25, 97), (15, 87), (20, 92))),
    ParityCase(ModelSpec("mr-zscore-mask-plain-1fold-mirror", scheme="ZScoreNormalization", use_mask=True,
                         channel="T1", spacing=(2.0, 2.0, 2.0), labels=("grey", "white", "csf")), MR_IMAGE,
               ((70, 166), (60, 156), (80, 176))),
    ParityCase(ModelSpec("mr-zscore-resenc-2fold-nomirror", network="ResidualEncoderUNet", mirror=False,
                         folds=(0, 1), scheme="ZScoreNormalization", channel="T1", spacing=(2.5, 2.5, 2.5),
                         labels=("grey", "white")), MR_IMAGE, ((60, 180), (50, 170), (70, 190))),
)


@dataclass(frozen=True)
class ParityResult:
    """One row of the parity table."""

    case: str
    parity: Parity
    ours_s: float
    nnunet_s: float
    import_s: float


def run_parity_case(case: ParityCase, data_root: Path, work: Path) -> ParityResult:
    """Build the case's model, import it, run ours and nnU-Net on the cropped real image, compare."""
    from appliance.io.nifti import load_volume
    from engines.nnunet.importer import ImportOptions, import_nnunet
    from engines.nnunet.predict import run_nnunet_pack

    work.mkdir(parents=True, exist_ok=True)
    image = crop_nifti(data_root / case.image, work / f"{case.spec.name}_0000.nii.gz", case.box)
    folder = write_model_folder(work / "models", case.spec)
    start = time.perf_counter()
    pack = import_nnunet(folder, work / "packs", ImportOptions(name=case.spec.name, licence="CC0-1.0",
                                                                replace=True))
    import_s = time.perf_counter() - start
    volume = load_volume(image, "CT" if case.spec.scheme == "CTNormalization" else "MR")
    start = time.perf_counter()
    ours = run_nnunet_pack(pack, volume).labels
    ours_s = time.perf_counter() - start
    reference, nnunet_s = nnunet_reference(folder, case.spec.folds, image)
    result = parity(ours, reference, range(1, len(case.spec.labels) + 1))
    return ParityResult(case.spec.name, result, ours_s, nnunet_s, import_s)
