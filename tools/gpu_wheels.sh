#!/usr/bin/env bash
# Download, here, the wheels the lent GPU machine lacks (it has Python 3.12, numpy, scipy, scikit-image, torch,
# cupy, onnx, onnxruntime; not pydicom, nibabel, Flask ...) into .whl/ (git-ignored), for `carry: [".whl"]`.
# Keep the total under the device tool's 64 MiB working-tree limit (VTK does not fit; its cross-checks stay on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
PKGS=(pydicom==3.0.2 nibabel==5.4.2 pynrrd==1.1.3 pyyaml==6.0.3 pylibjpeg==2.1.0 pylibjpeg-openjpeg==2.6.0
  fast-simplification==0.2.0 trimesh==5.2.0 pygltflib==1.16.5 dataclasses-json==0.6.7 marshmallow==3.26.2
  typing-inspect==0.9.0 mypy_extensions==1.1.0 deprecated==1.3.1 wrapt==2.5.2 importlib-resources==7.1.0
  nvidia-ml-py==13.615.71)
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d .whl "${PKGS[@]}"
du -sh .whl
