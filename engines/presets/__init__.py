"""Segmentation presets: ``ct-default`` (classical CT), ``mr-brain`` (MeshNet networks), ``pack:NAME`` for every
installed model pack, and ``auto``.

Importing this package registers every preset built into this release and the ``pack:NAME`` lookup;
:func:`available_presets` is the one list of names the CLI, the API and the kiosk offer. :func:`choose_preset`
(:mod:`engines.presets.auto`) maps ``auto`` to a preset from the volume's modality and body region and says why.
"""

from __future__ import annotations

from engines.presets import ct_default, mr_brain  # importing them registers ct-default and mr-brain
from engines.presets.auto import choose_preset
from engines.presets.base import available_presets, get_preset
from engines.presets.network_pack import register_pack_presets

register_pack_presets()

__all__ = ["available_presets", "choose_preset", "ct_default", "get_preset", "mr_brain"]
