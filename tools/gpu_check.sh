#!/usr/bin/env bash
# The one script run on a lent GPU machine (under 5 minutes): installs wheels carried in .whl/ (if any), runs the
# gpu-marked tests and every bench/*.py that accepts --gpu, and writes everything under $OUT (default
# build/gpu_check): nvidia-smi.txt, pytest-gpu.txt + junit-gpu.xml, bench-<name>.txt + bench-<name>.json,
# summary.txt. Exit status: 0 when the gpu tests passed and every bench ran, else the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-build/gpu_check}"
mkdir -p "$OUT"
PY=".venv/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the lent machine has no .venv: import the tree directly
export PYTHONUNBUFFERED=1
summary="$OUT/summary.txt"
: > "$summary"
status=0
note() { echo "$*" | tee -a "$summary"; }

note "python: $PY ($("$PY" --version 2>&1))"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl > "$OUT/pip.log" 2>&1
  note "carried wheels installed: rc=$?"
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || note "nvidia-smi failed"
"$PY" - >> "$summary" 2>&1 <<'PYEOF'
try:
    import cupy
    print("cupy", cupy.__version__, "devices", cupy.cuda.runtime.getDeviceCount())
except Exception as exc:
    print("cupy not usable:", exc)
PYEOF

timeout 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$OUT/junit-gpu.xml" tests > "$OUT/pytest-gpu.txt" 2>&1
rc=$?
note "pytest -m gpu: rc=$rc ($(tail -n 1 "$OUT/pytest-gpu.txt"))"
[ $rc -eq 0 ] || status=$rc

for bench in bench/*.py; do
  grep -q -- '"--gpu"' "$bench" || continue  # only benches that accept --gpu
  name="$(basename "$bench" .py)"
  timeout 100 "$PY" "$bench" --gpu --json "$OUT/bench-$name.json" > "$OUT/bench-$name.txt" 2>&1
  rc=$?
  note "bench $name --gpu: rc=$rc"
  [ $rc -eq 0 ] || { [ $status -ne 0 ] || status=$rc; }
done
# Benches with their own GPU options (CPU anchors measured in the same run).
timeout 90 "$PY" bench/segment.py --skip-cpu-large --repeats 3 --json "$OUT/bench-segment.json" \
  > "$OUT/bench-segment.txt" 2>&1
note "bench segment: rc=$?"
timeout 90 "$PY" bench/networks.py --size 256 --cpu-size 64 --repeats 3 --packs brainchop-gw-5 brainchop-mindgrab \
  --json "$OUT/bench-networks.json" > "$OUT/bench-networks.txt" 2>&1
note "bench networks: rc=$?"
exit $status
