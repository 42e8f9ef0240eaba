"""Helpers of the UI browser tests and of bench/ui_first_frame.py: the kiosk app on 127.0.0.1 with the service
API (H6's blueprint over a scripted service), Chromium's launch flags, pages that record console errors, CSP
violations and any request that tries to leave localhost, PIN login through the keypad, screenshots.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from werkzeug.security import generate_password_hash
from werkzeug.serving import BaseWSGIServer, make_server

from ui.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-pings",
    "--disable-dev-shm-usage",
    "--ignore-gpu-blocklist",
]
PINS = {"nurse": "1111", "surgeon": "2222", "engineer": "4444", "service": "3333"}
# Cheap hashes keep the many test logins fast; ui.auth.hash_pin (600 000 iterations) is tested in test_ui_app.py.
PIN_HASHES = {role: generate_password_hash(pin, method="pbkdf2:sha256:1000") for role, pin in PINS.items()}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "ui-screenshots"
STUDY_OK = "1.2.826.0.1.3680043.8.498.1001"
STUDY_REFUSED = "1.2.826.0.1.3680043.8.498.1002"
STUDY_DONE = "1.2.826.0.1.3680043.8.498.1003"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request drowns the failure reports


@dataclass
class Kiosk:
    """A running app: its base URL, the scripted service, the data folder and the finished job's id."""

    base: str
    service: Any
    data_dir: Path
    done_job: int
    server: BaseWSGIServer
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


def start_kiosk(tmp: Path, case_dir: Path, ui: dict[str, Any] | None = None, step_s: float = 0.6) -> Kiosk:
    """The kiosk app with H6's API over a scripted service, served on a free port of 127.0.0.1."""
    from ui_service_double import ScriptedService

    data_dir = tmp / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    service = ScriptedService(data_dir, case_dir, step_s=step_s)
    service.add_study(STUDY_OK, "WANG^XIAOMING", "CT abdomen", "dicom")
    service.add_study(STUDY_REFUSED, "LI^HUA", "CT thorax", "usb", refused=True)
    service.add_study(STUDY_DONE, "ZHANG^WEI", "CT phantom", "dicom")
    done_job = service.add_done_job(STUDY_DONE)
    ui_cfg: dict[str, Any] = {
        "pins": dict(PIN_HASHES),
        "idle_lock_seconds": 600,
        "lockout_attempts": 3,
        "lockout_seconds": 60,
        "language": "en",
    }
    ui_cfg.update(ui or {})
    app = create_app({"TESTING": True, "storage": {"data_dir": str(data_dir)}, "ui": ui_cfg}, service=service)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return Kiosk(f"http://127.0.0.1:{server.server_port}", service, data_dir, done_job, server, thread)


@dataclass
class Watch:
    """What a page did that it must not: console errors, CSP violations, requests leaving localhost."""

    console_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)

    def collect(self, page: Any) -> None:
        """Pick up the CSP violations the page's listener recorded."""
        self.csp_violations.extend(page.evaluate("window.__cspViolations.splice(0)"))

    def assert_clean(self, page: Any | None = None) -> None:
        if page is not None:
            self.collect(page)
        assert not self.external_requests, f"requests left localhost: {self.external_requests}"
        assert not self.csp_violations, f"CSP violations: {self.csp_violations}"
        assert not self.console_errors, f"console errors: {self.console_errors}"


CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


def new_page(browser: Any, *, touch: bool = True, width: int = 1280, height: int = 800) -> tuple[Any, Any, Watch]:
    """A fresh context and page (kiosk-sized, touch-enabled) with the watchers installed."""
    watch = Watch()
    context = browser.new_context(viewport={"width": width, "height": height}, has_touch=touch, device_scale_factor=1)

    def route(r: Any) -> None:
        host = urlsplit(r.request.url).hostname or ""
        if r.request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            r.continue_()
        else:
            watch.external_requests.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    context.add_init_script(CSP_PROBE)
    page = context.new_page()
    page.on("console", lambda m: watch.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watch.console_errors.append(str(e)))
    return context, page, watch


def wait_js(page: Any, expression: str, timeout_s: float = 30.0, interval_s: float = 0.1) -> Any:
    """Poll ``expression`` until truthy (Playwright's wait_for_function evaluates strings with eval, which the
    page's CSP rightly forbids; page.evaluate goes through the DevTools protocol instead)."""
    from playwright.sync_api import Error as PlaywrightError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = page.evaluate(expression)
        except PlaywrightError as exc:  # the page is navigating: ask the next one
            if "context was destroyed" not in str(exc) and "navigat" not in str(exc):
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s} s for {expression}")
        time.sleep(interval_s)


def login(page: Any, base: str, role: str, pin: str | None = None) -> None:
    """Log in through the keypad like a user (role button, digits, sign in)."""
    page.goto(f"{base}/login")
    page.click(f'.role-btn[data-role="{role}"]')
    for digit in pin or PINS[role]:
        page.click(f'#keypad button[data-key="{digit}"]')
    page.click('#keypad button[data-key="ok"]')
    page.wait_for_url(lambda url: "/login" not in url)


def screenshot(page: Any, name: str, selector: str | None = None) -> bytes:
    """PNG of the page (or an element), also saved under build/ui-screenshots/ for the closing note."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = page.locator(selector) if selector else page
    png: bytes = target.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    return png
