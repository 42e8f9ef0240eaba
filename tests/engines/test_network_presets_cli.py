"""Network presets through the CLI: ``appliance segment --preset pack:NAME`` / ``auto`` on a real CT with an installed
random-weight nnU-Net pack, and ``appliance models verify`` on multi-fold packs and pack sets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.data import require
from helpers.nnunet_models import CT_IMAGE, ModelSpec, crop_nifti, write_model_folder
from helpers.totalseg_models import write_totalseg_folders

from appliance.cli import main
from engines.labelmap_io import read_labelmap

pytest.importorskip("torch")
pytest.importorskip("dynamic_network_architectures")

PACK = "ct-abdomen-organs"


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pack folder holding a 2-fold CT abdomen nnU-Net pack (tiny random network)."""
    from engines.nnunet.importer import ImportOptions, import_nnunet

    root = tmp_path_factory.mktemp("cli-packs")
    folder = write_model_folder(root / "models", ModelSpec(name="abdomen", mirror=False, folds=(0, 1)))
    import_nnunet(folder, root / "packs", ImportOptions(name=PACK, licence="CC0-1.0", body_region="abdomen"))
    return root / "packs"


@pytest.fixture(scope="module")
def ct_crop(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48 x 48 x 40 block of the real abdomen CT (3 mm), below the lungs."""
    source = require(shared_data / CT_IMAGE)
    return crop_nifti(source, tmp_path_factory.mktemp("ct") / "abdomen.nii.gz", ((30, 78), (20, 68), (0, 40)))


def _segment(ct: Path, out: Path, preset: str) -> dict:  # type: ignore[type-arg]
    assert main(["segment", str(ct), "--modality", "CT", "--preset", preset, "--out", str(out),
                 "--device", "cpu"]) == 0
    return json.loads((out / "segment.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.req("REQ-FUNC-956", "REQ-FUNC-950")
def test_segment_with_pack_preset_runs_the_network(packs: Path, ct_crop: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_MODEL_PACKS", str(packs))
    record = _segment(ct_crop, tmp_path, f"pack:{PACK}")
    assert record["preset"]["name"] == f"pack:{PACK}" and "chosen by the user" in record["preset"]["reason"]
    assert record["provenance"]["pack"]["folds"][1]["fold"] == "1"  # both folds ran (ensemble)
    lm = read_labelmap(tmp_path / "labels.nii.gz", tmp_path / "structures.json")
    assert {s.name for s in lm.structures} <= {"liver", "kidney_left", "spleen"} and len(lm.structures) >= 2
    assert "body" not in {s.name for s in lm.structures}  # no classical fill when the user chose the pack


@pytest.mark.req("REQ-FUNC-956", "REQ-FUNC-951")
def test_segment_auto_runs_the_pack_and_records_the_plan(packs: Path, ct_crop: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_MODEL_PACKS", str(packs))
    record = _segment(ct_crop, tmp_path, "auto")
    plan = record["preset"]
    assert plan["requested"] == "auto" and plan["name"] == f"pack:{PACK}"
    assert plan["candidates"] == [{"pack": PACK, "fits": True, "structures": 3,
                                   "why": "CT, 'abdomen', 3 structures"}]
    assert plan["body_region"]["regions"] == ["abdomen"] and plan["body_region"]["source"] == "image"
    assert plan["fill_from_ct_default"] == ["body", "airway"]
    rules = {r["structure"]: r for r in plan["merge"]}
    assert rules["body"]["applied"] and rules["body"]["voxels"] > 1000 and rules["body"]["from"] == "ct-default"
    assert not rules["airway"]["applied"]  # no trachea below the lungs: recorded, not invented
    assert "ct_default_fill" in record["provenance"]["stage_timings_s"]
    lm = read_labelmap(tmp_path / "labels.nii.gz", tmp_path / "structures.json")
    body = next(s for s in lm.structures if s.name == "body")
    assert body.label == rules["body"]["label"] and int((lm.labels == body.label).sum()) == rules["body"]["voxels"]
    network = [s.label for s in lm.structures if s.name != "body"]
    assert np.isin(lm.labels, [0, body.label, *network]).all()


@pytest.fixture(scope="module")
def total_fast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TotalSegmentator's 3 mm model shape imported as a pack set (one 117-class member)."""
    from engines.nnunet.totalsegmentator import TotalSegImportOptions, import_totalsegmentator

    root = tmp_path_factory.mktemp("cli-total")
    write_totalseg_folders(root / "downloads", "fast")
    return import_totalsegmentator(root / "downloads", root / "packs", TotalSegImportOptions(
        licence="Apache-2.0")).root


@pytest.mark.req("REQ-FUNC-955")
def test_models_verify_names_every_altered_or_missing_fold(packs: Path, total_fast: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    copies = tmp_path / "packs"
    shutil.copytree(packs / PACK, copies / PACK)
    shutil.copytree(total_fast, copies / total_fast.name)
    names = [PACK, total_fast.name]
    assert main(["models", "--packs-dir", str(copies), "verify", *names]) == 0
    out = capsys.readouterr().out
    assert f"ok      {PACK} 1 (2 networks" in out and f"ok      {total_fast.name} 1 (1 networks" in out
    with (copies / PACK / "fold_1.onnx").open("ab") as fh:  # fold 0 (the manifest's 'model') stays intact
        fh.write(b"\0")
    with (copies / total_fast.name / "total_3mm_fold_0.onnx").open("r+b") as fh:
        fh.seek(100)
        fh.write(b"XX")
    assert main(["models", "--packs-dir", str(copies), "verify", *names]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"FAILED  {PACK}: fold 1: fold_1.onnx has sha256") for line in lines)
    assert not any("fold 0" in line and PACK + ":" in line for line in lines)
    assert any(line.startswith(f"FAILED  {total_fast.name}: member total_3mm fold 0: total_3mm_fold_0.onnx has")
               for line in lines)
    (copies / PACK / "fold_1.onnx").unlink()
    assert main(["models", "--packs-dir", str(copies), "verify", PACK]) == 1
    assert f"FAILED  {PACK}: fold 1: fold_1.onnx is missing" in capsys.readouterr().out


@pytest.mark.req("REQ-FUNC-956")
def test_a_pack_chosen_for_another_modality_runs_with_a_warning(packs: Path, shared_data: Path) -> None:
    from helpers.nnunet_models import MR_IMAGE

    from appliance.io.nifti import load_volume
    from engines.presets.network_pack import pack_preset

    mr = load_volume(require(shared_data / MR_IMAGE), "MR")
    mr = type(mr)(np.ascontiguousarray(mr.array[80:120, 80:120, 90:130]), mr.affine, "MR", mr.units)
    result = pack_preset(f"pack:{PACK}", [packs]).run(mr, "cpu")
    assert [f.code for f in result.findings] == ["pack_modality_mismatch"]
    assert result.labelmap.labels.shape == mr.shape and result.provenance["preset"] == f"pack:{PACK}"


@pytest.mark.req("REQ-FUNC-952", "REQ-FUNC-956")
def test_auto_runs_the_117_class_set_over_the_organ_pack(packs: Path, total_fast: Path, ct_crop: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.presets import available_presets, get_preset
    from engines.presets.network_pack import PackPreset

    installed = tmp_path / "installed"
    shutil.copytree(packs / PACK, installed / PACK)
    shutil.copytree(total_fast, installed / total_fast.name)
    monkeypatch.setenv("APPLIANCE_MODEL_PACKS", str(installed))
    name = f"pack:{total_fast.name}"
    assert {f"pack:{PACK}", name} <= set(available_presets())  # the list the CLI, API and kiosk offer
    preset = get_preset(name)
    assert isinstance(preset, PackPreset) and preset.engine == "nnunet-set"
    record = _segment(ct_crop, tmp_path / "out", "auto")
    assert record["preset"]["name"] == name
    assert {c["pack"]: c["structures"] for c in record["preset"]["candidates"]} == {PACK: 3, total_fast.name: 117}
    assert record["provenance"]["pack"]["engine"] == "nnunet-set"
    lm = read_labelmap(tmp_path / "out" / "labels.nii.gz", tmp_path / "out" / "structures.json")
    names = {s.name for s in lm.structures}
    assert "body" in names and len(names) > 10 and names <= {s.name for s in preset.pack.structures} | {"body"}
