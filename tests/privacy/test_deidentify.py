"""PS3.15 Basic Profile de-identification: canary for every attribute of the pinned table, options, UID mapping."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from appliance.privacy.deidentify import Deidentifier, DeidOptions
from appliance.privacy.profile import PROFILE_EDITION, load_profile

SECRET = b"k" * 32
MARK = "CANARY"
MARK_UID = "1.2.777.777.777"
MARK_DATE = "19770707"
MARK_TIME = "070707"
MARK_NUM = 7777

_STRING_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC", "CS", "AE", "UR"}


def _marker(vr: str) -> Any:
    if vr in _STRING_VRS:
        return MARK
    return {
        "DA": MARK_DATE, "DT": MARK_DATE + MARK_TIME, "TM": MARK_TIME, "AS": "077Y", "IS": str(MARK_NUM * 1001),
        "DS": "7777.77", "UI": MARK_UID, "US": MARK_NUM, "SS": MARK_NUM, "UL": MARK_NUM, "SL": MARK_NUM,
        "FL": float(MARK_NUM), "FD": float(MARK_NUM), "OB": b"CANARY!!", "OW": b"CANARY!!", "UN": b"CANARY!!",
        "OB or OW": b"CANARY!!",
    }[vr]  # fmt: skip


def canary_dataset() -> tuple[Dataset, int]:
    """Every attribute of the table set to a marker (sequences hold an item with a marked Patient Name)."""
    ds = Dataset()
    n = 0
    for rule in load_profile().rules:
        tag = rule.tag
        if rule.mask != 0xFFFFFFFF:  # one member of each repeating group
            tag = {0x50000000: 0x50003000}.get(rule.tag, rule.tag)
        vr = "OB" if rule.vr == "OB or OW" else rule.vr
        if vr == "SQ":
            item = Dataset()
            item.PatientName = MARK
            item.ReferencedSOPInstanceUID = MARK_UID
            ds.add_new(tag, "SQ", Sequence([item]))
        else:
            ds.add_new(tag, vr, _marker(vr))
        n += 1
    ds.PatientName = "CANARY^MARKER"  # the patient's name is what Clean Descriptors removes from text
    ds.add_new(0x00091010, "LO", MARK)  # a private attribute
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = MARK_UID
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds, n


def surviving_markers(ds: Dataset) -> list[str]:
    """Keywords (or tags) of elements still holding a marker, found by walking every level."""
    hits: list[str] = []

    def check(d: Dataset, elem: Any) -> None:
        v = elem.value
        values = v if isinstance(v, list | tuple) or type(v).__name__ == "MultiValue" else [v]
        for x in values:
            if isinstance(x, bytes):
                bad = b"CANARY" in x
            elif isinstance(x, int | float) and not isinstance(x, bool):
                bad = x == MARK_NUM
            elif isinstance(x, Dataset) or x is None:
                bad = False
            else:
                s = str(x)
                bad = MARK in s.upper() or MARK_UID in s or MARK_DATE in s or MARK_TIME in s or "7777" in s
            if bad:
                hits.append(f"{elem.keyword or elem.tag} ({elem.VR})={x!r}")

    ds.walk(check)
    ds.file_meta.walk(check)
    return hits


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.req("REQ-PRIV-001")
def test_table_is_the_pinned_edition() -> None:
    profile = load_profile()
    assert profile.edition == PROFILE_EDITION == "2026c"
    assert len(profile.rules) == 655
    assert profile.rule_for(0x00100010).action == "Z"  # Patient's Name
    assert profile.rule_for(0x0020000D).action == "U"  # Study Instance UID
    assert profile.rule_for(0x60024000).action == "X"  # Overlay Comments, repeating group 6002


@pytest.mark.req("REQ-PRIV-001")
def test_canary_basic_profile_no_options() -> None:
    ds, n = canary_dataset()
    assert n == 655
    out = Deidentifier(SECRET, DeidOptions(False, False, False)).deidentify(ds)
    assert surviving_markers(out) == []
    raw = _bytes(out)
    for marker in (b"CANARY", MARK_UID.encode(), MARK_DATE.encode(), MARK_TIME.encode()):
        assert marker not in raw
    assert out.PatientIdentityRemoved == "YES" and "113100" in raw.decode("latin-1")
    assert surviving_markers(ds), "the input must keep its markers (the copy is de-identified, not the input)"


@pytest.mark.req("REQ-PRIV-001", "REQ-PRIV-002", "REQ-PRIV-003")
def test_canary_with_the_appliance_options() -> None:
    """Modified Dates shifts dates and keeps times of day; Clean Descriptors removes the patient's name."""
    ds, _ = canary_dataset()
    out = Deidentifier(SECRET, DeidOptions()).deidentify(ds)
    left = surviving_markers(out)
    # only times of day survive (TM, and the time part of DT whose date was shifted), as the option allows
    assert left and all(("(TM)=" in h or "(DT)=" in h) for h in left), left
    for h in left:
        if "(DT)=" in h:
            value = h.split("=", 1)[1].strip("'\"")
            assert not value.startswith(MARK_DATE) and value.endswith(MARK_TIME), value
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert out.StudyDate != MARK_DATE and len(out.StudyDate) == 8


