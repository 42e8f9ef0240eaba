"""Where the UI's bundled files are: templates, static assets, the vendored front-end and the message catalogues.

The folders are the ``ui`` package's own data, found through :func:`importlib.resources.files`, so an installed
wheel serves its own copies. Flask serves static files and templates from real folders, which a normal
(unzipped) install provides; ``files()`` then is a :class:`pathlib.Path`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: The ``ui`` package folder.
UI_DIR = Path(str(files("ui")))
#: Flask's static folder (``/static/...``).
STATIC_DIR = UI_DIR / "static"
#: Flask's template folder.
TEMPLATE_DIR = UI_DIR / "templates"
#: The vendored front-end packages, built by ``tools/build_ui_vendor.sh`` (not in git).
VENDOR_DIR = STATIC_DIR / "vendor"
#: What ``tools/build_ui_vendor.sh`` vendored: package names, versions, file hashes.
VENDOR_MANIFEST = VENDOR_DIR / "manifest.json"
#: The message catalogues ``en.json`` and ``zh-CN.json``.
CATALOGUE_DIR = UI_DIR / "i18n"
