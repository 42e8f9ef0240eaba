"""Helpers of the kiosk's case-screen browser tests (lesion panel, review, edit tools): pages with long waits, the
case opened and loaded, the slice view shown, a tap at a patient point, the panels' messages and the margin table."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import ndimage
from ui_browser import new_page, wait_js
from werkzeug.serving import make_server

LOADED = "document.getElementById('case-viewer').dataset.loaded === '1'"


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """The WSGI ``app`` served on 127.0.0.1 (a free port, threaded) while the block runs; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def open_case(page: Any, base: str, job: int, query: str = "") -> None:
    """Open a case and wait until its model and current revision are shown."""
    page.goto(f"{base}/cases/{job}{query}")
    wait_js(page, f"{LOADED} && document.getElementById('case-viewer').dataset.revision !== undefined", timeout_s=120)


def page_for(browser: Any) -> tuple[Any, Any, Any]:
    """A kiosk page whose waits allow for SwiftShader's first slice render on a loaded 2-core box (the page's main
    thread was seen busy for a minute there)."""
    context, page, watch = new_page(browser)
    page.set_default_timeout(180_000)
    return context, page, watch


def show_slices(page: Any) -> None:
    """Switch to the slice view and wait until NiiVue shows the image."""
    page.locator("#mode-2d").tap()
    wait_js(page, "window.slices && window.slices.ready", timeout_s=180)


def tap_at(page: Any, lps: list[float]) -> list[float]:
    """Scroll the axial view to the point's slice (as the slider does), tap it; the crosshair's LPS after the tap."""
    page.evaluate("p => { const s = window.slices; s.setPosition(s.nv.mm2frac([-p[0], -p[1], p[2]])[2]); }", lps)
    x, y = page.evaluate("p => window.slices.screenOfLps(p)", lps)
    canvas = page.locator("#canvas2d").bounding_box()
    page.touchscreen.tap(canvas["x"] + x, canvas["y"] + y)
    time.sleep(0.3)
    return list(page.evaluate("window.slices.crosshairLps()"))


def voxel(affine: np.ndarray, lps: list[float]) -> tuple[int, int, int]:
    """The voxel index of a patient point."""
    i, j, k = np.rint(np.linalg.inv(affine) @ [*lps, 1.0])[:3].astype(int)
    return int(i), int(j), int(k)


def centre_of(mask: np.ndarray, affine: np.ndarray) -> list[float]:
    """LPS of the voxel deepest inside ``mask`` within its own axial slice (a tap a pixel off stays inside)."""
    depth = np.zeros(mask.shape)
    for k in np.unique(np.nonzero(mask)[2]):
        depth[:, :, k] = ndimage.distance_transform_edt(mask[:, :, k])
    ijk = np.unravel_index(int(np.argmax(depth)), mask.shape)
    return [float(v) for v in affine[:3, :3] @ np.asarray(ijk, float) + affine[:3, 3]]


def wait_message(page: Any, selector: str, timeout_s: float = 180.0) -> str:
    """Wait for a panel's message to settle; it must be a success (its text is returned)."""
    wait_js(page, f"(() => {{ const m = document.querySelector('{selector}'); "
                  "return m && !m.classList.contains('hidden') && /\\b(ok|bad)\\b/.test(m.className); })()",
            timeout_s=timeout_s)  # fmt: skip
    text: str = page.locator(selector).inner_text()
    assert "ok" in (page.locator(selector).get_attribute("class") or ""), text
    return text


def margin_table(page: Any) -> list[tuple[str, float, float, float]]:
    """The lesion panel's margin table as shown: (structure, margin mm, nearest mm, ml inside) per row."""
    return [tuple(r) for r in page.eval_on_selector_all(  # type: ignore[misc]
        "#margin-table tbody tr[data-structure]",
        "rs => rs.map(r => [r.dataset.structure, Number(r.dataset.shellMm), "
        "Number(r.cells[2].dataset.value), Number(r.cells[3].dataset.value)])")]


def soft_tissue(hu: np.ndarray, size: int = 7) -> np.ndarray:
    """Voxels whose ``size`` x ``size`` in-plane neighbourhood is all soft tissue (20..80 HU): where a tap seeds a
    lesion."""
    return (ndimage.minimum_filter(hu, (size, size, 1)) > 20) & (ndimage.maximum_filter(hu, (size, size, 1)) < 80)
