#!/usr/bin/env bash
# Set up the appliance on a fresh Debian machine: system tools, then .venv/ with the project installed.
# Usage: bash tools/setup.sh            (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(dcm2niix dcmtk dicom3tools orthanc chromium fonts-noto-cjk xvfb
  nftables logrotate shellcheck squashfs-tools erofs-utils mmdebstrap systemd
  fdisk e2fsprogs dosfstools mtools grub-efi-amd64-bin grub-common
  qemu-system-x86 qemu-utils ovmf rauc)  # disk image build (fast layout tests, OS bundles) and the slow VM test
# node and npm build the vendored UI assets; the image usually ships them (nodejs from its own repository).
command -v npm >/dev/null || APT_PACKAGES+=(nodejs npm)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
if command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi
# The image ships a CPU build of torch 2.13.0 for Python 3.11; an explicit pin keeps pip from fetching CUDA builds.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e '.[dev]'
# nnU-Net's own predictor is the test oracle for imported networks (tests/engines/nnunet). Its architectures package
# pins timm, which drags in torchvision and a CUDA build of torch: install the oracle without those (the U-Nets it
# builds need neither), then its remaining dependencies with the CPU torch pinned.
.venv/bin/python -m pip install -q --no-deps nnunetv2==2.8.1 dynamic-network-architectures==0.4.4 \
  batchgeneratorsv2==0.3.6 acvl-utils==0.2.6
.venv/bin/python -m pip install -q "torch==2.13.0" batchgenerators==0.25.5 einops simpleitk pandas scikit-learn tqdm \
  tifffile graphviz yacs blosc2 imagecodecs matplotlib seaborn requests connected-components-3d
if [ -f ui/package-lock.json ] && [ -x tools/build_ui_vendor.sh ]; then bash tools/build_ui_vendor.sh; fi
# Build the compiled CPU meshing kernels now rather than on the first reconstruction (g++ + OpenMP, cached).
.venv/bin/python -c "from kernels import _native; from kernels.layout import LABEL_KINDS; \
print('native meshing kernels:', sum(_native.library(k) is not None for k in sorted(set(LABEL_KINDS.values()))), 'built')"
echo "set up: .venv/bin/appliance $(.venv/bin/appliance --version)"
