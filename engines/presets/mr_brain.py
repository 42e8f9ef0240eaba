"""``mr-brain``: T1 MRI → brain mask, grey/white matter and subcortical structures, on the input's grid.

Stages (each a model pack, chosen by option; defaults are the shipped brainchop networks):

1. conform the T1 to the networks' 1 mm 256^3 LIA grid (:mod:`engines.conform`);
2. ``mask_pack`` (mindgrab): brain mask; everything outside it is background;
3. ``tissue_pack``: white matter / grey matter;
4. ``subcortical_pack`` (18 classes): ventricles, thalamus, caudate, putamen, pallidum, hippocampus, amygdala,
   accumbens, ventral DC, brain stem, cerebellum; these override the tissue labels where found (the 18-class
   network's own cerebral white matter and cortex are left to the tissue network);
5. labels back to the source grid.

Structure names and colours come from the networks' colormaps; ventricles are ``other``, brain tissue ``organ``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import Finding, LabelMap, Severity, Structure, Volume
from appliance.typed import Device, ProgressCallback
from engines.backends import Backend, BackendChoice, choose_backend, create_backend
from engines.conform import conform, unconform_labels
from engines.errors import MrBrainError
from engines.inference import run_pack
from engines.packs import ModelPack, find_pack, pack_dirs
from engines.presets.base import Preset, SegmentationResult, register_preset
from kernels.device import device_description

log = logging.getLogger(__name__)

DEFAULT_PACKS = {
    "mask_pack": "brainchop-mindgrab",
    "tissue_pack": "brainchop-gw-20",
    "subcortical_pack": "brainchop-subcortical-18-21ch",
}
#: Subcortical-network structures left to the tissue network (cerebral white matter and cortex).
TISSUE_NAMES = ("cerebral_white_matter", "cerebral_cortex")
WHITE, GREY = "white_matter", "grey_matter"


def _pack_for(options: Mapping[str, Any], key: str, dirs: Sequence[Path]) -> ModelPack | None:
    name = options.get(key, DEFAULT_PACKS[key])
    if name in (None, "", "none"):
        return None
    return find_pack(str(name), dirs)


class MrBrainPreset(Preset):
    """Brain structures from a T1-weighted MRI with the brainchop MeshNet packs."""

    name = "mr-brain"
    modalities = ("MR",)

    def run(self, volume: Volume, device: Device, progress: ProgressCallback | None = None,
            options: Mapping[str, Any] | None = None) -> SegmentationResult:
        """Segment ``volume`` on ``device`` with the brain-mask, tissue and subcortical packs.

        ``options`` may name other packs (``mask_pack``, ``tissue_pack``, ``subcortical_pack``, ``none`` skips one),
        extra ``packs_dirs``, the ``backend`` and the ``precision``.
        """
        opts = dict(options or {})
        findings: list[Finding] = []
        if volume.modality not in ("MR", "OT"):
            raise MrBrainError(f"mr-brain needs a T1 MRI, got modality {volume.modality}; use --preset ct-default")
        dirs = pack_dirs([Path(d) for d in opts.get("packs_dirs", [])])
        packs = {k: _pack_for(opts, k, dirs) for k in DEFAULT_PACKS}
        if packs["mask_pack"] is None and packs["tissue_pack"] is None and packs["subcortical_pack"] is None:
            raise MrBrainError("mr-brain needs at least one of mask_pack, tissue_pack, subcortical_pack")
        choice = choose_backend(device, str(opts.get("backend", "auto")))
        precision = str(opts.get("precision", "fp32"))
        timings: dict[str, float] = {}

        def report(stage: str, fraction: float) -> None:
            if progress is not None:
                progress(stage, fraction)

        t0 = time.perf_counter()
        report("conform", 0.0)
        conformed = conform(volume)
        timings["conform_s"] = time.perf_counter() - t0
        outputs: dict[str, npt.NDArray[np.uint16]] = {}
        mask: npt.NDArray[np.bool_] | None = None
        stage_details: dict[str, Any] = {}
        for i, key in enumerate(("mask_pack", "tissue_pack", "subcortical_pack")):
            pack = packs[key]
            if pack is None:
                continue
            report(key.removesuffix("_pack"), (i + 1) / 5)
            t = time.perf_counter()
            backend = self._backend(choice, pack, precision)
            result = run_pack(pack, conformed.array, backend, mask=mask if key != "mask_pack" and any(
                s["step"] == "mask_with_pack" for s in pack.preprocessing) else None)
            outputs[key] = result.labels
            timings[f"{key.removesuffix('_pack')}_s"] = time.perf_counter() - t
            stage_details[key.removesuffix("_pack")] = {**result.details, **result.timings}
            if key == "mask_pack":
                mask = result.labels > 0
                if not mask.any():
                    findings.append(Finding("brain_mask_empty", Severity.WARNING,
                                            "No brain was found in this image; check that it is a head T1 MRI.",
                                            "REQ-FUNC-107"))
        report("merge", 0.8)
        labels, structures = self._merge(outputs, packs, mask)
        t = time.perf_counter()
        on_source = unconform_labels(labels, conformed).astype(np.uint16)
        timings["unconform_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        present = set(np.unique(on_source).tolist())
        used = [s for s in structures if s.label in present]
        provenance = {
            "preset": self.name,
            **choice.as_dict(),
            "device_name": device_description(choice.device),
            "precision": precision,
            "packs": [p.provenance() for p in packs.values() if p is not None],
            "timings": timings,
            "stages": stage_details,
            "conformed": {"resampled": conformed.resampled, "shape": list(conformed.array.shape)},
        }
        labelmap = LabelMap.on(volume, on_source, used, {"preset": self.name, "backend": choice.name})
        report("done", 1.0)
        return SegmentationResult(labelmap, findings, provenance)

    def _backend(self, choice: BackendChoice, pack: ModelPack, precision: str) -> Backend:
        if precision == "fp16" and not pack.fp16_allowed:
            precision = "fp32"
        if choice.name == "onnxruntime":
            precision = "fp32"
        backend = create_backend(choice, pack.onnx_path, precision=precision, sha256=pack.sha256)
        set_profile = getattr(backend, "set_profile", None)
        if set_profile is not None and pack.shape is not None:  # TensorRT: one engine for every crop of the grid
            set_profile((1, 1, 32, 32, 32), (1, 1, 192, 192, 192), (1, 1, *pack.shape))
        return backend

    @staticmethod
    def _merge(outputs: Mapping[str, npt.NDArray[np.uint16]], packs: Mapping[str, ModelPack | None],
               mask: npt.NDArray[np.bool_] | None) -> tuple[npt.NDArray[np.uint16], list[Structure]]:
        """Combine the stage outputs into one label volume with renumbered structures."""
        shape = next(iter(outputs.values())).shape
        out = np.zeros(shape, dtype=np.uint16)
        structures: list[Structure] = []

        def add(source: Structure, region: npt.NDArray[np.bool_], name: str | None = None) -> None:
            value = len(structures) + 1
            structures.append(Structure(value, name or source.name, source.color, source.category, source.snomed))
            out[region] = value

        tissue, sub = packs["tissue_pack"], packs["subcortical_pack"]
        if tissue is not None:
            for lab in tissue.labels:
                add(lab.structure, outputs["tissue_pack"] == lab.structure.label)
        elif sub is not None:
            for lab in sub.labels:
                if lab.structure.name in TISSUE_NAMES:
                    new = WHITE if lab.structure.name == TISSUE_NAMES[0] else GREY
                    add(lab.structure, outputs["subcortical_pack"] == lab.structure.label, new)
        if sub is not None:
            for lab in sub.labels:
                if lab.structure.name not in TISSUE_NAMES:
                    add(lab.structure, outputs["subcortical_pack"] == lab.structure.label)
        if mask is not None:
            if tissue is None and sub is None:
                brain = packs["mask_pack"]
                if brain is not None:
                    add(brain.labels[0].structure, mask)
            out[~mask] = 0
        return out, structures


register_preset("mr-brain", MrBrainPreset)
