"""Read and validate an nnU-Net v2 trained-model folder: ``dataset.json``, ``plans.json`` and the fold folders.

A trained-model folder is named ``<Trainer>__<Plans>__<configuration>`` and holds ``dataset.json``, ``plans.json``
and ``fold_N/<checkpoint>.pth``. Everything inference needs that lives in the two JSON files is turned into a
:class:`TrainedModel` here; the checkpoints themselves are read by :mod:`engines.nnunet.network`. What the appliance
cannot run the way nnU-Net would (2D configurations, the second stage of a cascade, region-based training,
multi-channel inputs, custom resampling or normalisation) is refused with :class:`UnsupportedModel`.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.nnunet.errors import ModelFolderError, UnsupportedModel

#: nnU-Net's anisotropy threshold (``nnunetv2.configuration.ANISO_THRESHOLD``).
ANISOTROPY_THRESHOLD = 3.0
#: The only resampling function whose rules the appliance reproduces.
SUPPORTED_RESAMPLING = "resample_data_or_seg_to_shape"
#: nnU-Net normalisation class name -> the appliance's scheme name.
NORMALISATION_SCHEMES = {
    "CTNormalization": "ct",
    "ZScoreNormalization": "zscore",
    "NoNormalization": "none",
    "RescaleTo01Normalization": "rescale_0_1",
}
SUPPORTED_NETWORKS = ("PlainConvUNet", "ResidualEncoderUNet")
_FOLDER_NAME = re.compile(r"^(?P<trainer>[^_].*?)__(?P<plans>.+?)__(?P<configuration>[^_].*)$")
_OLD_ARCH_KEYS = ("UNet_class_name", "UNet_base_num_features", "n_conv_per_stage_encoder", "n_conv_per_stage_decoder",
                  "num_pool_per_axis", "pool_op_kernel_sizes", "conv_kernel_sizes", "unet_max_num_features")


@dataclass(frozen=True)
class ChannelNormalisation:
    """How one input channel is normalised (nnU-Net's scheme plus the fingerprint's foreground intensities)."""

    scheme: str
    use_mask: bool
    mean: float | None = None
    std: float | None = None
    lower: float | None = None
    upper: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the pack manifest."""
        return {"scheme": self.scheme, "use_mask": self.use_mask, "mean": self.mean, "std": self.std,
                "percentile_00_5": self.lower, "percentile_99_5": self.upper}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelNormalisation:
        """Inverse of :meth:`as_dict`."""
        def num(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(str(data["scheme"]), bool(data["use_mask"]), num("mean"), num("std"), num("percentile_00_5"),
                   num("percentile_99_5"))


@dataclass(frozen=True)
class Resampling:
    """Spline orders of nnU-Net's ``resample_data_or_seg_to_shape`` (in-plane ``order``, out-of-plane ``order_z``)."""

    order: int
    order_z: int
    force_separate_z: bool | None

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the pack manifest."""
        return {"order": self.order, "order_z": self.order_z, "force_separate_z": self.force_separate_z}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Resampling:
        """Inverse of :meth:`as_dict`."""
        force = data.get("force_separate_z")
        return cls(int(data["order"]), int(data["order_z"]), None if force is None else bool(force))


@dataclass(frozen=True)
class Architecture:
    """The network class (short name) and its constructor arguments as ``plans.json`` states them."""

    network: str
    kwargs: Mapping[str, Any]


@dataclass(frozen=True)
class NnUNetLabel:
    """One network output channel: its value (= channel index in nnU-Net) and the name from ``dataset.json``."""

    value: int
    name: str


@dataclass(frozen=True)
class TrainedModel:
    """Everything read from a trained-model folder's JSON files, validated."""

    root: Path
    trainer: str
    plans_name: str
    configuration: str
    dataset_name: str
    image_reader_writer: str
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    channel_names: tuple[str, ...]
    channels: tuple[ChannelNormalisation, ...]
    data_resampling: Resampling
    probabilities_resampling: Resampling
    architecture: Architecture
    labels: tuple[NnUNetLabel, ...]
    folds: tuple[str, ...]
    checkpoint_name: str
    dataset_json: Mapping[str, Any]

    @property
    def num_heads(self) -> int:
        """Number of network output channels (background included)."""
        return len(self.labels) + 1

    def checkpoint_path(self, fold: str) -> Path:
        """``fold_<fold>/<checkpoint_name>`` inside the folder."""
        return self.root / f"fold_{fold}" / self.checkpoint_name


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFolderError(f"{path.name} is missing in {path.parent}: a trained-model folder holds dataset.json, "
                               "plans.json and fold_N/checkpoint_final.pth")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{path} cannot be parsed as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path} must hold a JSON object")
    return data


