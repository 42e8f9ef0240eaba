#!/bin/sh
# GPU settings for the appliance: persistence mode and optional fixed application clocks.
# Usage: gpu-setup.sh [CONFIG]   (default /etc/appliance/gpu.conf, shell "KEY=value" lines)
#   PERSISTENCE=1            nvidia-smi -pm 1 (keeps the driver loaded: no multi-second first-CUDA-call delay)
#   APP_CLOCKS=MEM,GRAPHICS  nvidia-smi -ac MEM,GRAPHICS (MHz; empty = driver default boost behaviour)
#   GPU_INDEX=0
# Never blocks boot: without nvidia-smi or a GPU it logs and exits 0 (the CPU path remains available).
set -u
CONFIG="${1:-/etc/appliance/gpu.conf}"
PERSISTENCE=1
APP_CLOCKS=""
GPU_INDEX=0
if [ -r "$CONFIG" ]; then
    # shellcheck disable=SC1090
    . "$CONFIG"
fi
SMI="${NVIDIA_SMI:-nvidia-smi}"
if ! command -v "$SMI" >/dev/null 2>&1; then
    echo "gpu-setup: $SMI not found; no NVIDIA driver on this box, GPU settings skipped" >&2
    exit 0
fi
status=0
if [ "$PERSISTENCE" = "1" ]; then
    "$SMI" -i "$GPU_INDEX" -pm 1 || { echo "gpu-setup: could not enable persistence mode" >&2; status=1; }
fi
if [ -n "$APP_CLOCKS" ]; then
    case "$APP_CLOCKS" in
        *[!0-9,]*|,*|*,|*,*,*) echo "gpu-setup: APP_CLOCKS must be MEM,GRAPHICS in MHz, got '$APP_CLOCKS'" >&2; exit 2 ;;
    esac
    "$SMI" -i "$GPU_INDEX" -ac "$APP_CLOCKS" || { echo "gpu-setup: could not set application clocks" >&2; status=1; }
fi
if [ "$status" -ne 0 ]; then
    echo "gpu-setup: some GPU settings failed; the service still starts (see nvidia-smi -q)" >&2
fi
exit 0
