"""``fill_unlabelled``: a network's labels win; ct-default's structures only fill what the network left empty."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.core import LabelMap, Structure, StructureCategory
from engines.errors import LabelMergeError
from engines.presets.merge import fill_unlabelled


def _structure(label: int, name: str, category: StructureCategory = StructureCategory.ORGAN) -> Structure:
    return Structure(label, name, (200, 100, 50), category)


def _maps() -> tuple[LabelMap, LabelMap]:
    network = np.zeros((6, 6, 6), np.uint16)
    network[1:3, 1:5, 1:5] = 1  # liver
    network[3:5, 1:5, 1:5] = 5  # spleen (a gap in the label values)
    classical = np.zeros((6, 6, 6), np.uint16)
    classical[0:6, 0:6, 0:5] = 1  # body covers nearly everything
    classical[2:4, 2:4, 5] = 7  # airway, partly where the network has nothing
    primary = LabelMap(network, np.eye(4), (_structure(1, "liver"), _structure(5, "spleen")), {"preset": "pack:x"})
    secondary = LabelMap(classical, np.eye(4), (_structure(1, "body", StructureCategory.OTHER),
                                                 _structure(7, "airway", StructureCategory.AIRWAY)))
    return primary, secondary


@pytest.mark.req("REQ-FUNC-954")
def test_network_labels_win_and_fills_take_new_values() -> None:
    primary, secondary = _maps()
    merged, rules = fill_unlabelled(primary, secondary, ("body", "airway"), "ct-default")
    labels = merged.labels
    assert np.array_equal(labels[primary.labels > 0], primary.labels[primary.labels > 0])  # nothing overwritten
    names = {s.name: s.label for s in merged.structures}
    assert names == {"liver": 1, "spleen": 5, "body": 6, "airway": 7}
    body = (secondary.labels == 1) & (primary.labels == 0)
    assert np.array_equal(labels == 6, body)
    assert np.array_equal(labels == 7, (secondary.labels == 7) & (primary.labels == 0))
    assert [(r["structure"], r["applied"], r["label"]) for r in rules] == [("body", True, 6), ("airway", True, 7)]
    assert rules[0]["voxels"] == int(body.sum()) and rules[0]["from"] == "ct-default"
    assert merged.metadata["merged"] == rules and merged.metadata["preset"] == "pack:x"
    assert primary.labels.max() == 5  # the inputs are left as they were


@pytest.mark.req("REQ-FUNC-954")
def test_a_name_the_network_has_or_the_classical_lacks_is_not_filled() -> None:
    primary, secondary = _maps()
    primary = LabelMap(primary.labels, primary.affine, (*primary.structures, _structure(9, "body")))
    merged, rules = fill_unlabelled(primary, secondary, ("body", "airway", "trachea"), "ct-default")
    by_name = {r["structure"]: r for r in rules}
    assert not by_name["body"]["applied"] and "network has a structure of this name" in by_name["body"]["rule"]
    assert not by_name["trachea"]["applied"] and "produced no trachea" in by_name["trachea"]["rule"]
    assert by_name["airway"]["applied"] and by_name["airway"]["label"] == 10  # above every value in use
    assert [s.name for s in merged.structures] == ["liver", "spleen", "body", "airway"]
    assert not np.any(merged.labels == 9) and int((merged.labels == 10).sum()) == by_name["airway"]["voxels"]


@pytest.mark.req("REQ-FUNC-954")
def test_maps_on_different_grids_are_refused() -> None:
    primary, secondary = _maps()
    shifted = np.eye(4)
    shifted[0, 3] = 1.5
    with pytest.raises(LabelMergeError, match="different grids"):
        fill_unlabelled(primary, LabelMap(secondary.labels, shifted, secondary.structures), ("body",), "ct-default")
    with pytest.raises(LabelMergeError, match="different grids"):
        fill_unlabelled(primary, LabelMap(secondary.labels[:5], np.eye(4), secondary.structures), ("body",),
                        "ct-default")
