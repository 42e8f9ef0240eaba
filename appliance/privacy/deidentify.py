"""De-identification by DICOM PS3.15 Annex E: the Basic Profile with the options the appliance uses.

Options (PS3.15 E.3): Retain Longitudinal Temporal Information with Modified Dates (dates shifted by a per-patient
number of days derived from the box secret; times kept), Clean Descriptors (descriptive text kept with the patient's
identifiers removed from it), Retain UIDs off (every UID replaced by ``2.25.<HMAC of the box secret>``, so the
CT, SEG and STL of one patient keep consistent references on this box and unrelated ones elsewhere).

Not covered: burned-in text in pixel data (Clean Pixel Data Option) and recognisable features; the appliance only
exports its own derived objects (SEG, STL), whose pixel data carry labels, not image content.
"""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from appliance.config import PrivacyConfig
from appliance.privacy.profile import PROFILE_EDITION, Profile, load_profile
from appliance.privacy.secret import keyed_hash

#: Attributes the Clean Descriptors option cleans instead of removing (Table E.1-1, column "Clean Desc.").
DESCRIPTORS = frozenset({
    "StudyDescription", "SeriesDescription", "ImageComments", "ProtocolName", "AcquisitionComments",
    "DerivationDescription", "ContrastBolusAgent", "PerformedProcedureStepDescription",
    "RequestedProcedureDescription", "ScheduledProcedureStepDescription", "AdditionalPatientHistory",
    "AdmittingDiagnosesDescription", "PatientComments", "StudyComments", "VisitComments",
    "DischargeDiagnosisDescription", "FrameComments", "ReasonForStudy", "RequestedContrastAgent",
    "AcquisitionDeviceProcessingDescription", "ReasonForTheRequestedProcedure", "ImagePresentationComments",
    "LabelText", "SegmentDescription", "SegmentLabel", "CommentsOnThePerformedProcedureStep",
})  # fmt: skip

#: Dates never shifted but removed even with the Modified Dates option (patient characteristics).
NEVER_SHIFTED = frozenset({"PatientBirthDate", "PatientBirthTime", "PatientDeathDateInAlternativeCalendar"})

# CID 7050 De-identification Methods
_METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "clean": ("113105", "Clean Descriptors Option"),
    "uids": ("113110", "Retain UIDs Option"),
}

_DUMMY: dict[str, Any] = {
    "PN": "ANONYMOUS", "LO": "ANONYMIZED", "SH": "ANONYMIZED", "LT": "ANONYMIZED", "ST": "ANONYMIZED",
    "UT": "ANONYMIZED", "UC": "ANONYMIZED", "CS": "ANONYMIZED", "AE": "ANONYMOUS", "DA": "19000101",
    "TM": "000000", "DT": "19000101000000", "AS": "000Y", "IS": "0", "DS": "0", "UR": "",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0, "OB": b"", "OW": b"", "UN": b"",
}  # fmt: skip


@dataclass(frozen=True)
class DeidOptions:
    """PS3.15 options (see the module docstring)."""

    retain_longitudinal_modified_dates: bool = True
    clean_descriptors: bool = True
    retain_uids: bool = False


