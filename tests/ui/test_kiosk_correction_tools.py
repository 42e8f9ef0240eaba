"""The edit panel's newer tools in Chromium on the service's own routes (the same in-process service and half
resolution CT job as test_kiosk_review_fast.py): smooth with its volume change, the ghosted comparison with the
previous revision, scissors drawn by touch on the 3D view, paint limited to the soft-tissue window and fill between
two marked slices, the in-plane brush; every button sends operations only, and the texts exist in Chinese."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kiosk_review import open_case, page_for, show_slices, soft_tissue, tap_at, wait_message
from test_kiosk_review_fast import served  # noqa: F401  (the module's service with its finished job)
from ui_browser import login, screenshot, wait_js

from appliance.io.nifti import load_volume

pytestmark = [pytest.mark.serial]


def _api(box: dict[str, Any], path: str, body: Any = None) -> Any:
    client, headers = box["client"], box["headers"]
    r = client.get(path, headers=headers) if body is None else client.post(path, headers=headers, json=body)
    assert r.status_code in (200, 201), r.get_json()
    return r.get_json()


def _current(box: dict[str, Any]) -> dict[str, Any]:
    listed = _api(box, f"/api/jobs/{box['job']}/revisions")
    record: dict[str, Any] = _api(box, f"/api/jobs/{box['job']}/revisions/{listed['current']}")
    return record


def _lps(affine: np.ndarray, ijk: Any) -> list[float]:
    return [float(v) for v in affine[:3, :3] @ np.asarray(ijk, float) + affine[:3, 3]]


def _smooth_and_compare(page: Any, box: dict[str, Any]) -> None:
    page.locator("#compare-btn").tap()
    assert "no earlier revision" in page.locator("#compare-msg").inner_text()
    page.locator("#compare-btn").tap()
    base = int(page.locator("#revision-badge").get_attribute("data-revision") or "-1")
    page.locator("#smooth-3").tap()  # 1 mm changes nothing on this 6 mm grid
    text = wait_message(page, "#edit-msg")
    made = _current(box)
    assert made["revision"] == base + 1 and made["ops"] == [
        {"op": "smooth", "structure": "bone", "method": "gaussian", "sigma_mm": 3}]
    change = made["volume_change_ml"]["bone"]
    assert f"{change['before']:.1f} → {change['after']:.1f} ml" in text, text
    page.locator("#compare-btn").tap()
    wait_js(page, "document.getElementById('compare-btn').dataset.revision === String(" + str(base) + ")")
    ghost = page.evaluate("(() => { const g = window.viewer.scene.getObjectByName('compare:bone'); return g && "
                          "[g.material.opacity, g.material.transparent, g.geometry.attributes.position.count]; })()")
    now = page.evaluate("window.viewer.structures.get('bone').mesh.geometry.attributes.position.count")
    assert ghost[0] == pytest.approx(0.3) and ghost[1] is True and ghost[2] != now  # the earlier mesh, see-through
    page.locator('.structure[data-structure="body"] .toggle').tap()  # the skin hides the bone
    screenshot(page, "issue14-compare-en")


def _scissors(page: Any, box: dict[str, Any]) -> None:
    volume, labels = box["volume"], box["labelmap"].labels
    bone = np.argwhere(labels == 2)
    ijk = bone[np.argmin(np.linalg.norm(bone - bone.mean(axis=0), axis=1))]
    centre = page.evaluate("p => window.viewer.projectModelPoint(p)", _lps(volume.affine, ijk))
    page.locator("#scissors-btn").tap()
    overlay = page.locator("#scissors-overlay")
    overlay.wait_for()
    drawn = [(centre["x"] + dx, centre["y"] + dy) for dx, dy in ((-30, -30), (30, -30), (30, 30), (-30, 30))]
    page.mouse.move(*drawn[0])
    page.mouse.down()
    for x, y in [*drawn[1:], drawn[0]]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    assert page.locator("#scissors-cut").is_enabled()
    screenshot(page, "issue14-scissors-en")
    base = int(page.locator("#revision-badge").get_attribute("data-revision") or "-1")
    before = _api(box, f"/api/jobs/{box['job']}/revisions/{base}")
    page.locator("#scissors-cut").tap()
    wait_message(page, "#edit-msg")
    made = _current(box)
    (op,) = made["ops"]
    assert (op["op"], op["structure"], op["keep"], made["changed"]) == ("scissors", "bone", False, ["bone"])
    assert made["volume_change_ml"]["bone"]["change"] < 0 and made["parent"] == before["revision"]
    back = page.evaluate("ps => ps.map(p => window.viewer.projectModelPoint(p))", op["polygon_lps"])
    for p in back:  # each corner lies on the drawn outline (within the 4 px recording step)
        assert min(np.hypot(p["x"] - x, p["y"] - y) for x, y in _outline(drawn)) < 5, p
    look = page.evaluate("(() => { const v = window.viewer; const t = v.controls.target.clone(); "
                         "const d = t.clone().sub(v.camera.position).normalize(); "
                         "return v.toModel(t.clone().add(d)).sub(v.toModel(t)).normalize().toArray(); })()")
    assert np.allclose(op["view_direction"], look, atol=1e-4)
    assert page.locator("#scissors-overlay").count() == 0


def _outline(corners: list[tuple[float, float]]) -> list[tuple[float, float]]:
    pts = []
    for (x0, y0), (x1, y1) in zip(corners, [*corners[1:], corners[0]], strict=True):
        pts += [(x0 + (x1 - x0) * f, y0 + (y1 - y0) * f) for f in np.linspace(0, 1, 61)]
    return pts


def _calm_pair(box: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Two soft-tissue points 6 axial slices (36 mm) apart at the same in-plane voxel."""
    volume = box["volume"]
    calm = soft_tissue(volume.array.astype(np.float32), size=5)
    pairs = [int(np.count_nonzero(calm[:, :, k] & calm[:, :, k + 6])) for k in range(calm.shape[2] - 6)]
    k = int(np.argmax(pairs))
    both = np.argwhere(calm[:, :, k] & calm[:, :, k + 6])
    i, j = both[len(both) // 2]
    return _lps(volume.affine, (i, j, k)), _lps(volume.affine, (i, j, k + 6))


def _paint_and_fill(page: Any, box: dict[str, Any], p1: list[float], p2: list[float]) -> None:
    """``patch`` holds a ball at p1; the kiosk paints one at p2 in the soft-tissue window, then fills between."""
    show_slices(page)
    page.locator('.paint-window[data-window="soft"]').tap()
    page.locator('.brush-radius[data-mm="10"]').tap()
    tap_at(page, p2)
    page.locator('.edit-op[data-op="paint"]').tap()
    wait_message(page, "#edit-msg")
    (op,) = _current(box)["ops"]
    assert (op["op"], op["structure"], op["window"]) == ("paint", "patch", {"min": -100, "max": 200})
    tap_at(page, p1)
    page.locator("#fill-mark").tap()
    assert "Fill between here" in page.locator("#edit-msg").inner_text()
    tapped = tap_at(page, p2)
    page.locator("#fill-apply").tap()
    wait_message(page, "#edit-msg")
    made = _current(box)
    (op,) = made["ops"]
    assert (op["op"], op["view"], op["to_lps"]) == ("fill_between", "axial", tapped) and "patch" in made["changed"]
    assert made["volume_change_ml"]["patch"]["change"] > 0
    _slice_erase(page, box, p2)


def _labels_of(box: dict[str, Any], revision: int, folder: Path) -> np.ndarray:
    r = box["client"].get(f"/api/jobs/{box['job']}/revisions/{revision}/files/labels.nii.gz", headers=box["headers"])
    assert r.status_code == 200
    path = folder / f"labels-{revision}.nii.gz"
    path.write_bytes(r.data)
    return np.asarray(load_volume(path).array)


def _slice_erase(page: Any, box: dict[str, Any], at: list[float]) -> None:
    """The in-plane brush: "This slice only" + Erase takes the patch away on the crosshair's axial slice only."""
    page.locator('.brush-shape[data-shape="slice"]').tap()
    tap_at(page, at)
    page.locator('.edit-op[data-op="erase"]').tap()
    wait_message(page, "#edit-msg")
    made = _current(box)
    (op,) = made["ops"]
    assert (op["op"], op["structure"], op["slice_view"], op["sphere"]["radius_mm"]) == ("erase", "patch", "axial", 10)
    with tempfile.TemporaryDirectory() as tmp:
        before, after = _labels_of(box, made["parent"], Path(tmp)), _labels_of(box, made["revision"], Path(tmp))
    changed = np.argwhere(before != after)
    inverse = np.linalg.inv(box["volume"].affine)
    k = int(np.floor(inverse[2, :3] @ np.asarray(op["sphere"]["center_lps"]) + inverse[2, 3] + 0.5))
    assert len(changed) > 0 and set(changed[:, 2].tolist()) == {k}  # one axial slice, the crosshair's
    page.locator('.brush-shape[data-shape="ball"]').tap()


@pytest.mark.req("REQ-FUNC-1420", "REQ-FUNC-1421", "REQ-HCI-1422", "REQ-FUNC-1601")
def test_smooth_compare_scissors_windowed_paint_and_fill_between(browser: Any, served: dict[str, Any]) -> None:  # noqa: F811
    job = served["job"]
    p1, p2 = _calm_pair(served)
    _api(served, f"/api/jobs/{job}/revisions", {  # a structure drawn on one slice range (setup through the API)
        "base": _current(served)["revision"], "reason": "setup", "ops": [
            {"op": "new_structure", "name": "patch", "color": [60, 180, 75], "category": "other"},
            {"op": "paint", "structure": "patch", "sphere": {"center_lps": p1, "radius_mm": 10}}]})
    context, page, watch = page_for(browser)
    login(page, served["base"], "engineer")
    open_case(page, served["base"], job, "?structure=bone")
    _smooth_and_compare(page, served)
    _scissors(page, served)
    screenshot(page, "issue14-tools-en", "#edit-tools")
    page.locator('.structure[data-structure="patch"] .adjust').tap()
    _paint_and_fill(page, served, p1, p2)
    page.locator("#lang-switch").tap()
    page.wait_for_selector('html[lang="zh-CN"]')
    wait_js(page, "document.getElementById('case-viewer').dataset.loaded === '1'")
    for selector, text in (("#fill-apply", "填充到此层"), ("#smooth-3", "平滑 3 mm"), ("#scissors-cut", "剪去圈内"),
                           ("#compare-btn", "与早期版本对比"), ('.paint-window[data-window="vessel"]', "增强血管")):
        assert " ".join(page.locator(selector).inner_text().split()) == text
    screenshot(page, "issue14-tools-zh-CN", "#edit-tools")
    watch.assert_clean(page)
    context.close()
