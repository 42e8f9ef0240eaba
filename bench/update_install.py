"""Benchmark: a verified, crash-safe install (TUF refresh + download + extract + per-file hash check + fsync +
atomic switch) against the anchor: a plain copy of the same release tree (shutil.copytree, no verification).

Prints medians and the ratio; never passes or fails on time.
Usage: .venv/bin/python bench/update_install.py [--mb 64] [--files 64] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "update")]

from update_fleet import Fleet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    size = args.mb * 1_000_000 // args.files
    with tempfile.TemporaryDirectory(prefix="bench-update-") as tmp:
        fleet = Fleet(Path(tmp))
        fleet.create()
        versions = [f"1.{i}.0" for i in range(args.repeat + 1)]
        t = time.perf_counter()
        for v in versions:
            fleet.publish(version=v, files={f"lib/part{j:03d}.bin": os.urandom(size) for j in range(args.files)})
        publish_s = (time.perf_counter() - t) / len(versions)
        fleet.update(version=versions[0])
        installs, copies = [], []
        for v in versions[1:]:
            t = time.perf_counter()
            fleet.update(version=v)
            installs.append(time.perf_counter() - t)
            src = fleet.install_root / "app" / "current"
            dst = Path(tmp) / f"copy-{v}"
            t = time.perf_counter()
            shutil.copytree(src, dst)
            copies.append(time.perf_counter() - t)
            shutil.rmtree(dst)
        inst, copy = statistics.median(installs), statistics.median(copies)
        print(f"release: {args.files} files, {args.mb} MB; repeats: {args.repeat}")
        print(f"anchor  plain copytree (no verification, no fsync): median {copy * 1000:8.1f} ms")
        print(f"verified install (TUF + hashes + fsync + switch):    median {inst * 1000:8.1f} ms")
        print(f"ratio install / copy: {inst / copy:.2f}x   ({args.mb / inst:.0f} MB/s verified install)")
        print(f"publish (pack + sign) per release: {publish_s * 1000:.1f} ms")


if __name__ == "__main__":
    main()
