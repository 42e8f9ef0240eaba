"""HTTP security of the kiosk: Content-Security-Policy and friends, the cross-site check, JSON body shapes.

The policy allows only the appliance itself: scripts from ``'self'`` plus the one inline import map (by its
SHA-256), WebAssembly compilation for NiiVue's decoders (``'wasm-unsafe-eval'``), ``blob:``/``data:`` images and
fetches (GLB textures, NiiVue's in-memory volumes), fonts from ``'self'`` (the vendored CJK font). No CDN, no
inline script or style, no framing.

:func:`refuse_cross_site` (REQ-SAFE-653) refuses every state-changing request (anything but GET/HEAD/OPTIONS,
on the UI and on ``/api``) whose ``Origin`` is not this app's own origin, or, without ``Origin``, whose
``Sec-Fetch-Site`` says another site or origin sent it. Same origin means scheme, host *and port*: a page on
another port of 127.0.0.1 is "same site" for the browser (so SameSite cookies go along) but not same origin, and
is refused. Clients that are not browsers (local tools with the API token) send neither header and pass.
:func:`refuse_malformed_json` (REQ-SAFE-655) answers 400 naming the ``body`` when a JSON request's body is not
a JSON object, before any view sees it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from flask import Response, jsonify, request

#: Methods that change nothing (no cross-site check).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: Bare module specifiers of the vendored three.js, resolved by the browser through this import map.
IMPORT_MAP = json.dumps(
    {
        "imports": {
            "three": "/static/vendor/three/build/three.module.js",
            "three/addons/": "/static/vendor/three/examples/jsm/",
        }
    },
    separators=(",", ":"),
)


def _script_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy() -> str:
    """The page policy (``default-src 'self'`` plus only what the viewers need)."""
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' {_script_hash(IMPORT_MAP)} 'wasm-unsafe-eval'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "font-src 'self'",
            "connect-src 'self' blob: data:",
            "worker-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ]
    )


#: Served files of a finished job that are documents (the HTML report): no script at all, inline style allowed.
DOCUMENT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


def add_security_headers(response: Response) -> Response:
    """``after_request`` hook: CSP on every response that has none, no sniffing, no referrer, no caching of data."""
    if "Content-Security-Policy" not in response.headers:
        is_job_document = request.path.startswith("/api/jobs/") and response.mimetype == "text/html"
        response.headers["Content-Security-Policy"] = DOCUMENT_POLICY if is_job_document else content_security_policy()
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if request.path.startswith("/static/vendor/"):
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    elif not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def own_origin() -> str:
    """This app's origin as the browser names it: ``scheme://host[:port]`` of the request's URL."""
    return f"{request.scheme}://{request.host}".lower()


def refuse_cross_site() -> tuple[Response, int] | None:
    """``before_request`` hook: 403 for a state-changing request sent by another origin (REQ-SAFE-653)."""
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin.strip().lower().rstrip("/") == own_origin():
            return None
        return _refused(f"requests from {origin[:100]!r} are refused: only this kiosk's own pages may change anything")
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site in ("cross-site", "same-site"):
        return _refused(f"a {fetch_site} request is refused: only this kiosk's own pages may change anything")
    return None


def _refused(message: str) -> tuple[Response, int]:
    return jsonify({"error": "cross_site_request", "message": message}), 403


def refuse_malformed_json() -> tuple[Response, int] | None:
    """``before_request`` hook: 400 naming ``body`` when a JSON request body is not a JSON object (REQ-SAFE-655).

    An empty body is left to the view (it reads as ``{}``).
    """
    if request.method in SAFE_METHODS or not request.is_json or not request.get_data(cache=True):
        return None
    body: Any = request.get_json(silent=True)
    if isinstance(body, dict):
        return None
    kind = "not valid JSON" if body is None and request.get_data(cache=True).strip() != b"null" else type(body).__name__
    return jsonify({"error": "bad_request", "field": "body",
                    "message": f"the request body must be a JSON object (got {kind})"}), 400  # fmt: skip
