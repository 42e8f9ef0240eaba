"""HTTP security headers of the kiosk: Content-Security-Policy and friends.

The policy allows only the appliance itself: scripts from ``'self'`` plus the one inline import map (by its
SHA-256), WebAssembly compilation for NiiVue's decoders (``'wasm-unsafe-eval'``), ``blob:``/``data:`` images and
fetches (GLB textures, NiiVue's in-memory volumes), fonts from ``'self'`` (the vendored CJK font). No CDN, no
inline script or style, no framing.
"""

from __future__ import annotations

import base64
import hashlib
import json

from flask import Response, request

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
