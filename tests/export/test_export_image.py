"""image.nii.gz: compact, reproducible, atomic; found only through the manifest's files.image key."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from appliance.core import Volume
from appliance.export.errors import ExportError
from appliance.export.image import IMAGE_KEY, compact_array, output_file, write_image_volume


def _volume(array: np.ndarray, modality: str = "CT", units: str = "HU") -> Volume:
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-100.0, -120.0, 40.0]
    return Volume(array, affine, modality, units)


@pytest.mark.req("REQ-OUT-700")
def test_ct_is_stored_as_int16_hu_and_mr_keeps_its_fractions(tmp_path: Path) -> None:
    hu = np.linspace(-1024, 3071, 4 * 5 * 6).reshape(4, 5, 6).round().astype(np.float32)
    path = write_image_volume(_volume(hu), tmp_path / "image.nii.gz")
    img = nib.load(str(path))
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), hu)
    np.testing.assert_allclose(img.affine, _volume(hu).ras_affine())
    mr = np.linspace(0.0, 1.0, 4 * 5 * 6).reshape(4, 5, 6)
    img = nib.load(str(write_image_volume(_volume(mr, "MR", "arbitrary"), tmp_path / "mr.nii.gz")))
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.asanyarray(img.dataobj), mr, rtol=1e-6)
    assert compact_array(np.array([70000], np.int32)).dtype == np.float32  # out of int16's range
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.nii.gz", "mr.nii.gz"]  # no temporary file left
    with pytest.raises(ExportError, match="non-finite"):
        write_image_volume(_volume(np.full((2, 2, 2), np.nan)), tmp_path / "bad.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists()


@pytest.mark.req("REQ-OUT-700")
def test_output_file_reads_only_the_documented_key_inside_the_folder(tmp_path: Path) -> None:
    (tmp_path / "image.nii.gz").write_bytes(b"x")
    (tmp_path.parent / "outside.nii.gz").write_bytes(b"x")
    manifest = json.loads('{"files": {"image": "image.nii.gz", "volume": "other.nii.gz"}}')
    assert output_file(tmp_path, manifest, IMAGE_KEY) == (tmp_path / "image.nii.gz").resolve()
    assert output_file(tmp_path, {"files": {"volume": "image.nii.gz"}}, IMAGE_KEY) is None  # no guessing
    assert output_file(tmp_path, {"files": {"image": "../outside.nii.gz"}}, IMAGE_KEY) is None
    assert output_file(tmp_path, {"files": {"image": "missing.nii.gz"}}, IMAGE_KEY) is None
    assert output_file(tmp_path, {}, IMAGE_KEY) is None
