"""DICOM upper-layer PDUs (PS3.8 section 9.3): reading from a socket, the association request, the answers.

Only what an acceptor of storage needs: A-ASSOCIATE-RQ is decoded; A-ASSOCIATE-AC/RJ, P-DATA-TF, A-RELEASE-RP and
A-ABORT are encoded; the presentation data values of a P-DATA-TF are read one by one (:func:`read_pdv_header`), and
a dataset's fragments straight into one reusable buffer (:class:`DatasetBuffer`: no copy per PDU, no join).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from appliance.service.receiver.errors import ProtocolError

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 1, 2, 3, 4, 5, 6, 7
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1173.3.1"  # this appliance's receiver
IMPLEMENTATION_VERSION = "EDGE3D_RCV_1"
#: Largest PDU read into one preallocated buffer; longer ones are read as they arrive (no up-front allocation).
PREALLOCATE_LIMIT = 64 * 1024 * 1024
_HEADER = struct.Struct(">BxL")
_ITEM = struct.Struct(">BxH")
_PDV = struct.Struct(">LBB")
#: A dataset buffer larger than this is not kept for the association's next dataset (memory of long associations).
KEEP_BUFFER_LIMIT = 64 * 1024 * 1024


def set_timeout(sock: socket.socket, seconds: float | None) -> None:
    """Make every read and write of ``sock`` fail (``OSError``) after ``seconds`` without progress (None: never).

    A plain TCP socket stays in blocking mode with the kernel's ``SO_RCVTIMEO``/``SO_SNDTIMEO`` (Python's own
    timeouts would poll before every ``recv``: twice the system calls and thread wake-ups per fragment); a TLS
    socket keeps Python's timeout (its reads cannot take flags).
    """
    if type(sock) is not socket.socket:
        sock.settimeout(seconds)
        return
    sock.settimeout(None)
    whole = int(seconds or 0)
    timeval = struct.pack("@ll", whole, int(((seconds or 0) - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def _flags(sock: socket.socket) -> int:
    """``MSG_WAITALL`` for a plain blocking socket (one call, one wake-up of this thread per read), else 0."""
    return socket.MSG_WAITALL if type(sock) is socket.socket and sock.gettimeout() is None else 0


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    """Exactly ``n`` bytes from ``sock``; :class:`ProtocolError` when the peer closes first."""
    if n <= PREALLOCATE_LIMIT:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        flags = _flags(sock)
        while got < n:
            k = sock.recv_into(view[got:], n - got, flags)
            if k == 0:
                raise ProtocolError(f"connection closed after {got} of {n} bytes of a PDU")
            got += k
        return buf
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(min(PREALLOCATE_LIMIT, n - len(out)))
        if not chunk:
            raise ProtocolError(f"connection closed after {len(out)} of {n} bytes of a PDU")
        out += chunk
    return out


def read_pdu_header(sock: socket.socket) -> tuple[int, int]:
    """``(type, body length)`` of the next PDU; :class:`ProtocolError` on a closed connection or an unknown type."""
    first = sock.recv(6, _flags(sock))
    if not first:
        raise ProtocolError("connection closed")
    head = first if len(first) == 6 else first + _recv_exact(sock, 6 - len(first))
    pdu_type, length = _HEADER.unpack(head)
    if pdu_type not in (ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT):
        raise ProtocolError(f"unknown PDU type 0x{pdu_type:02X}")
    return pdu_type, length


def read_pdu(sock: socket.socket) -> tuple[int, bytearray]:
    """``(type, body)`` of the next PDU; :class:`ProtocolError` on a closed connection or an unknown type."""
    pdu_type, length = read_pdu_header(sock)
    return pdu_type, read_body(sock, length)


def read_body(sock: socket.socket, length: int) -> bytearray:
    """The next ``length`` bytes of a PDU body (``ProtocolError`` when the peer closes first)."""
    return _recv_exact(sock, length)


def read_pdv_header(sock: socket.socket, remaining: int) -> tuple[int, int, int]:
    """``(context id, message control header, payload length)`` of the next presentation data value of a
    P-DATA-TF of which ``remaining`` bytes are unread; :class:`ProtocolError` when it does not fit in them."""
    if remaining < 6:
        raise ProtocolError("truncated presentation data value")
    length, context_id, control = _PDV.unpack(_recv_exact(sock, 6))
    if length < 2 or length + 4 > remaining:
        raise ProtocolError("presentation data value length runs past its PDU")
    return context_id, control, length - 2


class DatasetBuffer:
    """The fragments of one dataset, received straight from the socket into one buffer reused for the next dataset
    of the association (no buffer per PDU, no join). It grows as data arrives (at most
    :data:`PREALLOCATE_LIMIT` beyond what has arrived, whatever a length field claims), into a new buffer, so views
    of the old one stay valid."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.used = 0

    def receive(self, sock: socket.socket, n: int) -> None:
        """Append the next ``n`` bytes from ``sock``; :class:`ProtocolError` when the peer closes first."""
        while n:
            chunk = min(n, PREALLOCATE_LIMIT)
            need = self.used + chunk
            if need > len(self._buf):
                grown = bytearray(max(need, 2 * len(self._buf)))
                grown[: self.used] = memoryview(self._buf)[: self.used]
                self._buf = grown
            view = memoryview(self._buf)
            got = self.used
            flags = _flags(sock)
            while got < need:
                k = sock.recv_into(view[got:need], need - got, flags)
                if k == 0:
                    raise ProtocolError(f"connection closed after {got - self.used} of {chunk} bytes of a PDU")
                got += k
            self.used = need
            n -= chunk

    def dataset(self) -> memoryview:
        """The dataset received so far (valid until the buffer receives the next dataset)."""
        return memoryview(self._buf)[: self.used]

    def clear(self) -> None:
        """Start the next dataset (a very large buffer is let go rather than kept for the association)."""
        self.used = 0
        if len(self._buf) > KEEP_BUFFER_LIMIT:
            self._buf = bytearray()


