"""Merge rules for ``auto``: structures of a second label map added where the first labelled nothing.

A network's labels always win; a structure taken from the classical preset (``body``, ``airway``) only fills
voxels the network left as background, under a label value the network does not use. Each rule applied is
returned as a record for ``segment.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from appliance.core import LabelMap
from engines.errors import LabelMergeError


def fill_unlabelled(primary: LabelMap, secondary: LabelMap, names: Sequence[str], source: str) \
        -> tuple[LabelMap, list[dict[str, Any]]]:
    """``primary`` plus each structure of ``secondary`` named in ``names`` on the voxels ``primary`` left empty."""
    if primary.labels.shape != secondary.labels.shape or not np.allclose(primary.affine, secondary.affine):
        raise LabelMergeError("cannot merge label maps on different grids")
    labels = np.asarray(primary.labels).astype(np.uint16, copy=True)
    structures = list(primary.structures)
    taken_names = {s.name for s in structures}
    next_label = max([s.label for s in structures] + [int(labels.max()), 0]) + 1
    empty = labels == 0
    rules: list[dict[str, Any]] = []
    for name in names:
        if name in taken_names:
            rules.append({"structure": name, "from": source, "applied": False,
                          "rule": "the network has a structure of this name; its voxels are kept"})
            continue
        found = [s for s in secondary.structures if s.name == name]
        if not found:
            rules.append({"structure": name, "from": source, "applied": False,
                          "rule": f"{source} produced no {name} on this image"})
            continue
        where = empty & (np.asarray(secondary.labels) == found[0].label)
        labels[where] = next_label
        structures.append(replace(found[0], label=next_label))
        rules.append({"structure": name, "from": source, "applied": True, "label": next_label,
                      "voxels": int(where.sum()),
                      "rule": f"{name} from {source} on the voxels the network left unlabelled"})
        next_label += 1
        empty &= ~where
    metadata = {**dict(primary.metadata), "merged": rules}
    return LabelMap(labels, primary.affine, tuple(structures), metadata), rules


__all__ = ["fill_unlabelled"]
