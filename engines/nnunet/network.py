"""Build an nnU-Net network from its plans, load a fold's checkpoint safely, export it to ONNX and check the export.

Only the classes nnU-Net's default plans use are built (``PlainConvUNet`` and ``ResidualEncoderUNet`` from
``dynamic_network_architectures``, with the ``torch.nn`` layers listed in :data:`_TORCH_LAYERS`): names in
``plans.json`` are looked up in these tables, never imported by name. Checkpoints are read with
``torch.load(weights_only=True)`` plus the NumPy scalar types nnU-Net's training log holds, so a checkpoint cannot
run code on the appliance. Needs ``torch`` and ``dynamic_network_architectures`` (import time only; inference runs
the ONNX files through onnxruntime).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.nnunet.errors import CheckpointError, ExportMismatch, UnsupportedModel
from engines.nnunet.plans import Architecture, TrainedModel

_TORCH_LAYERS = ("Conv3d", "InstanceNorm3d", "BatchNorm3d", "GroupNorm", "Dropout3d", "Dropout", "LeakyReLU", "ReLU",
                 "PReLU", "ELU", "GELU", "SiLU")
_LAYER_ARGS = ("conv_op", "norm_op", "dropout_op", "nonlin")
#: ONNX opset of the exported graphs (InstanceNormalization and 3-D convolutions are stable since long before).
ONNX_OPSET = 17


@dataclass(frozen=True)
class FoldCheckpoint:
    """What inference needs from one ``checkpoint_*.pth``."""

    fold: str
    weights: Mapping[str, Any]
    trainer: str
    configuration: str | None
    mirror_axes: tuple[int, ...] | None


def _safe_globals() -> list[Any]:
    """NumPy types found in nnU-Net's pickled training log (scalars of the Dice history)."""
    allowed: list[Any] = [np.dtype]
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["scalar"])
        except ImportError:
            continue
        allowed.append(module.scalar)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed.extend(getattr(dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType", "BoolDType")
                       if hasattr(dtypes, n))
    return allowed


def load_checkpoint(path: Path, fold: str) -> FoldCheckpoint:
    """Read ``path`` without executing pickled code; refuse files that need anything else."""
    import torch

    try:
        with torch.serialization.safe_globals(_safe_globals()):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, TypeError) as exc:
        raise CheckpointError(f"{path} cannot be loaded safely (weights only): {str(exc).splitlines()[0]}; "
                              "export it again with a standard nnU-Net trainer or ask the model's provider") from exc
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("network_weights"), Mapping):
        raise CheckpointError(f"{path} is not an nnU-Net checkpoint (no network_weights)")
    init_args = ckpt.get("init_args") if isinstance(ckpt.get("init_args"), Mapping) else {}
    axes = ckpt.get("inference_allowed_mirroring_axes")
    mirror = None if axes is None else tuple(int(a) for a in axes)
    return FoldCheckpoint(fold, ckpt["network_weights"], str(ckpt.get("trainer_name", "")),
                          init_args.get("configuration") if init_args else None, mirror)


def mirror_axes_for(model: TrainedModel, checkpoint: FoldCheckpoint) -> tuple[int, ...]:
    """Axes nnU-Net mirrors at inference: none for ``*NoMirroring`` trainers, else the checkpoint's own axes."""
    if "NoMirroring" in model.trainer or "NoMirroring" in checkpoint.trainer or checkpoint.mirror_axes is None:
        return ()
    return checkpoint.mirror_axes


def _layer(name: Any) -> Any:
    import torch

    if name is None:
        return None
    short = str(name).rsplit(".", 1)[-1]
    if short not in _TORCH_LAYERS:
        raise UnsupportedModel(f"layer {name!r} in plans.json is not one the appliance builds ({list(_TORCH_LAYERS)})")
    return getattr(torch.nn, short)


def build_network(architecture: Architecture, input_channels: int, num_classes: int) -> Any:
    """The ``torch.nn.Module`` the plans describe (deep supervision off, as nnU-Net predicts), in eval mode."""
    from dynamic_network_architectures.architectures.unet import (
        PlainConvUNet,
        ResidualEncoderUNet,
    )

    classes = {"PlainConvUNet": PlainConvUNet, "ResidualEncoderUNet": ResidualEncoderUNet}
    if architecture.network not in classes:
        raise UnsupportedModel(f"network {architecture.network!r} is not supported; supported: {list(classes)}")
    kwargs = dict(architecture.kwargs)
    for key in _LAYER_ARGS:
        if key in kwargs:
            kwargs[key] = _layer(kwargs[key])
    if "block" in kwargs or kwargs.get("stem_channels") is not None:
        raise UnsupportedModel("plans.json asks for a custom residual block or stem; not supported")
    kwargs["deep_supervision"] = False
    try:
        network = classes[architecture.network](input_channels=input_channels, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise UnsupportedModel(f"plans.json arch_kwargs do not build a {architecture.network}: {exc}") from exc
    return network.eval()


def load_weights(network: Any, checkpoint: FoldCheckpoint) -> Any:
    """Load the fold's weights (strict, as nnU-Net does); a mismatch becomes :class:`CheckpointError`."""
    try:
        network.load_state_dict(checkpoint.weights)
    except RuntimeError as exc:
        raise CheckpointError(f"fold {checkpoint.fold}: the weights do not fit the network plans.json describes: "
                              f"{str(exc).splitlines()[0]}") from exc
    return network.eval()


def export_onnx(network: Any, patch_size: Sequence[int], path: Path, input_channels: int = 1) -> Path:
    """Write ``network`` as ONNX with a fixed patch and a dynamic batch axis (mirrored tiles run as one batch)."""
    import warnings

    import torch

    example = torch.zeros((1, input_channels, *[int(p) for p in patch_size]), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation and instance-norm training-mode notes
        with torch.no_grad():
            torch.onnx.export(network, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def verify_export(network: Any, onnx_path: Path, patch_size: Sequence[int], seed: int = 0,
                  tolerance: float = 1e-3) -> float:
    """Largest |onnxruntime - torch| on a random patch, relative to the logits' range; raise past ``tolerance``."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 1, *[int(p) for p in patch_size])).astype(np.float32)
    with torch.no_grad():
        expected = network(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    scale = max(float(np.abs(expected).max()), 1e-6)
    error = float(np.abs(got - expected).max()) / scale
    if got.shape != expected.shape or not error <= tolerance:
        raise ExportMismatch(f"{onnx_path.name}: onnxruntime differs from torch by {error:.2e} of the logit range "
                             f"(shape {got.shape} vs {expected.shape}); the export is not trustworthy")
    return error


__all__ = ["ONNX_OPSET", "FoldCheckpoint", "build_network", "export_onnx", "load_checkpoint", "load_weights",
           "mirror_axes_for", "verify_export"]