@pytest.mark.req("REQ-PRIV-002")
def test_modified_dates_keep_intervals_per_patient() -> None:
    d = Deidentifier(SECRET)
    a, b = Dataset(), Dataset()
    for x, date in ((a, "20240110"), (b, "20240125")):
        x.PatientID, x.PatientName, x.StudyDate, x.PatientBirthDate = "P1", "DOE^JANE", date, "19600101"
    oa, ob = d.deidentify(a), d.deidentify(b)
    import datetime as dt

    def day(s: str) -> dt.date:
        return dt.datetime.strptime(s, "%Y%m%d").date()

    assert (day(ob.StudyDate) - day(oa.StudyDate)).days == 15
    assert oa.StudyDate != "20240110" and oa.PatientID == ob.PatientID != "P1"
    assert oa.PatientBirthDate in ("", None)  # birth date is removed, never shifted
    c = Dataset()
    c.PatientID, c.PatientName, c.StudyDate = "P2", "ROE^RICHARD", "20240110"
    assert d.date_shift_days("id:P1") != d.date_shift_days("id:P2")


@pytest.mark.req("REQ-PRIV-003")
def test_clean_descriptors_removes_identifiers_keeps_meaning() -> None:
    ds = Dataset()
    ds.PatientName, ds.PatientID = "DOE^JANE", "MRN12345678"
    ds.SeriesDescription = "CT abdomen Jane Doe MRN12345678 2024-01-10"
    ds.StudyDescription = "Liver resection planning"
    out = Deidentifier(SECRET).deidentify(ds)
    assert out.SeriesDescription == "CT abdomen"
    assert out.StudyDescription == "Liver resection planning"
    off = Deidentifier(SECRET, DeidOptions(clean_descriptors=False)).deidentify(ds)
    assert "SeriesDescription" not in off  # X without the option


@pytest.mark.req("REQ-PRIV-004")
def test_uids_remapped_consistently_across_ct_and_seg(shared_data: Path) -> None:
    folder = shared_data / "labelled/dcmqi/data/segmentations"
    ct_files = sorted((folder / "ct-3slice").glob("*.dcm"))
    segs = [folder / "liver.dcm"]
    if not ct_files or not segs[0].is_file():
        pytest.skip("dcmqi ct-3slice / liver.dcm absent")
    d = Deidentifier(SECRET)
    ct = {pydicom.dcmread(p).SOPInstanceUID: d.deidentify(pydicom.dcmread(p)) for p in ct_files}
    seg_in = pydicom.dcmread(segs[0])
    seg = d.deidentify(seg_in)
    refs = [
        i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence
    ]
    mapped_ct = {o.SOPInstanceUID for o in ct.values()}
    assert refs and set(refs) <= mapped_ct, "SEG must reference the de-identified CT instances"
    assert all(o.StudyInstanceUID == seg.StudyInstanceUID for o in ct.values())
    assert all(o.FrameOfReferenceUID == seg.FrameOfReferenceUID for o in ct.values())
    assert all(u.startswith("2.25.") and len(u) <= 64 for u in refs)
    assert seg.SOPInstanceUID != seg_in.SOPInstanceUID
    assert Deidentifier(b"o" * 32).remap_uid(seg_in.SOPInstanceUID) != seg.SOPInstanceUID  # box-specific
    assert Deidentifier(SECRET, DeidOptions(retain_uids=True)).deidentify(seg_in).SOPInstanceUID == (
        seg_in.SOPInstanceUID
    )
