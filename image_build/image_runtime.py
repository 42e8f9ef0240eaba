"""The image's Python runtime: the third-party wheels the application was tested with, pinned to the versions
installed in the build host's environment, downloaded at build time into a wheelhouse (nothing is fetched when
the box runs) and installed into ``/usr/lib/appliance/venv`` inside the image.

The CPU variant is built here. The GPU variant adds the ``gpu`` extra (CuPy, nvidia-ml-py) and a CUDA torch to
the pins, and the NVIDIA driver from NVIDIA's apt repository to the package list (docs/vm_image.md).
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import subprocess
import sys
from pathlib import Path

from image_bundle import BuildError
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

log = logging.getLogger("image_build.runtime")

#: The application's distribution name (pyproject.toml ``[project] name``).
APP_DISTRIBUTION = "or-appliance"


def runtime_pins(distribution: str = APP_DISTRIBUTION, extras: tuple[str, ...] = ()) -> list[str]:
    """``name==version`` for every dependency (transitively) of ``distribution``, as installed here.

    Only requirements whose markers hold on this interpreter count; ``extras`` adds optional groups.
    """
    try:
        root = md.distribution(distribution)
    except md.PackageNotFoundError as exc:
        raise BuildError(f"{distribution} is not installed in {sys.prefix}; install the project first") from exc
    pins: dict[str, str] = {}
    todo: list[tuple[md.Distribution, tuple[str, ...]]] = [(root, extras)]
    while todo:
        dist, dist_extras = todo.pop()
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *dist_extras))
            if not wanted:
                continue
            key = canonicalize_name(req.name)
            if key in pins:
                continue
            try:
                dep = md.distribution(req.name)
            except md.PackageNotFoundError as exc:
                raise BuildError(f"{req.name} (needed by {dist.metadata['Name']}) is not installed here") from exc
            pins[key] = dep.version
            todo.append((dep, tuple(req.extras)))
    return sorted(f"{name}=={version}" for name, version in pins.items())


def download_wheelhouse(pins: list[str], dest: Path) -> list[Path]:
    """Binary wheels for ``pins`` (no dependency resolution: the pins are the closure) into ``dest``.

    The wheels are chosen for this interpreter and platform: the build host runs the image's Debian suite and
    Python (bookworm, CPython 3.11, x86_64), which ``check_host_python`` verifies against the built image.
    """
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "requirements.txt").write_text("\n".join(pins) + "\n")
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "-d", str(dest), "-r", str(dest / "requirements.txt"),
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"downloading the runtime wheels failed: {exc}") from exc
    if done.returncode != 0:
        raise BuildError(f"downloading the runtime wheels failed: {done.stderr.strip()[-1200:]}")
    wheels = sorted(dest.glob("*.whl"))
    log.info("runtime wheelhouse: %d wheels, %.0f MB", len(wheels), sum(w.stat().st_size for w in wheels) / 1e6)
    return wheels
