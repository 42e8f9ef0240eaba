"""C-STORE of exported objects to a configured PACS node (the only outbound traffic of the appliance)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydicom.dataset import Dataset
from pynetdicom import AE

from appliance.config import PacsDestination
from appliance.service.export.sources import ExportError

log = logging.getLogger(__name__)


def send_datasets(datasets: Sequence[Dataset], destination: PacsDestination, calling_ae: str) -> list[int]:
    """C-STORE every dataset over one association; returns their statuses (raises when none can be sent)."""
    ae = AE(ae_title=calling_ae)
    ae.network_timeout = 60
    ae.acse_timeout = 30
    for sop_class in sorted({str(d.SOPClassUID) for d in datasets}):
        ae.add_requested_context(sop_class, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise ExportError(
            f"PACS {destination.name} ({destination.ae_title}@{destination.host}:{destination.port}) refused or "
            "did not answer the association; check the export destination and that it knows our AE title"
        )
    statuses = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            statuses.append(int(status.Status) if status else 0xFFFF)
    finally:
        assoc.release()
    return statuses
