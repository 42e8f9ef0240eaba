"""Structure terminology: every structure a shipped preset or model pack can produce has a Chinese anatomical name,
an English name, a category and a SNOMED CT code found in the DICOM standard's code tables."""

from __future__ import annotations

import re
from functools import cache
from typing import Any, cast

import pytest

from appliance.core import terminology
from appliance.core.errors import TerminologyError

CJK = re.compile(r"[\u4e00-\u9fff]")


@cache
def producible_structures() -> dict[str, str | None]:
    """Structure name -> the SNOMED CT code its producer declares, for every preset, installed pack and the pack
    set a hospital can import (TotalSegmentator's 117 classes, from the class map the box ships)."""
    from engines.lesions import LESION_SNOMED
    from engines.nnunet.totalsegmentator import total_structures
    from engines.packs import list_packs
    from engines.presets.ct_default import STRUCTURES
    from engines.presets.mr_brain import GREY, WHITE

    out: dict[str, str | None] = {name: s.snomed for name, s in STRUCTURES.items()}
    out.update({WHITE: None, GREY: None, "lesion": LESION_SNOMED, "lesion_margin_5mm": None})
    packs = list_packs()
    assert len(packs) >= 8  # the shipped brainchop packs at least
    for pack in packs:
        for structure in pack.structures:
            out.setdefault(structure.name, structure.snomed)
    for structure in total_structures():
        out.setdefault(structure.name, structure.snomed)
    return out


@pytest.mark.req("REQ-HCI-703")
def test_every_producible_structure_has_a_chinese_and_an_english_name() -> None:
    structures = sorted(producible_structures())
    assert len(structures) > 270  # 165 of presets and shipped packs, 116 more of TotalSegmentator
    missing = {lang: terminology.missing_names(structures, lang) for lang in terminology.LANGUAGES}
    assert missing == {"en": [], "zh-CN": []}, f"structures without a display name: {missing}"
    not_chinese = [s for s in structures if not CJK.search(terminology.display_name(s, "zh-CN"))]
    assert not not_chinese, f"zh-CN names without Chinese characters: {not_chinese}"
    unknown = [s for s in structures if terminology.term(s) is None]
    assert not unknown, f"structures without a row in structures.json: {unknown}"


@pytest.mark.req("REQ-HCI-703")
def test_codes_categories_and_names_are_consistent() -> None:
    from pydicom.sr._concepts_dict import concepts

    sct = cast(dict[str, dict[str, Any]], concepts["SCT"])
    dicom_codes = {code for entries in sct.values() for code in entries}
    declared = producible_structures()
    rows = terminology.known_structures()
    for lang in terminology.LANGUAGES:  # every language names exactly the rows of the table
        names = {s for s in rows if terminology.has_name(s, lang)}
        assert names == set(rows), (lang, set(rows) - names)
    for name in rows:
        t = terminology.term(name)
        assert t is not None and t.category in terminology.CATEGORIES
        assert t.snomed, f"{name} has no SNOMED CT code"
        # a code is either in DICOM's SNOMED CT tables or the one the producing preset itself declares
        assert t.snomed in dicom_codes or t.snomed == declared.get(name), f"{name}: {t.snomed} not verifiable"
        if declared.get(name):
            assert declared[name] == t.snomed, f"{name}: preset says {declared[name]}, table says {t.snomed}"
        side = "左" if t.laterality == "left" else "右" if t.laterality == "right" else None
        if side:
            assert terminology.display_name(name, "zh-CN").startswith(side)
            assert terminology.display_name(name, "en").lower().startswith(t.laterality or "")


@pytest.mark.req("REQ-HCI-703")
def test_display_name_api() -> None:
    assert terminology.display_name("lung_left", "zh-CN") == "左肺"
    assert terminology.display_name("body", "en") == "Body outline"
    assert terminology.display_name("ctx_rh_superiorfrontal", "zh-CN") == "右侧额上回"
    assert terminology.display_name("lesion_margin_2p5mm", "en") == "Lesion, 2.5 mm margin"
    assert terminology.display_name("lesion_margin_10mm", "zh-CN") == "病灶（10 mm 安全边界）"
    assert terminology.category("bone") == "bone" and terminology.category("lesion_margin_5mm") == "lesion"
    assert terminology.snomed("bone") == ("272673000", "Bone")
    assert terminology.snomed("lesion_margin_5mm") is None
    assert terminology.display_name("phantom_box", "zh-CN") == "phantom box"  # unknown: the identifier, spaced
    assert terminology.category("phantom_box") == "other"
    assert terminology.missing_names(["bone", "phantom_box"], "zh-CN") == ["phantom_box"]
    with pytest.raises(TerminologyError, match="fr"):
        terminology.display_name("bone", "fr")
