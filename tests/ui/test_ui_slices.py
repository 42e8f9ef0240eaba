"""Slice view in headless Chromium on a CT-like case: the image under the outlines, window presets, the value
under the finger, structure names from the terminology table in both languages, and a language switch that keeps
the screen as the surgeon left it.

The case is ui_phantom's box with a CT-like image (air around, a ramp from -1000 to +1500 HU across the box) and
structures named as ct-default names them (body, bone, lung_left, a lesion margin shell), so the names have a row
in the terminology table. The same flow on the real service with a real CT is tests/ui/test_ui_real_study.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh
from ui_browser import Kiosk, Watch, login, new_page, screenshot, start_kiosk, wait_js
from ui_phantom import BOX_VOXELS, SHAPE, lps_affine, write_case
from ui_pixels import rgb

from appliance.core import Mesh, Volume
from appliance.export.glb import write_glb
from appliance.io.nifti import save_volume

NAMES = {"phantom_box": "body", "inner_core": "bone", "core_margin_5mm": "lesion_margin_5mm",
         "vessel_sphere": "lung_left"}
ZH = {"body": "体表轮廓", "bone": "骨骼", "lung_left": "左肺", "lesion_margin_5mm": "病灶（5 mm 安全边界）"}
EN = {"body": "Body outline", "bone": "Bone", "lung_left": "Left lung", "lesion_margin_5mm": "Lesion, 5 mm margin"}


def ct_image() -> np.ndarray:
    """Air (-1000 HU) around the box; inside it a ramp along i from -1000 to +1500 HU plus a fine texture."""
    image = np.full(SHAPE, -1000, np.int16)
    (i0, i1), (j0, j1), (k0, k1) = BOX_VOXELS
    ramp = np.linspace(-1000, 1500, i1 - i0 + 1)[:, None, None]
    texture = 40 * ((np.arange(j1 - j0 + 1)[None, :, None] % 3) - 1)
    image[i0 : i1 + 1, j0 : j1 + 1, k0 : k1 + 1] = np.round(ramp + texture + np.zeros((1, 1, k1 - k0 + 1)))
    return image


def _box(lo: np.ndarray, hi: np.ndarray, name: str, colour: tuple[int, int, int]) -> Mesh:
    tm = trimesh.creation.box(extents=hi - lo)
    tm.apply_translation((lo + hi) / 2)
    return Mesh(np.asarray(tm.vertices), np.asarray(tm.faces), name, colour)


def write_ct_case(folder: Path) -> None:
    """ui_phantom's case with ct-default's structure names and a CT-like image (same grid, same geometry)."""
    write_case(folder)
    affine = lps_affine()
    save_volume(Volume(ct_image(), affine, "CT", "HU"), folder / "image.nii.gz")
    (i0, i1), (j0, j1), (k0, k1) = BOX_VOXELS
    lo = (affine @ [i0 - 0.5, j0 - 0.5, k0 - 0.5, 1])[:3]
    hi = (affine @ [i1 + 0.5, j1 + 0.5, k1 + 0.5, 1])[:3]
    centre, half = (lo + hi) / 2, np.array([6.0, 5.0, 4.0])
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    sphere.apply_translation(centre + np.array([-45.0, 0.0, 0.0]))
    meshes = [
        _box(lo, hi, "body", (230, 25, 75)),
        _box(centre - half, centre + half, "bone", (60, 180, 75)),
        _box(centre - half - 5.0, centre + half + 5.0, "lesion_margin_5mm", (255, 225, 25)),
        Mesh(np.asarray(sphere.vertices), np.asarray(sphere.faces), "lung_left", (67, 99, 216)),
    ]
    write_glb(meshes, folder / "scene.glb", opacity={"lesion_margin_5mm": 0.35})
    manifest = json.loads((folder / "manifest.json").read_text())
    for s in manifest["structures"]:
        s["name"] = NAMES[s["name"]]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


@pytest.fixture(scope="module")
def ct_kiosk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    folder = tmp_path_factory.mktemp("ct-case")
    write_ct_case(folder)
    k = start_kiosk(tmp_path_factory.mktemp("ct-kiosk"), folder)
    yield k
    k.stop()


@pytest.fixture(scope="module")
def page(browser: Any, ct_kiosk: Kiosk) -> Iterator[tuple[Any, Watch]]:
    context, pg, watch = new_page(browser)
    login(pg, ct_kiosk.base, "surgeon")
    pg.goto(f"{ct_kiosk.base}/cases/{ct_kiosk.done_job}")
    wait_js(pg, "document.getElementById('case-viewer').dataset.loaded === '1'")
    yield pg, watch
    context.close()


def open_slices(pg: Any) -> None:
    if pg.locator("#mode-2d").get_attribute("aria-pressed") != "true":
        pg.locator("#mode-2d").tap()
    wait_js(pg, "window.slices && window.slices.ready")


def slice_shot(pg: Any, name: str) -> np.ndarray:
    time.sleep(0.3)
    return rgb(screenshot(pg, name, "#wrap2d"))


def box_pixels(pg: Any, img: np.ndarray) -> np.ndarray:
    """Grey values of the screen pixels inside the box's axial cross-section, 3 px inside its edges."""
    (i0, i1), (j0, j1), _ = BOX_VOXELS
    a = lps_affine()
    corners = [pg.evaluate("p => window.slices.screenOfLps(p)", list((a @ [i, j, 12, 1])[:3]))
               for i, j in ((i0, j0), (i1, j1))]
    xs = sorted(int(c[0]) for c in corners)
    ys = sorted(int(c[1]) for c in corners)
    region = img[ys[0] + 3 : ys[1] - 3, xs[0] + 3 : xs[1] - 3]
    return np.asarray(region.mean(axis=2), dtype=float)


