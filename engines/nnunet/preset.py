"""``--preset pack:NAME`` for imported nnU-Net packs: a :class:`engines.presets.base.Preset` over one pack.

Registration stays with the preset registry's owner: ``nnunet_preset(name)`` builds the preset for an installed
pack and ``pack_presets(dirs)`` lists ``pack:NAME`` for every nnU-Net pack found, so wiring is one loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from appliance.core import Volume
from appliance.typed import ProgressCallback
from engines.nnunet.errors import NnUNetPackError
from engines.nnunet.predict import is_nnunet_pack, load_nnunet_pack, run_nnunet_pack
from engines.presets.base import Preset, SegmentationResult

PREFIX = "pack:"


def nnunet_pack_dirs(dirs: Iterable[Path | str] | None = None) -> list[Path]:
    """Folders of the installed nnU-Net packs under ``dirs`` (default: the pack directories of ``engines.packs``)."""
    from engines.packs import pack_dirs

    found: list[Path] = []
    for base in (pack_dirs() if dirs is None else [Path(d) for d in dirs]):
        if base.is_dir():
            found.extend(child for child in sorted(base.iterdir()) if child.is_dir() and is_nnunet_pack(child))
    return found


def find_nnunet_pack(name: str, dirs: Iterable[Path | str] | None = None) -> Path:
    """The folder of the installed nnU-Net pack called ``name``."""
    for root in nnunet_pack_dirs(dirs):
        if root.name == name or load_nnunet_pack(root, verify=False).name == name:
            return root
    raise NnUNetPackError(f"no nnU-Net pack {name!r} is installed (import one with `appliance models import-nnunet`)")


class NnUNetPackPreset(Preset):
    """Runs one installed nnU-Net pack; ``options`` may set ``backend`` (default onnxruntime)."""

    def __init__(self, root: Path) -> None:
        self.pack = load_nnunet_pack(root, verify=False)
        self.name = PREFIX + self.pack.name
        self.modalities = (str(self.pack.manifest.get("modality", "CT")),)

    def run(self, volume: Volume, device: str = "auto", progress: ProgressCallback | None = None,
            options: Mapping[str, Any] | None = None) -> SegmentationResult:
        """Segment ``volume``; the fold files are re-verified (sha256) before they run."""
        from kernels.device import resolve_device

        pack = load_nnunet_pack(self.pack.root, verify=True)
        backend = str((options or {}).get("backend", "onnxruntime"))
        labelmap = run_nnunet_pack(pack, volume, resolve_device(device), backend, progress)
        return SegmentationResult(labelmap, [], dict(labelmap.metadata))


def nnunet_preset(name: str, dirs: Iterable[Path | str] | None = None) -> NnUNetPackPreset:
    """The preset for ``pack:NAME`` (or ``NAME``)."""
    short = name[len(PREFIX):] if name.startswith(PREFIX) else name
    return NnUNetPackPreset(find_nnunet_pack(short, dirs))


def pack_presets(dirs: Iterable[Path | str] | None = None) -> list[str]:
    """``pack:NAME`` for every installed nnU-Net pack."""
    return [PREFIX + load_nnunet_pack(root, verify=False).name for root in nnunet_pack_dirs(dirs)]


__all__ = ["PREFIX", "NnUNetPackPreset", "find_nnunet_pack", "nnunet_pack_dirs", "nnunet_preset", "pack_presets"]
