"""XML Schema validation for tests: the ``xmlschema`` package when installed, else the JDK's own validator.

``validate(schema, files)`` returns ``{file: error or None}``; it skips the calling test with a reason when neither
validator is available (neither is a runtime dependency of the appliance).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

JAVA_VALIDATOR = Path(__file__).with_name("XsdValidate.java")


def validate(schema: Path, files: Sequence[Path]) -> dict[Path, str | None]:
    """Each file's first validation error against ``schema`` (None: valid)."""
    try:
        import xmlschema  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        xmlschema = None
    if xmlschema is not None:
        compiled = xmlschema.XMLSchema10(str(schema))
        out: dict[Path, str | None] = {}
        for f in files:
            errors = list(compiled.iter_errors(str(f)))
            out[f] = str(errors[0]) if errors else None
        return out
    java = shutil.which("java")
    if java is None:
        pytest.skip("no XML Schema validator: install the xmlschema package or a JDK (java)")
    run = subprocess.run([java, str(JAVA_VALIDATOR), str(schema), *map(str, files)], capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    lines = {ln.split(" ", 1)[1].split(": ", 1)[0]: ln for ln in run.stdout.splitlines() if " " in ln}
    if run.returncode not in (0, 1) or len(lines) != len(files):
        raise AssertionError(f"the Java validator did not run: {run.stdout}{run.stderr}")
    return {f: None if lines[str(f)].startswith("valid ") else lines[str(f)] for f in files}
