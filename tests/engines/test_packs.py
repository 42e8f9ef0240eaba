"""Model pack manifests: validation, round trips (JSON/TOML/zip), integrity, signatures, import, CLI."""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_packs_support import make_pack

from appliance.cli import main as cli_main
from engines.errors import PackError, PackIntegrityError, PackManifestError, PackNotFound
from engines.packs import (
    SHIPPED_PACKS,
    find_pack,
    import_pack,
    list_packs,
    load_pack,
    sign_manifest,
    verify_pack,
    write_manifest,
)
from engines.preprocessing import crop, foreground_box, normalise_intensity, uncrop

LABELS = [("white_matter", "organ"), ("grey_matter", "organ")]


def _manifest(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "pack.json").read_text())
    return data


@pytest.mark.req("REQ-FUNC-100")
def test_invalid_manifest_lists_every_problem(tmp_path: Path) -> None:
    folder = make_pack(tmp_path / "p", "tiny", LABELS)
    data = _manifest(folder)
    data.pop("licence")
    data["model"]["sha256"] = "xyz"
    data["input"]["orientation"] = "LLA"
    data["normalisation"] = {"method": "magic"}
    data["labels"][1]["category"] = "spleen-ish"
    data["patch"] = {"size": [64, 64], "overlap": 1.5}
    write_manifest(folder, data)
    with pytest.raises(PackManifestError) as info:
        load_pack(folder)
    text = str(info.value)
    for needle in ("'licence' is required", "sha256 must be 64 hex", "orientation", "normalisation.method",
                   "labels[1]", "patch.size", "patch.overlap"):
        assert needle in text, needle
    assert len(info.value.problems) == 7


@pytest.mark.req("REQ-FUNC-100")
def test_missing_onnx_and_duplicate_channels_are_named(tmp_path: Path) -> None:
    folder = make_pack(tmp_path / "p", "tiny", LABELS)
    data = _manifest(folder)
    data["model"]["file"] = "other.onnx"
    data["labels"][1]["channel"] = 1
    write_manifest(folder, data)
    with pytest.raises(PackManifestError, match=r"other\.onnx") as info:
        load_pack(folder)
    assert any("used twice" in p for p in info.value.problems)
    (folder / "pack.json").unlink()
    with pytest.raises(PackManifestError, match="no manifest"):
        load_pack(folder)


@pytest.mark.req("REQ-SAFE-101")
def test_onnx_path_outside_the_pack_is_refused(tmp_path: Path) -> None:
    folder = make_pack(tmp_path / "p", "tiny", LABELS)
    data = _manifest(folder)
    data["model"]["file"] = "../model.onnx"
    write_manifest(folder, data)
    with pytest.raises(PackManifestError, match="inside the pack"):
        load_pack(folder)


@pytest.mark.req("REQ-SAFE-101")
def test_zip_slip_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../../escaped.txt", "x")
        zf.writestr("pack.json", "{}")
    with pytest.raises(PackManifestError, match="escape"):
        load_pack(bad)
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.req("REQ-FUNC-101")
def test_round_trip_json_toml_and_zip(tmp_path: Path) -> None:
    folder = make_pack(tmp_path / "p", "tiny", LABELS, patch={"size": [32, 32, 32], "overlap": 0.5},
                       postprocessing=[{"step": "largest_component"}])
    first = load_pack(folder, verify=True)
    write_manifest(folder, first.manifest)
    again = load_pack(folder, verify=True)
    assert (again.name, again.version, again.sha256, again.labels, again.patch_size, again.overlap) == (
        first.name, first.version, first.sha256, first.labels, first.patch_size, first.overlap)
    assert [s.name for s in first.structures] == ["white_matter", "grey_matter"]
    # TOML with the same content
    toml_dir = tmp_path / "t"
    toml_dir.mkdir()
    (toml_dir / "model.onnx").write_bytes((folder / "model.onnx").read_bytes())
    m = first.manifest
    lines = [f'schema = 1\nname = "{m["name"]}"\nversion = "{m["version"]}"\nlicence = "{m["licence"]}"',
             f'modality = "MR"\nbody_region = "head"\nclasses = {first.classes}',
             f'[model]\nfile = "model.onnx"\nsha256 = "{first.sha256}"',
             '[input]\nsize_policy = "fixed"\nshape = [256, 256, 256]\norientation = "LIA"',
             '[normalisation]\nmethod = "minmax"']
    for lab in m["labels"]:
        lines.append(f'[[labels]]\nchannel = {lab["channel"]}\nname = "{lab["name"]}"\ncolor = {lab["color"]}\n'
                     f'category = "{lab["category"]}"')
    (toml_dir / "pack.toml").write_text("\n".join(lines) + "\n")
    from_toml = load_pack(toml_dir, verify=True)
    assert from_toml.labels == first.labels and from_toml.sha256 == first.sha256
    # zip with a top-level folder
    zpath = tmp_path / "tiny.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f"tiny/{f.name}")
    zipped = load_pack(zpath, verify=True)
    assert zipped.name == "tiny" and zipped.labels == first.labels
    installed = import_pack(zpath, tmp_path / "from-zip")
    assert installed.root == (tmp_path / "from-zip" / "tiny").resolve() and installed.sha256 == first.sha256


