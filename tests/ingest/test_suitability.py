"""Acquisition suitability on real series: coarse slices, lossy compression, sharp kernel, contrast phase (tags and
images), MR weighting, and the refusal of a T1-only network on another weighting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest
from helpers.data import SHARED_DATA, require

from appliance.core import Finding
from appliance.ingest import scan
from appliance.ingest.suitability import SuitabilityLimits, series_findings, weighting_refusal

SAMPLE_CT = "ct/totalsegmentator/example_ct_dicom"
PYDICOM = "dicom-edge/pydicom-data/pydicom_bundled_test_files"
DECUBITUS_T1 = "dicom-edge/dcm_qa_decubitus/In/HFS/3_t1_fl2d_sag"


def _findings(path: Path, limits: SuitabilityLimits | None = None, images: bool = True) -> dict[str, Finding]:
    (series,) = [s for s in scan(path).series if s.kind in ("image", "mosaic")]
    found = series_findings(series, limits, images)
    return {f.code: f for f in found}


def _rewritten(src: Path, out: Path, n: int | None = None, **tags: Any) -> Path:
    """Real slices with some acquisition tags changed (what another scanner or protocol would write)."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in src.iterdir() if p.is_file())
    for i, path in enumerate(files[len(files) // 2 - (n or len(files)) // 2:][: n or None]):
        ds = pydicom.dcmread(path)
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(out / f"im{i:03d}.dcm")
    return out


@pytest.mark.req("REQ-ACQ-801")
def test_real_ct_2mm_apart_3mm_thick_is_too_coarse_by_default_and_not_with_looser_limits() -> None:
    path = require(SHARED_DATA / SAMPLE_CT)
    found = _findings(path, images=False)
    coarse = found["slices_too_coarse"]
    assert coarse.severity.value == "warning" and coarse.requirement == "REQ-ACQ-801"
    assert coarse.details["spacing_mm"] == pytest.approx(2.0, abs=0.01) and coarse.details["thickness_mm"] == 3.0
    assert "2 mm apart" in coarse.message and "3 mm thick" in coarse.message
    assert "slices_too_coarse" not in _findings(path, SuitabilityLimits(3.5, 3.5), images=False)
    assert "slices_too_coarse" in _findings(path, SuitabilityLimits(3.5, 2.5), images=False)  # thickness alone
    assert "lossy_compression" not in found and "sharp_kernel" not in found  # JPEG 2000 lossless, kernel Br38f


@pytest.mark.req("REQ-ACQ-802")
def test_lossy_jpeg2000_is_flagged_with_its_ratio_and_lossless_is_not() -> None:
    lossy = _findings(require(SHARED_DATA / PYDICOM / "693_J2KI.dcm"), images=False)["lossy_compression"]
    assert lossy.requirement == "REQ-ACQ-802" and lossy.details["transfer_syntax"] == "1.2.840.10008.1.2.4.91"
    assert lossy.details["ratio"] and lossy.details["ratio"] > 1 and ":1" in lossy.message
    lossless = _findings(require(SHARED_DATA / "dicom-edge/pydicom-data/pydicom-data_wheel/693_J2KR.dcm"), images=False)
    assert "lossy_compression" not in lossless


@pytest.mark.req("REQ-ACQ-803")
@pytest.mark.parametrize(("kernel", "sharp"), [("B70f", True), ("Br64d", True), ("BONE", True), ("LUNG", True),
                                               ("Br38f", False), ("STANDARD", False), ("B30f", False)])  # fmt: skip
def test_sharp_reconstruction_kernels_are_flagged(kernel: str, sharp: bool, tmp_path: Path) -> None:
    folder = _rewritten(require(SHARED_DATA / SAMPLE_CT), tmp_path / "k", n=3, ConvolutionKernel=kernel)
    found = _findings(folder, images=False)
    assert ("sharp_kernel" in found) == sharp
    if sharp:
        assert found["sharp_kernel"].details["kernel"] == kernel and found["sharp_kernel"].requirement == "REQ-ACQ-803"


@pytest.mark.req("REQ-ACQ-804")
def test_contrast_phase_of_the_real_portal_venous_ct_from_tags_and_from_images() -> None:
    phase = _findings(require(SHARED_DATA / SAMPLE_CT))["contrast_phase"]
    # Two independent readings agree: the tags (agent "APPLIED", images 96 s after the bolus start) and the
    # images (aorta about 154 HU, enhanced portal and hepatic veins: checked by eye on the middle slice).
    assert phase.details["from_tags"] == "portal-venous" and "96 s after the bolus" in phase.details["basis"]
    assert phase.details["from_images"] == "portal-venous" and 150 <= phase.details["blood_pool_hu"] < 250
    assert phase.requirement == "REQ-ACQ-804" and "portal-venous" in phase.message


@pytest.mark.req("REQ-ACQ-804")
@pytest.mark.parametrize("head", ["dicom-edge/dcm_qa_ct/In/GE", "dicom-edge/dcm_qa_ct/In/Philips/S21610/S2010"])
def test_unenhanced_head_cts_show_no_contrast_in_the_images(head: str) -> None:
    series = [s for s in scan(require(SHARED_DATA / head)).series if s.kind == "image"]
    phase = {f.code: f for f in series_findings(max(series, key=lambda s: s.series.n_instances))}["contrast_phase"]
    assert phase.details["from_images"] == "none" and phase.details["phase"] == "none"


@pytest.mark.req("REQ-ACQ-804")
@pytest.mark.parametrize(("delay", "phase"), [("000025", "arterial"), ("000110", "portal-venous"),
                                              ("000500", "delayed")])  # fmt: skip
def test_contrast_phase_from_the_bolus_and_acquisition_times(delay: str, phase: str, tmp_path: Path) -> None:
    seconds = int(delay[:2]) * 3600 + int(delay[2:4]) * 60 + int(delay[4:])
    acquired = 10 * 3600 + seconds
    folder = _rewritten(require(SHARED_DATA / SAMPLE_CT), tmp_path / "c", n=3, ContrastBolusAgent="Iopromide",
                        ContrastBolusStartTime="100000",
                        AcquisitionTime=f"{acquired // 3600:02d}{acquired % 3600 // 60:02d}{acquired % 60:02d}")
    found = _findings(folder, images=False)["contrast_phase"]
    assert found.details["from_tags"] == phase == found.details["phase"] and "Iopromide" in found.message


@pytest.mark.req("REQ-ACQ-804")
def test_tags_saying_unenhanced_on_enhanced_images_is_a_warning(tmp_path: Path) -> None:
    folder = _rewritten(require(SHARED_DATA / SAMPLE_CT), tmp_path / "m", n=5, SeriesDescription="Abdomen native",
                        ContrastBolusAgent="")
    found = _findings(folder)
    assert found["contrast_phase"].details["from_tags"] == "none"
    mismatch = found["contrast_phase_mismatch"]
    assert mismatch.severity.value == "warning" and mismatch.details["from_images"] == "portal-venous"


@pytest.mark.req("REQ-ACQ-805")
def test_mr_weighting_of_real_series() -> None:
    t1 = _findings(require(SHARED_DATA / DECUBITUS_T1))["mr_weighting"]
    assert t1.details["weighting"] == "T1" and "TR 300 ms" in t1.message and t1.requirement == "REQ-ACQ-805"
    epi = _findings(require(SHARED_DATA / "dicom-edge/dcm_qa_ts/In/1.dcm"))["mr_weighting"]
    assert epi.details["weighting"] == "T2*"  # gradient-echo EPI, TR 3000 ms, TE 30 ms


@pytest.mark.req("REQ-ACQ-805")
@pytest.mark.parametrize(("tags", "weighting"), [
    ({"RepetitionTime": 9000, "EchoTime": 120, "InversionTime": 2500, "ScanningSequence": "SE\\IR"}, "FLAIR"),
    ({"RepetitionTime": 4000, "EchoTime": 100, "ScanningSequence": "SE"}, "T2"),
    ({"RepetitionTime": 3000, "EchoTime": 15, "ScanningSequence": "SE"}, "PD"),
    ({"RepetitionTime": 2300, "EchoTime": 3, "InversionTime": 900, "ScanningSequence": "GR\\IR"}, "T1"),
])  # fmt: skip
def test_mr_weighting_from_the_sequence_parameters(tags: dict[str, Any], weighting: str, tmp_path: Path) -> None:
    folder = _rewritten(require(SHARED_DATA / DECUBITUS_T1), tmp_path / "w", n=3, **tags)
    assert _findings(folder)["mr_weighting"].details["weighting"] == weighting


@pytest.mark.req("REQ-ACQ-805")
def test_a_t1_only_network_refuses_other_weightings() -> None:
    def study(weighting: str | None) -> list[dict[str, Any]]:
        return [{"code": "mr_weighting", "details": {"weighting": weighting, "basis": "TR 9000 ms"}}]

    why = weighting_refusal("mr-brain", ("T1",), study("FLAIR"))
    assert why is not None and "'mr-brain'" in why and "FLAIR" in why and "T1" in why
    assert weighting_refusal("mr-brain", ("T1",), study("T1")) is None
    assert weighting_refusal("mr-brain", ("T1",), study(None)) is None  # not recognised: not refused here
    assert weighting_refusal("mr-brain", ("T1",), []) is None
