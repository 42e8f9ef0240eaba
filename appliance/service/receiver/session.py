"""One connection of the receiver: association request (within a few seconds), negotiation, C-ECHO and C-STORE,
release or abort (DICOM PS3.8 upper layer, acceptor side, blocking I/O on the connection's own thread).

A connection that sends no A-ASSOCIATE-RQ within ``request_timeout_s`` is closed (it never counts against
``max_associations``, which counts associations only). Any protocol violation, an idle association (no PDU for
``network_timeout_seconds``) or a closed connection ends it with an A-ABORT; everything is audited.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import DicomConfig
from appliance.service.receiver import dimse, pdu
from appliance.service.receiver.acl import peer_allowed
from appliance.service.receiver.association import AssociationStats, AssociationTracker, actor_name
from appliance.service.receiver.commit import Lap, StageTimings
from appliance.service.receiver.contexts import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, VERIFICATION
from appliance.service.receiver.errors import ProtocolError
from appliance.service.receiver.store import StoreHandler

log = logging.getLogger(__name__)

ACCEPTED, ABSTRACT_SYNTAX_NOT_SUPPORTED, TRANSFER_SYNTAXES_NOT_SUPPORTED = 0, 3, 4


@dataclass(frozen=True)
class SessionContext:
    """What every connection shares: settings, the association bookkeeping, the C-STORE handler."""

    settings: DicomConfig
    tracker: AssociationTracker
    handler: StoreHandler
    timings: StageTimings
    request_timeout_s: float
    #: Called once the association request arrived (the connection no longer counts as pending).
    on_request: Callable[[], None]


def negotiate(rq: pdu.AssociateRequest) -> list[tuple[int, int, str]]:
    """``(context id, result, transfer syntax)`` per proposed context: ours in our order of preference."""
    results = []
    for context_id, abstract, syntaxes in rq.contexts:
        if abstract != VERIFICATION and abstract not in STORAGE_SOP_CLASSES:
            results.append((context_id, ABSTRACT_SYNTAX_NOT_SUPPORTED, syntaxes[0] if syntaxes else ""))
            continue
        chosen = next((ts for ts in TRANSFER_SYNTAXES if ts in syntaxes), None)
        if chosen is None:
            results.append((context_id, TRANSFER_SYNTAXES_NOT_SUPPORTED, syntaxes[0] if syntaxes else ""))
        else:
            results.append((context_id, ACCEPTED, chosen))
    return results


class DicomSession:
    """Runs one connection to its end (:meth:`run` never raises)."""

    def __init__(self, sock: socket.socket, address: str, context: SessionContext) -> None:
        self.sock = sock
        self.address = address
        self.context = context
        self.config = context.settings
        # the DIMSE state of an association (reset by _serve)
        self._command_parts: list[bytes] = []
        self._dataset = pdu.DatasetBuffer()
        self._request: dimse.Command | None = None
        self._request_context = 0
        self._lap: Lap | None = None

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _abort(self) -> None:
        try:
            self._send(pdu.abort())
        except OSError:
            pass

    def run(self) -> None:
        """Wait for the association request, negotiate, serve, audit."""
        requested = False
        try:
            pdu.set_timeout(self.sock, self.context.request_timeout_s)
            try:
                pdu_type, body = pdu.read_pdu(self.sock)
            except (ProtocolError, OSError) as exc:
                log.info("connection from %s closed without an association request (%s)", self.address, exc)
                return
            requested = True
            self.context.on_request()
            if pdu_type != pdu.ASSOCIATE_RQ:
                log.warning("connection from %s began with PDU type %d; aborted", self.address, pdu_type)
                self._abort()
                return
            try:
                rq = pdu.parse_associate_rq(body)
            except ProtocolError as exc:
                log.warning("malformed association request from %s: %s", self.address, exc)
                self._abort()
                return
            stats = self._accept(rq)
            if stats is None:
                return
            how = "aborted"
            try:
                how = self._serve(stats, {cid: ts for cid, result, ts in negotiate(rq) if result == ACCEPTED})
            except (ProtocolError, OSError) as exc:
                log.warning("association from %s aborted: %s", stats.actor, exc)
                self._abort()
            finally:
                self.context.tracker.closed(stats, how)
        except Exception:  # a bug must end this connection only, never the receiver
            log.exception("connection from %s failed", self.address)
            self._abort()
        finally:
            if not requested:
                self.context.on_request()

    def _accept(self, rq: pdu.AssociateRequest) -> AssociationStats | None:
        """Answer the request: A-ASSOCIATE-RJ (audited) or A-ASSOCIATE-AC; the stats of an accepted one."""
        tracker, cfg = self.context.tracker, self.config
        actor = actor_name(rq.calling_ae, self.address)
        if not rq.protocol_version & 1:
            self._send(pdu.associate_rj(1, 2, 2))
            tracker.rejected_by(actor, f"protocol version {rq.protocol_version} not supported", "REQ-ACQ-301")
            return None
        if not peer_allowed(cfg.allowed, rq.calling_ae, self.address):
            self._send(pdu.associate_rj(1, 1, 3))
            tracker.rejected_by(actor, f"calling AE title {rq.calling_ae!r} is not allowed from {self.address}",
                                "REQ-ACQ-301")  # fmt: skip
            return None
        if rq.called_ae != cfg.ae_title:
            self._send(pdu.associate_rj(1, 1, 7))
            tracker.rejected_by(actor, f"called AE title {rq.called_ae!r} is not ours ({cfg.ae_title!r})",
                                "REQ-ACQ-301")  # fmt: skip
            return None
        if not tracker.try_open():
            self._send(pdu.associate_rj(2, 3, 2))
            tracker.rejected_by(actor, f"more than {cfg.max_associations} concurrent associations", "REQ-ACQ-303")
            return None
        try:
            self._send(pdu.associate_ac(rq, negotiate(rq), cfg.max_pdu_bytes))
        except OSError:
            tracker.closed(AssociationStats(actor), "aborted")
            raise
        stats = AssociationStats(actor)
        tracker.accepted(stats)
        return stats

    def _serve(self, stats: AssociationStats, syntaxes: dict[int, str]) -> str:
        """DIMSE until release (returns ``released``) or abort by the peer (``aborted``)."""
        pdu.set_timeout(self.sock, self.config.network_timeout_seconds or None)
        self._command_parts, self._request = [], None
        self._dataset.clear()
        while True:
            pdu_type, length = pdu.read_pdu_header(self.sock)
            if pdu_type != pdu.P_DATA_TF:
                pdu.read_body(self.sock, length)
                if pdu_type == pdu.RELEASE_RQ:
                    self._send(pdu.release_rp())
                    return "released"
                if pdu_type == pdu.ABORT:
                    return "aborted"
                raise ProtocolError(f"unexpected PDU type {pdu_type} during an association")
            while length:
                context_id, control, size = pdu.read_pdv_header(self.sock, length)
                length -= 6 + size
                if context_id not in syntaxes:
                    raise ProtocolError(f"presentation context {context_id} was not accepted")
                if control & 1:
                    self._command_fragment(context_id, control, bytes(pdu.read_body(self.sock, size)))
                else:
                    self._dataset_fragment(context_id, control, size, syntaxes[context_id], stats)

    def _command_fragment(self, context_id: int, control: int, payload: bytes) -> None:
        """A fragment of a command set: C-ECHO answered, C-STORE remembered until its dataset is complete."""
        if self._request is not None:
            raise ProtocolError("a command arrived before the previous request's dataset was complete")
        if not self._command_parts:
            self._lap = Lap(self.context.timings)
        self._command_parts.append(payload)
        if not control & 2:
            return
        command = dimse.parse_command(b"".join(self._command_parts))
        self._command_parts = []
        if command.command_field == dimse.C_ECHO_RQ:
            self._send(pdu.p_data(context_id, 3, dimse.response(command, dimse.C_ECHO_RSP, 0)))
        elif command.command_field == dimse.C_STORE_RQ and command.has_dataset:
            self._request, self._request_context = command, context_id
        else:
            raise ProtocolError(f"DIMSE command 0x{command.command_field:04X} is not supported here")

    def _dataset_fragment(self, context_id: int, control: int, size: int, syntax: str, stats: AssociationStats) -> None:
        """A fragment of a C-STORE's dataset, received into the dataset buffer; the last one stores and answers."""
        request = self._request
        if request is None or context_id != self._request_context:
            raise ProtocolError("a dataset fragment arrived without its C-STORE request")
        self._dataset.receive(self.sock, size)
        if not control & 2:
            return
        lap = self._lap or Lap(self.context.timings)
        lap.mark("receive (command and dataset PDUs)")
        status, comment = self.context.handler.handle(request, syntax, self._dataset.dataset(), stats)
        lap = Lap(self.context.timings)
        self._send(pdu.p_data(context_id, 3, dimse.response(request, dimse.C_STORE_RSP, status, comment)))
        lap.mark("answer (encode + send response)")
        self._request = None
        self._dataset.clear()
