"""firmware_config/: every file validated: systemd units (systemd-analyze verify and security where available, and
a parser-based check of the keys that matter), the GPU script, the firewall (nft -c), appliance.toml and its
schema, log rotation, users and tmpfiles."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from appliance.config import load_config

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware_config"
UNITS = sorted(p for p in (FW / "systemd").iterdir() if p.is_file())  # drop-in folders aside
#: Executables the OS image provides (the units name them; this build host does not have them).
IMAGE_EXECUTABLES = {
    "/var/lib/appliance-system/releases/app/current/bin/appliance",
    "/var/lib/appliance-system/releases/app/current/bin/python",
    "/usr/lib/appliance/venv/bin/python",
    "/usr/lib/appliance/gpu-setup.sh",
    "/usr/lib/appliance/usb-mount.sh",
    "/usr/bin/cage",
    "/usr/bin/chromium",
    "/usr/sbin/nft",
}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values...]}} (keys may repeat; continuation lines joined)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), {})
            continue
        assert current is not None, f"{path.name}: key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), f"{path.name}: bad line {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert values, f"[{section}] {key} missing"
    return values[-1]


@pytest.mark.req("REQ-SAFE-501", "REQ-PRIV-500", "REQ-PRIV-502", "REQ-SAFE-502")
def test_units_parse_and_have_description_and_exec() -> None:
    """Every unit parses; services have an absolute ExecStart; mounts a What/Where matching the file name."""
    assert {p.name for p in UNITS} >= {
        "appliance.service",
        "appliance-kiosk.service",
        "appliance-gpu.service",
        "appliance-firewall.service",
        "var-lib-appliance.mount",
    }
    for path in UNITS:
        unit = parse_unit(path)
        assert one(unit, "Unit", "Description")
        if path.suffix == ".service":
            for cmd in unit["Service"]["ExecStart"]:
                assert cmd.split()[0].startswith("/"), f"{path.name}: ExecStart must be absolute: {cmd}"
        if path.suffix == ".mount":
            where = one(unit, "Mount", "Where")
            assert path.stem == where.strip("/").replace("-", "\\x2d").replace("/", "-")  # systemd-escape --path


def test_systemd_analyze_verify() -> None:
    """systemd-analyze verify: no unknown keys, bad values or missing dependencies (image-only binaries aside)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed; the parser-based checks below still run")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *[str(p) for p in UNITS]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=FW / "systemd",
    )
    if "Failed to" in done.stderr and "verify" in done.stderr and "Command" not in done.stderr:
        pytest.skip(f"systemd-analyze verify cannot run in this container: {done.stderr.strip()[:200]}")
    problems = []
    for line in (done.stdout + done.stderr).splitlines():
        m = re.search(r"Command (\S+) is not executable", line)
        if m and m.group(1) in IMAGE_EXECUTABLES:
            continue
        if line.strip():
            problems.append(line)
    assert problems == []


@pytest.mark.req("REQ-PRIV-500")
def test_service_hardening() -> None:
    """Dedicated user, no new privileges, read-only system with only the data partition writable, no capabilities."""
    unit = parse_unit(FW / "systemd" / "appliance.service")
    svc = unit["Service"]
    assert one(unit, "Service", "User") == "appliance" and one(unit, "Service", "Group") == "appliance"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ReadWritePaths": "/var/lib/appliance",
        "ReadOnlyPaths": "/etc/appliance",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictSUIDSGID": "yes",
        "ProtectKernelModules": "yes",
        "DevicePolicy": "closed",
        "SystemCallFilter": "@system-service",
    }.items():
        assert one(unit, "Service", key) == value, key
    assert all(d.startswith(("/dev/nvidia", "char-nvidia")) for d in svc["DeviceAllow"])
    sysusers = (FW / "sysusers.d" / "appliance.conf").read_text()
    assert re.search(r"^u appliance - .* /usr/sbin/nologin$", sysusers, re.MULTILINE)


#: Exec keys of a service unit (what systemd runs for it).
EXEC_KEYS = ("ExecCondition", "ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost")


