"""Every CUDA source compiles for sm_90 with nvcc, without a GPU (CI check)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kernels._cuda import cuda_sources

NVCC = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if Path("/usr/local/bin/nvcc").exists() else None)
#: Preprocessor variants each source must build in (the options kernels/_cuda.py passes to NVRTC).
VARIANTS = {"marching_cubes.cu": [[f"-DLABEL_KIND={k}"] for k in range(4)]}


def test_there_are_cuda_sources() -> None:
    names = [p.name for p in cuda_sources()]
    assert "marching_cubes.cu" in names


@pytest.mark.req("REQ-FUNC-206")
@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine (CUDA toolkit missing)")
@pytest.mark.parametrize("source", cuda_sources(), ids=lambda p: p.name)
def test_source_compiles_for_sm90(source: Path, tmp_path: Path) -> None:
    for options in VARIANTS.get(source.name, [[]]):
        out = tmp_path / f"{source.stem}.cubin"
        proc = subprocess.run(
            [str(NVCC), "-arch=sm_90", "--cubin", "-std=c++14", "-Werror", "all-warnings", *options, "-o", str(out),
             str(source)],
            capture_output=True, text=True, timeout=240, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size > 0
