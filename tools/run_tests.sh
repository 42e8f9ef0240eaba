#!/usr/bin/env bash
# The project's test command (README and .ci/run): the default suite (not slow; gpu tests skip without CUDA),
# with a JUnit report that `appliance trace --check` reads.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
.venv/bin/python -m pytest -m "not slow" -q --junitxml=build/junit.xml "$@"
rc=$?
if [ $rc -ne 0 ]; then exit $rc; fi
if .venv/bin/appliance trace --help >/dev/null 2>&1; then
  .venv/bin/appliance trace --check --junit build/junit.xml --out build/trace || exit $?
fi
exit 0