class Deidentifier:
    """Applies the pinned Basic Profile with ``options``, keyed by the box ``secret``."""

    def __init__(
        self, secret: bytes, options: DeidOptions | None = None, profile: Profile | None = None
    ) -> None:
        self.secret = secret
        self.options = options or DeidOptions()
        self.profile = profile or load_profile(PROFILE_EDITION)

    # ------------------------------------------------------------------------------------------- mappings
    def remap_uid(self, uid: str) -> str:
        """The replacement of ``uid``: ``2.25.`` + 128 bits of HMAC (same input, same output, on this box)."""
        if self.options.retain_uids or not uid:
            return uid
        return "2.25." + str(int(keyed_hash(self.secret, "uid", uid)[:32], 16))

    def date_shift_days(self, patient_key: str) -> int:
        """Days every date of one patient is moved back (1..3650), the same for all their objects."""
        return 1 + int(keyed_hash(self.secret, "date", patient_key)[:8], 16) % 3650

    def pseudonym(self, patient_key: str) -> str:
        """A stable dummy Patient Name/ID for one patient."""
        return "ANON" + keyed_hash(self.secret, "patient", patient_key)[:12].upper()

    # ------------------------------------------------------------------------------------------- apply
    def deidentify(self, ds: Dataset, keep: Iterable[str] = ()) -> Dataset:
        """A de-identified copy of ``ds`` (the input is not changed).

        ``keep``: keywords left untouched because the appliance generated their content and checked it holds no
        patient data (the mesh in an Encapsulated STL); never for data received from outside.
        """
        out = copy.deepcopy(ds)
        patient_key = patient_key_of(ds)
        identifiers = _identifiers(ds)
        shift = self.date_shift_days(patient_key)
        out.remove_private_tags()
        for tag in [t for t in out.keys() if t.group in (0x0000, 0x0002)]:
            del out[tag]  # command and file meta elements do not belong in a stored object's body
        self._apply(out, shift, identifiers, frozenset(keep))
        if hasattr(out, "file_meta") and out.file_meta is not None:
            meta = out.file_meta
            if "MediaStorageSOPInstanceUID" in meta:
                meta.MediaStorageSOPInstanceUID = UID(self.remap_uid(str(meta.MediaStorageSOPInstanceUID)))
        pseudo = self.pseudonym(patient_key)
        out.PatientName = "ANON^" + pseudo[4:]
        out.PatientID = pseudo
        out.PatientIdentityRemoved = "YES"
        self._method(out)
        return out

    def _method(self, ds: Dataset) -> None:
        used = ["basic"]
        if self.options.retain_longitudinal_modified_dates:
            used.append("dates")
        if self.options.clean_descriptors:
            used.append("clean")
        if self.options.retain_uids:
            used.append("uids")
        ds.LongitudinalTemporalInformationModified = (
            "MODIFIED" if self.options.retain_longitudinal_modified_dates else "REMOVED"
        )
        ds.DeidentificationMethod = [f"DICOM PS3.15 {PROFILE_EDITION} Basic Profile"] + [
            _METHOD_CODES[u][1].replace(" Option", "")[:64] for u in used[1:]
        ]
        seq = []
        for u in used:
            item = Dataset()
            item.CodeValue, item.CodeMeaning = _METHOD_CODES[u]
            item.CodingSchemeDesignator = "DCM"
            seq.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(seq)

    def _apply(
        self,
        ds: Dataset,
        shift: int,
        identifiers: list[str],
        keep: frozenset[str],
        seen: set[int] | None = None,
    ) -> None:
        seen = set() if seen is None else seen
        if id(ds) in seen:  # one item object shared by several sequences must not be mapped twice
            return
        seen.add(id(ds))
        for elem in list(ds):
            tag = int(elem.tag)
            rule = self.profile.rule_for(tag)
            if elem.VR == "SQ":
                if rule is not None and rule.action in ("X", "X/Z", "Z") and elem.keyword not in keep:
                    if rule.action in ("X", "X/Z"):  # X/Z: absent rather than an empty (invalid) sequence
                        del ds[tag]
                    else:
                        elem.value = Sequence([])
                    continue
                for item in elem.value:  # D, U*, or not listed: de-identify the items
                    self._apply(item, shift, identifiers, keep, seen)
                continue
            if rule is None or elem.keyword in keep:
                continue
            action = rule.action
            keyword = elem.keyword
            if elem.VR == "UI":
                if "U" in action or "D" in action:
                    elem.value = _map_values(elem.value, self.remap_uid)
                elif action == "X":
                    del ds[tag]
                else:
                    elem.value = ""
                continue
            if (
                self.options.retain_longitudinal_modified_dates
                and elem.VR in ("DA", "DT", "TM")
                and keyword not in NEVER_SHIFTED
            ):
                if elem.VR != "TM":
                    elem.value = _map_values(elem.value, lambda v: _shift(v, shift))
                continue
            if self.options.clean_descriptors and keyword in DESCRIPTORS and elem.VR in _DUMMY:
                elem.value = _map_values(elem.value, lambda v: clean_text(str(v), identifiers))
                continue
            if action == "X":
                del ds[tag]
            elif action in ("Z", "X/Z"):
                elem.value = b"" if elem.VR in ("OB", "OW", "UN", "OB or OW") else None
            else:  # D, Z/D, X/D, X/Z/D: a dummy value keeps type 1 attributes valid
                elem.value = _DUMMY.get(elem.VR, "")


def deidentifier_for(privacy: PrivacyConfig, secret: bytes) -> Deidentifier:
    """The box's de-identifier with the options of the ``privacy`` configuration, keyed by the box ``secret``."""
    return Deidentifier(
        secret,
        DeidOptions(
            privacy.retain_longitudinal_temporal_modified_dates, privacy.clean_descriptors, privacy.retain_uids
        ),
    )


def _map_values(value: Any, fn: Any) -> Any:
    if value is None or value == "":
        return value
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [fn(str(v)) for v in value]
    return fn(str(value))


def _shift(value: str, days: int) -> str:
    """Move a DA or DT value back by ``days`` (keeping its time part); unparsable values become empty."""
    m = re.match(r"^(\d{8})(.*)$", value.strip())
    if not m:
        return ""
    try:
        d = datetime.datetime.strptime(m.group(1), "%Y%m%d").date()
    except ValueError:
        return ""
    return (d - datetime.timedelta(days=days)).strftime("%Y%m%d") + m.group(2)


def patient_key_of(ds: Dataset) -> str:
    """What identifies one patient across the objects of the box: the Patient ID (else the name)."""
    pid = str(ds.get("PatientID", "") or "").strip()
    return "id:" + pid if pid else "name:" + str(ds.get("PatientName", "") or "").strip()


IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "AccessionNumber", "OtherPatientNames",
    "PatientMotherBirthName", "ReferringPhysicianName", "IssuerOfPatientID",
)  # fmt: skip


def _identifiers(ds: Dataset) -> list[str]:
    """The patient's identifying strings to remove from descriptors (name parts, IDs, birth date)."""
    found: set[str] = set()
    for kw in IDENTIFYING_KEYWORDS:
        value = ds.get(kw)
        if value is None:
            continue
        values: Iterable[Any] = value if isinstance(value, list | tuple) else [value]
        for v in values:
            text = str(v)
            found.add(text)
            found.update(p for p in re.split(r"[\^=\s,]+", text) if len(p) >= 2)
    return sorted((f for f in found if f.strip()), key=len, reverse=True)


def clean_text(text: str, identifiers: Iterable[str]) -> str:
    """``text`` without the identifiers (case-insensitive), dates and long numbers (possible record numbers)."""
    for ident in identifiers:
        text = re.sub(re.escape(ident), "", text, flags=re.IGNORECASE)
    text = re.sub(r"\d{4}[-./]?\d{2}[-./]?\d{2}", "", text)
    text = re.sub(r"\d{5,}", "", text)
    return re.sub(r"\s{2,}", " ", text).strip()
