"""C-MOVE of a study to the box's own AE title (the PACS sends it to our receiver as C-STOREs).

The PACS must know the box (AE title, host, DICOM port) as a modality, and ``dicom.allowed`` must list the PACS
so the receiver accepts the sub-associations; the configuration check refuses a C-MOVE node missing there.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset

from appliance.config import PacsNode
from appliance.service.pacs.association import PacsContext, describe, open_association
from appliance.service.pacs.errors import PacsUnreachable, RetrieveFailed
from appliance.service.pacs.query import check_study_uid
from appliance.service.pacs.suboperations import PENDING, ProgressFn, SubOperations

#: Study Root Query/Retrieve Information Model - MOVE (PS3.4 C.6.2).
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


def study_identifier(study_uid: str) -> Dataset:
    """The Study Root identifier of one study (QueryRetrieveLevel STUDY)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = check_study_uid(study_uid)
    return ds


def follow_responses(
    responses: Iterable[tuple[Dataset, Dataset | None]], assoc: Any, context: PacsContext, node: PacsNode,
    progress: ProgressFn, deadline: float, operation: str,
) -> SubOperations:
    """Read a C-MOVE/C-GET's responses: counts after every pending one, abort past ``deadline``."""
    counts = SubOperations()
    for status, identifier in responses:
        if not status:
            raise PacsUnreachable(f"PACS {describe(node)} stopped answering during the {operation}")
        if int(status.Status) in PENDING:
            counts.update(status)
            progress(counts)
            if time.monotonic() > deadline:
                assoc.abort()
                raise RetrieveFailed(
                    f"retrieval from {describe(node)} took longer than pacs.retrieve_timeout_seconds "
                    f"({context.settings.retrieve_timeout_seconds:g} s); {counts.completed} instance(s) arrived"
                )
        else:
            counts.finish(status, identifier)
    return counts


def move_study(
    context: PacsContext, node: PacsNode, study_uid: str, progress: ProgressFn, deadline: float
) -> SubOperations:
    """C-MOVE ``study_uid`` to our AE title; returns the final counts (``time.monotonic()`` ``deadline``)."""
    with open_association(context, node, [(STUDY_ROOT_MOVE, None)]) as assoc:
        responses = assoc.send_c_move(study_identifier(study_uid), context.ae_title, STUDY_ROOT_MOVE)
        return follow_responses(responses, assoc, context, node, progress, deadline, "C-MOVE")
