"""Import an nnU-Net v2 trained-model folder (or a zip of one) as an appliance model pack.

``import_nnunet`` reads and validates the folder (:mod:`engines.nnunet.plans`), loads each chosen fold's
checkpoint safely, builds the network, exports it to ONNX with the configuration's patch size, checks that
onnxruntime gives PyTorch's logits on a random patch, and writes ``<dest>/<name>/`` with ``pack.json`` and one
``fold_<N>.onnx`` per fold. Nothing is written to ``dest`` until every fold has passed (the pack is assembled in
a temporary folder beside it and moved in place).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.fsio import replace_dir
from engines.nnunet.errors import CheckpointError, LicenceRequired, ModelFolderError
from engines.nnunet.network import (
    build_network,
    export_onnx,
    load_checkpoint,
    load_weights,
    mirror_axes_for,
    verify_export,
)
from engines.nnunet.plans import TrainedModel, extract_zip, find_model_folder, read_trained_model
from engines.nnunet.predict import MANIFEST, NnUNetPack, load_nnunet_pack
from engines.nnunet.recipe import ENGINE_NAME, STORED, FoldNetwork, NnUNetRecipe, label_specs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportOptions:
    """What the person importing decides (the CLI's flags)."""

    name: str
    licence: str
    folds: Sequence[int | str] | None = None
    checkpoint: str = "checkpoint_final.pth"
    configuration: str | None = None
    modality: str | None = None
    body_region: str = "any"
    orientation: str = STORED
    version: str = "1"
    replace: bool = False


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise ModelFolderError(f"pack name {name!r} may hold only letters, digits, '-', '_' and '.'")


def _modality(model: TrainedModel, override: str | None) -> str:
    if override:
        return override.upper()
    channel = model.channel_names[0].upper()
    return "CT" if model.channels[0].scheme == "ct" or channel == "CT" else "MR"


def _recipe(model: TrainedModel, folds: Sequence[FoldNetwork], mirror: tuple[int, ...], orientation: str) \
        -> NnUNetRecipe:
    sp, ps, tf, tb = model.spacing, model.patch_size, model.transpose_forward, model.transpose_backward
    return NnUNetRecipe(
        configuration=model.configuration, spacing=(sp[0], sp[1], sp[2]), patch_size=(ps[0], ps[1], ps[2]),
        transpose_forward=(tf[0], tf[1], tf[2]), transpose_backward=(tb[0], tb[1], tb[2]),
        channels=model.channels, data_resampling=model.data_resampling,
        probabilities_resampling=model.probabilities_resampling, mirror_axes=mirror, folds=tuple(folds),
        labels=label_specs([(lab.value, lab.name) for lab in model.labels]), input_orientation=orientation,
        source={"folder": model.root.name, "trainer": model.trainer, "plans": model.plans_name,
                "dataset": model.dataset_name, "checkpoint": model.checkpoint_name,
                "image_reader_writer": model.image_reader_writer, "channel_names": list(model.channel_names)},
    )


def build_manifest(model: TrainedModel, recipe: NnUNetRecipe, options: ImportOptions) -> dict[str, Any]:
    """``pack.json`` for the imported model (the common pack fields plus the ``nnunet`` recipe)."""
    first = recipe.folds[0]
    return {
        "schema": 1, "name": options.name, "version": options.version, "licence": options.licence.strip(),
        "modality": _modality(model, options.modality), "body_region": options.body_region,
        "description": f"nnU-Net v2 {model.dataset_name} {model.root.name}, folds "
                       f"{', '.join(f.fold for f in recipe.folds)}",
        "attribution": f"imported from {model.root.name}",
        "engine": ENGINE_NAME,
        "model": {"file": first.file, "sha256": first.sha256},
        "input": {"size_policy": "sliding_window", "orientation": "RAS" if recipe.input_orientation == STORED
                  else recipe.input_orientation, "axis_order": "kji"},
        "normalisation": {"method": "none"},
        "patch": {"size": list(recipe.patch_size), "overlap": 1.0 - recipe.tile_step},
        "classes": recipe.num_heads,
        "labels": [{"channel": lab.value, **lab.structure.to_dict()} for lab in recipe.labels],
        "nnunet": recipe.as_dict(),
    }


def _export_folds(model: TrainedModel, out: Path) -> tuple[list[FoldNetwork], tuple[int, ...], list[float]]:
    from engines.packs import sha256_file

    folds: list[FoldNetwork] = []
    mirrors: set[tuple[int, ...]] = set()
    errors: list[float] = []
    for fold in model.folds:
        checkpoint = load_checkpoint(model.checkpoint_path(fold), fold)
        if checkpoint.configuration not in (None, model.configuration):
            raise CheckpointError(f"fold {fold} was trained as {checkpoint.configuration!r}, but the folder is "
                                  f"{model.configuration!r}")
        mirrors.add(mirror_axes_for(model, checkpoint))
        network = load_weights(build_network(model.architecture, 1, model.num_heads), checkpoint)
        path = export_onnx(network, model.patch_size, out / f"fold_{fold}.onnx")
        errors.append(verify_export(network, path, model.patch_size))
        folds.append(FoldNetwork(fold, path.name, sha256_file(path)))
        log.info("fold %s exported to %s (onnxruntime vs torch: %.1e)", fold, path.name, errors[-1])
    if len(mirrors) != 1:
        raise CheckpointError(f"the folds disagree on the mirroring axes ({sorted(mirrors)}); import them separately")
    return folds, mirrors.pop(), errors


def import_nnunet(source: Path | str, dest_dir: Path | str, options: ImportOptions) -> NnUNetPack:
    """Import the trained-model folder or zip at ``source`` into ``dest_dir/<name>``; returns the installed pack."""
    if not options.licence or not options.licence.strip():
        raise LicenceRequired("the weights' licence is required to import a model: pass --licence with its text or "
                              "SPDX identifier (e.g. 'Apache-2.0', 'CC-BY-4.0')")
    _check_name(options.name)
    source, dest_dir = Path(source), Path(dest_dir)
    target = dest_dir / options.name
    if target.exists() and not options.replace:
        raise ModelFolderError(f"a pack {options.name!r} is already installed at {target}; choose another name or "
                               "replace it")
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nnunet-import-") as tmp:
        unpacked = source
        if source.is_file() and zipfile.is_zipfile(source):
            unpacked = extract_zip(source, Path(tmp) / "src")
        folder = find_model_folder(unpacked, options.configuration)
        model = read_trained_model(folder, options.folds, options.checkpoint)
        staging = Path(tempfile.mkdtemp(prefix=f".{options.name}-", dir=dest_dir))
        try:
            folds, mirror, errors = _export_folds(model, staging)
            recipe = _recipe(model, folds, mirror, options.orientation)
            manifest = build_manifest(model, recipe, options)
            manifest["nnunet"]["export_check"] = {"max_relative_error": max(errors)}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            licence_file = folder / "LICENSE"
            if licence_file.is_file():
                shutil.copy2(licence_file, staging / "LICENSE")
            replace_dir(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info("imported nnU-Net model %s as pack %s (%d folds)", model.root.name, options.name, len(folds))
    return load_nnunet_pack(target)


__all__ = ["ImportOptions", "build_manifest", "import_nnunet"]
