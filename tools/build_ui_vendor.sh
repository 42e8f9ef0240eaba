#!/usr/bin/env bash
# Build ui/static/vendor/ from the npm lock (no CDN at run time):
#   1. `npm ci` in ui/ (exact versions and integrity hashes from ui/package-lock.json; no install scripts run),
#   2. copy only the files the kiosk pages load into ui/static/vendor/<package>/...,
#   3. subset the system CJK font (Debian fonts-noto-cjk, Simplified Chinese face) into ui/static/vendor/fonts/,
#   4. write ui/static/vendor/manifest.json: name@version and sha256 of every file served.
# Usage: bash tools/build_ui_vendor.sh        (run by tools/setup.sh; needs node/npm and .venv with fontTools)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
UI="$ROOT/ui"
VENDOR="$UI/static/vendor"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
CJK_FONT="${APPLIANCE_CJK_FONT:-/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc}"

command -v npm >/dev/null || { echo "build_ui_vendor: npm is missing; install Debian 'npm' (nodejs) first" >&2; exit 1; }
(cd "$UI" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

rm -rf "$VENDOR"
mkdir -p "$VENDOR"
# package|path inside the package: the only files the pages import.
FILES=(
  "three|build/three.module.js"
  "three|build/three.core.js"
  "three|examples/jsm/loaders/GLTFLoader.js"
  "three|examples/jsm/utils/BufferGeometryUtils.js"
  "three|examples/jsm/utils/SkeletonUtils.js"
  "three|examples/jsm/controls/OrbitControls.js"
  "three|LICENSE"
  "@niivue/niivue|dist/niivue.umd.js"
  "@niivue/niivue|package.json"
)
for entry in "${FILES[@]}"; do
  pkg=${entry%%|*}; rel=${entry#*|}
  src="$UI/node_modules/$pkg/$rel"
  [ -f "$src" ] || { echo "build_ui_vendor: $src missing after npm ci (lock and file list disagree)" >&2; exit 1; }
  mkdir -p "$VENDOR/$pkg/$(dirname "$rel")"
  cp "$src" "$VENDOR/$pkg/$rel"
done

# CJK font: the Simplified Chinese face (index 2 of the Noto CJK collection), Latin + CJK punctuation + the
# CJK Unified Ideographs block, so patient-facing text in any Chinese name renders without a network font.
mkdir -p "$VENDOR/fonts"
if [ -f "$CJK_FONT" ] && "$PY" -c "import fontTools" 2>/dev/null; then
  "$PY" -m fontTools.subset "$CJK_FONT" --font-number=2 \
    --unicodes="U+0020-007E,U+00A0-00FF,U+2000-206F,U+2190-21FF,U+2200-22FF,U+25A0-25FF,U+3000-303F,U+4E00-9FFF,U+FF00-FFEF" \
    --layout-features='*' --no-hinting --output-file="$VENDOR/fonts/NotoSansCJKsc-Regular-subset.otf"
else
  echo "build_ui_vendor: CJK font $CJK_FONT or fontTools missing; install Debian fonts-noto-cjk and fonttools" >&2
  exit 1
fi

"$PY" - "$UI" <<'PYEOF'
"""Write the vendor manifest from the lock file and the copied files."""
import hashlib
import json
import sys
from pathlib import Path

ui = Path(sys.argv[1])
vendor = ui / "static" / "vendor"
lock = json.loads((ui / "package-lock.json").read_text(encoding="utf-8"))
files = []
for path in sorted(p for p in vendor.rglob("*") if p.is_file() and p.name != "manifest.json"):
    rel = path.relative_to(vendor).as_posix()
    if rel.startswith("fonts/"):
        name, version, source = "fonts-noto-cjk (Debian, subset)", "system", "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc#2"
    else:
        parts = rel.split("/")
        name = "/".join(parts[:2]) if parts[0].startswith("@") else parts[0]
        version = lock["packages"][f"node_modules/{name}"]["version"]
        source = f"node_modules/{name}/" + rel[len(name) + 1:]
    files.append({"path": rel, "package": name, "version": version, "source": source,
                  "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
packages = sorted({f"{f['package']}@{f['version']}" for f in files})
(vendor / "manifest.json").write_text(json.dumps({"packages": packages, "files": files}, indent=1) + "\n", encoding="utf-8")
PYEOF
echo "build_ui_vendor: $(ls -R "$VENDOR" | grep -c .) entries in $VENDOR"
