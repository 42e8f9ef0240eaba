"""TotalSegmentator's 'total' task: the class table, recognition of its model folders, refusals, the combination rule.

Recognition tests use skeleton folders (the JSON files and empty checkpoints: nothing is loaded); the import and
inference on real CT are in ``test_totalsegmentator_import.py``.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers.nnunet_models import ModelSpec, dataset_json
from helpers.totalseg_models import published_rule, write_totalseg_folders

from appliance.core import StructureCategory
from engines.nnunet.errors import IncompleteModelSet, LicenceRequired, ModelFolderError, NotTotalSegmentator
from engines.nnunet.pack_set import combine_labels, lookup_table
from engines.nnunet.totalsegmentator import (
    TotalSegImportOptions,
    class_table,
    import_totalsegmentator,
    recognise,
    total_structures,
)

FULL_IDS = [291, 292, 293, 294, 295]


@pytest.mark.req("REQ-FUNC-901")
def test_class_table_has_the_117_classes_in_totalsegmentators_order() -> None:
    table = class_table()
    assert [c.value for c in table.classes] == list(range(1, 118))
    names = [c.name for c in table.classes]
    assert names[:5] == ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver"]
    assert names[24] == "sacrum" and names[50] == "heart" and names[115:] == ["sternum", "costal_cartilages"]
    full, fast = table.variants["full"], table.variants["fast"]
    assert [p.dataset_id for p in full.parts] == FULL_IDS and [p.dataset_id for p in fast.parts] == [297]
    assert [len(p.labels) for p in full.parts] == [24, 26, 18, 23, 26]
    # the five parts cover the 117 classes exactly once, in the combined order; the fast model predicts them all
    assert [n for p in full.parts for n in p.labels] == names and list(fast.parts[0].labels) == names
    assert (full.spacing_mm, full.trainer, fast.spacing_mm, fast.trainer) == (
        1.5, "nnUNetTrainerNoMirroring", 3.0, "nnUNetTrainer_4000epochs_NoMirroring")
    assert table.processing["tile_step"] == 0.8 and table.processing["orientation"] == "RAS"
    assert "totalsegmentator_snomed_mapping.csv" in table.sources["snomed_and_colors"]


@pytest.mark.req("REQ-FUNC-901")
def test_every_class_has_colour_category_group_and_code() -> None:
    table = class_table()
    by_name = {c.name: c for c in table.classes}
    for item in table.classes:
        assert item.snomed is None or item.snomed.isdigit(), item
        assert item.group in {"organ", "vessel", "bone", "muscle", "nerve", "airway", "lesion", "cartilage"}, item
    assert (by_name["liver"].snomed, by_name["aorta"].snomed, by_name["kidney_left"].snomed_laterality) == (
        "10200004", "15825003", "7771000")  # Liver, Aorta, Left (TotalSegmentator's mapping)
    assert by_name["spinal_cord"].category == "nerve" and by_name["trachea"].category == "airway"
    assert by_name["gluteus_maximus_left"].group == "muscle" and by_name["rib_left_1"].category == "bone"
    assert by_name["portal_vein_and_splenic_vein"].category == "vessel"
    structures = total_structures()
    assert len({s.name for s in structures}) == 117 and structures[26].name == "vertebrae_l5"
    assert {s.category for s in structures} >= {StructureCategory.ORGAN, StructureCategory.VESSEL,
                                                StructureCategory.BONE, StructureCategory.NERVE}
    assert len({s.color for s in structures}) > 100


@pytest.fixture(scope="module")
def skeletons(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("totalseg") / "nnunet" / "results"
    write_totalseg_folders(root, "full", skeleton=True)
    write_totalseg_folders(root, "fast", skeleton=True)
    return root


@pytest.mark.req("REQ-FUNC-900")
def test_recognises_each_part_and_the_fast_model(skeletons: Path) -> None:
    full = recognise(skeletons.parent.parent)  # auto: the parts, found from a parent folder
    assert full.variant.name == "full" and list(full.folders) == ["organs", "vertebrae", "cardiac", "muscles", "ribs"]
    assert full.folders["organs"].name == "nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres"
    assert full.folders["ribs"].parent.name == "Dataset295_TotalSegmentator_part5_ribs_1559subj"
    fast = recognise(skeletons, "fast")
    assert fast.variant.name == "fast"
    assert fast.folders["total_3mm"].name == "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres"


@pytest.mark.req("REQ-FUNC-900")
def test_incomplete_sets_are_refused_naming_what_is_missing(skeletons: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(skeletons, tmp_path / "r"))
    shutil.rmtree(root / "Dataset293_TotalSegmentator_part3_cardiac_1559subj")
    with pytest.raises(IncompleteModelSet, match="Dataset293 \\(cardiac\\)"):
        recognise(root)
    assert recognise(root, "fast").variant.name == "fast"  # the 3 mm model alone is still usable
    (root / "Dataset294_TotalSegmentator_part4_muscles_1559subj" / "nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres"
     / "fold_0" / "checkpoint_final.pth").unlink()
    shutil.copytree(skeletons / "Dataset293_TotalSegmentator_part3_cardiac_1559subj",
                    root / "Dataset293_TotalSegmentator_part3_cardiac_1559subj")
    with pytest.raises(IncompleteModelSet, match=r"fold_0/checkpoint_final\.pth"):
        recognise(root, "full")
    fast = root / "Dataset297_TotalSegmentator_total_3mm_1559subj"
    (fast / "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres").rename(
        fast / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    with pytest.raises(IncompleteModelSet, match="lacks nnUNetTrainer_4000epochs_NoMirroring"):
        recognise(root, "fast")


@pytest.mark.req("REQ-FUNC-900")
def test_foreign_folders_are_refused(skeletons: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    folder = foreign / "Dataset999_Liver" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps(dataset_json(ModelSpec(name="liver"))))
    with pytest.raises(NotTotalSegmentator, match="found \\['Dataset999'\\]"):
        recognise(foreign)
    with pytest.raises(NotTotalSegmentator, match="DatasetNNN"):
        recognise(tmp_path / "foreign" / "Dataset999_Liver" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    root = Path(shutil.copytree(skeletons, tmp_path / "r"))
    dataset = (root / "Dataset292_TotalSegmentator_part2_vertebrae_1532subj"
               / "nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres" / "dataset.json")
    data = json.loads(dataset.read_text())
    data["labels"] = {k: v for k, v in data["labels"].items() if k != "vertebrae_C1"}  # a 25-label vertebra model
    dataset.write_text(json.dumps(data))
    with pytest.raises(NotTotalSegmentator, match="25 labels, expected 26; missing \\['vertebrae_C1'\\]"):
        recognise(root)
    with pytest.raises(ModelFolderError, match="not a folder"):
        recognise(tmp_path / "nothing-here")


@pytest.mark.req("REQ-FUNC-903")
def test_licence_is_required_before_anything_is_read(skeletons: Path, tmp_path: Path) -> None:
    with pytest.raises(LicenceRequired, match="--licence"):
        import_totalsegmentator(skeletons, tmp_path / "packs", TotalSegImportOptions(licence="  "))
    assert not (tmp_path / "packs").exists()


@pytest.mark.req("REQ-FUNC-900")
def test_download_zips_are_recognised(skeletons: Path, tmp_path: Path) -> None:
    from engines.nnunet.totalsegmentator import unpack_downloads

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for dataset in sorted(skeletons.glob("Dataset29[1-5]_*")):
        with zipfile.ZipFile(downloads / f"{dataset.name}.zip", "w") as zf:
            for path in dataset.rglob("*"):
                zf.write(path, path.relative_to(skeletons))
    found = recognise(unpack_downloads(downloads, tmp_path / "scratch"))
    assert found.variant.name == "full" and len(found.folders) == 5


def _random_part_labels(rng: np.random.Generator, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Each part's labels as the argmax of random logits (background included), as a network would give them."""
    parts = class_table().variants["full"].parts
    return [rng.standard_normal((len(p.labels) + 1, *shape)).astype(np.float32).argmax(0) for p in parts]


