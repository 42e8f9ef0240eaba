"""Find on PACS without a network: the nurse's criteria, the [pacs] configuration, the retrieval's counts."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from appliance.config import load_config
from appliance.errors import ConfigurationError
from appliance.service.pacs.errors import QueryRefused
from appliance.service.pacs.query import StudyCriteria, check_study_uid
from appliance.service.pacs.suboperations import SubOperations

NODE = {"name": "PACS", "ae_title": "ORTHANC", "host": "10.0.0.9", "port": 104}


@pytest.mark.req("REQ-FUNC-850")
def test_criteria_are_checked_before_anything_is_sent() -> None:
    c = StudyCriteria.from_args({"patient_id": " PID-1 ", "date_from": "2024-03-01", "date_to": "20240331"})
    assert (c.patient_id, c.study_date(), c.used()) == ("PID-1", "20240301-20240331", ["patient_id", "date_from",
                                                                                      "date_to"])  # fmt: skip
    assert StudyCriteria.from_args({"date_from": "2024-03-01"}).study_date() == "20240301-"
    assert StudyCriteria.from_args({"date_to": "2024-03-01"}).study_date() == "-20240301"
    assert StudyCriteria.from_args({"date_from": "20240301", "date_to": "20240301"}).study_date() == "20240301"
    refused = {
        "nothing": {}, "wildcard id": {"patient_id": "PID*"}, "wildcard name": {"name": "DO?"},
        "backslash": {"accession": "A\\B"}, "bad date": {"date_from": "2024-02-30"},
        "reversed": {"date_from": "20240302", "date_to": "20240301"}, "unknown": {"birth_date": "1970"},
        "long accession": {"accession": "A" * 17}, "blank": {"patient_id": "   "},
    }  # fmt: skip
    for why, args in refused.items():
        with pytest.raises(QueryRefused) as refusal:
            StudyCriteria.from_args(args)
        assert str(refusal.value), why
    for bad in ("1.2.x", "", None, "1." * 40, "1.2.3; DROP"):
        with pytest.raises(QueryRefused):
            check_study_uid(bad)


@pytest.mark.req("REQ-SAFE-853")
def test_pacs_configuration_is_validated() -> None:
    allowed = {"allowed": [{"ae_title": "ORTHANC", "host": "10.0.0.9"}]}
    cfg = load_config(None, {"dicom": allowed, "pacs": {"nodes": [NODE]}})
    assert cfg.pacs.nodes[0].retrieve == "move" and cfg.pacs.nodes[0].tls is False
    with pytest.raises(ConfigurationError, match=r"dicom\.allowed does not list it"):
        load_config(None, {"pacs": {"nodes": [NODE]}})
    assert load_config(None, {"pacs": {"nodes": [{**NODE, "retrieve": "get"}]}}).pacs.nodes[0].retrieve == "get"
    with pytest.raises(ConfigurationError, match=r"dicom\.port = 0 disables"):
        load_config(None, {"dicom": {**allowed, "port": 0}, "pacs": {"nodes": [NODE]}})
    for bad, message in (
        ({"nodes": [NODE, NODE]}, "used by another"),
        ({"nodes": [{**NODE, "ae_title": "A" * 17}]}, "not a valid AE title"),
        ({"nodes": [{**NODE, "port": 0}]}, "not a TCP port"),
        ({"nodes": [{**NODE, "retrieve": "push"}]}, "'move' or 'get'"),
        ({"nodes": [{**NODE, "name": "../x"}]}, "letters, digits"),
        ({"nodes": [{**NODE, "colour": "red"}]}, "unknown configuration key 'pacs.nodes\\[0\\].colour'"),
        ({"max_results": 0}, "must be positive"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            load_config(None, {"dicom": allowed, "pacs": bad})


@pytest.mark.req("REQ-FUNC-851")
def test_suboperation_counts_and_statuses() -> None:
    counts = SubOperations()
    pending = Dataset()
    pending.Status = 0xFF00
    pending.NumberOfRemainingSuboperations, pending.NumberOfCompletedSuboperations = 7, 3
    counts.update(pending)
    assert (counts.remaining, counts.completed, counts.status) == (7, 3, None)
    final = Dataset()
    final.Status = 0xB000
    final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations = 9, 1
    failed = Dataset()
    failed.FailedSOPInstanceUIDList = "1.2.3"
    counts.finish(final, failed)
    assert (counts.remaining, counts.completed, counts.failed, counts.failed_sop_uids) == (0, 9, 1, ["1.2.3"])
    assert "1 sub-operation(s) failed" in counts.meaning() and counts.to_dict()["status"] == "0xB000"
    final.Status = 0xA801
    counts.finish(final, None)
    assert "does not know our AE title" in counts.meaning()
    final.Status = 0xC123
    counts.finish(final, None)
    assert "could not process" in counts.meaning() and "0xC123" in counts.meaning()
