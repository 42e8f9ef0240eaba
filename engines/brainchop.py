"""Build model packs from brainchop's TensorFlow.js MeshNet networks.

brainchop keeps each network's preprocessing in its web app's parameter table, not in the tfjs file. The settings
below restate, per network, what that table says (normalisation, crop threshold, crop padding, whether a brain
mask from another network is needed first); they were read from brainchop's published parameter list and
re-expressed as pack manifest steps. Unknown networks get min-max normalisation and a crop to voxels above 0.
Label names and colours come from the network's ``colormap.json`` (``colormap3.json`` when it fits the output).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from engines.packs import ModelPack, load_pack, sha256_file, write_manifest
from engines.tfjs import convert, load_tfjs, output_classes

log = logging.getLogger(__name__)

ATTRIBUTION = ("MeshNet networks from brainchop (https://github.com/neuroneural/brainchop), "
               "Copyright (c) 2021 neuroneural/brainchop, MIT licence; converted from TensorFlow.js to ONNX")

#: Per-network settings: pack name, description, normalisation, crop threshold/padding, needs a brain mask first.
BRAINCHOP_SETTINGS: dict[str, dict[str, Any]] = {
    "mindgrab": {"name": "brainchop-mindgrab", "role": "brain_mask", "norm": {"method": "quantile", "lower": 0.05,
                 "upper": 0.95}, "threshold": 0.5, "padding": 20,
                 "description": "omnimodal skull stripping (brain mask), 15 channels, GELU, per-channel group norm"},
    "model5_gw_ae": {"name": "brainchop-gw-5", "role": "tissue", "norm": {"method": "minmax"}, "threshold": 0.0,
                     "padding": 18, "colormap": "colormap3.json",
                     "description": "grey/white matter, 5 channels (light)"},
    "model11_gw_ae": {"name": "brainchop-gw-11", "role": "tissue", "norm": {"method": "minmax"}, "threshold": 0.0,
                      "padding": 0, "fallback_labels": ["background", "White Matter", "Grey Matter"],
                      "description": "grey/white matter / brain extraction, 11 channels (no colormap shipped: "
                                     "class names assumed as in model5_gw_ae)"},
    "model20chan3cls": {"name": "brainchop-gw-20", "role": "tissue", "norm": {"method": "quantile", "lower": 0.05,
                        "upper": 0.95}, "threshold": 0.2, "padding": 0,
                        "description": "grey/white matter, 20 channels (high accuracy)"},
    "model18cls": {"name": "brainchop-subcortical-18-21ch", "role": "subcortical", "norm": {"method": "minmax"},
                   "threshold": 0.2, "padding": 0,
                   "description": "17 subcortical structures + grey/white, 21 channels"},
    "model30chan18cls": {"name": "brainchop-subcortical-18-30ch", "role": "subcortical",
                         "norm": {"method": "minmax"}, "threshold": 0.2, "padding": 0,
                         "description": "17 subcortical structures + grey/white, 30 channels"},
    "model30chan50cls": {"name": "brainchop-aparc-50", "role": "parcellation", "norm": {"method": "quantile",
                         "lower": 0.05, "upper": 0.95}, "threshold": 0.0, "padding": 0,
                         "description": "aparc+aseg, 50 classes (cortical homologues merged), 30 channels"},
    "model21_104class": {"name": "brainchop-aparc-104", "role": "parcellation", "norm": {"method": "minmax"},
                         "mask": True, "padding": 0,
                         "description": "aparc+aseg, 104 classes, 21 channels; needs a brain mask first"},
}

_CSF_WORDS = ("ventricle", "csf", "vessel", "choroid")


def structure_name(label: str) -> str:
    """``"Left-Cerebral-White-Matter"`` → ``"left_cerebral_white_matter"``."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", label.strip()).strip("_").lower()
    return name or "unnamed"


def _colormap(model_dir: Path, classes: int, preferred: str | None) -> Mapping[str, Any] | None:
    names = [preferred] if preferred else []
    names += ["colormap.json", "colormap3.json"]
    for name in names:
        path = model_dir / name
        if path.is_file():
            cmap = json.loads(path.read_text())
            if len(cmap.get("labels", [])) == classes:
                return dict(cmap)
    return None


