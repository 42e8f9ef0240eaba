"""``appliance update`` end to end through the CLI: keygen, build (--init), sign, verify, install, status,
rollback, and one-line refusals with a non-zero exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from update_fleet import write_box_config

from appliance.audit import AuditLog
from appliance.cli import main


def _release(tmp: Path, version: str) -> Path:
    src = tmp / f"src-{version}"
    src.mkdir()
    (src / "VERSION").write_text(version)
    return src


@pytest.mark.req("REQ-UPD-018", "REQ-UPD-006", "REQ-UPD-002")
def test_cli_publish_verify_install_rollback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fault: a release signed by only one of two required targets key holders; then a manual rollback."""
    keys, repo, cfg = tmp_path / "keys", tmp_path / "usb", write_box_config(tmp_path)
    for role in ("root", "snapshot", "timestamp"):
        assert main(["update", "keygen", "--keys", str(keys), "--role", role]) == 0
    assert main(["update", "keygen", "--keys", str(keys), "--role", "targets", "--count", "2"]) == 0
    holder = tmp_path / "second-holder"
    holder.mkdir()
    (keys / "targets-1.pem").rename(holder / "targets-1.pem")  # the second key lives elsewhere
    base = ["update", "build", "--repo", str(repo), "--keys", str(keys), "--kind", "app", "--name", "or-appliance"]
    assert (
        main(
            [
                *base,
                "--init",
                "--threshold",
                "targets=2",
                "--version",
                "1.0.0",
                "--source",
                str(_release(tmp_path, "1.0.0")),
            ]
        )
        == 0
    )
    trusted = ["--config", str(cfg), "--trusted-root", str(repo / "metadata" / "1.root.json")]
    capsys.readouterr()
    assert main(["update", "verify", *trusted]) == 1
    assert "threshold" in capsys.readouterr().err
    assert (
        main(["update", "sign", "--repo", str(repo), "--role", "targets", "--key", str(holder / "targets-1.pem")]) == 0
    )
    assert "now 2 signature(s)" in capsys.readouterr().out
    assert main(["update", "verify", *trusted, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["version"] for r in summary["releases"]] == ["1.0.0"]
    assert main(["update", "install", *trusted, "--kind", "app"]) == 0
    assert (tmp_path / "system" / "releases" / "app" / "current" / "VERSION").read_text() == "1.0.0"
    assert main([*base, "--version", "1.1.0", "--source", str(_release(tmp_path, "1.1.0"))]) == 0
    assert (
        main(["update", "sign", "--repo", str(repo), "--role", "targets", "--key", str(holder / "targets-1.pem")]) == 0
    )
    assert main(["update", "install", "--config", str(cfg), "--kind", "app"]) == 0
    capsys.readouterr()
    assert main(["update", "status", "--config", str(cfg), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["kinds"]["app"]["current"] == "1.1.0" and status["kinds"]["app"]["previous"] == "1.0.0"
    # a manual rollback: explicit, with a reason, audited
    assert main(["update", "rollback", "--config", str(cfg), "--kind", "app", "--reason", "surgeon report #12"]) == 0
    assert (tmp_path / "system" / "releases" / "app" / "current" / "VERSION").read_text() == "1.0.0"
    actions = [(r.action, r.details.get("reason")) for r in AuditLog(tmp_path / "data" / "audit.sqlite3").records()]
    assert ("update.rollback", "surgeon report #12") in actions
    assert ("update.refused", None) not in actions
    # boot-time recovery after a power cut left a staging folder and an unconfirmed switch
    kind_dir = tmp_path / "system" / "releases" / "app"
    (kind_dir / ".staging-9.9.9-1").mkdir()
    capsys.readouterr()
    assert main(["update", "recover", "--config", str(cfg)]) == 0
    assert "removed .staging-9.9.9-1" in capsys.readouterr().out and not (kind_dir / ".staging-9.9.9-1").exists()
    # 1.1.0 again after the rollback: newer than the lowered local floor, so no authorisation needed
    assert main(["update", "install", "--config", str(cfg), "--kind", "app"]) == 0
    assert (tmp_path / "system" / "releases" / "app" / "current" / "VERSION").read_text() == "1.1.0"


@pytest.mark.req("REQ-UPD-018", "REQ-UPD-001")
def test_cli_refusal_is_one_line_with_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Attack: a tampered artifact on the stick; the CLI says so in one line and exits 1."""
    keys, repo, cfg = tmp_path / "keys", tmp_path / "usb", write_box_config(tmp_path)
    for role in ("root", "targets", "snapshot", "timestamp"):
        main(["update", "keygen", "--keys", str(keys), "--role", role])
    main(
        [
            "update",
            "build",
            "--repo",
            str(repo),
            "--keys",
            str(keys),
            "--init",
            "--kind",
            "model",
            "--name",
            "ct",
            "--version",
            "1.0.0",
            "--source",
            str(_release(tmp_path, "1.0.0")),
        ]
    )
    stored = next((repo / "targets" / "model").iterdir())
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")
    capsys.readouterr()
    code = main(
        [
            "update",
            "install",
            "--config",
            str(cfg),
            "--trusted-root",
            str(repo / "metadata" / "1.root.json"),
            "--kind",
            "model",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("appliance update: ") and err.count("\n") == 1 and "hash" in err
    assert main(["update", "sign", "--repo", str(repo), "--role", "targets", "--key", str(keys / "root-0.pem")]) == 1
    assert "not a targets key" in capsys.readouterr().err