@pytest.mark.req("REQ-SAFE-1475")
def test_nothing_root_runs_lies_where_the_service_user_can_write() -> None:
    """Every path in a command root runs (services without User=, and '+'-prefixed commands of the others) stays
    out of the folders any service may write (ReadWritePaths) and out of the service's data folder."""
    writable = {Path(load_config(FW / "appliance.toml").storage.data_dir)}
    root_paths: list[tuple[str, str]] = []
    for path in [p for p in UNITS if p.suffix == ".service"]:
        svc = parse_unit(path).get("Service", {})
        writable |= {Path(w) for v in svc.get("ReadWritePaths", []) for w in v.split()}
        runs_as_root = svc.get("User", ["root"])[-1] == "root"
        for key in EXEC_KEYS:
            for cmd in svc.get(key, []):
                if runs_as_root or cmd.lstrip("-@:!").startswith("+"):
                    root_paths += [(path.name, a.lstrip("-@:!+")) for a in cmd.split() if a.lstrip("-@:!+")[:1] == "/"]
    assert ("appliance.service", "/var/lib/appliance-system/releases/app/current/bin/appliance") in root_paths
    assert ("appliance-firewall.service", "/var/lib/appliance-system/releases/app/current/bin/python") in root_paths
    below = [(unit, p, str(w)) for unit, p in root_paths for w in writable if Path(p).is_relative_to(w)]
    assert below == [], "root would run something the service user can replace"


def test_systemd_security_exposure() -> None:
    """systemd-analyze security --offline: the service's exposure score stays 'OK' (< 3.0)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", "appliance.service"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=FW / "systemd",
    )
    m = re.search(r"Overall exposure level for appliance.service: ([0-9.]+)", done.stdout + done.stderr)
    if m is None:
        pytest.skip(f"systemd-analyze security --offline is not supported here: {done.stderr.strip()[:200]}")
    assert float(m.group(1)) < 3.0, done.stdout[-3000:]


@pytest.mark.req("REQ-SAFE-501")
def test_service_watchdog_and_restart_policy() -> None:
    unit = parse_unit(FW / "systemd" / "appliance.service")
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "WatchdogSec") == "30s"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert int(one(unit, "Unit", "StartLimitBurst")) >= 3
    assert "appliance-gpu.service" in one(unit, "Unit", "After")
    assert "/var/lib/appliance" in one(unit, "Unit", "RequiresMountsFor")
    assert "/releases/app/current/" in one(unit, "Service", "ExecStart")


def _kiosk_command(unit: dict[str, dict[str, list[str]]]) -> list[str]:
    """The kiosk's command line without its ``/usr/bin/env NAME=value`` prefix."""
    cmd = one(unit, "Service", "ExecStart").split()
    if cmd[0] == "/usr/bin/env":
        cmd = cmd[1:]
        while "=" in cmd[0]:
            cmd = cmd[1:]
    return cmd


