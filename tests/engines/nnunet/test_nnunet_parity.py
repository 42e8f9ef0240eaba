"""Parity with nnU-Net: nnUNetPredictor and the imported pack on real CT and MR give the same labels.

Random-weight models (see ``helpers.nnunet_models``) on crops of the real images in ``../shared/data``; the
bar is per-class Dice >= 0.99 and >= 99.5 % identical voxels. The remaining differences (a handful of voxels,
if any) are near-ties between two classes: onnxruntime's and PyTorch's convolutions differ in the last float32
bits, which the float16 accumulation nnU-Net uses can turn into a different rounding at a tie.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.nnunet_models import PARITY_CASES, ParityCase, run_parity_case


def _param(case: ParityCase) -> object:
    marks = [pytest.mark.slow] if case.slow else []
    return pytest.param(case, id=case.spec.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in PARITY_CASES])
def test_parity_with_nnunet_predictor(case: ParityCase, shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("nnunetv2")
    pytest.importorskip("dynamic_network_architectures")
    if not (shared_data / case.image).is_file():
        pytest.skip(f"real test file {case.image} is absent")
    result = run_parity_case(case, shared_data, tmp_path)
    assert result.parity.dice_min >= 0.99, result
    assert result.parity.identical >= 0.995, result
