"""Ingest on real scanner data from ../shared/data: syntaxes, tilt, localizers, decubitus, enhanced, pydicom-data."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers.data import require
from scipy import ndimage

from appliance.core import Severity
from appliance.ingest import SeriesRefused, load_input, load_volume, scan, select_series
from appliance.ingest.errors import PixelDecodeError
from appliance.ingest.pixels import decode_file, read_stored
from appliance.io.nifti import save_volume

EDGE = "dicom-edge"


def _canonical(path: Path) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.load(str(path)))


@pytest.mark.req("REQ-ACQ-003", "REQ-ACQ-015")
def test_nine_transfer_syntaxes_identical_and_equal_dcm2niix(shared_data: Path, tmp_path: Path) -> None:
    folder = require(shared_data / EDGE / "dcm_qa_ts")
    first: np.ndarray | None = None
    syntaxes = set()
    for k in range(1, 10):
        vol, _found, series = load_input(folder / "In" / f"{k}.dcm")
        assert series is not None
        syntaxes.add(series.instances[0].tags["transfer_syntax"])
        assert vol.shape == (64, 64, 35)  # 384x384 mosaic of 35 tiles
        out = save_volume(vol, tmp_path / f"{k}.nii.gz")
        ours, ref = _canonical(out), _canonical(folder / "Ref" / f"{k}.nii")
        a, b = np.asanyarray(ours.dataobj), np.asanyarray(ref.dataobj)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)
        if first is None:
            first = vol.array
        np.testing.assert_array_equal(vol.array, first)
    assert len(syntaxes) >= 7  # explicit/implicit LE, BE, RLE, JPEG lossless (2), JPEG-LS (2), J2K


@pytest.mark.req("REQ-ACQ-012", "REQ-ACQ-009", "REQ-ACQ-010")
def test_ge_tilt_and_uneven_spacing_refused(shared_data: Path) -> None:
    folder = require(shared_data / EDGE / "dcm_qa_ct" / "In" / "GE")
    result = scan(folder)
    assert len(result.series) == 1  # GE's ImageType 'ADD' on half the slices does not split the series
    s = result.series[0]
    codes = {f.code: f for f in s.findings}
    assert codes["gantry_tilt"].details["angle_deg"] == pytest.approx(18.5, abs=0.05)
    assert codes["gantry_tilt"].details["tag_deg"] == pytest.approx(18.5)
    assert "variable_spacing" in codes and "slice_gap" in codes
    assert all(codes[c].severity == Severity.REFUSAL for c in ("gantry_tilt", "variable_spacing", "slice_gap"))
    assert not s.reconstructable
    with pytest.raises(SeriesRefused) as exc:
        load_volume(s)
    assert exc.value.exit_code == 2
    assert {f.code for f in exc.value.refusal_findings} >= {"gantry_tilt", "slice_gap"}


@pytest.mark.req("REQ-ACQ-012", "REQ-ACQ-013")
def test_ge_override_deshears_onto_orthogonal_grid(shared_data: Path) -> None:
    folder = require(shared_data / EDGE / "dcm_qa_ct" / "In" / "GE")
    s = scan(folder).series[0]
    vol, found = load_volume(s, override=True)
    direction = vol.direction
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-6)  # orthogonal grid
    assert vol.metadata["override"]["codes"] == ["gantry_tilt", "slice_gap", "variable_spacing"]
    tilt = next(f for f in found if f.code == "gantry_tilt")
    assert tilt.severity == Severity.WARNING and tilt.details["desheared"] is True
    assert any(f.code == "override_applied" for f in found)
    assert not any(f.blocks_reconstruction for f in found)
    # Every source slice must land where its own positions say: sample the de-sheared volume at the patient
    # coordinates of the source pixels (a wrong shear sign moves the head by ~100 pixels).
    geom = s.geometry
    assert geom is not None
    stored = read_stored(list(s.series.instances[: geom.n_slices]))
    jj, ii = np.mgrid[64:448:8, 64:448:8]
    for k in (0, geom.n_slices // 2, geom.n_slices - 1):
        src = stored[k][jj, ii].astype(float) + float(s.series.instances[k].tags["intercept"])
        lps = (geom.origins[k] + np.outer(ii.ravel() * geom.pixel_spacing[0], geom.row_dir)
               + np.outer(jj.ravel() * geom.pixel_spacing[1], geom.col_dir))
        ijk = vol.patient_to_voxel(lps)
        sampled = ndimage.map_coordinates(vol.array.astype(float), ijk.T, order=1, mode="nearest")
        r = np.corrcoef(src.ravel(), sampled)[0, 1]
        assert r > 0.9, f"slice {k}: de-sheared volume disagrees with the source positions (r={r:.3f})"


@pytest.mark.req("REQ-ACQ-006", "REQ-ACQ-007", "REQ-ACQ-012", "REQ-ACQ-016")
def test_philips_localizer_and_captures_excluded_tilt_sign(shared_data: Path) -> None:
    folder = require(shared_data / EDGE / "dcm_qa_ct" / "In" / "Philips" / "S21610")
    result = scan(folder)
    by_kind: dict[str, list[str]] = {}
    for s in result.series:
        for f in s.findings:
            by_kind.setdefault(f.code, []).append(s.series.description)
    assert len(by_kind["localizer_excluded"]) == 1
    assert len(by_kind["secondary_capture_excluded"]) >= 1
    assert all(not s.reconstructable for s in result.series if s.kind in ("localizer", "secondary"))
    main = next(s for s in result.series if s.kind == "image")
    assert main.series.description == "STEREOTAXIS" and main.shape_xyz[2] == 54
    tilt = next(f for f in main.findings if f.code == "gantry_tilt")
    # Same physical tilt as the GE head (same orientation cosines): +18.5 in our convention, while Philips'
    # GantryDetectorTilt tag says -18.5 (opposite vendor convention).
    assert tilt.details["angle_deg"] == pytest.approx(18.5, abs=0.05)
    assert tilt.details["tag_deg"] == pytest.approx(-18.5)
    with pytest.raises(SeriesRefused):
        select_series(result)
    assert select_series(result, override=True) is main


@pytest.mark.req("REQ-SAFE-003", "REQ-ACQ-001")
def test_decubitus_same_patient_geometry(shared_data: Path) -> None:
    folder = require(shared_data / EDGE / "dcm_qa_decubitus" / "In")
    result = scan(folder)
    assert len(result.series) == 2
    positions = {s.series.tags["patient_position"] for s in result.series}
    assert positions == {"HFS", "HFDR"}
    vols = [load_volume(s)[0] for s in result.series]
    np.testing.assert_allclose(vols[0].affine, vols[1].affine, atol=1e-3)
    assert vols[0].shape == vols[1].shape == (256, 256, 35)


@pytest.mark.req("REQ-ACQ-004")
def test_enhanced_philips_fieldmap_split_and_matches_dcm2niix(shared_data: Path, tmp_path: Path) -> None:
    folder = require(shared_data / EDGE / "dcm_qa_enh")
    result = scan(folder / "In" / "Philips")
    assert len(result.series) == 2
    kinds = {s.series.instances[0].tags["frame_type"][-1]: s for s in result.series}
    assert set(kinds) == {"M", "FIELD_MAP"}
    for key, ref_name in (("FIELD_MAP", "Philips_WIP_B0_NS_801_e2_fieldmaphz.nii"),
                          ("M", "Philips_WIP_B0_NS_801_e1.nii")):
        vol, _found = load_volume(kinds[key])
        assert vol.shape == (64, 64, 32)
        ours = _canonical(save_volume(vol, tmp_path / f"{key}.nii.gz"))
        ref = _canonical(folder / "Ref" / ref_name)
        np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)
        a, b = ours.get_fdata(), ref.get_fdata()
        if key == "FIELD_MAP":  # Hz: DICOM rescale 0.2442 x stored - 500, as dcm2niix writes it
            np.testing.assert_allclose(a, b, atol=0.01)
        else:  # magnitude: dcm2niix uses Philips' private floating-point scale; same image up to a factor
            assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99999


@pytest.mark.req("REQ-ACQ-004", "REQ-ACQ-011")
def test_enhanced_siemens_timeseries_refused_with_named_finding(shared_data: Path) -> None:
    folder = require(shared_data / EDGE / "dcm_qa_enh" / "In" / "Siemens")
    result = scan(folder)
    assert len(result.series) == 1
    s = result.series[0]
    assert s.series.n_instances == 24  # 4 files x 6 frames, read through per-frame functional groups
    dup = next(f for f in s.findings if f.code == "duplicate_position")
    assert dup.details["count"] == 18  # 4 time points of 6 slices
    vol, _ = load_volume(s, override=True)
    assert vol.shape == (64, 64, 6)


@pytest.mark.req("REQ-SAFE-001", "REQ-SAFE-002", "REQ-ACQ-021")
def test_pydicom_data_decodes_or_names_the_problem(shared_data: Path) -> None:
    folder = require(shared_data / EDGE / "pydicom-data")
    result = scan(folder)
    by_file = {Path(f.details["file"]).name: f for f in result.findings if "file" in f.details}
    assert by_file["MR_truncated.dcm"].code == "truncated_pixel_data"
    assert by_file["emri_small_jpeg_2k_lossless_too_short.dcm"].code == "truncated_pixel_data"
    assert by_file["no_meta.dcm"].code == "decode_failed"
    assert by_file["rtstruct.dcm"].code == "non_image"
    assert by_file["liver.dcm"].code == "non_image"
    for f in result.findings:
        if f.code in ("decode_failed", "truncated_pixel_data"):
            assert Path(f.details["file"]).name in f.message
    # enhanced CT with a flipped row axis: geometry from its functional groups
    ect = next(s for s in result.series if s.series.instances[0].path.name == "eCT_Supplemental.dcm")
    vol, _ = load_volume(ect)
    assert vol.direction[0, 0] == pytest.approx(-1.0) and vol.spacing[2] == pytest.approx(10.0)


@pytest.mark.req("REQ-ACQ-003")
def test_pydicom_small_mr_in_every_syntax_identical(shared_data: Path) -> None:
    folder = require(shared_data / EDGE / "pydicom-data" / "pydicom_bundled_test_files")
    arrays = {}
    for name in ("MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
                 "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        series = scan(folder / name).series[0].series
        arrays[name] = read_stored(list(series.instances))[0]
    ref = arrays["MR_small.dcm"]
    for name, arr in arrays.items():
        np.testing.assert_array_equal(arr, ref, err_msg=name)
    deflated = decode_file(folder / "image_dfl.dcm", "1.2.840.10008.1.2.1.99")
    assert deflated.shape == (1, 512, 512)


@pytest.mark.req("REQ-SAFE-001")
def test_12bit_jpeg_extended_decodes_and_lossy_jpeg_is_named(shared_data: Path) -> None:
    folder = require(shared_data / EDGE / "pydicom-data" / "pydicom_bundled_test_files")
    ext = decode_file(folder / "JPGExtended.dcm", "1.2.840.10008.1.2.4.51")
    assert ext.shape == (1, 1024, 256) and int(ext.max()) < 4096
    try:
        lossy = decode_file(folder / "JPEG-lossy.dcm", "1.2.840.10008.1.2.4.51")
    except PixelDecodeError as exc:  # without a decoder for this JPEG flavour: a named, readable refusal
        assert exc.path.name == "JPEG-lossy.dcm" and "decoded" in exc.why
    else:
        assert lossy.shape == (1, 1024, 256)


@pytest.mark.req("REQ-ACQ-003")
def test_file_without_meta_is_read(shared_data: Path, tmp_path: Path) -> None:
    src = require(shared_data / EDGE / "pydicom-data" / "pydicom_bundled_test_files" / "CT_small.dcm")
    import pydicom

    ds = pydicom.dcmread(src)
    bare = tmp_path / "bare.dcm"
    del ds.file_meta
    ds.preamble = None
    ds.save_as(bare, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    result = scan(bare)
    assert result.findings == []
    inst = result.series[0].series.instances[0]
    assert inst.tags["no_file_meta"] is True
    np.testing.assert_array_equal(read_stored([inst])[0], pydicom.dcmread(src).pixel_array)


@pytest.mark.req("REQ-ACQ-022")
def test_fast_header_reader_agrees_with_pydicom(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import appliance.ingest.headers as headers

    folders = [shared_data / EDGE, shared_data / "ct" / "totalsegmentator" / "example_ct_dicom"]
    files = [p for f in folders if f.is_dir() for p in sorted(f.rglob("*")) if p.is_file()]
    if not files:
        pytest.skip("no DICOM test files")

    def summary(path: Path) -> object:
        header, found = headers.read_header(path)
        codes = [f.code for f in found]
        if header is None:
            return codes
        return (header.series_uid, header.study_uid, header.modality, header.description, header.kind,
                repr(sorted(header.series_tags.items())), codes,
                [(i.sop_instance_uid, i.frame, i.position, i.orientation, repr(sorted(i.tags.items())))
                 for i in header.instances])

    fast_count = sum(headers.read_fast(p) is not None for p in files)
    fast = [summary(p) for p in files]
    monkeypatch.setattr(headers, "read_fast", lambda path: None)
    slow = [summary(p) for p in files]
    assert fast_count > 100  # the fast path is actually taken for most files
    for path, a, b in zip(files, fast, slow, strict=True):
        assert a == b, path.name


@pytest.mark.req("REQ-ACQ-016", "REQ-ACQ-006")
def test_study_verdict_ignores_excluded_series_but_reports_refusals(shared_data: Path, tmp_path: Path) -> None:
    from appliance.ingest import study_verdict

    philips = require(shared_data / EDGE / "dcm_qa_ct" / "In" / "Philips" / "S21610")
    chosen, found = study_verdict(scan(philips))
    assert chosen is None and {f.code for f in found} == {"gantry_tilt"}  # the tilt blocks, not the localizer
    chosen, found = study_verdict(scan(philips), override=True)
    assert chosen is not None and chosen.series.description == "STEREOTAXIS"
    # a good series beside a localizer: not blocked
    stick = tmp_path / "stick"
    stick.mkdir()
    for f in (philips / "S1000").iterdir():
        (stick / f"loc_{f.name}").symlink_to(f)
    for f in require(shared_data / "dicom-edge" / "dcm_qa_decubitus" / "In" / "HFS" / "3_t1_fl2d_sag").iterdir():
        (stick / f.name).symlink_to(f)
    result = scan(stick)
    assert any(f.code == "localizer_excluded" for s in result.series for f in s.findings)
    chosen, found = study_verdict(result)
    assert chosen is not None and not any(f.blocks_reconstruction for f in found)
    chosen, found = study_verdict(scan(tmp_path / "empty-does-not-exist"))
    assert chosen is None and found and all(f.blocks_reconstruction for f in found)
