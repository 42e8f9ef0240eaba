"""The kiosk on the real service with a real CT: `appliance serve` as a process, the study sent with dcmtk storescu,
reconstructed by the real pipeline, opened in Chromium by the surgeon.

Checks what a person sees: the slice view's pixels under the body outline are the CT's grey levels under the
chosen window (not a flat label fill) and change with the window buttons; a tap reads the HU of the voxel under
the finger; zh-CN shows Chinese structure names; the language switch keeps the slice view and its position.
Screenshots of the slice view in both languages land in build/ui-screenshots/ (real-study-slices-*.png).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nurse_served import ServedBox, start_box, storescu
from ui_browser import SCREENSHOTS, login, new_page, wait_js
from ui_pixels import rgb

from appliance.export.image import IMAGE_KEY, LABELS_KEY, output_file
from appliance.io.nifti import load_volume

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "service"))
from svc_helpers import prepare_ct_series  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.serial,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk (storescu) is not installed"),
]
SHOTS = SCREENSHOTS
#: The CT windows of the slice view, as (low, high) HU (ui/static/js/slices.js CT_WINDOWS), and the least
#: correlation between a body voxel's windowed HU and its grey level on screen (the bone window squeezes soft
#: tissue into ~50 grey levels, where 8-bit steps and a screen pixel landing on the neighbouring voxel weigh more).
WINDOWS = {"soft": (-160.0, 240.0, 0.9), "bone": (-500.0, 1300.0, 0.8)}


@pytest.fixture(scope="module")
def reconstructed(tmp_path_factory: pytest.TempPathFactory,
                  shared_data: Path) -> Iterator[tuple[ServedBox, int, Path]]:  # fmt: skip
    """The real CT sent by storescu to a real `appliance serve`, reconstructed automatically: (box, job, outputs)."""
    tmp = tmp_path_factory.mktemp("real-study")
    srv = start_box(tmp, auto=True)
    try:
        _, files = prepare_ct_series(shared_data, tmp / "ct")
        storescu(srv, files, jpeg2000=True)
        deadline = time.monotonic() + 900
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            jobs = srv.api("/api/jobs")[1]["jobs"]
            job = jobs[0] if jobs else {}
            if job.get("state") in ("done", "failed", "refused"):
                break
            time.sleep(1)
        assert job.get("state") == "done", (job, srv.log.read_text()[-3000:])
        yield srv, int(job["id"]), srv.data_dir / "outputs" / f"job-{job['id']}"
    finally:
        srv.stop()


def _slice_samples(page: Any, out: Path, canvas_offset: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(HU, screen position) of up to 400 body voxels on the shown axial slice, read from the job's own files."""
    manifest = json.loads((out / "manifest.json").read_text())
    image_path, labels_path = output_file(out, manifest, IMAGE_KEY), output_file(out, manifest, LABELS_KEY)
    assert image_path is not None and labels_path is not None
    image, labels = load_volume(image_path, "CT", "HU"), load_volume(labels_path, "SEG", "label")
    body = next(s["label"] for s in json.loads((out / "structures.json").read_text()) if s["name"] == "body")
    ras = page.evaluate("window.slices.crosshairValue().mm")
    k = round(float((np.linalg.inv(image.affine) @ [-ras[0], -ras[1], ras[2], 1])[2]))
    ii, jj = np.nonzero(np.asarray(labels.array)[:, :, k] == body)
    assert ii.size > 1000, "the body label covers this slice"
    pick = np.random.default_rng(0).choice(ii.size, size=min(400, ii.size), replace=False)
    hu = np.asarray(image.array)[ii[pick], jj[pick], k].astype(float)
    lps = (image.affine @ np.stack([ii[pick], jj[pick], np.full(pick.size, k), np.ones(pick.size)]))[:3].T
    xy = np.array(page.evaluate("ps => ps.map(p => window.slices.screenOfLps(p))", lps.tolist()))
    return hu, xy + np.asarray(canvas_offset)