def _labels(cmap: Mapping[str, Any] | None, classes: int) -> list[dict[str, Any]]:
    labels: list[dict[str, Any]] = []
    seen: set[str] = set()
    for channel in range(1, classes):
        if cmap is not None:
            raw = str(cmap["labels"][channel])
            color = [int(cmap["R"][channel]), int(cmap["G"][channel]), int(cmap["B"][channel])]
        else:
            raw, color = f"class_{channel}", [(53 * channel) % 256, (97 * channel) % 256, (193 * channel) % 256]
        name = structure_name(raw)
        if name in ("brain_mask",):
            name = "brain"
        base, k = name, 2
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        category = "other" if any(w in name for w in _CSF_WORDS) else "organ"
        labels.append({"channel": channel, "value": channel, "name": name, "display_name": raw, "color": color,
                       "category": category})
    return labels


def build_pack_from_tfjs(model_dir: Path | str, out_dir: Path | str, name: str | None = None,
                         version: str = "1.0.0", licence_file: Path | None = None) -> ModelPack:
    """Convert the tfjs network in ``model_dir`` and write a validated pack into ``out_dir``."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    key = model_dir.name
    settings = BRAINCHOP_SETTINGS.get(key, {"name": structure_name(key).replace("_", "-"), "role": "unknown",
                                            "norm": {"method": "minmax"}, "threshold": 0.0, "padding": 0,
                                            "description": f"converted from {key}"})
    model = load_tfjs(model_dir)
    onnx_model = convert(model, axis_order="ijk", graph_name=key)
    classes = output_classes(onnx_model)
    cmap = _colormap(model_dir, classes, settings.get("colormap"))
    fallback = settings.get("fallback_labels")
    if cmap is None and fallback and len(fallback) == classes:
        grey = [0, 255, 205][:classes] + [128] * max(0, classes - 3)
        cmap = {"labels": fallback, "R": grey, "G": [0, 255, 62][:classes], "B": [0, 255, 78][:classes]}
    if cmap is None:
        log.warning("%s: no colormap with %d labels; classes get generic names", model_dir, classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.onnx"
    onnx.save(onnx_model, str(onnx_path))
    pre: list[dict[str, Any]] = []
    if settings.get("mask"):
        pre.append({"step": "mask_with_pack", "role": "brain_mask", "padding": int(settings.get("padding", 0))})
    else:
        pre.append({"step": "crop_to_foreground", "threshold": float(settings.get("threshold", 0.0)),
                    "padding": int(settings.get("padding", 0))})
    manifest: dict[str, Any] = {
        "schema": 1,
        "name": name or settings["name"],
        "version": version,
        "licence": "MIT",
        "attribution": ATTRIBUTION,
        "description": settings.get("description", ""),
        "role": settings.get("role", "unknown"),
        "source": {"format": "tfjs-layers", "folder": key, "model_json_sha256": sha256_file(model_dir / "model.json")},
        "modality": "MR",
        "body_region": "head",
        "model": {"file": "model.onnx", "sha256": sha256_file(onnx_path), "input": "input", "output": "logits",
                  "opset": onnx_model.opset_import[0].version},
        "input": {"spacing_mm": [1.0, 1.0, 1.0], "orientation": "LIA", "size_policy": "fixed",
                  "shape": [256, 256, 256], "axis_order": "ijk", "conform": "freesurfer_uchar"},
        "normalisation": dict(settings["norm"]),
        "patch": {"size": [256, 256, 256], "overlap": 0.0},
        "classes": classes,
        "labels": _labels(cmap, classes),
        "preprocessing": pre,
        "postprocessing": [{"step": "largest_component"}] if settings.get("role") == "brain_mask" else [],
        "fp16_allowed": True,
    }
    licence_src = licence_file or (model_dir.parents[2] / "LICENSE" if len(model_dir.parents) > 2 else None)
    if licence_src is not None and Path(licence_src).is_file():
        shutil.copyfile(licence_src, out_dir / "LICENSE")
        manifest["licence_file"] = "LICENSE"
    write_manifest(out_dir, manifest)
    pack = load_pack(out_dir, verify=True)
    log.info("built pack %s (%d classes) from %s", pack.name, classes, model_dir)
    return pack
