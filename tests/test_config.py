"""Configuration: one validated TOML file with documented defaults."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from appliance.config import ApplianceConfig, config_to_mapping, default_toml, load_config
from appliance.errors import ConfigurationError

ISSUE_EXAMPLE = """
[dicom]
ae_title = "EDGE3D"
allowed = [{ae_title = "SCANNER1", host = "10.0.0.5"}]   # AE title bound to its address
study_stable_seconds = 30                                 # quiet time before a study counts as complete
[reconstruction]
auto = true                                               # reconstruct complete studies without a tap
"""


@pytest.mark.req("REQ-FUNC-300")
def test_issue_example_loads(tmp_path: Path) -> None:
    p = tmp_path / "a.toml"
    p.write_text(ISSUE_EXAMPLE)
    cfg = load_config(p)
    assert cfg.dicom.allowed[0].ae_title == "SCANNER1"
    assert cfg.dicom.allowed[0].host == "10.0.0.5"
    assert cfg.dicom.study_stable_seconds == 30.0
    assert cfg.reconstruction.auto is True
    assert cfg.dicom.tls is None


@pytest.mark.req("REQ-FUNC-300")
@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[dicom]\naetitle = 'X'\n", "dicom.aetitle"),
        ("[dicomm]\n", "dicomm"),
        ("[dicom]\nport = '104'\n", "dicom.port"),
        ("[dicom]\nallowed = [{ae_title = 'A', host = '1.2.3.4', port = 5}]\n", "dicom.allowed[0].port"),
        ("[dicom]\nallowed = [{ae_title = 'A', host = 'not-an-ip'}]\n", "dicom.allowed[0].host"),
        ("[dicom]\nallowed = [{ae_title = 'A'}]\n", "dicom.allowed[0].host"),
        ("[reconstruction]\nauto = 1\n", "reconstruction.auto"),
        ("[reconstruction]\ndevice = 'tpu'\n", "reconstruction.device"),
        ("[reconstruction]\nformats = 'stl'\n", "reconstruction.formats"),
        ("[dicom.tls]\ncert = 'a.pem'\n", "dicom.tls.key"),
        ("[ui]\npins = {nurse = 1234}\n", "ui.pins.nurse"),
        ("[dicom]\nae_title = 'THIS_AE_TITLE_IS_TOO_LONG'\n", "dicom.ae_title"),
        ("[export]\nauto_destination = 'PACS'\n", "export.auto_destination"),
        ("[storage]\nretention_days = -1\n", "storage.retention_days"),
    ],
)
def test_bad_keys_and_types_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        load_config(p)
    assert key in str(info.value)
    assert str(p) in str(info.value)


@pytest.mark.req("REQ-FUNC-300")
def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text("[dicom\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config(tmp_path / "none.toml")


@pytest.mark.req("REQ-FUNC-300")
def test_overrides_lay_over_the_file(tmp_path: Path) -> None:
    p = tmp_path / "a.toml"
    p.write_text(ISSUE_EXAMPLE)
    cfg = load_config(p, {"dicom": {"port": 0}, "storage": {"data_dir": str(tmp_path)}})
    assert cfg.dicom.port == 0
    assert cfg.dicom.ae_title == "EDGE3D"
    assert cfg.data_dir == tmp_path
    with pytest.raises(ConfigurationError, match=r"dicom\.prot"):
        load_config(p, {"dicom": {"prot": 1}})


@pytest.mark.req("REQ-FUNC-301")
def test_default_toml_documents_every_key_and_round_trips() -> None:
    text = default_toml()
    assert load_config(None) == ApplianceConfig()
    from appliance.config import config_from_mapping

    assert config_from_mapping(tomllib.loads(text)) == ApplianceConfig()

    # every key of every section appears (commented for optional tables) with a comment line above it
    def keys(mapping: dict[str, object], prefix: str = "") -> list[str]:
        out = []
        for k, v in mapping.items():
            if isinstance(v, dict) and k not in ("pins", "options"):
                out += keys(v, f"{prefix}{k}.")
            else:
                out.append(k)
        return out

    lines = text.splitlines()
    for key in keys(config_to_mapping(ApplianceConfig())):
        idx = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key} = "))
        assert lines[idx - 1].startswith("#"), key
    for optional in ("[dicom.tls]", "watch_dir", "secret_file", "cert", "ca"):
        assert optional in text
