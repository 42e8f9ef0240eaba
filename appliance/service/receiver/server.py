"""The receiver's transport: the pynetdicom server with TCP_NODELAY, mutual TLS and audited failed handshakes.

pynetdicom wraps TLS in its accept loop and drops failed handshakes silently; here the accept loop only accepts
(TCP_NODELAY set), and each connection's thread does the TLS handshake, so a slow or failing client cannot stall
the others and every failure is logged and audited.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from appliance.audit import AuditLog
from appliance.config import DicomConfig, TlsConfig
from appliance.service.errors import ServiceError
from appliance.service.receiver.association import AssociationTracker
from appliance.service.receiver.contexts import VERIFICATION, storage_contexts
from appliance.service.receiver.echo import handle_echo
from appliance.service.receiver.store import make_store_handler
from appliance.service.storage import InstanceStore

log = logging.getLogger(__name__)

TLS_HANDSHAKE_TIMEOUT_S = 10.0


def tls_server_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server context requiring a client certificate signed by ``tls.ca`` (TLS 1.2+)."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise ServiceError(
            f"cannot load the receiver's TLS files ({tls.cert}, {tls.key}, {tls.ca}): {exc}"
        ) from exc
    return ctx


@dataclass(frozen=True)
class ReceiverContext:
    """What the receiver needs from the service (built by :class:`~appliance.service.runtime.ApplianceService`).

    Attributes:
        settings: the ``dicom`` section of the configuration (AE title, port, limits, allow-list, TLS).
        store: where received instances are stored.
        audit: the audit trail associations and failed handshakes are recorded in.
        study_hash: the study's keyed identity hash (what the audit trail records instead of the UID).
    """

    settings: DicomConfig
    store: InstanceStore
    audit: AuditLog
    study_hash: Callable[[str], str]


class _Server(ThreadedAssociationServer):
    """ThreadedAssociationServer with TCP_NODELAY and per-connection TLS handshakes."""

    tls_context: ssl.SSLContext | None = None
    on_tls_failure: Any = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = cast(socket.socket, self.socket).accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if self.tls_context is not None:
            try:
                request.settimeout(TLS_HANDSHAKE_TIMEOUT_S)
                request = self.tls_context.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (ssl.SSLError, OSError) as exc:
                if self.on_tls_failure is not None:
                    self.on_tls_failure(client_address, exc)
                try:
                    request.close()
                except OSError:
                    pass
                return
        super().process_request_thread(request, client_address)


class DicomReceiver:
    """C-ECHO and C-STORE SCP of the appliance, started and stopped by the service."""

    def __init__(self, context: ReceiverContext) -> None:
        self.context = context
        self.config: DicomConfig = context.settings
        self.tracker = AssociationTracker(self.config, context.audit, context.study_hash)
        self.tls_failures = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (useful when configured as an ephemeral port)."""
        if self._server is None:
            return self.config.port
        return int(self._server.server_address[1])

    def _ae(self) -> AE:
        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_associations = self.config.max_associations
        ae.maximum_pdu_size = self.config.max_pdu_bytes
        ae.network_timeout = self.config.network_timeout_seconds
        ae.acse_timeout = 30
        ae.dimse_timeout = self.config.network_timeout_seconds
        ae.add_supported_context(VERIFICATION)
        for sop, syntaxes in storage_contexts():
            ae.add_supported_context(sop, syntaxes)
        return ae

    def start(self) -> None:
        """Listen on ``dicom.bind_address:dicom.port``."""
        ae = self._ae()
        store_handler = make_store_handler(self.context.store, self.tracker)
        handlers: list[Any] = [
            *self.tracker.handlers(),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, store_handler),
        ]
        try:
            server = cast(
                _Server,
                ae.make_server(
                    (self.config.bind_address, self.config.port), evt_handlers=handlers, server_class=_Server
                ),
            )
        except OSError as exc:
            raise ServiceError(
                f"cannot listen for DICOM on {self.config.bind_address}:{self.config.port}: {exc}; "
                "choose another dicom.port or stop the other receiver"
            ) from exc
        if self.config.tls is not None:
            server.tls_context = tls_server_context(self.config.tls)
        server.on_tls_failure = self._tls_failed
        ae._servers.append(server)  # as AE.start_server does, so shutdown() can unregister it
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="dicom-receiver", daemon=True)
        self._thread.start()
        log.info("DICOM receiver %s listening on port %d%s", self.config.ae_title, self.port,
                 " (mutual TLS)" if self.config.tls else "")  # fmt: skip

    def _tls_failed(self, address: tuple[str, int], exc: BaseException) -> None:
        actor = f"dicom:?@{address[0]}"
        log.warning("TLS handshake from %s failed: %s", address[0], exc)
        self.context.audit.append(
            actor,
            "association.rejected",
            None,
            {"reason": f"TLS handshake failed: {exc}"[:500]},
            "REQ-ACQ-302",
        )

    def stop(self) -> None:
        """Stop listening and close open associations."""
        if self._server is not None:
            self._server.shutdown()  # also closes the socket
            self._server = None