def labels(pg: Any) -> dict[str, str]:
    rows = pg.eval_on_selector_all(
        ".structure", "rs => rs.map(r => [r.dataset.structure, r.querySelector('.label').textContent])"
    )
    return dict(rows)


@pytest.mark.req("REQ-HCI-701", "REQ-OUT-700")
def test_slice_view_shows_the_image_with_window_presets(page: tuple[Any, Watch]) -> None:
    pg, watch = page
    open_slices(pg)
    shown = pg.eval_on_selector_all(".window-preset:not(.hidden)", "bs => bs.map(b => b.dataset.window)")
    assert shown == ["soft", "bone", "lung", "brain"]  # CT: the HU presets; the MR automatic window is hidden
    assert pg.locator('.window-preset[data-window="soft"]').get_attribute("aria-pressed") == "true"
    pg.evaluate("window.slices.setPosition(12.5 / 32)")  # the middle of the box (slices 8..17 of 32)
    soft = slice_shot(pg, "ct-case-axial-soft")
    inside = box_pixels(pg, soft)
    assert inside.std() > 30 and inside.max() - inside.min() > 200  # the ramp, not a flat label fill
    pg.locator('.window-preset[data-window="bone"]').tap()
    assert pg.evaluate("window.slices.windowRange()") == [-500, 1300]
    bone = slice_shot(pg, "ct-case-axial-bone")
    assert np.abs(box_pixels(pg, bone) - inside).mean() > 20  # the same voxels, other grey levels
    pg.locator('.window-preset[data-window="lung"]').tap()
    assert pg.evaluate("window.slices.windowRange()") == [-1350, 150]
    assert pg.locator('.window-preset[data-window="bone"]').get_attribute("aria-pressed") == "false"
    pg.locator('.window-preset[data-window="soft"]').tap()
    watch.assert_clean(pg)


@pytest.mark.req("REQ-HCI-702")
def test_a_tap_shows_the_hu_value_under_the_finger(page: tuple[Any, Watch]) -> None:
    pg, watch = page
    open_slices(pg)
    image = ct_image()
    a = lps_affine()
    for i, j in ((20, 20), (45, 30)):
        x, y = pg.evaluate("p => window.slices.screenOfLps(p)", list((a @ [i, j, 12, 1])[:3]))
        box = pg.locator("#canvas2d").bounding_box()
        pg.touchscreen.tap(box["x"] + x, box["y"] + y)
        deadline = time.monotonic() + 10  # the tap is handled asynchronously; a loaded machine takes its time
        while True:
            ras = pg.evaluate("window.slices.crosshairValue().mm")  # NiiVue's RAS mm
            ijk = np.linalg.inv(a) @ [-ras[0], -ras[1], ras[2], 1]
            if [round(v) for v in ijk[:2]] == [i, j] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [round(v) for v in ijk[:2]] == [i, j]
        expected_text = f"{int(image[i, j, round(ijk[2])])} HU"
        wait_js(pg, f"document.getElementById('slice-value').innerText === {expected_text!r}")
        expected = int(image[i, j, round(ijk[2])])
        assert pg.locator("#slice-value").inner_text() == f"{expected} HU"
    watch.assert_clean(pg)


@pytest.mark.req("REQ-HCI-703")
def test_structure_names_come_from_the_terminology_in_both_languages(page: tuple[Any, Watch]) -> None:
    pg, _ = page
    assert labels(pg) == EN
    pg.locator("#lang-switch").tap()
    pg.wait_for_selector('html[lang="zh-CN"]')
    wait_js(pg, "document.getElementById('case-viewer').dataset.loaded === '1'")
    assert labels(pg) == ZH
    pg.locator('.structure[data-structure="lung_left"] .adjust').tap()
    assert pg.locator("#editor-title").inner_text() == "左肺"
    pg.locator("#lang-switch").tap()
    pg.wait_for_selector('html[lang="en"]')
    wait_js(pg, "document.getElementById('case-viewer').dataset.loaded === '1'")
    assert labels(pg) == EN
    assert pg.locator("#editor-title").inner_text() == "Left lung"  # the open editor was kept too


