"""C-GET of a study on the query's own association (for PACS nodes that prefer it to C-MOVE).

We propose the storage SOP classes the receiver accepts with the SCP role (PS3.7 D.3.3.4 role selection); the
PACS sends each instance back over the same association as a C-STORE, which is written to the box's store
exactly as the receiver writes a C-MOVE's instances (atomic, fsynced, recorded before success is answered).
Each (SOP class, transfer syntax) pair is its own presentation context: a PACS sends an instance only over a
context in the syntax it holds it in (Orthanc without a transcoder fails the sub-operation otherwise), so one
context per class with many syntaxes, as for C-MOVE's receiver, is not enough. :data:`GET_SYNTAXES` keeps the
count within the 128 contexts an association may carry.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import pydicom
from pynetdicom import build_role, evt

from appliance.config import PacsNode
from appliance.service.errors import StorageError, StorageFull
from appliance.service.pacs.association import PacsContext, open_association
from appliance.service.pacs.move import follow_responses, study_identifier
from appliance.service.pacs.suboperations import ProgressFn, SubOperations
from appliance.service.receiver.contexts import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from appliance.service.receiver.store import STATUS_CANNOT_UNDERSTAND, STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS
from appliance.service.storage import summarise

log = logging.getLogger(__name__)

#: The receiver's transfer syntaxes less the rare ones (HTJ2K, deflated, big endian, JPEG extended): 10 classes
#: x 10 syntaxes + the C-GET model = 101 presentation contexts.
GET_SYNTAXES: list[str] = [
    ts for ts in TRANSFER_SYNTAXES
    if ts not in ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
                  "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.51")
]  # fmt: skip

#: Study Root Query/Retrieve Information Model - GET (PS3.4 C.6.2).
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"


def get_study(
    context: PacsContext, node: PacsNode, study_uid: str, progress: ProgressFn, deadline: float
) -> SubOperations:
    """C-GET ``study_uid`` into the box's store; returns the final counts (``time.monotonic()`` ``deadline``)."""
    source = f"pacs:{node.name}"

    def handle_store(event: Any) -> int:
        try:
            data = event.encoded_dataset()
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            context.store.store(data, summarise(ds), source)
        except StorageFull as exc:
            log.warning("C-GET instance from %s refused: %s", node.name, exc)
            return STATUS_OUT_OF_RESOURCES
        except (StorageError, pydicom.errors.InvalidDicomError) as exc:
            log.warning("C-GET instance from %s not understood: %s", node.name, exc)
            return STATUS_CANNOT_UNDERSTAND
        return STATUS_SUCCESS

    contexts: list[tuple[str, list[str] | None]] = [(STUDY_ROOT_GET, None)]
    contexts += [(sop, [ts]) for sop in STORAGE_SOP_CLASSES for ts in GET_SYNTAXES]
    roles = [build_role(sop, scp_role=True) for sop in STORAGE_SOP_CLASSES]
    with open_association(context, node, contexts, roles, [(evt.EVT_C_STORE, handle_store)]) as assoc:
        responses = assoc.send_c_get(study_identifier(study_uid), STUDY_ROOT_GET)
        return follow_responses(responses, assoc, context, node, progress, deadline, "C-GET")