def _is_model_folder(path: Path) -> bool:
    return (path / "plans.json").is_file() and (path / "dataset.json").is_file()


def extract_zip(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into ``dest`` refusing members that would land outside it; returns ``dest``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            root = dest.resolve()
            for member in zf.namelist():
                target = (dest / member).resolve()
                if target != root and root not in target.parents:
                    raise ModelFolderError(f"zip member {member!r} of {archive} would escape the extraction folder")
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise ModelFolderError(f"{archive} is not a readable zip file: {exc}") from exc
    return dest


def find_model_folder(path: Path, configuration: str | None = None) -> Path:
    """The trained-model folder at or below ``path`` (a folder already unpacked); ``configuration`` picks one."""
    if not path.is_dir():
        raise ModelFolderError(f"{path} is neither a trained-model folder nor a zip of one")
    found = [path] if _is_model_folder(path) else sorted(
        p.parent for p in path.rglob("plans.json") if _is_model_folder(p.parent))
    if configuration is not None:
        found = [p for p in found if p.name.endswith(f"__{configuration}")]
    if not found:
        wanted = f" for configuration {configuration!r}" if configuration else ""
        raise ModelFolderError(f"no trained-model folder (dataset.json + plans.json){wanted} under {path}")
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(path)) for p in found)
        raise ModelFolderError(f"{path} holds several trained-model folders ({names}); name the configuration to use")
    return found[0]


