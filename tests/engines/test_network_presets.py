"""``auto`` with installed networks: which pack it chooses, for which image, and the body region it reads.

The packs are imported random-weight nnU-Net models (tiny networks) and TotalSegmentator's 3 mm model shape (one
117-class member of a pack set); pack variants for other modalities and regions are copies with their manifest's
``modality`` / ``body_region`` / ``name`` changed (choosing reads only the manifest). The images are real CT from
``../shared/data``, cropped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.data import require
from helpers.nnunet_models import MR_IMAGE, ModelSpec, write_model_folder
from helpers.totalseg_models import write_totalseg_folders

from appliance.core import Volume
from appliance.io.nifti import load_volume
from engines.presets.auto import plan_auto
from engines.presets.regions import BodyRegion, body_region, region_from_tags

pytest.importorskip("torch")
pytest.importorskip("dynamic_network_architectures")

CT = "ct/totalsegmentator/example_ct.nii.gz"
ABDOMEN_BOX = ((30, 78), (20, 68), (0, 40))  # lower slab of the abdomen/pelvis CT: no lung in view


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Installed packs to copy from: a 3-organ CT nnU-Net pack and TotalSegmentator's 3 mm pack set."""
    from engines.nnunet.importer import ImportOptions, import_nnunet
    from engines.nnunet.totalsegmentator import TotalSegImportOptions, import_totalsegmentator

    root = tmp_path_factory.mktemp("network-presets")
    folder = write_model_folder(root / "models", ModelSpec(name="abdomen", mirror=False))
    organs = import_nnunet(folder, root / "store", ImportOptions(name="ct-abdomen-organs", licence="CC0-1.0",
                                                                 body_region="abdomen"))
    write_totalseg_folders(root / "downloads", "fast")
    total = import_totalsegmentator(root / "downloads", root / "store", TotalSegImportOptions(licence="Apache-2.0"))
    return {"organs": organs.root, "total": total.root}


def install(source: Path, dest: Path, **changes: Any) -> Path:
    """A copy of an installed pack in ``dest`` with the manifest's top-level fields ``changes`` replaced."""
    target = dest / str(changes.get("name", source.name))
    shutil.copytree(source, target)
    manifest = json.loads((target / "pack.json").read_text())
    manifest.update(changes)
    (target / "pack.json").write_text(json.dumps(manifest))
    return target


@pytest.fixture(scope="module")
def ct(shared_data: Path) -> Volume:
    """The real abdomen/pelvis CT (3 mm) in HU."""
    return load_volume(require(shared_data / CT), "CT", "HU")


def crop(volume: Volume, box: tuple[tuple[int, int], ...], **metadata: str) -> Volume:
    """A sub-block of ``volume`` (the affine is irrelevant for choosing) with extra recorded tags."""
    array = volume.array[tuple(slice(a, b) for a, b in box)]
    return dataclasses.replace(volume, array=np.ascontiguousarray(array), metadata={**volume.metadata, **metadata})


def fits(plan_candidates: tuple[dict[str, Any], ...]) -> dict[str, bool]:
    return {c["pack"]: c["fits"] for c in plan_candidates}


@pytest.mark.req("REQ-FUNC-950", "REQ-FUNC-951")
def test_auto_prefers_an_installed_ct_network_that_fits(sources: dict[str, Path], ct: Volume, tmp_path: Path) -> None:
    install(sources["organs"], tmp_path)
    plan = plan_auto(crop(ct, ABDOMEN_BOX), [tmp_path])
    assert plan.name == "pack:ct-abdomen-organs"
    assert plan.region is not None and plan.region.source == "image" and plan.region.regions == {"abdomen"}
    assert plan.fill_from_ct_default == ("body", "airway")
    assert fits(plan.candidates) == {"ct-abdomen-organs": True}
    record = plan.record()
    assert record["body_region"]["regions"] == ["abdomen"] and record["fill_from_ct_default"] == ["body", "airway"]
    assert "ct-abdomen-organs" in plan.reason and "body, airway" in plan.reason


@pytest.mark.req("REQ-FUNC-950", "REQ-FUNC-951")
def test_auto_leaves_a_network_for_another_modality_or_region(sources: dict[str, Path], ct: Volume,
                                                               tmp_path: Path) -> None:
    install(sources["organs"], tmp_path, name="mr-abdomen-organs", modality="MR")
    install(sources["organs"], tmp_path, name="ct-head-organs", body_region="head")
    install(sources["organs"], tmp_path, name="ct-chest-organs", body_region="chest")
    plan = plan_auto(crop(ct, ABDOMEN_BOX), [tmp_path])
    assert plan.name == "ct-default" and "no installed network fits" in plan.reason
    assert fits(plan.candidates) == {"mr-abdomen-organs": False, "ct-head-organs": False, "ct-chest-organs": False}
    why = {c["pack"]: c["why"] for c in plan.candidates}
    assert why["mr-abdomen-organs"] == "made for MR" and "'head'" in why["ct-head-organs"]
    assert plan.fill_from_ct_default == ()
    # the same chest pack fits once the tags say chest
    tagged = plan_auto(crop(ct, ABDOMEN_BOX, BodyPartExamined="CHEST"), [tmp_path])
    assert tagged.name == "pack:ct-chest-organs" and tagged.region is not None and tagged.region.source == "tags"