def _greys(img: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey level at each position, and which positions show grey (not an outline's colour)."""
    px = img[np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)]
    return px.mean(axis=1), (px.max(axis=1) - px.min(axis=1)) < 8


@pytest.mark.req("REQ-HCI-701", "REQ-HCI-702", "REQ-HCI-703", "REQ-HCI-705", "REQ-OUT-700")
def test_real_study_on_the_slice_view_in_both_languages(browser: Any,
                                                       reconstructed: tuple[ServedBox, int, Path]) -> None:
    srv, job, out = reconstructed
    context, page, watch = new_page(browser)
    login(page, srv.base, "surgeon")
    page.goto(f"{srv.base}/cases/{job}")
    wait_js(page, "document.getElementById('case-viewer').dataset.loaded === '1'", timeout_s=180)
    page.locator("#mode-2d").tap()
    wait_js(page, "window.slices && window.slices.ready", timeout_s=180)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.slices.setPosition(0.5)")
    page.locator("#slice-next").tap()
    canvas, wrap = page.locator("#canvas2d").bounding_box(), page.locator("#wrap2d").bounding_box()
    offset = (canvas["x"] - wrap["x"], canvas["y"] - wrap["y"])
    hu, xy = _slice_samples(page, out, offset)
    assert hu.std() > 20  # the CT under the body outline is not uniform
    seen = {}
    for name in ("soft", "bone"):
        page.locator(f'.window-preset[data-window="{name}"]').tap()
        time.sleep(0.4)
        img = rgb(page.screenshot(path=str(SHOTS / f"real-study-slices-{name}.png"), clip=wrap, timeout=180_000))
        grey, plain = _greys(img, xy)
        lo, hi, least = WINDOWS[name]
        expected = np.clip((hu - lo) / (hi - lo), 0, 1) * 255
        assert plain.sum() > 200
        assert grey[plain].std() > 8, f"{name}: flat fill under the body outline"
        r = np.corrcoef(grey[plain], expected[plain])[0, 1]
        assert r > least, f"{name}: grey levels do not follow the HU (r = {r:.3f})"
        assert np.abs(grey[plain] - expected[plain]).mean() < 20
        seen[name] = grey
    assert np.abs(seen["soft"] - seen["bone"]).mean() > 15  # the window buttons change the picture
    page.locator('.window-preset[data-window="soft"]').tap()
    x, y = xy[0]  # a tap on a body voxel reads its HU
    page.touchscreen.tap(wrap["x"] + x, wrap["y"] + y)
    time.sleep(0.3)
    assert page.locator("#slice-value").inner_text() == f"{round(float(hu[0]))} HU"
    before = page.evaluate("[window.slices.axis, [...window.slices.nv.scene.crosshairPos].map(v => v.toFixed(4))]")
    english = page.eval_on_selector_all(".structure .label", "ls => ls.map(l => l.textContent)")
    assert "Body outline" in english and "Bone" in english
    page.screenshot(path=str(SHOTS / "real-study-slice-view-en.png"), timeout=180_000)
    page.locator("#lang-switch").tap()
    page.wait_for_selector('html[lang="zh-CN"]', timeout=180_000)
    loaded = "document.getElementById('case-viewer').dataset.loaded === '1' && window.slices && window.slices.ready"
    wait_js(page, loaded, timeout_s=180)
    assert page.locator("#wrap2d").is_visible() and not page.locator("#wrap3d").is_visible()
    after = page.evaluate("[window.slices.axis, [...window.slices.nv.scene.crosshairPos].map(v => v.toFixed(4))]")
    assert after == before
    chinese = page.eval_on_selector_all(".structure .label", "ls => ls.map(l => l.textContent)")
    assert "体表轮廓" in chinese and "骨骼" in chinese
    assert all(any("\u4e00" <= c <= "\u9fff" for c in name) for name in chinese), chinese
    time.sleep(0.4)
    page.screenshot(path=str(SHOTS / "real-study-slice-view-zh-CN.png"), timeout=180_000)
    watch.assert_clean(page)
    context.close()
