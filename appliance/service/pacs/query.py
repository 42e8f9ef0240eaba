"""C-FIND at study and series level (Study Root Query/Retrieve Information Model).

The nurse searches by patient ID, accession number, the beginning of the patient's name or a study date range.
:class:`StudyCriteria` checks them before anything is sent: at least one criterion, no wildcard characters in IDs
(a stray ``*`` would list the whole PACS), valid dates in order. Answers are read as UTF-8 (we ask with
Specific Character Set ``ISO_IR 192``); at most ``pacs.max_results`` studies are read, then the association is
aborted and the answer says it was cut short.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pydicom.dataset import Dataset

from appliance.config import PacsNode
from appliance.service.pacs.association import PacsContext, describe, open_association
from appliance.service.pacs.errors import PacsQueryFailed, PacsUnreachable, QueryRefused

log = logging.getLogger(__name__)

PENDING = (0xFF00, 0xFF01)
_WILDCARDS = re.compile(r"[*?\\]")
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")

#: Study Root Query/Retrieve Information Model - FIND (PS3.4 C.6.2).
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _date(value: str, key: str) -> str:
    text = value.strip().replace("-", "")
    try:
        return dt.datetime.strptime(text, "%Y%m%d").strftime("%Y%m%d")
    except ValueError:
        raise QueryRefused(f"{key}: {value!r} is not a date (YYYY-MM-DD or YYYYMMDD)") from None


def _plain(value: str, key: str, longest: int) -> str:
    text = value.strip()
    if _WILDCARDS.search(text):
        raise QueryRefused(f"{key}: {value!r} contains a wildcard character (* ? \\); type the exact value")
    if len(text) > longest:
        raise QueryRefused(f"{key}: longer than {longest} characters")
    return text


def check_study_uid(value: object) -> str:
    """A Study Instance UID as the API receives it; :class:`QueryRefused` when it is not a UID."""
    if not isinstance(value, str) or not _UID_RE.match(value) or len(value) > 64:
        raise QueryRefused(f"'study_instance_uid' must be a DICOM UID (digits and dots), got {value!r}")
    return value


@dataclass(frozen=True)
class StudyCriteria:
    """What the nurse searches by; empty strings are unused criteria."""

    patient_id: str = ""
    accession: str = ""
    name_prefix: str = ""
    date_from: str = ""
    date_to: str = ""

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> StudyCriteria:
        """From query-string arguments ``patient_id, accession, name, date_from, date_to`` (checked)."""
        known = {"patient_id", "accession", "name", "date_from", "date_to"}
        unknown = sorted(set(args) - known)
        if unknown:
            raise QueryRefused(f"unknown search criterion {unknown[0]!r}; use {', '.join(sorted(known))}")
        date_from = _date(args["date_from"], "date_from") if args.get("date_from", "").strip() else ""
        date_to = _date(args["date_to"], "date_to") if args.get("date_to", "").strip() else ""
        if date_from and date_to and date_from > date_to:
            raise QueryRefused(f"date_from {date_from} is after date_to {date_to}")
        criteria = cls(
            patient_id=_plain(args.get("patient_id", ""), "patient_id", 64),
            accession=_plain(args.get("accession", ""), "accession", 16),
            name_prefix=_plain(args.get("name", ""), "name", 60),
            date_from=date_from,
            date_to=date_to,
        )
        if not any(asdict(criteria).values()):
            raise QueryRefused("give at least one of patient_id, accession, name (its beginning), date_from, date_to")
        return criteria

    def study_date(self) -> str:
        """The StudyDate matching key: ``from-to``, ``from-``, ``-to`` or empty."""
        if not (self.date_from or self.date_to):
            return ""
        if self.date_from == self.date_to:
            return self.date_from
        return f"{self.date_from}-{self.date_to}"

    def used(self) -> list[str]:
        """Names of the criteria given (what the audit trail records; never their values)."""
        return [k for k, v in asdict(self).items() if v]


@dataclass(frozen=True)
class StudyMatch:
    """One study the PACS found."""

    study_instance_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    study_date: str
    study_time: str
    accession_number: str
    description: str
    modalities: list[str]
    n_series: int | None
    n_instances: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class SeriesMatch:
    """One series of a study on the PACS."""

    series_instance_uid: str
    series_number: str
    modality: str
    description: str
    body_part: str
    n_instances: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _count(ds: Dataset, keyword: str) -> int | None:
    text = _text(ds, keyword)
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _modalities(ds: Dataset) -> list[str]:
    value = ds.get("ModalitiesInStudy")
    if not value:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return sorted({str(v).strip() for v in items if str(v).strip()})


def _identifier(level: str, keys: Mapping[str, str]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _run_find(context: PacsContext, node: PacsNode, identifier: Dataset, limit: int) -> tuple[list[Dataset], bool]:
    """Matches of one C-FIND (at most ``limit``) and whether the answer was cut short."""
    found: list[Dataset] = []
    truncated = False
    with open_association(context, node, [(STUDY_ROOT_FIND, None)]) as assoc:
        for status, match in assoc.send_c_find(identifier, STUDY_ROOT_FIND):
            if not status:
                raise PacsUnreachable(f"PACS {describe(node)} stopped answering the query (timeout or abort)")
            code = int(status.Status)
            if code in PENDING:
                if len(found) >= limit:
                    truncated = True
                    assoc.abort()
                    break
                if match is not None:
                    found.append(match)
            elif code != 0x0000:
                comment = str(status.get("ErrorComment", "") or "")
                raise PacsQueryFailed(f"PACS {describe(node)} refused the query: status 0x{code:04X} {comment}".strip())
    return found, truncated


def find_studies(
    context: PacsContext, node: PacsNode, criteria: StudyCriteria
) -> tuple[list[StudyMatch], bool]:
    """C-FIND at study level; returns the matches (newest first) and whether there were more than the limit."""
    identifier = _identifier("STUDY", {
        "PatientName": f"{criteria.name_prefix}*" if criteria.name_prefix else "",
        "PatientID": criteria.patient_id, "PatientBirthDate": "", "StudyInstanceUID": "",
        "StudyDate": criteria.study_date(), "StudyTime": "", "AccessionNumber": criteria.accession,
        "StudyDescription": "", "ModalitiesInStudy": "", "NumberOfStudyRelatedSeries": "",
        "NumberOfStudyRelatedInstances": "",
    })  # fmt: skip
    found, truncated = _run_find(context, node, identifier, context.settings.max_results)
    matches = [
        StudyMatch(
            study_instance_uid=_text(d, "StudyInstanceUID"), patient_name=_text(d, "PatientName"),
            patient_id=_text(d, "PatientID"), patient_birth_date=_text(d, "PatientBirthDate"),
            study_date=_text(d, "StudyDate"), study_time=_text(d, "StudyTime"),
            accession_number=_text(d, "AccessionNumber"), description=_text(d, "StudyDescription"),
            modalities=_modalities(d), n_series=_count(d, "NumberOfStudyRelatedSeries"),
            n_instances=_count(d, "NumberOfStudyRelatedInstances"),
        )
        for d in found
        if _text(d, "StudyInstanceUID")
    ]  # fmt: skip
    matches.sort(key=lambda m: (m.study_date, m.study_time), reverse=True)
    return matches, truncated


def find_series(context: PacsContext, node: PacsNode, study_uid: str) -> list[SeriesMatch]:
    """C-FIND at series level within one study, by series number."""
    identifier = _identifier("SERIES", {
        "StudyInstanceUID": check_study_uid(study_uid), "SeriesInstanceUID": "", "SeriesNumber": "",
        "Modality": "", "SeriesDescription": "", "BodyPartExamined": "", "NumberOfSeriesRelatedInstances": "",
    })  # fmt: skip
    found, _ = _run_find(context, node, identifier, 10_000)
    series = [
        SeriesMatch(
            series_instance_uid=_text(d, "SeriesInstanceUID"), series_number=_text(d, "SeriesNumber"),
            modality=_text(d, "Modality"), description=_text(d, "SeriesDescription"),
            body_part=_text(d, "BodyPartExamined"), n_instances=_count(d, "NumberOfSeriesRelatedInstances"),
        )
        for d in found
        if _text(d, "SeriesInstanceUID")
    ]  # fmt: skip
    series.sort(key=lambda s: (_count_or_max(s.series_number), s.series_instance_uid))
    return series


def _count_or_max(number: str) -> int:
    try:
        return int(number)
    except ValueError:
        return 1 << 30