@pytest.mark.req("REQ-FUNC-902")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_combination_equals_totalsegmentators_published_rule(seed: int) -> None:
    table = class_table()
    parts = table.variants["full"].parts
    rng = np.random.default_rng(seed)
    background = (0.6, 0.75, 0.9)[seed]  # sparse parts, as real ones are: overlaps and gaps both occur
    labels = [np.where(rng.random(lab.shape) < background, 0, lab)
              for lab in _random_part_labels(rng, (23, 17, 11))]
    ours = combine_labels(labels, [lookup_table(table.part_map(p), len(p.labels) + 1) for p in parts])
    part_maps = [{i + 1: n for i, n in enumerate(p.labels)} for p in parts]
    reference = published_rule(labels, part_maps, {c.value: c.name for c in table.classes})
    assert np.array_equal(ours, reference)
    assert set(np.unique(ours)) <= set(range(118)) and len(np.unique(ours)) > 90
    # a later part wins where two predict a class; a later part's background never erases
    where_ribs = labels[4] > 0
    assert np.all(ours[where_ribs] >= 92)
    only_organs = (labels[0] > 0) & np.all([lab == 0 for lab in labels[1:]], axis=0)
    assert np.array_equal(ours[only_organs], labels[0][only_organs])


@pytest.mark.req("REQ-FUNC-902")
def test_unknown_member_values_become_background() -> None:
    lut = lookup_table({1: 5, 2: 7}, 3)
    combined = combine_labels([np.array([[0, 1, 2, 9]])], [lut])
    assert combined.tolist() == [[0, 5, 7, 0]]