@pytest.mark.req("REQ-SAFE-100")
def test_tampered_onnx_is_refused_on_verify_and_import(tmp_path: Path) -> None:
    folder = make_pack(tmp_path / "p", "tiny", LABELS)
    pack = load_pack(folder, verify=True)
    with (folder / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(PackIntegrityError, match="tiny"):
        verify_pack(pack)
    with pytest.raises(PackIntegrityError):
        import_pack(folder, tmp_path / "installed")
    assert not (tmp_path / "installed" / "tiny").exists()


@pytest.mark.req("REQ-SAFE-100")
def test_signature_required_and_checked(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes_raw()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    folder = make_pack(tmp_path / "p", "tiny", LABELS)
    with pytest.raises(PackIntegrityError, match="unsigned"):
        load_pack(folder, verify=True, trusted_keys=[public])
    write_manifest(folder, sign_manifest(_manifest(folder), raw))
    assert load_pack(folder, verify=True, trusted_keys=[public]).name == "tiny"
    with pytest.raises(PackIntegrityError, match="trusted key"):
        load_pack(folder, verify=True, trusted_keys=[other])
    key_file = tmp_path / "vendor.pub"
    key_file.write_text(base64.b64encode(public).decode())
    other_file = tmp_path / "other.pub"
    other_file.write_text(base64.b64encode(other).decode())
    dest = tmp_path / "installed"
    assert cli_main(["models", "import", str(folder), "--dest", str(dest), "--trusted-key", str(key_file)]) == 0
    assert cli_main(["models", "import", str(folder), "--dest", str(dest), "--replace",
                     "--trusted-key", str(other_file)]) == 1
    data = _manifest(folder)
    data["version"] = "9.9.9"  # any change to the signed manifest breaks the signature
    write_manifest(folder, data)
    with pytest.raises(PackIntegrityError):
        load_pack(folder, verify=True, trusted_keys=[public])


@pytest.mark.req("REQ-FUNC-102")
def test_import_list_find(tmp_path: Path) -> None:
    src = make_pack(tmp_path / "src", "tiny", LABELS)
    dest = tmp_path / "installed"
    pack = import_pack(src, dest)
    assert pack.root == (dest / "tiny").resolve()
    with pytest.raises(PackError, match="already installed"):
        import_pack(src, dest)
    import_pack(src, dest, replace=True)
    broken = dest / "broken"
    broken.mkdir()
    (broken / "pack.json").write_text("{not json")
    names = [p.name for p in list_packs([dest])]
    assert names == ["tiny"]  # the broken folder is skipped, not fatal
    assert find_pack("tiny", [dest]).name == "tiny"
    with pytest.raises(PackNotFound, match="installed"):
        find_pack("nope", [dest])


@pytest.mark.req("REQ-FUNC-102")
def test_cli_models(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "user"
    monkeypatch.setenv("APPLIANCE_MODEL_PACKS", str(user))
    src = make_pack(tmp_path / "src", "tiny", LABELS)
    assert cli_main(["models", "import", str(src)]) == 0
    assert (user / "tiny" / "pack.json").is_file()
    capsys.readouterr()
    assert cli_main(["models", "list", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert "tiny" in listed and "brainchop-gw-5" in listed  # shipped packs plus the configured directory
    assert cli_main(["models", "verify", "tiny"]) == 0
    assert "ok" in capsys.readouterr().out
    with (user / "tiny" / "model.onnx").open("ab") as fh:
        fh.write(b"x")
    assert cli_main(["models", "verify", "tiny"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert cli_main(["models", "compile", "brainchop-gw-5"]) == 1
    assert "TensorRT" in capsys.readouterr().err


@pytest.mark.req("REQ-FUNC-102")
def test_cli_import_tfjs(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = shared_data / "models/brainchop/public/models/model5_gw_ae"
    out = tmp_path / "gw"
    assert cli_main(["models", "import-tfjs", str(src), "--out", str(out)]) == 0
    pack = load_pack(out, verify=True)
    assert pack.name == "brainchop-gw-5" and pack.classes == 3
    assert pack.sha256 == load_pack(SHIPPED_PACKS / "brainchop-gw-5").sha256


@pytest.mark.req("REQ-FUNC-108")
def test_normalisations() -> None:
    x = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    mm = normalise_intensity(x, {"method": "minmax"})
    assert mm.min() == 0.0 and mm.max() == 1.0
    q = normalise_intensity(x, {"method": "quantile", "lower": 0.05, "upper": 0.95})
    # brainchop: order statistics at floor(0.05*1000)=50 and ceil(0.95*1000)-1=949
    assert q.ravel()[50] == 0.0 and q.ravel()[949] == pytest.approx(1.0)
    assert q.min() < 0 and q.max() > 1  # not clipped unless asked
    qc = normalise_intensity(x, {"method": "quantile", "clip": True})
    assert qc.min() == 0.0 and qc.max() == 1.0
    z = normalise_intensity(x, {"method": "zscore"})
    assert abs(float(z[x != 0].mean())) < 1e-4
    ct = normalise_intensity(x - 500, {"method": "ct_window", "lower": -100, "upper": 100})
    assert ct.min() == 0.0 and ct.max() == 1.0


@pytest.mark.req("REQ-FUNC-108")
def test_crop_threshold_and_back() -> None:
    x = np.zeros((20, 22, 24), np.float32)
    x[5:9, 6:15, 3:4] = 0.1  # faint: below 0.2 * max
    x[7:12, 8:10, 10:20] = 1.0
    box = foreground_box(x, 0.2, padding=3)
    assert box.start == (7, 8, 10) and box.stop == (12, 10, 20)
    block = crop(x, box)
    assert block.shape == (5 + 6, 2 + 6, 10 + 6)
    back = uncrop((block > 0.5).astype(np.uint16), box)
    assert back.shape == x.shape and np.array_equal(back > 0, x > 0.5)
    assert foreground_box(x, 0.0, 0).start == (5, 6, 3)  # threshold 0: any voxel above 0
