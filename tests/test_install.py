"""The appliance installs anywhere: its wheel (not editable) in a fresh venv runs outside the checkout.

The wheel is built from a copy of the source tree (so the checkout gets no ``build/`` or ``*.egg-info``), installed
with ``--no-deps`` into a new venv whose third-party packages come from this test's own environment through a
``.pth`` file. That file adds the other environment's site-packages as a plain folder, so the ``.pth`` files in it
(the editable install's finder among them) are not run and the project's packages come from the wheel alone.
Every command then runs from a folder outside the checkout, without ``PYTHONPATH``: bundled files found through
``Path(__file__).parents[...]`` outside the packages, or not declared as package data, make these tests fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pytest

from appliance.trace.register import load_register
from engines.packs import SHIPPED_PACKS, list_packs

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("appliance", "engines", "kernels", "ui")
#: Top-level entries of the checkout that are not part of a build (caches, environments, outputs, tests).
NOT_BUILT = frozenset({".git", ".venv", ".whl", ".gpu_data", ".gl", ".cache", ".mypy_cache", ".ruff_cache",
                       ".pytest_cache", "build", "dist", "out", "tests", "bench"})  # fmt: skip
#: Anywhere in the tree: byte code, npm's working folder, setuptools' metadata of earlier builds.
NEVER_COPIED = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "*.egg-info")
TIMEOUT_S = 600


@dataclass(frozen=True)
class Installed:
    """The fresh venv with the wheel installed, and where to run commands."""

    venv: Path
    workdir: Path
    env: dict[str, str]

    def run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``venv/bin/<program> args`` from ``workdir``; fails the test on a non-zero exit."""
        return _run([str(self.venv / "bin" / program), *args], cwd=self.workdir, env=self.env)


def _run(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    output = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{output}"
    return proc


def _copy_source(dest: Path) -> Path:
    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(NEVER_COPIED(folder, names))
        if Path(folder) == ROOT:
            skipped |= NOT_BUILT.intersection(names)
        return skipped

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel, make a fresh venv and install the wheel into it with ``--no-deps``."""
    tmp = tmp_path_factory.mktemp("install")
    source = _copy_source(tmp / "source")
    wheels = tmp / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(wheels), str(source)], cwd=tmp)  # fmt: skip
    (wheel,) = wheels.glob("or_appliance-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    env = _clean_env(APPLIANCE_MODEL_PACKS=str(tmp / "no-user-packs"))
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env)
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib.stdout.strip()) / "_project_venv_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          str(wheel)], cwd=tmp, env=env)  # fmt: skip

    workdir = tmp / "elsewhere"
    workdir.mkdir()
    return Installed(venv, workdir, env)


def test_the_project_packages_come_from_the_wheel(installed: Installed) -> None:
    code = "import json, " + ", ".join(PROJECT_PACKAGES) + "; print(json.dumps({m.__name__: m.__file__ for m in (" + (
        ", ".join(PROJECT_PACKAGES)) + ")}))"
    files = json.loads(installed.run("python", "-c", code).stdout)
    venv = installed.venv.resolve()
    for name, file in files.items():
        assert Path(file).resolve().is_relative_to(venv), f"{name} imported from {file}, not from the installed wheel"


def test_demo_runs_from_the_installed_wheel_outside_the_checkout(installed: Installed) -> None:
    out = installed.workdir / "demo"
    proc = installed.run("appliance", "demo", "--out", str(out), "--quiet")
    assert "Reconstructing the bundled CT sample" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["preset"] == "ct-default" and manifest["structures"]
    for role, name in manifest["files"].items():
        assert (out / name).is_file(), f"manifest names {role} = {name}, which the demo did not write"
    assert list((out / "meshes").glob("*.glb"))


def test_installed_wheel_lists_the_shipped_model_packs(installed: Installed) -> None:
    assert SHIPPED_PACKS.resolve().is_relative_to(Path(str(files("engines"))).resolve())
    shipped = [p.name for p in list_packs([SHIPPED_PACKS])]
    assert shipped, f"no model packs in the source tree at {SHIPPED_PACKS}"
    listed = installed.run("appliance", "models", "list").stdout
    missing = [name for name in shipped if name not in listed]
    assert not missing, f"packs shipped in the source tree but not installed by the wheel: {missing}\n{listed}"


def test_installed_wheel_carries_the_ui_and_the_requirement_register(installed: Installed) -> None:
    trace = installed.run("appliance", "trace", "--root", str(installed.workdir), "--out", "trace", "--json")
    assert json.loads(trace.stdout)["requirements"] == len(load_register())
    code = (
        "from ui.app import create_app\n"
        "app = create_app({'TESTING': True, 'UI_SERVICE_API': False, 'storage': {'data_dir': 'ui-data'}})\n"
        "client = app.test_client()\n"
        "print(client.get('/login').status_code, client.get('/static/css/app.css').status_code)\n"
    )
    assert installed.run("python", "-c", code).stdout.split() == ["200", "200"]