def _kiosk_environment(unit: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    """The environment cage starts with: Environment= lines, then the ``env`` prefix (it wins over PAM's)."""
    items = [item for line in unit["Service"].get("Environment", []) for item in line.split()]
    cmd = one(unit, "Service", "ExecStart").split()
    if cmd[0] == "/usr/bin/env":
        items += [item for item in cmd[1:] if "=" in item and not item.startswith("-")]
    return {name: value for name, _, value in (item.partition("=") for item in items)}


@pytest.mark.req("REQ-FUNC-1860")
def test_kiosk_takes_the_display_without_polkit() -> None:
    """What kept the VM's display on the kernel console: libseat's logind backend needs polkit to activate the
    session, and pam_systemd's /run/user/<uid> is hidden by ProtectHome=. The kiosk opens its devices itself
    (libseat's builtin seatd, not bound to a VT; user in video and input) and keeps its Wayland socket in its own
    runtime folder."""
    unit = parse_unit(FW / "systemd" / "appliance-kiosk.service")
    env = _kiosk_environment(unit)
    assert env.get("LIBSEAT_BACKEND") == "builtin" and env.get("SEATD_VTBOUND") == "0", env
    assert "--ozone-platform=wayland" in _kiosk_command(unit) and env.get("WLR_XWAYLAND") == "/usr/bin/false", env
    # software compositing only on test images (QEMU's display); a box composites on its GPU
    assert "WLR_RENDERER" not in env, env
    runtime_dirs = [f"/run/{d}" for line in unit["Service"].get("RuntimeDirectory", []) for d in line.split()]
    assert env.get("XDG_RUNTIME_DIR") in runtime_dirs, (env, runtime_dirs)
    if one(unit, "Service", "ProtectHome") in ("yes", "true", "tmpfs"):
        assert not env["XDG_RUNTIME_DIR"].startswith("/run/user"), env
    members = {tuple(line.split()[1:3]) for line in (FW / "sysusers.d" / "appliance.conf").read_text().splitlines()
               if line.startswith("m ")}  # fmt: skip
    user = one(unit, "Service", "User")
    assert {(user, "video"), (user, "input")} <= members, members  # the DRM card and the touch screen


@pytest.mark.req("REQ-PRIV-502")
def test_kiosk_is_cage_chromium_on_loopback_only() -> None:
    unit = parse_unit(FW / "systemd" / "appliance-kiosk.service")
    cmd = _kiosk_command(unit)
    assert cmd[0] == "/usr/bin/cage" and "/usr/bin/chromium" in cmd and any(a.startswith("--app=") for a in cmd)
    urls = [a for a in cmd if "http" in a]
    assert urls and all(re.search(r"https?://(127\.0\.0\.1|localhost|\[::1\])[:/]", u) for u in urls), urls
    assert any(a.startswith("--user-data-dir=/run/") for a in cmd) and "--incognito" in cmd
    assert one(unit, "Service", "User") == "kiosk" and one(unit, "Service", "Restart") == "always"
    http = load_config(FW / "appliance.toml").http
    assert http.host == "127.0.0.1" and f":{http.port}/" in urls[0]


@pytest.mark.req("REQ-FUNC-1954")
def test_kiosk_window_is_not_asked_fullscreen_before_it_maps() -> None:
    """Chromium is one --app window (no tabs, no address bar) that cage maximizes to the display when it maps; it
    never asks for fullscreen itself (--kiosk, --start-fullscreen): before its window is mapped cage answers with a
    0x0 configure and Chromium then kills itself on an empty window geometry (SIGTRAP; the black screen of the VM)."""
    cmd = _kiosk_command(parse_unit(FW / "systemd" / "appliance-kiosk.service"))
    chromium = cmd[cmd.index("/usr/bin/chromium") + 1 :]
    assert [a for a in chromium if a.startswith("--app=")] == ["--app=http://127.0.0.1:8080/"]
    assert not {"--kiosk", "--start-fullscreen"} & set(chromium), chromium
    assert not [a for a in chromium if not a.startswith("--")], chromium  # no second URL (a second window or tab)


def _run_gpu_setup(tmp_path: Path, conf: str, with_smi: bool) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    calls = tmp_path / "calls.txt"
    smi = bindir / "nvidia-smi"
    if with_smi:
        smi.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
        smi.chmod(0o755)
    cfg = tmp_path / "gpu.conf"
    cfg.write_text(conf)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "NVIDIA_SMI": "nvidia-smi"}
    done = subprocess.run(
        ["sh", str(FW / "gpu" / "gpu-setup.sh"), str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    return done, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.req("REQ-SAFE-502")
def test_gpu_setup_persistence_and_clocks(tmp_path: Path) -> None:
    """The oneshot sets persistence mode and application clocks; without nvidia-smi it does not block boot."""
    done, calls = _run_gpu_setup(tmp_path, 'PERSISTENCE=1\nAPP_CLOCKS="5001,1590"\nGPU_INDEX=0\n', True)
    assert done.returncode == 0 and calls == ["-i 0 -pm 1", "-i 0 -ac 5001,1590"], (calls, done.stderr)
    (tmp_path / "none").mkdir()
    done, calls = _run_gpu_setup(tmp_path / "none", "PERSISTENCE=1\n", False)
    assert done.returncode == 0 and "not found" in done.stderr and calls == []
    done, _ = _run_gpu_setup(tmp_path, 'APP_CLOCKS="fast"\n', True)
    assert done.returncode == 2 and "MEM,GRAPHICS" in done.stderr
    unit = parse_unit(FW / "systemd" / "appliance-gpu.service")
    assert one(unit, "Service", "Type") == "oneshot" and "appliance.service" in one(unit, "Unit", "Before")
    defaults = (FW / "gpu" / "gpu.conf").read_text()
    assert "PERSISTENCE=1" in defaults


@pytest.mark.parametrize("script", ["gpu/gpu-setup.sh", "usb/usb-mount.sh"])
def test_shell_scripts_pass_shellcheck(script: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    done = subprocess.run(["shellcheck", str(FW / script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def _render_firewall(tmp_path: Path, toml: str) -> str:
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(toml)
    out = tmp_path / "fw.nft"
    done = subprocess.run(
        [sys.executable, str(FW / "network" / "render-firewall.py"), str(cfg), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    return out.read_text()


def _nft_check(path: Path) -> str | None:
    if shutil.which("nft") is None:
        return "nft (nftables) is not installed"
    for cmd in (["nft", "-c", "-f", str(path)], ["unshare", "-rn", "nft", "-c", "-f", str(path)]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode == 0:
            return None
        if "Operation not permitted" not in done.stderr and "Permission denied" not in done.stderr:
            raise AssertionError(f"nft -c rejected the ruleset: {done.stderr}")
    return "nft -c needs CAP_NET_ADMIN (or a user namespace) and got neither"


@pytest.mark.req("REQ-PRIV-501")
def test_firewall_allows_only_configured_dicom_peers(tmp_path: Path) -> None:
    """Rendered from the configuration: DICOM from the peers only, UI never opened, nft -c accepts it."""
    text = _render_firewall(
        tmp_path,
        '[dicom]\nport = 104\nallowed = [{ae_title = "CT1", host = "10.0.0.5"},'
        ' {ae_title = "MR", host = "10.1.0.0/24"}, {ae_title = "V6", host = "fd00::7"}]\n[http]\nport = 8080\n',
    )
    assert "policy drop;" in text and 'iif "lo" accept' in text
    assert "elements = { 10.0.0.5, 10.1.0.0/24 }" in text and "elements = { fd00::7 }" in text
    assert "tcp dport 104 ip saddr @dicom_peers_v4 accept" in text
    assert "8080" not in text  # the UI is loopback-only
    accepts = [line.strip() for line in text.splitlines() if line.strip().endswith("accept") and "policy" not in line]
    assert all(
        "lo" in a or "established" in a or "icmpv6" in a or "dport 68" in a or "@dicom_peers" in a for a in accepts
    ), accepts
    reason = _nft_check(tmp_path / "fw.nft")
    closed = _render_firewall(tmp_path, "[dicom]\nport = 0\n")
    assert "tcp dport" not in closed
    broken = _render_firewall(tmp_path, "[dicom]\nport = 'eleven'\n")  # fails closed, never open
    assert "# LOCKED DOWN:" in broken and "tcp dport" not in broken and "policy drop;" in broken
    if reason:
        pytest.skip(f"ruleset rendered and checked textually; {reason}")
    assert _nft_check(tmp_path / "fw.nft") is None


@pytest.mark.req("REQ-SAFE-504")
def test_appliance_toml_matches_generator_schema_and_loader() -> None:
    """The shipped appliance.toml and schema are what generate.py derives from appliance/config.py; both validate."""
    done = subprocess.run(
        [sys.executable, str(FW / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    schema = json.loads((FW / "appliance.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    data = tomllib.loads((FW / "appliance.toml").read_text())
    jsonschema.validate(data, schema)
    cfg = load_config(FW / "appliance.toml")
    assert cfg.update.repository
    for root_trusted in (Path(cfg.update.options["install_root"]), cfg.update.trusted_metadata_dir):
        assert root_trusted.is_relative_to("/var/lib/appliance-system"), root_trusted
        assert not root_trusted.is_relative_to(cfg.data_dir), root_trusted
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**data, "dicom": {**data["dicom"], "port": "eleven"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**data, "surprise": {}}, schema)


@pytest.mark.req("REQ-SAFE-503")
def test_data_partition_logs_and_journal_bounded(tmp_path: Path) -> None:
    partition = parse_unit(FW / "systemd" / "var-lib-appliance\\x2dsystem.mount")
    assert {"nodev", "nosuid", "errors=remount-ro"} <= set(one(partition, "Mount", "Options").split(","))
    service_data = parse_unit(FW / "systemd" / "var-lib-appliance.mount")
    assert {"bind", "nodev", "nosuid"} <= set(one(service_data, "Mount", "Options").split(","))
    assert one(service_data, "Mount", "What") == "/var/lib/appliance-system/data"
    assert load_config(FW / "appliance.toml").storage.retention_days > 0
    journald = parse_unit(FW / "journald.conf.d" / "appliance.conf")
    assert one(journald, "Journal", "SystemMaxUse").endswith(("M", "G"))
    rotate = (FW / "logrotate.d" / "appliance").read_text()
    assert re.search(r"^\s+rotate \d+$", rotate, re.MULTILINE) and "maxsize" in rotate
    tmpfiles = [
        ln.split()
        for ln in (FW / "tmpfiles.d" / "appliance.conf").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert all(len(f) >= 6 and f[0] in {"d", "D", "L", "z"} for f in tmpfiles)
    if shutil.which("logrotate") is None:
        pytest.skip("logrotate not installed; the file was checked textually")
    conf = tmp_path / "logrotate.conf"
    conf.write_text(rotate.replace("su appliance appliance", ""))
    done = subprocess.run(
        ["logrotate", "-d", "-s", str(tmp_path / "state"), str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "error" not in done.stderr.lower(), done.stderr
