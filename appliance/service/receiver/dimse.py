"""DIMSE command sets (PS3.7 section 9.3, always Implicit VR Little Endian): decoding requests, encoding answers."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from appliance.service.receiver.errors import ProtocolError

C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
NO_DATASET = 0x0101
_ELEMENT = struct.Struct("<HHL")


@dataclass(frozen=True)
class Command:
    """The fields of a request command set the receiver acts on."""

    command_field: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    has_dataset: bool


def parse_command(data: bytes) -> Command:
    """Decode a command set; :class:`ProtocolError` when it is malformed or lacks its command field."""
    values: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            raise ProtocolError("truncated command set element")
        group, element, length = _ELEMENT.unpack_from(data, pos)
        if group != 0 or pos + 8 + length > end:
            raise ProtocolError("command set element outside group 0000 or longer than the command")
        values[element] = bytes(data[pos + 8 : pos + 8 + length])
        pos += 8 + length

    def us(element: int, default: int | None = None) -> int:
        raw = values.get(element)
        if raw is None or len(raw) != 2:
            if default is None:
                raise ProtocolError(f"command set lacks (0000,{element:04X})")
            return default
        return int(struct.unpack("<H", raw)[0])

    def uid(element: int) -> str:
        return values.get(element, b"").decode("ascii", "replace").strip(" \0")

    return Command(
        command_field=us(0x0100),
        message_id=us(0x0110),
        sop_class_uid=uid(0x0002),
        sop_instance_uid=uid(0x1000),
        has_dataset=us(0x0800, NO_DATASET) != NO_DATASET,
    )


def _el(element: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    return _ELEMENT.pack(0, element, len(value)) + value


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def response(request: Command, command_field: int, status: int, comment: str = "") -> bytes:
    """The response command set to ``request`` with ``status`` (an error comment only on failures)."""
    body = _el(0x0002, request.sop_class_uid.encode("ascii"))
    body += _el(0x0100, _us(command_field)) + _el(0x0120, _us(request.message_id))
    body += _el(0x0800, _us(NO_DATASET)) + _el(0x0900, _us(status))
    if comment and status != 0:
        body += _el(0x0902, comment.encode("ascii", "replace")[:64])
    if request.sop_instance_uid:
        body += _el(0x1000, request.sop_instance_uid.encode("ascii"))
    return _el(0x0000, struct.pack("<L", len(body))) + body
