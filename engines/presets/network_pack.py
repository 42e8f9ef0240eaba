"""``--preset pack:NAME``: any installed model pack run on its own as a segmentation preset.

Every pack goes through :class:`PackPreset`; the pack's manifest says which engine carries it out:

* ``"engine": "nnunet"`` (imported nnU-Net v2 trained-model folders, :mod:`engines.nnunet`): nnU-Net's own
  preprocessing, sliding window, fold ensembling and resampling back (:func:`engines.nnunet.predict.run_nnunet_pack`);
* ``"engine": "nnunet-set"`` (pack sets such as TotalSegmentator's ``total`` task): every member network through
  the same nnU-Net runner, combined by the set's rule (:func:`engines.nnunet.pack_set.run_pack_set`);
* any other pack (the shipped brainchop networks and ``appliance models import`` packs): conform to the pack's grid
  (:mod:`engines.conform`), :func:`engines.inference.run_pack`, labels back to the source grid.

The names are found in the installed pack folders at the time of the call (a pack imported while the service runs
is usable at once); :func:`register_pack_presets` plugs this lookup into the preset registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from appliance.core import Finding, LabelMap, Severity, Volume
from appliance.typed import Device, ProgressCallback
from engines.backends import choose_backend, create_backend
from engines.conform import conform, unconform_labels
from engines.errors import PackNotFound, UnknownPreset
from engines.inference import run_pack
from engines.nnunet.pack_set import SET_ENGINE, load_pack_set, run_pack_set
from engines.nnunet.predict import load_nnunet_pack, run_nnunet_pack
from engines.packs import ModelPack, find_pack, list_packs, load_pack
from engines.presets.base import Preset, SegmentationResult, register_preset_source

PREFIX = "pack:"
#: The pack that gives the brain mask to packs whose preprocessing asks for one (``mask_with_pack``).
MASK_PACK = "brainchop-mindgrab"


def pack_name(preset: str) -> str:
    """``NAME`` of ``pack:NAME``."""
    if not preset.startswith(PREFIX) or len(preset) == len(PREFIX):
        raise UnknownPreset(f"{preset!r} is not a pack preset; pack presets are named 'pack:NAME'")
    return preset[len(PREFIX):]


def installed_packs(dirs: Iterable[Path | str] | None = None) -> list[ModelPack]:
    """The valid installed packs (shipped first, then the hospital's), as ``appliance models list`` shows them."""
    return list_packs(dirs)


class PackPreset(Preset):
    """One installed pack as a preset; ``options`` may set ``backend`` (default ``auto``) and ``precision``."""

    def __init__(self, pack: ModelPack) -> None:
        self.pack = pack
        self.name = PREFIX + pack.name
        self.modalities = (pack.modality,)

    @property
    def engine(self) -> str:
        """``nnunet``, ``nnunet-set`` or ``onnx`` (every other pack)."""
        return str(self.pack.manifest.get("engine", "onnx"))

    def run(self, volume: Volume, device: Device, progress: ProgressCallback | None = None,
            options: Mapping[str, Any] | None = None) -> SegmentationResult:
        """Segment ``volume`` with the pack on the resolved ``device``; its files are re-verified (sha256) first."""
        opts = dict(options or {})
        backend = str(opts.get("backend", "onnxruntime"))
        if self.engine == "nnunet":  # every network is re-verified before the volume is touched
            labelmap = run_nnunet_pack(load_nnunet_pack(self.pack.root, verify=True), volume, device, backend,
                                       progress)
        elif self.engine == SET_ENGINE:
            labelmap = run_pack_set(load_pack_set(self.pack.root, verify=True), volume, device, backend, progress)
        else:
            labelmap = self._run_onnx_pack(volume, device, opts, progress)
        return SegmentationResult(labelmap, self._modality_findings(volume), {"preset": self.name, **labelmap.metadata})

    def _modality_findings(self, volume: Volume) -> list[Finding]:
        if volume.modality in (self.pack.modality, "OT"):
            return []
        return [Finding("pack_modality_mismatch", Severity.WARNING,
                        f"Pack {self.pack.name} was trained on {self.pack.modality}; this image is {volume.modality}. "
                        "Check every structure against the images.", "REQ-FUNC-100")]

    def _run_onnx_pack(self, volume: Volume, device: Device, opts: Mapping[str, Any],
                       progress: ProgressCallback | None) -> LabelMap:
        pack = load_pack(self.pack.root, verify=True)
        choice = choose_backend(device, str(opts.get("backend", "auto")))
        precision = str(opts.get("precision", "fp32")) if pack.fp16_allowed and choice.name != "onnxruntime" \
            else "fp32"
        backend = create_backend(choice, pack.onnx_path, precision=precision, sha256=pack.sha256)
        if progress is not None:
            progress("conform", 0.0)
        shape = pack.shape or volume.shape
        conformed = conform(volume, shape, float(pack.spacing_mm[0]), pack.orientation)
        if progress is not None:
            progress(self.name, 0.2)
        mask = None
        if any(step["step"] == "mask_with_pack" for step in pack.preprocessing):
            mask_pack = find_pack(str(opts.get("mask_pack", MASK_PACK)))
            mask_backend = create_backend(choice, mask_pack.onnx_path, precision=precision, sha256=mask_pack.sha256)
            if progress is not None:
                progress(mask_pack.name, 0.1)
            mask = run_pack(load_pack(mask_pack.root, verify=True), conformed.array, mask_backend).labels > 0
        output = run_pack(pack, conformed.array, backend, spacing=pack.spacing_mm, mask=mask)
        labels = unconform_labels(output.labels, conformed).astype(np.uint16)
        present = set(np.unique(labels).tolist())
        structures = [s for s in pack.structures if s.label in present]
        metadata = {"preset": self.name, "pack": pack.provenance(), "backend": choice.as_dict(),
                    "precision": precision, "timings": output.timings, "details": output.details}
        if progress is not None:
            progress("done", 1.0)
        return LabelMap.on(volume, labels, structures, metadata)


def pack_preset(name: str, dirs: Iterable[Path | str] | None = None) -> PackPreset:
    """The preset for ``pack:NAME``."""
    return PackPreset(find_pack(pack_name(name), dirs))


def pack_presets(dirs: Iterable[Path | str] | None = None) -> list[str]:
    """``pack:NAME`` for every installed pack."""
    return [PREFIX + pack.name for pack in installed_packs(dirs)]


def _lookup(name: str) -> Preset | None:
    if not name.startswith(PREFIX):
        return None
    try:
        return pack_preset(name)
    except PackNotFound as exc:
        raise UnknownPreset(str(exc)) from exc


def register_pack_presets() -> None:
    """Make ``pack:NAME`` a preset name for every pack installed at the time of the lookup."""
    register_preset_source(pack_presets, _lookup)


__all__ = ["PREFIX", "PackPreset", "installed_packs", "pack_name", "pack_preset",
           "pack_presets", "register_pack_presets"]
