"""C-STORE of exported objects to a configured PACS node (the only outbound traffic of the appliance)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence

from pydicom.dataset import Dataset
from pynetdicom import AE

from appliance.config import PacsDestination, TlsConfig
from appliance.service.errors import DicomExportError

log = logging.getLogger(__name__)


def tls_client_context(tls: TlsConfig) -> ssl.SSLContext:
    """Client side of mutual TLS: the box's certificate, peers verified against the configured CA."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise DicomExportError(
            f"cannot load the TLS files for export ({tls.cert}, {tls.key}, {tls.ca}): {exc}"
        ) from exc
    return ctx


def send_datasets(
    datasets: Sequence[Dataset], destination: PacsDestination, calling_ae: str, tls: TlsConfig | None = None
) -> list[int]:
    """C-STORE every dataset over one association; returns their statuses (raises when none can be sent).

    With ``destination.tls`` the association uses mutual TLS with the receiver's certificate settings (``tls``).
    """
    ae = AE(ae_title=calling_ae)
    ae.network_timeout = 60
    ae.acse_timeout = 30
    wanted: dict[str, set[str]] = {}
    for d in datasets:
        ts = str(getattr(getattr(d, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2.1")
        wanted.setdefault(str(d.SOPClassUID), set()).add(ts)
    for sop_class, syntaxes in sorted(wanted.items()):
        for ts in sorted(syntaxes):  # each object keeps its own transfer syntax (no transcoding)
            ae.add_requested_context(sop_class, [ts])
    tls_args = None
    if destination.tls:
        if tls is None:
            raise DicomExportError(
                f"export destination {destination.name} needs TLS but [dicom.tls] is not configured"
            )
        tls_args = (tls_client_context(tls), destination.host)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        raise DicomExportError(
            f"PACS {destination.name} ({destination.ae_title}@{destination.host}:{destination.port}) refused or "
            "did not answer the association; check the export destination and that it knows our AE title"
        )
    statuses = []
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except ValueError as exc:  # the peer accepted no context for this object
                log.error("cannot send %s to %s: %s", ds.SOPClassUID, destination.name, exc)
                statuses.append(0xFFFF)
                continue
            statuses.append(int(status.Status) if status else 0xFFFF)
    finally:
        assoc.release()
    return statuses