def _resolve_configuration(plans: Mapping[str, Any], name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    configurations = plans.get("configurations")
    if not isinstance(configurations, Mapping) or name not in configurations:
        known = list(configurations) if isinstance(configurations, Mapping) else []
        raise ModelFolderError(f"plans.json has no configuration {name!r}; it has {known}")
    if name in seen:
        raise ModelFolderError(f"plans.json configurations inherit in a circle: {' -> '.join((*seen, name))}")
    config = dict(configurations[name])
    parent = config.get("inherits_from")
    if parent is not None:
        base = _resolve_configuration(plans, str(parent), (*seen, name))
        base.update(config)
        config = base
    return config


def _architecture(config: Mapping[str, Any]) -> Architecture:
    """The network from the ``architecture`` table, or from the older flat keys (nnU-Net v2 before 2.3)."""
    arch = config.get("architecture")
    if isinstance(arch, Mapping):
        network = str(arch.get("network_class_name", "")).rsplit(".", 1)[-1]
        kwargs = arch.get("arch_kwargs")
        if not isinstance(kwargs, Mapping):
            raise ModelFolderError("plans.json architecture lacks arch_kwargs")
    elif all(k in config for k in _OLD_ARCH_KEYS):
        network = str(config["UNet_class_name"])
        n_stages = len(config["n_conv_per_stage_encoder"])
        dim = len(config["patch_size"])
        blocks_key = "n_conv_per_stage" if network == "PlainConvUNet" else "n_blocks_per_stage"
        kwargs = {
            "n_stages": n_stages,
            "features_per_stage": [min(int(config["UNet_base_num_features"]) * 2 ** i,
                                       int(config["unet_max_num_features"])) for i in range(n_stages)],
            "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
            "kernel_sizes": config["conv_kernel_sizes"],
            "strides": config["pool_op_kernel_sizes"],
            blocks_key: config["n_conv_per_stage_encoder"],
            "n_conv_per_stage_decoder": config["n_conv_per_stage_decoder"],
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        }
    else:
        raise ModelFolderError("plans.json configuration has neither an 'architecture' table nor the older "
                               "UNet_class_name keys")
    if network not in SUPPORTED_NETWORKS:
        raise UnsupportedModel(f"network {network!r} is not supported; the appliance builds {list(SUPPORTED_NETWORKS)}")
    return Architecture(network, dict(kwargs))


def _resampling(config: Mapping[str, Any], which: str) -> Resampling:
    fn = config.get(f"resampling_fn_{which}")
    if fn != SUPPORTED_RESAMPLING:
        raise UnsupportedModel(f"resampling_fn_{which} is {fn!r}; only nnU-Net's default {SUPPORTED_RESAMPLING} "
                               "is reproduced by the appliance")
    kwargs = config.get(f"resampling_fn_{which}_kwargs")
    if not isinstance(kwargs, Mapping) or kwargs.get("is_seg"):
        raise ModelFolderError(f"resampling_fn_{which}_kwargs must be a table with is_seg false, got {kwargs!r}")
    force = kwargs.get("force_separate_z")
    order, order_z = int(kwargs.get("order", 3)), int(kwargs.get("order_z", 0))
    return Resampling(order, order_z, None if force is None else bool(force))


def _labels(dataset: Mapping[str, Any]) -> tuple[NnUNetLabel, ...]:
    raw = dataset.get("labels")
    if not isinstance(raw, Mapping) or "background" not in raw:
        raise ModelFolderError("dataset.json 'labels' must map names to values and include background: 0")
    if dataset.get("regions_class_order") is not None or any(
            isinstance(v, list | tuple) and len(v) > 1 for v in raw.values()):
        raise UnsupportedModel("this model was trained region-based (dataset.json labels hold lists / "
                               "regions_class_order is set); the appliance runs label-based nnU-Net models only")
    values: dict[int, str] = {}
    for name, value in raw.items():
        if name == "ignore":
            continue
        number = int(value[0] if isinstance(value, list | tuple) else value)
        if number in values:
            raise ModelFolderError(f"dataset.json labels {values[number]!r} and {name!r} share the value {number}")
        values[number] = str(name)
    if values.get(0) != "background" or sorted(values) != list(range(len(values))):
        raise ModelFolderError(f"dataset.json label values must be 0 (background), 1, 2 ... without gaps; "
                               f"got {sorted(values)}")
    return tuple(NnUNetLabel(v, values[v]) for v in sorted(values) if v != 0)


def _channels(config: Mapping[str, Any], plans: Mapping[str, Any], dataset: Mapping[str, Any]) \
        -> tuple[tuple[str, ...], tuple[ChannelNormalisation, ...]]:
    names_raw = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(names_raw, Mapping) or not names_raw:
        raise ModelFolderError("dataset.json lacks channel_names")
    names = tuple(str(names_raw[k]) for k in sorted(names_raw, key=int))
    schemes = config.get("normalization_schemes")
    masks = config.get("use_mask_for_norm")
    if not isinstance(schemes, list) or not isinstance(masks, list) or len(schemes) != len(names) \
            or len(masks) != len(names):
        raise ModelFolderError("plans.json normalization_schemes / use_mask_for_norm must list one entry per channel "
                               f"of dataset.json ({len(names)})")
    if len(names) != 1:
        raise UnsupportedModel(f"the model takes {len(names)} input channels ({', '.join(names)}); the appliance "
                               "feeds one image per network")
    props = plans.get("foreground_intensity_properties_per_channel",
                      plans.get("foreground_intensity_properties_by_modality", {}))
    channels = []
    for c, (scheme_name, use_mask) in enumerate(zip(schemes, masks, strict=True)):
        scheme = NORMALISATION_SCHEMES.get(str(scheme_name))
        if scheme is None:
            raise UnsupportedModel(f"normalisation {scheme_name!r} of channel {c} is not supported; supported: "
                                   f"{list(NORMALISATION_SCHEMES)}")
        p = props.get(str(c), {}) if isinstance(props, Mapping) else {}
        if scheme == "ct":
            missing = [k for k in ("mean", "std", "percentile_00_5", "percentile_99_5") if k not in p]
            if missing:
                raise ModelFolderError(f"plans.json foreground intensity properties of channel {c} lack {missing}, "
                                       "which CT normalisation needs")
            channels.append(ChannelNormalisation(scheme, bool(use_mask), float(p["mean"]), float(p["std"]),
                                                 float(p["percentile_00_5"]), float(p["percentile_99_5"])))
        else:
            channels.append(ChannelNormalisation(scheme, bool(use_mask)))
    return names, tuple(channels)


def available_folds(root: Path, checkpoint_name: str) -> tuple[str, ...]:
    """Numbered folds with the checkpoint, in order; ``('all',)`` when only ``fold_all`` has one."""
    numbered = sorted(int(p.name[5:]) for p in root.glob("fold_*")
                      if p.name[5:].isdigit() and (p / checkpoint_name).is_file())
    if numbered:
        return tuple(str(f) for f in numbered)
    return ("all",) if (root / "fold_all" / checkpoint_name).is_file() else ()


def _int_tuple(value: Any, key: str) -> tuple[int, ...]:
    if not isinstance(value, Sequence) or not value:
        raise ModelFolderError(f"plans.json {key} must be a list of integers, got {value!r}")
    return tuple(int(v) for v in value)


def read_trained_model(folder: Path, folds: Sequence[int | str] | None = None,
                       checkpoint_name: str = "checkpoint_final.pth") -> TrainedModel:
    """Parse and validate ``folder``; ``folds`` defaults to every ``fold_N`` holding ``checkpoint_name``."""
    folder = Path(folder)
    match = _FOLDER_NAME.match(folder.name)
    if match is None:
        raise ModelFolderError(f"folder {folder.name!r} is not named <Trainer>__<Plans>__<configuration> as nnU-Net "
                               "names trained-model folders")
    trainer, plans_name, configuration = match["trainer"], match["plans"], match["configuration"]
    dataset, plans = _load_json(folder / "dataset.json"), _load_json(folder / "plans.json")
    config = _resolve_configuration(plans, configuration)
    patch = _int_tuple(config.get("patch_size"), "patch_size")
    if len(patch) != 3:
        raise UnsupportedModel(f"configuration {configuration!r} is {len(patch)}D; the appliance runs 3D "
                               "configurations only (3d_fullres, 3d_lowres)")
    if config.get("previous_stage") is not None:
        raise UnsupportedModel(f"configuration {configuration!r} is the second stage of a cascade and needs the "
                               f"segmentation of {config['previous_stage']!r} as input; import 3d_fullres or "
                               "3d_lowres instead")
    spacing = tuple(float(s) for s in config.get("spacing", ()))
    forward = _int_tuple(plans.get("transpose_forward"), "transpose_forward")
    backward = _int_tuple(plans.get("transpose_backward"), "transpose_backward")
    if len(spacing) != 3 or min(spacing) <= 0 or sorted(forward) != [0, 1, 2] or sorted(backward) != [0, 1, 2] \
            or tuple(forward[b] for b in backward) != (0, 1, 2):
        raise ModelFolderError(f"plans.json spacing {spacing} / transpose_forward {forward} / transpose_backward "
                               f"{backward} are inconsistent")
    names, channels = _channels(config, plans, dataset)
    chosen = tuple(str(f) for f in folds) if folds is not None else available_folds(folder, checkpoint_name)
    if not chosen:
        raise ModelFolderError(f"no fold_N/{checkpoint_name} in {folder}")
    missing = [f for f in chosen if not (folder / f"fold_{f}" / checkpoint_name).is_file()]
    if missing:
        raise ModelFolderError(f"fold(s) {missing} have no {checkpoint_name} in {folder}; available: "
                               f"{list(available_folds(folder, checkpoint_name))}")
    return TrainedModel(
        root=folder, trainer=trainer, plans_name=plans_name, configuration=configuration,
        dataset_name=str(plans.get("dataset_name", "")), image_reader_writer=str(plans.get("image_reader_writer", "")),
        spacing=spacing, patch_size=patch, transpose_forward=forward, transpose_backward=backward,
        channel_names=names, channels=channels, data_resampling=_resampling(config, "data"),
        probabilities_resampling=_resampling(config, "probabilities"), architecture=_architecture(config),
        labels=_labels(dataset), folds=chosen, checkpoint_name=checkpoint_name, dataset_json=dataset,
    )


__all__ = ["ANISOTROPY_THRESHOLD", "Architecture", "ChannelNormalisation", "NnUNetLabel", "Resampling",
           "TrainedModel", "available_folds", "extract_zip", "find_model_folder", "read_trained_model"]
