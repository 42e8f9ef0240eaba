"""Fixtures of the UI tests: the phantom case, the kiosk app on 127.0.0.1 with the service API (H6's blueprint
over a scripted service), and headless Debian Chromium (SwiftShader WebGL2) driven by Playwright, one browser
per module. Helpers live in ui_browser.py (importable under either pytest import mode: this folder is put on
sys.path here).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ui_browser import CHROMIUM, CHROMIUM_ARGS, Kiosk, start_kiosk

from ui.assets import VENDOR_DIR


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ui_phantom import write_case

    folder = tmp_path_factory.mktemp("case")
    write_case(folder)
    return folder


@pytest.fixture(scope="module")
def kiosk(tmp_path_factory: pytest.TempPathFactory, case_dir: Path) -> Iterator[Kiosk]:
    k = start_kiosk(tmp_path_factory.mktemp("kiosk"), case_dir)
    yield k
    k.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt install chromium)")
    if not (VENDOR_DIR / "manifest.json").is_file():
        pytest.fail("ui/static/vendor is not built: run `bash tools/build_ui_vendor.sh`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
