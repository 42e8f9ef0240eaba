"""Surgeon's viewer in headless Chromium: rendering, structure controls, clip plane, measurement, touch, slices.

One browser and one logged-in page for the module (tests run in file order and leave the view as they found it).
Screenshots land in build/ui-screenshots/.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from ui_browser import Kiosk, Watch, login, new_page, screenshot, wait_js
from ui_phantom import BOX_SIZE_MM, BOX_VOXELS
from ui_pixels import bbox, changed_fraction, mask_dominant, non_background, rgb

from appliance.audit import AuditLog

CANVAS = "#wrap3d"


@pytest.fixture(scope="module")
def viewer(browser: Any, kiosk: Kiosk) -> Iterator[tuple[Any, Watch, Any]]:
    context, page, watch = new_page(browser)
    login(page, kiosk.base, "surgeon")
    response = page.goto(f"{kiosk.base}/cases/{kiosk.done_job}")
    wait_js(
        page, "document.getElementById('case-viewer').dataset.loaded === '1' && window.viewer.firstFrameAt !== null"
    )
    yield page, watch, response
    context.close()


def shot(page: Any, name: str, selector: str = CANVAS) -> np.ndarray:
    page.evaluate("window.viewer.renderNow()")
    return rgb(screenshot(page, name, selector))


def structure_toggle(page: Any, name: str) -> Any:
    return page.locator(f'.structure[data-structure="{name}"] .toggle')


@pytest.mark.req("REQ-SAFE-400", "REQ-SAFE-403", "REQ-PRIV-401", "REQ-HCI-020")
def test_viewer_loads_with_webgl2_clean_csp_and_no_external_request(viewer: tuple[Any, Watch, Any]) -> None:
    page, watch, response = viewer
    csp = response.headers["content-security-policy"]
    assert (
        "default-src 'self'" in csp
        and "unsafe-inline" not in csp
        and "unsafe-eval'" not in csp.replace("'wasm-unsafe-eval'", "")
    )
    assert page.evaluate("window.viewer.renderer.capabilities.isWebGL2") is True
    assert page.evaluate("!!document.createElement('canvas').getContext('webgl2')") is True
    names = page.eval_on_selector_all(".structure", "rows => rows.map(r => r.dataset.structure)")
    assert names == ["phantom_box", "inner_core", "core_margin_5mm", "vessel_sphere"]
    watch.assert_clean(page)


@pytest.mark.req("REQ-HCI-020")
def test_model_renders_non_background_pixels(viewer: tuple[Any, Watch, Any]) -> None:
    page, _, _ = viewer
    img = shot(page, "viewer-3d-front")
    assert non_background(img) > 0.05 * img.shape[0] * img.shape[1]
    assert mask_dominant(img, 0).sum() > 2000  # the red phantom box
    assert mask_dominant(img, 2).sum() > 500  # the blue sphere


@pytest.mark.req("REQ-HCI-021")
def test_tap_on_structure_toggles_it_and_back(viewer: tuple[Any, Watch, Any]) -> None:
    page, _, _ = viewer
    before = shot(page, "toggle-before")
    structure_toggle(page, "phantom_box").tap()
    assert structure_toggle(page, "phantom_box").get_attribute("aria-pressed") == "false"
    hidden = shot(page, "toggle-hidden")
    assert changed_fraction(before, hidden) > 0.01
    assert mask_dominant(hidden, 0).sum() < 0.1 * mask_dominant(before, 0).sum()
    structure_toggle(page, "phantom_box").tap()
    after = shot(page, "toggle-after")
    assert changed_fraction(before, after) < 0.002


@pytest.mark.req("REQ-HCI-022", "REQ-HCI-027")
def test_opacity_and_colour_change_pixels(viewer: tuple[Any, Watch, Any]) -> None:
    page, _, _ = viewer
    margin_label = page.locator('.structure[data-structure="core_margin_5mm"] .label').inner_text()
    assert "5 mm" in margin_label
    assert page.evaluate("window.viewer.opacity('core_margin_5mm')") < 1
    before = shot(page, "style-before")
    page.locator('.structure[data-structure="phantom_box"] .adjust').tap()
    page.locator("#opacity-down").tap()
    page.locator("#opacity-down").tap()
    assert page.evaluate("window.viewer.opacity('phantom_box')") == pytest.approx(0.5)
    see_through = shot(page, "style-opacity-50")
    assert changed_fraction(before, see_through) > 0.01

    # the structures inside (yellow margin shell, green core) now show through the red box
    def warm(img: np.ndarray) -> int:  # yellow/orange/olive: red and green both lit
        return int(((img[..., 0] > 100) & (img[..., 1] > 100) & (img[..., 2] < 110)).sum())

    assert warm(see_through) > warm(before) + 1000
    page.locator("#opacity-up").tap()
    page.locator("#opacity-up").tap()
    page.locator('#swatches button[data-colour="#4363d8"]').tap()
    blue = shot(page, "style-colour-blue")
    assert mask_dominant(blue, 0).sum() < 0.1 * mask_dominant(before, 0).sum()
    assert mask_dominant(blue, 2).sum() > mask_dominant(before, 2).sum() + 2000
    page.locator('#swatches button[data-colour="#e6194b"]').tap()
    assert changed_fraction(before, shot(page, "style-restored")) < 0.002


@pytest.mark.req("REQ-HCI-022")
def test_tapping_the_model_selects_the_structure_under_the_finger(viewer: tuple[Any, Watch, Any], kiosk: Kiosk) -> None:
    page, _, _ = viewer
    page.locator('[data-view="reset"]').tap()
    lo, hi = _box_corners(kiosk)
    # ui_phantom puts the sphere 45 mm to the right of the box centre
    sphere = [(lo[0] + hi[0]) / 2 - 45.0, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2]
    centre = page.evaluate("p => window.viewer.projectModelPoint(p)", sphere)
    page.touchscreen.tap(centre["x"], centre["y"])
    assert page.locator("#editor-title").inner_text() == "vessel sphere"
    assert page.locator("#editor").is_visible()


@pytest.mark.req("REQ-HCI-023")
def test_clip_plane_reveals_inner_structure(viewer: tuple[Any, Watch, Any]) -> None:
    page, _, _ = viewer
    structure_toggle(page, "core_margin_5mm").tap()
    page.locator('[data-view="anterior"]').tap()
    closed = shot(page, "clip-off")
    assert mask_dominant(closed, 1).sum() == 0  # the green core is inside the opaque box
    page.locator("#clip-btn").tap()
    page.locator('.clip-axis[data-axis="coronal"]').tap()
    opened = shot(page, "clip-coronal-mid")
    assert mask_dominant(opened, 1).sum() > 500
    page.locator("#clip-flip").tap()
    assert mask_dominant(shot(page, "clip-flipped"), 1).sum() == 0  # the kept half now faces away from us
    page.locator("#clip-flip").tap()
    page.locator("#clip-btn").tap()
    structure_toggle(page, "core_margin_5mm").tap()
    assert mask_dominant(shot(page, "clip-restored"), 1).sum() == 0


def _tap_corner(page: Any, corner: list[float], towards: list[float]) -> None:
    """Tap 5 px from a projected box corner towards a point inside the face (a fingertip is never exact)."""
    c = page.evaluate("p => window.viewer.projectModelPoint(p)", corner)
    t = page.evaluate("p => window.viewer.projectModelPoint(p)", towards)
    d = np.array([t["x"] - c["x"], t["y"] - c["y"]])
    d = 5.0 * d / np.linalg.norm(d)
    page.touchscreen.tap(c["x"] + d[0], c["y"] + d[1])


@pytest.mark.req("REQ-HCI-026")
def test_measuring_known_phantom_edges_within_half_a_millimetre(viewer: tuple[Any, Watch, Any], kiosk: Kiosk) -> None:
    page, _, _ = viewer
    lo = page.evaluate("window.viewer.bounds && true")
    assert lo
    (x0, y0, z0), (x1, _y1, z1) = _box_corners(kiosk)
    centre = [(x0 + x1) / 2, y0, (z0 + z1) / 2]
    page.locator('[data-view="anterior"]').tap()
    page.locator("#measure-btn").tap()
    readings = []
    for a, b in (([x0, y0, z0], [x1, y0, z0]), ([x1, y0, z0], [x1, y0, z1])):  # 40 mm along x, 20 mm along z
        _tap_corner(page, a, centre)
        _tap_corner(page, b, centre)
        readings.append(float(page.locator("#measure-readout").get_attribute("data-mm")))
    screenshot(page, "measure-20mm-edge")
    page.locator("#measure-btn").tap()
    assert readings[0] == pytest.approx(BOX_SIZE_MM[0], abs=0.5)
    assert readings[1] == pytest.approx(BOX_SIZE_MM[2], abs=0.5)


def _box_corners(kiosk: Kiosk) -> tuple[list[float], list[float]]:
    import json

    manifest = json.loads((kiosk.service.case_dir / "manifest.json").read_text())
    assert manifest["structures"][0]["name"] == "phantom_box"
    from ui_phantom import lps_affine

    (i0, i1), (j0, j1), (k0, k1) = BOX_VOXELS
    a = lps_affine()
    lo = (a @ [i0 - 0.5, j0 - 0.5, k0 - 0.5, 1])[:3]
    hi = (a @ [i1 + 0.5, j1 + 0.5, k1 + 0.5, 1])[:3]
    return [float(v) for v in lo], [float(v) for v in hi]


def _camera(page: Any) -> dict[str, Any]:
    camera: dict[str, Any] = page.evaluate(
        "(() => { const v = window.viewer; const d = v.camera.position.clone().sub(v.controls.target);"
        " return {dist: d.length(), dir: d.normalize().toArray(), scrollY: window.scrollY,"
        " scrollTop: document.scrollingElement.scrollTop, side: document.querySelector('.side').scrollTop}; })()"
    )
    return camera


def _touch(cdp: Any, kind: str, points: list[tuple[float, float]]) -> None:
    cdp.send(
        "Input.dispatchTouchEvent",
        {"type": kind, "touchPoints": [{"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)]},
    )


@pytest.mark.req("REQ-HCI-025")
def test_touch_drag_rotates_and_pinch_zooms_without_scrolling(viewer: tuple[Any, Watch, Any]) -> None:
    page, _, _ = viewer
    page.locator('[data-view="anterior"]').tap()
    box = page.locator("#canvas3d").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    cdp = page.context.new_cdp_session(page)
    start = _camera(page)
    _touch(cdp, "touchStart", [(cx, cy)])
    for step in range(1, 11):
        _touch(cdp, "touchMove", [(cx + 15 * step, cy + 4 * step)])
    _touch(cdp, "touchEnd", [])
    rotated = _camera(page)
    turned = float(np.degrees(np.arccos(np.clip(np.dot(start["dir"], rotated["dir"]), -1, 1))))
    assert turned > 10
    assert rotated["dist"] == pytest.approx(start["dist"], rel=0.02)
    _touch(cdp, "touchStart", [(cx - 40, cy), (cx + 40, cy)])
    for step in range(1, 11):
        _touch(cdp, "touchMove", [(cx - 40 - 12 * step, cy), (cx + 40 + 12 * step, cy)])
    _touch(cdp, "touchEnd", [])
    pinched = _camera(page)
    assert pinched["dist"] < 0.8 * rotated["dist"]
    for s in (rotated, pinched):  # the page and its panels did not scroll under the fingers
        assert (s["scrollY"], s["scrollTop"], s["side"]) == (start["scrollY"], start["scrollTop"], start["side"])
    assert start["scrollY"] == 0
    assert page.evaluate("getComputedStyle(document.getElementById('canvas3d')).touchAction") == "none"
    page.locator('[data-view="reset"]').tap()


@pytest.mark.req("REQ-HCI-002", "REQ-HCI-024")
def test_every_gesture_has_a_button(viewer: tuple[Any, Watch, Any]) -> None:
    page, _, _ = viewer
    page.locator('[data-view="reset"]').tap()
    base = _camera(page)
    assert base["dir"] == pytest.approx([0, 0, 1], abs=1e-6)  # front view: camera on the anterior side (+Z in glTF)
    for direction in ("left", "right", "up", "down"):
        page.locator(f'[data-rotate="{direction}"]').tap()
        moved = _camera(page)
        assert np.degrees(np.arccos(np.clip(np.dot(base["dir"], moved["dir"]), -1, 1))) == pytest.approx(15, abs=0.5)
        page.locator('[data-view="reset"]').tap()
    page.locator('[data-zoom="in"]').tap()
    assert _camera(page)["dist"] == pytest.approx(0.8 * base["dist"], rel=1e-3)
    page.locator('[data-zoom="out"]').tap()
    page.locator('[data-zoom="out"]').tap()
    assert _camera(page)["dist"] == pytest.approx(base["dist"] * 1.25 * 1.25 * 0.8, rel=1e-3)
    expected = {
        "posterior": [0, 0, -1],
        "left": [1, 0, 0],
        "right": [-1, 0, 0],
        "superior": [0, 1, 0],
        "inferior": [0, -1, 0],
    }
    for view, towards in expected.items():
        page.locator(f'[data-view="{view}"]').tap()
        assert _camera(page)["dir"] == pytest.approx(towards, abs=1e-4), view  # OrbitControls keeps off the pole
    page.locator('[data-view="reset"]').tap()
    hover_rules = page.evaluate(
        "[...document.styleSheets].flatMap(s => [...s.cssRules])"
        ".filter(r => (r.selectorText || '').includes(':hover')).length"
    )
    assert hover_rules == 0


@pytest.mark.req("REQ-HCI-028", "REQ-HCI-002")
def test_mesh_outline_on_slices_lies_within_one_voxel_of_the_image_edge(viewer: tuple[Any, Watch, Any]) -> None:
    page, watch, _ = viewer
    page.locator("#mode-2d").tap()
    wait_js(page, "window.slices && window.slices.ready")
    for axis, (h_extent, v_extent) in {"axial": (0, 1), "coronal": (0, 2)}.items():
        page.locator(f'.slice-axis[data-axis="{axis}"]').tap()
        page.locator("#slice-pos").fill("500")
        page.evaluate("window.slices.setPosition(0.5)")
        time.sleep(0.3)
        img = rgb(screenshot(page, f"slices-{axis}", "#wrap2d"))
        grey = (img.min(axis=2) > 200) & (img.max(axis=2) - img.min(axis=2) < 20)
        red = mask_dominant(img, 0, margin=80, floor=150)
        gl, gt, gr, gb = bbox(grey)
        rl, rt, rr, rb = bbox(red)
        (i0, i1), (j0, j1), (k0, k1) = BOX_VOXELS
        counts = [i1 - i0 + 1, j1 - j0 + 1, k1 - k0 + 1]
        px_h = (gr - gl + 1) / counts[h_extent]
        px_v = (gb - gt + 1) / counts[v_extent]
        # the outline is a 2 px line centred on the surface: compare its centre to the image edge
        assert abs((rl + 1) - gl) <= px_h and abs((rr - 1) - gr) <= px_h, (axis, (gl, gr), (rl, rr), px_h)
        assert abs((rt + 1) - gt) <= px_v and abs((rb - 1) - gb) <= px_v, (axis, (gt, gb), (rt, rb), px_v)
    before = page.evaluate("window.slices.position()")
    page.locator("#slice-next").tap()  # the buttons of the slice-scroll gesture move one voxel
    after_next = page.evaluate("window.slices.position()")
    page.locator("#slice-prev").tap()
    after_prev = page.evaluate("window.slices.position()")
    assert after_next > before - 0.5 / 56 and after_prev == pytest.approx(after_next - 1 / 56, abs=1e-4)
    structure_toggle(page, "phantom_box").tap()
    hidden = rgb(screenshot(page, "slices-box-hidden", "#wrap2d"))
    assert mask_dominant(hidden, 0, margin=80, floor=150).sum() == 0
    structure_toggle(page, "phantom_box").tap()
    page.locator("#mode-3d").tap()
    watch.assert_clean(page)


@pytest.mark.req("REQ-HCI-040", "REQ-TRACE-401", "REQ-HCI-041")
def test_approve_and_reject_are_audited_and_report_opens(viewer: tuple[Any, Watch, Any], kiosk: Kiosk) -> None:
    page, watch, _ = viewer
    page.locator('.structure[data-structure="inner_core"] .adjust').tap()
    page.locator("#approve-btn").tap()
    page.wait_for_selector("#review-msg.ok")
    page.locator('.structure[data-structure="vessel_sphere"] .adjust').tap()
    page.locator("#reject-btn").tap()
    page.wait_for_selector("#review-msg.bad")  # a rejection needs a note
    page.locator('.quick-note[data-note-key="note.boundary"]').tap()
    page.locator("#reject-btn").tap()
    page.wait_for_selector("#review-msg.ok")
    log = AuditLog(kiosk.data_dir / "audit.sqlite3")
    decisions = [r for r in log.records(action="structure")]
    assert [(r.action, r.details["structure"]) for r in decisions] == [
        ("structure.approved", "inner_core"),
        ("structure.rejected", "vessel_sphere"),
    ]
    study_hash = kiosk.service.catalogue.study("1.2.826.0.1.3680043.8.498.1003").study_hash
    assert all(r.actor == "ui:surgeon" and r.study_hash == study_hash for r in decisions)
    assert decisions[1].details["note"] == "Boundary not right" and decisions[1].requirement == "REQ-TRACE-401"
    assert log.verify() == []
    href = page.locator("#report-link").get_attribute("href")
    response = page.request.get(f"{kiosk.base}{href}")
    assert response.status == 200 and "Reconstruction report" in response.text()
    assert "sandbox" in response.headers["content-security-policy"]
    watch.assert_clean(page)
