"""The receiver's transport: the listening socket, one thread per connection, TCP_NODELAY, mutual TLS.

Each connection's thread does the TLS handshake (so a slow or failing client cannot stall the others; every
failure is logged and audited) and then runs a :class:`~.session.DicomSession`. Connections that have not yet
sent their association request are capped separately from associations, and closed after
``request_timeout_s``: a silent TCP client can neither hold an association slot nor a thread for long.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

from appliance.audit import AuditLog
from appliance.config import DicomConfig, TlsConfig
from appliance.service.errors import ServiceError
from appliance.service.receiver.association import AssociationTracker
from appliance.service.receiver.commit import GroupCommitter, StageTimings
from appliance.service.receiver.session import DicomSession, SessionContext
from appliance.service.receiver.store import StoreHandler
from appliance.service.storage import InstanceStore

log = logging.getLogger(__name__)

TLS_HANDSHAKE_TIMEOUT_S = 10.0
#: Time a new connection has to send its A-ASSOCIATE-RQ (DICOM's ARTIM timer) before it is closed.
ASSOCIATION_REQUEST_TIMEOUT_S = 5.0
ACCEPT_POLL_S = 0.5


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


class DicomReceiver:
    """C-ECHO and C-STORE SCP of the appliance, started and stopped by the service."""

    def __init__(self, context: ReceiverContext) -> None:
        self.context = context
        self.config: DicomConfig = context.settings
        self.tracker = AssociationTracker(self.config, context.audit, context.study_hash)
        self.timings = StageTimings()
        self.tls_failures = 0
        self.request_timeout_s = ASSOCIATION_REQUEST_TIMEOUT_S
        #: Most connections waiting for their association request at once; more are closed at once.
        self.max_pending = max(16, 4 * self.config.max_associations)
        self._tls: ssl.SSLContext | None = None
        self._listener: socket.socket | None = None
        self._committer: GroupCommitter | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._pending = 0
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        """The port listened on (useful when configured as an ephemeral port)."""
        if self._listener is None:
            return self.config.port
        return int(self._listener.getsockname()[1])

    def connections(self) -> list[socket.socket]:
        """The sockets of the open connections (associations and connections still waiting for a request)."""
        with self._lock:
            return list(self._connections)

    def start(self) -> None:
        """Listen on ``dicom.bind_address:dicom.port``."""
        if self.config.tls is not None:
            self._tls = tls_server_context(self.config.tls)
        try:
            listener = socket.create_server((self.config.bind_address, self.config.port), backlog=64)
        except OSError as exc:
            raise ServiceError(
                f"cannot listen for DICOM on {self.config.bind_address}:{self.config.port}: {exc}; "
                "choose another dicom.port or stop the other receiver"
            ) from exc
        listener.settimeout(ACCEPT_POLL_S)
        self._listener = listener
        self._committer = GroupCommitter(self.context.store, self.timings)
        session = SessionContext(
            self.config, self.tracker, StoreHandler(self.context.store, self._committer, self.timings),
            self.timings, self.request_timeout_s, self._requested,
        )  # fmt: skip
        self._thread = threading.Thread(
            target=self._accept_loop, args=(listener, session), name="dicom-receiver", daemon=True
        )
        self._thread.start()
        log.info("DICOM receiver %s listening on port %d%s", self.config.ae_title, self.port,
                 " (mutual TLS)" if self.config.tls else "")  # fmt: skip

    def _accept_loop(self, listener: socket.socket, session: SessionContext) -> None:
        while not self._stopping.is_set():
            try:
                client, address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("accepting a DICOM connection failed")
                continue
            with self._lock:
                full = self._pending >= self.max_pending
                if not full:
                    self._pending += 1
                    self._connections.add(client)
            if full:
                log.warning("connection from %s closed: %d connections already wait for their association "
                            "request", address[0], self.max_pending)  # fmt: skip
                client.close()
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(client, address[0], session), name=f"dicom-{address[0]}",
                             daemon=True).start()  # fmt: skip

    def _requested(self) -> None:
        with self._lock:
            self._pending -= 1

    def _serve(self, client: socket.socket, address: str, session: SessionContext) -> None:
        conn = client
        try:
            if self._tls is not None:
                try:
                    client.settimeout(TLS_HANDSHAKE_TIMEOUT_S)
                    conn = self._tls.wrap_socket(client, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    self._tls_failed(address, exc)
                    self._requested()
                    return
                with self._lock:
                    self._connections.discard(client)
                    self._connections.add(conn)
            DicomSession(conn, address, session).run()
        finally:
            with self._lock:
                self._connections.discard(client)
                self._connections.discard(conn)
            for s in {client, conn}:
                try:
                    s.close()
                except OSError:
                    pass

    def _tls_failed(self, address: str, exc: BaseException) -> None:
        log.warning("TLS handshake from %s failed: %s", address, exc)
        self.context.audit.append(
            f"dicom:?@{address}", "association.rejected", None,
            {"reason": f"TLS handshake failed: {exc}"[:500]}, "REQ-ACQ-302",
        )  # fmt: skip
        with self._lock:
            self.tls_failures += 1  # counted once audited (tests wait on the count)

    def stop(self) -> None:
        """Stop listening, close open connections, commit what was staged."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(ACCEPT_POLL_S * 4)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for conn in self.connections():
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._committer is not None:
            self._committer.stop()
