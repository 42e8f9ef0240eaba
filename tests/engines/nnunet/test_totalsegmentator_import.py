"""Importing TotalSegmentator-shaped random-weight models as one pack set, and running it on a real CT crop.

The five 1.5 mm parts and the 3 mm model are written as TotalSegmentator unpacks them (folder names, trainers,
label names and counts), with small networks; the import goes through the nnU-Net importer, the run through the
nnU-Net pack runner (onnxruntime, CPU). The combined labels must equal TotalSegmentator's published rule applied to
the members' own labels.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.nnunet_models import CT_IMAGE, crop_nifti
from helpers.totalseg_models import published_rule, write_totalseg_folders

from engines.nnunet.errors import LicenceRequired, PackSetError
from engines.nnunet.pack_set import load_pack_set
from engines.nnunet.totalsegmentator import TotalSegImportOptions, class_table, import_totalsegmentator
from engines.presets.network_pack import PackPreset, pack_preset

pytest.importorskip("torch")
pytest.importorskip("dynamic_network_architectures")


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("totalseg-downloads")
    write_totalseg_folders(root, "full")
    write_totalseg_folders(root, "fast")
    return root


@pytest.fixture(scope="module")
def installed(downloads: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("packs")
    pack_set = import_totalsegmentator(downloads, dest, TotalSegImportOptions(licence="Apache-2.0"))
    return pack_set.root


@pytest.fixture(scope="module")
def ct_crop(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = shared_data / CT_IMAGE
    if not source.is_file():
        pytest.skip(f"real test file {CT_IMAGE} is absent")
    return crop_nifti(source, tmp_path_factory.mktemp("ct") / "crop.nii.gz", ((49, 73), (38, 62), (44, 68)))


@pytest.mark.req("REQ-FUNC-900", "REQ-FUNC-903")
def test_import_makes_one_pack_set_that_lists_and_verifies(installed: Path) -> None:
    from engines.packs import list_packs, load_pack

    generic = load_pack(installed, verify=True)  # the common pack schema: list / verify see one pack
    assert generic.name == "totalsegmentator-total" and generic.classes == 118 and generic.licence == "Apache-2.0"
    assert [p.name for p in list_packs([installed.parent])] == ["totalsegmentator-total"]
    pack_set = load_pack_set(installed, verify=True)
    assert [m.key for m in pack_set.members] == ["organs", "vertebrae", "cardiac", "muscles", "ribs"]
    assert sorted(p.name for p in installed.iterdir()) == sorted(
        ["pack.json", *[f"{m.key}_fold_0.onnx" for m in pack_set.members]])
    for member in pack_set.members:
        recipe = member.pack.recipe
        assert recipe.tile_step == 0.8 and recipe.mirror_axes == () and recipe.input_orientation == "RAS"
        assert recipe.spacing == (1.5, 1.5, 1.5) and recipe.folds[0].file == f"{member.key}_fold_0.onnx"
    assert pack_set.members[4].lookup[26] == 117 and pack_set.members[0].lookup[5] == 5  # costal cartilages, liver
    assert [s.name for s in pack_set.structures][:3] == ["spleen", "kidney_right", "kidney_left"]
    assert pack_set.provenance()["members"][2]["folds"][0]["sha256"] == pack_set.members[2].pack.recipe.folds[0].sha256


@pytest.mark.req("REQ-FUNC-903")
def test_an_altered_member_network_is_refused(installed: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(installed, tmp_path / "copy"))
    with (copy / "ribs_fold_0.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(PackSetError, match=r"ribs.*sha256"):
        load_pack_set(copy, verify=True)
    with pytest.raises(PackSetError, match="sha256"):
        pack_preset("pack:totalsegmentator-total", [tmp_path]).run(None, "cpu")  # type: ignore[arg-type]


@pytest.mark.req("REQ-FUNC-902")
def test_pack_set_runs_on_real_ct_and_combines_by_the_published_rule(installed: Path, ct_crop: Path) -> None:
    from appliance.io.nifti import load_volume
    from engines.nnunet.predict import run_nnunet_pack

    volume = load_volume(ct_crop, "CT")
    preset = pack_preset("pack:totalsegmentator-total", [installed.parent])
    assert isinstance(preset, PackPreset) and preset.engine == "nnunet-set"
    result = preset.run(volume, "cpu")
    labels = result.labelmap.labels
    assert labels.shape == volume.shape and len(result.labelmap.structures) == 117
    assert result.provenance["pack"]["kind"] == "totalsegmentator-total"
    assert set(result.provenance["timings"]) >= {"organs_s", "ribs_s", "total_s"}
    pack_set = load_pack_set(installed)
    members = [run_nnunet_pack(m.pack, volume).labels for m in pack_set.members]
    table = class_table()
    part_maps = [{i + 1: n for i, n in enumerate(p.labels)} for p in table.variants["full"].parts]
    reference = published_rule(members, part_maps, {c.value: c.name for c in table.classes})
    assert np.array_equal(labels, reference)
    assert len(np.unique(labels)) > 10  # the random networks do predict many classes on the crop


@pytest.mark.req("REQ-FUNC-900", "REQ-FUNC-903")
def test_cli_imports_the_fast_model_and_it_runs(downloads: Path, ct_crop: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.commands.models_totalseg import add_import_totalsegmentator
    from appliance.io.nifti import load_volume

    parser = argparse.ArgumentParser()
    add_import_totalsegmentator(parser.add_subparsers())
    args = parser.parse_args(["import-totalsegmentator", str(downloads), "--variant", "fast", "--dest",
                              str(tmp_path)])
    with pytest.raises(LicenceRequired):
        args.func(args)
    args = parser.parse_args(["import-totalsegmentator", str(downloads), "--variant", "fast", "--dest",
                              str(tmp_path), "--licence", "Apache-2.0"])
    assert args.func(args) == 0
    assert "as totalsegmentator-total-fast" in capsys.readouterr().out
    pack_set = load_pack_set(tmp_path / "totalsegmentator-total-fast")
    assert [m.key for m in pack_set.members] == ["total_3mm"] and pack_set.members[0].pack.recipe.spacing == (3.0,) * 3
    assert list(pack_set.members[0].lookup) == list(range(118))  # the fast model predicts the combined values
    preset = pack_preset("pack:totalsegmentator-total-fast", [tmp_path])
    labels = preset.run(load_volume(ct_crop, "CT"), "cpu").labelmap.labels
    assert labels.max() <= 117 and len(np.unique(labels)) > 10
