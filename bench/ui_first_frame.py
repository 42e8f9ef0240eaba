"""Tap-to-first-frame of the surgeon's viewer (REQ-PERF-400): from the tap on "Open 3D model" in the inbox to
the first rendered frame of the case (GPU work finished, read back), for a scene of about 1 M triangles.

The anchor, measured in the same run and the same browser, is the same flow on the small 20 k-triangle phantom
scene: the ratio shows what the triangle count costs on top of page, script and API overhead.

Runs the kiosk app (H6's JSON API over the tests' scripted service) on 127.0.0.1 and Debian's Chromium headless.
On this machine WebGL runs on SwiftShader (CPU); the kiosk has a GPU, so these numbers are an upper bound for
the rendering part. Prints medians; never passes or fails on time.

Usage: .venv/bin/python bench/ui_first_frame.py [--runs 5] [--triangles 1000000]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from ui_browser import CHROMIUM, CHROMIUM_ARGS, PINS, start_kiosk, wait_js  # noqa: E402
from ui_phantom import write_case  # noqa: E402

SPHERE_SUBDIVISIONS = 7  # 327,680 triangles per sphere


def measure(browser: Any, base: str, runs: int) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Tap-to-first-frame phases in ms: one cold run (fresh browser cache), then ``runs`` warm ones (the kiosk's
    browser keeps its cache: it has shown the inbox and the viewer before)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, has_touch=True)
    page = context.new_page()
    page.goto(f"{base}/login")
    page.click('.role-btn[data-role="surgeon"]')
    for digit in PINS["surgeon"]:
        page.click(f'#keypad button[data-key="{digit}"]')
    page.click('#keypad button[data-key="ok"]')
    page.wait_for_url("**/inbox")
    results: list[dict[str, float]] = []
    for _ in range(runs + 1):
        page.goto(f"{base}/inbox")
        page.wait_for_selector("a.open-case:not(.hidden)")
        page.evaluate(
            "for (const type of ['touchstart', 'pointerdown', 'click']) window.addEventListener(type, () => {"
            " if (!sessionStorage.getItem('tapAt')) sessionStorage.setItem('tapAt',"
            " String(performance.timeOrigin + performance.now())); }, { capture: true })"
        )
        page.locator("a.open-case:not(.hidden)").first.tap()
        wait_js(page, "typeof window.viewer?.firstFrameAt === 'number'", timeout_s=180, interval_s=0.02)
        results.append(
            page.evaluate(
                """(() => { const tap = Number(sessionStorage.getItem('tapAt')); sessionStorage.removeItem('tapAt');
            const t = window.viewer.timings; const o = performance.timeOrigin;
            return { total: window.viewer.firstFrameAt - tap, page: o + t.loadStart - tap,
                     glb: t.glbParsed - t.loadStart, render: t.firstFrame - t.glbParsed }; })()"""
            )
        )
    context.close()
    return results[1:], results[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--triangles", type=int, default=1_000_000)
    parser.add_argument("--many-structures", action="store_true",
                        help="add a third scene: the phantom plus one small sphere per TotalSegmentator class (117)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    per_sphere = 20 * 4**SPHERE_SUBDIVISIONS
    extra = max(0, math.ceil(args.triangles / per_sphere) - 1)
    rows: list[tuple[str, int, float, list[dict[str, float]], dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        heavy: dict[str, Any] = {"sphere_subdivisions": SPHERE_SUBDIVISIONS, "extra_spheres": extra}
        scenes: list[tuple[str, dict[str, Any]]] = [("anchor: 20k phantom", {}), ("1M-triangle scene", heavy)]
        if args.many_structures:
            from engines.nnunet.totalsegmentator import total_structures

            scenes.append(("121 structures", {"extra_names": [s.name for s in total_structures()]}))
        for label, kwargs in scenes:
            case = Path(tmp) / label.split(":")[0].replace(" ", "_")
            phantom = write_case(case, **kwargs)
            kiosk = start_kiosk(Path(tmp) / f"kiosk_{len(rows)}", case)
            try:
                warm, cold = measure(browser, kiosk.base, args.runs)
            finally:
                kiosk.stop()
            glb_mb = (case / "scene.glb").stat().st_size / 1e6
            rows.append((label, phantom.triangles, glb_mb, warm, cold))
        version = browser.version
        browser.close()

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    anchor = med(rows[0][3], "total")
    print(f"tap-to-first-frame, Chromium {version} headless, SwiftShader WebGL2 (CPU); median of {args.runs} warm runs")
    print(
        f"{'scene':<22}{'triangles':>11}{'GLB MB':>8}{'total ms':>10}{'page ms':>9}{'GLB ms':>8}"
        f"{'render ms':>10}{'cold ms':>9}{'x anchor':>10}"
    )
    for label, tris, mb, warm, cold in rows:
        total = med(warm, "total")
        print(
            f"{label:<22}{tris:>11,}{mb:>8.1f}{total:>10.0f}{med(warm, 'page'):>9.0f}{med(warm, 'glb'):>8.0f}"
            f"{med(warm, 'render'):>10.0f}{cold['total']:>9.0f}{total / anchor:>10.2f}"
        )
    print("page = tap to viewer script start (navigation, HTML, modules); GLB = fetch + parse; render = first frame")
    print("target (REQ-PERF-400): <= 1500 ms for ~1 M triangles on the kiosk (GPU); this machine renders on the CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