@pytest.mark.req("REQ-FUNC-950")
def test_auto_on_mr_weighs_mr_networks_and_falls_back_to_mr_brain(sources: dict[str, Path], shared_data: Path,
                                                                   tmp_path: Path) -> None:
    mr = load_volume(require(shared_data / MR_IMAGE), "MR")
    install(sources["organs"], tmp_path)  # a CT network: never for MR
    install(sources["organs"], tmp_path, name="mr-abdomen-organs", modality="MR")
    plan = plan_auto(mr, [tmp_path])
    assert plan.name == "mr-brain" and plan.region is not None and plan.region.source == "unknown"
    assert fits(plan.candidates) == {"ct-abdomen-organs": False, "mr-abdomen-organs": False}
    tagged = plan_auto(dataclasses.replace(mr, metadata={"BodyPartExamined": "ABDOMEN"}), [tmp_path])
    assert tagged.name == "pack:mr-abdomen-organs" and tagged.fill_from_ct_default == ()


@pytest.mark.req("REQ-FUNC-952")
def test_a_117_class_pack_set_wins_over_a_single_organ_pack(sources: dict[str, Path], ct: Volume,
                                                            tmp_path: Path) -> None:
    organs = json.loads((sources["organs"] / "pack.json").read_text())
    install(sources["organs"], tmp_path, name="ct-liver", labels=organs["labels"][:1])
    install(sources["total"], tmp_path)
    plan = plan_auto(crop(ct, ABDOMEN_BOX), [tmp_path])
    assert plan.name == "pack:totalsegmentator-total-fast"
    assert fits(plan.candidates) == {"ct-liver": True, "totalsegmentator-total-fast": True}
    assert {c["pack"]: c["structures"] for c in plan.candidates} == {"ct-liver": 1, "totalsegmentator-total-fast": 117}
    assert plan.fill_from_ct_default == ("body", "airway")  # TotalSegmentator has trachea, not airway


@pytest.mark.req("REQ-FUNC-952")
def test_equal_class_counts_go_to_the_narrower_region(sources: dict[str, Path], ct: Volume, tmp_path: Path) -> None:
    install(sources["organs"], tmp_path, name="a-trunk-organs", body_region="trunk")
    install(sources["organs"], tmp_path, name="b-any-organs", body_region="any")
    install(sources["organs"], tmp_path, name="c-abdomen-organs", body_region="abdomen")
    assert plan_auto(crop(ct, ABDOMEN_BOX), [tmp_path]).name == "pack:c-abdomen-organs"


@pytest.mark.req("REQ-FUNC-953")
@pytest.mark.parametrize(("tags", "regions"), [
    ({"BodyPartExamined": "CHEST"}, {"chest"}),
    ({"BodyPartExamined": "ABDOMEN", "description": "CT Abd/Pelvis portal venous"}, {"abdomen", "pelvis"}),
    ({"series_description": "Thorax-Abdomen 1.5 B31f"}, {"chest", "abdomen"}),
    ({"BodyPartExamined": "HEAD"}, {"head"}),
    ({"body_part": "KNEE"}, {"extremity"}),
])
def test_region_from_tags(tags: dict[str, str], regions: set[str]) -> None:
    volume = Volume(np.zeros((4, 4, 4), np.int16), np.eye(4), "CT", "HU", tags)
    found = region_from_tags(volume)
    assert found is not None and found.source == "tags" and found.regions == regions


@pytest.mark.req("REQ-FUNC-953")
def test_region_fits_pack_regions() -> None:
    chest_abdomen = BodyRegion(frozenset({"chest", "abdomen"}), "tags", "")
    assert chest_abdomen.fits("trunk") and chest_abdomen.fits("whole_body") and chest_abdomen.fits("any")
    assert not chest_abdomen.fits("abdomen") and not chest_abdomen.fits("head")
    unknown = BodyRegion(frozenset({"unknown"}), "unknown", "")
    assert unknown.fits("any") and unknown.fits("wholebody") and not unknown.fits("abdomen")
    assert not BodyRegion(frozenset(), "image", "").fits("any")


@pytest.mark.req("REQ-FUNC-953")
def test_region_from_the_ct_image(ct: Volume) -> None:
    whole = body_region(ct)  # abdomen/pelvis CT whose top slices hold the lung bases
    assert whole.source == "image" and whole.regions == {"chest", "abdomen"} and "lung air" in whole.evidence
    assert body_region(crop(ct, ABDOMEN_BOX)).regions == {"abdomen"}
    assert body_region(crop(ct, ((0, 122), (0, 101), (80, 112)))).regions == {"chest", "abdomen"}
    untagged = dataclasses.replace(ct, units="arbitrary")
    assert body_region(untagged).source == "unknown"  # no image rule without HU
    assert body_region(crop(ct, ABDOMEN_BOX, BodyPartExamined="CHEST")).regions == {"chest"}  # tags first