def _state(pg: Any) -> dict[str, Any]:
    state: dict[str, Any] = pg.evaluate(
        """(() => ({
          mode: document.getElementById('mode-2d').getAttribute('aria-pressed'),
          axis: window.slices && window.slices.axis,
          crosshair: window.slices && [...window.slices.nv.scene.crosshairPos].map(v => v.toFixed(4)),
          window: window.slices && window.slices.window,
          pressedWindow: [...document.querySelectorAll('.window-preset[aria-pressed="true"]')]
            .map(b => b.dataset.window),
          pressedAxis: [...document.querySelectorAll('.slice-axis[aria-pressed="true"]')].map(b => b.dataset.axis),
          visible: Object.fromEntries([...window.viewer.structures.keys()].map(n => [n, window.viewer.isVisible(n)])),
          toggles: [...document.querySelectorAll('.structure .toggle')].map(b => b.getAttribute('aria-pressed')),
          opacity: Object.fromEntries([...window.viewer.structures.keys()].map(n => [n, window.viewer.opacity(n)])),
          colour: Object.fromEntries([...window.viewer.structures.keys()].map(n => [n, window.viewer.colour(n)])),
          clip: window.viewer.clip,
          clipButton: document.getElementById('clip-btn').getAttribute('aria-pressed'),
          measure: window.viewer.measurement().map(p => p.map(v => v.toFixed(3))),
          measureMm: document.getElementById('measure-readout').dataset.mm,
          camera: Object.fromEntries(Object.entries(window.viewer.cameraState())
            .map(([k, v]) => [k, v.map(x => x.toFixed(3))])),
        }))()"""
    )
    return state


@pytest.mark.req("REQ-HCI-705")
def test_language_switch_keeps_view_slice_window_structures_clip_and_measurement(page: tuple[Any, Watch]) -> None:
    pg, watch = page
    pg.locator("#mode-3d").tap()
    pg.locator('[data-view="left"]').tap()
    pg.locator("#clip-btn").tap()
    pg.locator('.clip-axis[data-axis="sagittal"]').tap()
    pg.locator("#measure-btn").tap()
    a = lps_affine()
    (i0, _), (j0, _), (k0, k1) = BOX_VOXELS
    pg.evaluate("pts => window.viewer.setMeasurement(pts)",
                [list((a @ [i0, j0, k0, 1])[:3]), list((a @ [i0, j0, k1, 1])[:3])])
    pg.locator('.structure[data-structure="lung_left"] .toggle').tap()
    pg.locator('.structure[data-structure="body"] .adjust').tap()
    pg.locator("#opacity-down").tap()
    pg.locator('#swatches button[data-colour="#4363d8"]').tap()
    pg.locator("#mode-2d").tap()
    wait_js(pg, "window.slices && window.slices.ready")
    pg.locator('.slice-axis[data-axis="coronal"]').tap()
    for _ in range(3):
        pg.locator("#slice-next").tap()
    pg.locator('.window-preset[data-window="bone"]').tap()
    before = _state(pg)
    assert before["mode"] == "true" and before["axis"] == "coronal" and before["window"] == "bone"
    assert before["visible"]["lung_left"] is False and before["opacity"]["body"] == pytest.approx(0.75)
    assert before["clip"]["enabled"] is True and len(before["measure"]) == 2 and before["measureMm"]
    img_before = slice_shot(pg, "state-before-switch")
    pg.locator("#lang-switch").tap()
    pg.wait_for_selector('html[lang="zh-CN"]')
    wait_js(pg, "document.getElementById('case-viewer').dataset.loaded === '1' && window.slices && window.slices.ready")
    after = _state(pg)
    assert after == before
    assert pg.locator("#wrap2d").is_visible() and not pg.locator("#wrap3d").is_visible()
    pg.locator("#lang-switch").tap()
    pg.wait_for_selector('html[lang="en"]')
    wait_js(pg, "document.getElementById('case-viewer').dataset.loaded === '1' && window.slices && window.slices.ready")
    assert _state(pg) == before
    img_back = slice_shot(pg, "state-after-two-switches")  # same language, same layout: the same picture
    assert img_back.shape == img_before.shape
    assert float((np.abs(img_before - img_back).max(axis=2) > 30).mean()) < 0.01  # the same slice, same window
    watch.assert_clean(pg)