def _text(raw: bytes | bytearray) -> str:
    return raw.decode("ascii", "replace").strip(" \0")


@dataclass
class AssociateRequest:
    """The parts of an A-ASSOCIATE-RQ an acceptor negotiates on."""

    protocol_version: int
    called_ae: str
    calling_ae: str
    #: ``(context id, abstract syntax, [transfer syntaxes])`` in the order proposed.
    contexts: list[tuple[int, str, list[str]]] = field(default_factory=list)
    max_pdu: int = 0
    implementation_uid: str = ""


def _items(body: bytes | bytearray, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """``(item type, value start, value end)`` of the variable items between ``start`` and ``end``."""
    pos = start
    while pos + 4 <= end:
        item_type, length = _ITEM.unpack_from(body, pos)
        if pos + 4 + length > end:
            raise ProtocolError(f"item 0x{item_type:02X} runs past the end of its PDU")
        yield item_type, pos + 4, pos + 4 + length
        pos += 4 + length
    if pos != end:
        raise ProtocolError("trailing bytes after the last item of a PDU")


def parse_associate_rq(body: bytes | bytearray) -> AssociateRequest:
    """Decode an A-ASSOCIATE-RQ body (after the 6-byte PDU header)."""
    if len(body) < 68:
        raise ProtocolError("A-ASSOCIATE-RQ shorter than its fixed fields")
    (version,) = struct.unpack_from(">H", body, 0)
    rq = AssociateRequest(version, _text(body[4:20]), _text(body[20:36]))
    for item_type, start, end in _items(body, 68, len(body)):
        if item_type == 0x20:
            if end - start < 4:
                raise ProtocolError("presentation context item too short")
            abstract, syntaxes = "", []
            for sub, s, e in _items(body, start + 4, end):
                if sub == 0x30:
                    abstract = _text(body[s:e])
                elif sub == 0x40:
                    syntaxes.append(_text(body[s:e]))
            rq.contexts.append((body[start], abstract, syntaxes))
        elif item_type == 0x50:
            for sub, s, e in _items(body, start, end):
                if sub == 0x51 and e - s == 4:
                    (rq.max_pdu,) = struct.unpack_from(">L", body, s)
                elif sub == 0x52:
                    rq.implementation_uid = _text(body[s:e])
    return rq


def _item(item_type: int, value: bytes) -> bytes:
    return _ITEM.pack(item_type, len(value)) + value


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return _HEADER.pack(pdu_type, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16, b" ")


def associate_ac(rq: AssociateRequest, results: list[tuple[int, int, str]], max_pdu: int) -> bytes:
    """A-ASSOCIATE-AC for ``results``: ``(context id, result, transfer syntax)`` (result 0 = acceptance)."""
    body = bytearray(struct.pack(">HH", 1, 0) + _ae(rq.called_ae) + _ae(rq.calling_ae) + b"\0" * 32)
    body += _item(0x10, APPLICATION_CONTEXT.encode())
    for context_id, result, syntax in results:
        body += _item(0x21, bytes((context_id, 0, result, 0)) + _item(0x40, syntax.encode()))
    user = _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, IMPLEMENTATION_CLASS_UID.encode())
    user += _item(0x55, IMPLEMENTATION_VERSION.encode())
    body += _item(0x50, user)
    return _pdu(ASSOCIATE_AC, bytes(body))


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (result 1 permanent / 2 transient; source 1 user, 2 ACSE provider, 3 presentation)."""
    return _pdu(ASSOCIATE_RJ, bytes((0, result, source, reason)))


def release_rp() -> bytes:
    """A-RELEASE-RP."""
    return _pdu(RELEASE_RP, b"\0\0\0\0")


def abort(source: int = 2, reason: int = 0) -> bytes:
    """A-ABORT (source 0 service user, 2 service provider; reason 0 not specified, 2 unexpected PDU)."""
    return _pdu(ABORT, bytes((0, 0, source, reason)))


def p_data(context_id: int, control: int, payload: bytes) -> bytes:
    """A P-DATA-TF with one presentation data value (``control``: bit 0 command, bit 1 last fragment)."""
    return _pdu(P_DATA_TF, struct.pack(">LBB", len(payload) + 2, context_id, control) + payload)
