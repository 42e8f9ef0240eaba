"""A received dataset checked completely before it is acknowledged, and the Part 10 header it is stored under.

:func:`inspect_dataset` walks every element of the dataset as it came off the network (sequences, items and
encapsulated pixel data included) without decoding values: every length must fit (and be a multiple of the value
size of a binary VR), every VR must exist and, for a public tag, be one DICOM's data dictionary defines for it (UN
always allowed, OB and OW interchangeable), the
dataset must end exactly where its last element does, the identifiers the store files it under must be valid and
agree with the command, and an image's native pixel data must be as long as its rows, columns, samples, frames and
bits say. A dataset failing any check raises :class:`UnusableDataset` (answered 0xC000, nothing stored). Only the
top-level values the catalogue needs are read; everything else waits for ingest.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from pydicom._dicom_dict import DicomDictionary

from appliance.service.receiver.errors import UnusableDataset, UnusableDatasetOf
from appliance.service.storage import Buffer

EXPLICIT_BIG = "1.2.840.10008.1.2.2"
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
UNDEFINED = 0xFFFFFFFF
MAX_DEPTH = 16
MAX_INFLATED = 4 * 1024**3

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"})
_SHORT_VRS = frozenset({
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL",
    b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
})  # fmt: skip


def _dictionary_vrs() -> dict[int, frozenset[bytes]]:
    """The VRs DICOM's data dictionary allows per public tag (OB and OW interchangeable, UN always allowed)."""
    out: dict[int, frozenset[bytes]] = {}
    for tag, entry in DicomDictionary.items():
        vrs = {v.strip().encode() for v in str(entry[0]).split(" or ")}
        if vrs & {b"OB", b"OW"}:
            vrs |= {b"OB", b"OW"}
        if vrs <= (_LONG_VRS | _SHORT_VRS):
            out[int(tag)] = frozenset(vrs | {b"UN"})
    return out


_DICTIONARY_VRS = _dictionary_vrs()
#: Value sizes of binary VRs: a value's length must be a multiple of its VR's size.
_SIZES = {b"AT": 4, b"FL": 4, b"FD": 8, b"SL": 4, b"SS": 2, b"UL": 4, b"US": 2, b"SV": 8, b"UV": 8, b"OD": 8,
          b"OF": 4, b"OL": 4, b"OV": 8, b"OW": 2}  # fmt: skip
#: Top-level elements read: (group << 16 | element) -> keyword (the keywords :func:`storage.summarise` reads).
KEYS: dict[int, str] = {
    0x00080016: "SOPClassUID", 0x00080018: "SOPInstanceUID", 0x00080020: "StudyDate", 0x00080060: "Modality",
    0x00081030: "StudyDescription", 0x0008103E: "SeriesDescription", 0x00100010: "PatientName",
    0x00100020: "PatientID", 0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID",
    0x00280002: "SamplesPerPixel", 0x00280004: "PhotometricInterpretation", 0x00280008: "NumberOfFrames",
    0x00280010: "Rows", 0x00280011: "Columns", 0x00280100: "BitsAllocated", 0x00280101: "BitsStored",
    0x00280103: "PixelRepresentation",
}  # fmt: skip
#: Type 1 attributes of the Image Pixel module: an image lacking one cannot be decoded.
IMAGE_PIXEL = ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored",
               "PixelRepresentation")  # fmt: skip
US_KEYS = frozenset({0x00280002, 0x00280010, 0x00280011, 0x00280100, 0x00280101, 0x00280103})
PIXEL_DATA = 0x7FE00010
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
#: SOP classes without pixel data (everything else we accept is an image and must carry pixels).
NO_PIXELS = frozenset({"1.2.840.10008.5.1.4.1.1.481.3"})


class _Walker:
    """One pass over a dataset's bytes in one transfer syntax."""

    def __init__(self, data: Buffer, explicit: bool, little: bool) -> None:
        self.data = data
        self.explicit = explicit
        self.e = "<" if little else ">"
        self.values: dict[str, Any] = {}
        self.pixel_length: int | None = None
        self._explicit_header = struct.Struct(self.e + "HH2sH")  # tag, VR, short length
        self._implicit_header = struct.Struct(self.e + "HHL")  # tag, length (also items and delimiters)
        self._long_length = struct.Struct(self.e + "L")

    def dataset(self, pos: int, end: int, depth: int, until_item_end: bool = False) -> int:
        """Walk elements from ``pos`` to ``end`` (or to an item delimiter); returns the position after."""
        if depth > MAX_DEPTH:
            raise UnusableDataset(f"sequences nested deeper than {MAX_DEPTH} levels")
        data, explicit = self.data, self.explicit
        explicit_header, implicit_header, long_length = self._explicit_header, self._implicit_header, self._long_length
        while pos < end:
            if pos + 8 > end:
                raise UnusableDataset(f"the dataset ends inside an element header at byte {pos}")
            if explicit:
                group, element, vr, length = explicit_header.unpack_from(data, pos)
            else:
                group, element, length = implicit_header.unpack_from(data, pos)
                vr = b""
            tag = group << 16 | element
            if group == 0xFFFE:
                if tag == ITEM_END and until_item_end:
                    return pos + 8
                raise UnusableDataset(f"unexpected delimiter ({group:04X},{element:04X}) at byte {pos}")
            if explicit:
                if vr in _SHORT_VRS:
                    start = pos + 8
                elif vr in _LONG_VRS:
                    if pos + 12 > end:
                        raise UnusableDataset(f"the dataset ends inside an element header at byte {pos}")
                    (length,) = long_length.unpack_from(data, pos + 8)
                    start = pos + 12
                else:
                    raise UnusableDataset(f"element ({group:04X},{element:04X}) has no valid VR")
                allowed = _DICTIONARY_VRS.get(tag)
                if allowed is not None and vr not in allowed:
                    raise UnusableDataset(
                        f"element ({group:04X},{element:04X}) has VR {vr.decode()}, not one DICOM defines"
                    )
            else:
                start = pos + 8
                if length != UNDEFINED and b"SQ" in _DICTIONARY_VRS.get(tag, ()):
                    vr = b"SQ"  # implicit VR: a sequence of defined length is walked too (known tags)
            if length == UNDEFINED:
                if tag == PIXEL_DATA and vr in (b"OB", b"OW"):
                    pos = self.fragments(start, end)
                    self.pixel_length = -1
                elif vr in (b"SQ", b"UN", b""):
                    inner = _Walker(data, False, True) if vr == b"UN" else self
                    pos = inner.sequence(start, end, depth + 1)
                else:
                    raise UnusableDataset(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) has an undefined length")
                continue
            if start + length > end:
                raise UnusableDataset(
                    f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) claims {length} bytes but only "
                    f"{max(0, end - start)} remain"
                )
            if vr == b"SQ" and length:
                self.sequence(start, start + length, depth + 1, defined=True)
            elif length % _SIZES.get(vr, 1):
                raise UnusableDataset(
                    f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) of VR {vr.decode()} cannot be {length} bytes long"
                )
            if depth == 0:
                if tag == PIXEL_DATA:
                    self.pixel_length = length
                elif tag in KEYS:
                    self.values[KEYS[tag]] = self.value(tag, start, length)
            pos = start + length
        if until_item_end:
            raise UnusableDataset("an item of undefined length has no item delimiter")
        return pos

    def sequence(self, pos: int, end: int, depth: int, defined: bool = False) -> int:
        """Walk the items of a sequence (up to ``end`` when its length is defined, else to its delimiter)."""
        while pos < end:
            if pos + 8 > end:
                raise UnusableDataset("the dataset ends inside a sequence item header")
            group, element, length = self._implicit_header.unpack_from(self.data, pos)
            tag = group << 16 | element
            if tag == SEQUENCE_END and not defined:
                return pos + 8
            if tag != ITEM:
                raise UnusableDataset(f"expected a sequence item, found ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            if length == UNDEFINED:
                pos = self.dataset(pos + 8, end, depth, until_item_end=True)
            elif pos + 8 + length > end:
                raise UnusableDataset(f"a sequence item claims {length} bytes but fewer remain")
            else:
                self.dataset(pos + 8, pos + 8 + length, depth)
                pos += 8 + length
        if not defined:
            raise UnusableDataset("a sequence of undefined length has no delimiter")
        return pos

    def fragments(self, pos: int, end: int) -> int:
        """Walk encapsulated pixel data: items of defined length up to the sequence delimiter."""
        n = 0
        while pos + 8 <= end:
            group, element, length = self._implicit_header.unpack_from(self.data, pos)
            tag = group << 16 | element
            if tag == SEQUENCE_END:
                if n < 2:
                    raise UnusableDataset("encapsulated pixel data without any fragment")
                return pos + 8
            if tag != ITEM or length == UNDEFINED or pos + 8 + length > end:
                raise UnusableDataset("encapsulated pixel data is truncated or malformed")
            pos += 8 + length
            n += 1
        raise UnusableDataset("encapsulated pixel data has no sequence delimiter")

    def value(self, tag: int, start: int, length: int) -> Any:
        raw = bytes(self.data[start : start + length])
        if tag in US_KEYS:
            return struct.unpack(self.e + "H", raw)[0] if length == 2 else None
        return raw.decode("latin-1").strip(" \0")


def inflate(data: Buffer) -> bytes:
    """The dataset of a Deflated Explicit VR Little Endian transfer (bounded, so a zip bomb is refused)."""
    try:
        d = zlib.decompressobj(-zlib.MAX_WBITS)
        out = d.decompress(data, MAX_INFLATED)
    except zlib.error as exc:
        raise UnusableDataset(f"the deflated dataset cannot be inflated: {exc}") from exc
    if d.unconsumed_tail:
        raise UnusableDataset("the deflated dataset inflates beyond the receiver's limit")
    return out


def _number(value: Any, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(str(value).strip())
    except ValueError as exc:
        raise UnusableDataset(f"an image dimension is not a number ({str(value)[:20]!r})") from exc


def inspect_dataset(data: Buffer, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str) -> dict[str, Any]:
    """Check ``data`` completely (see the module text); returns the top-level values by keyword."""
    if transfer_syntax == DEFLATED:
        data = inflate(data)
    walker = _Walker(data, transfer_syntax != IMPLICIT_LITTLE, transfer_syntax != EXPLICIT_BIG)
    values = walker.values
    try:
        try:
            walker.dataset(0, len(data), 0)
        except struct.error as exc:  # cannot happen after the bounds checks; kept so nothing escapes as a crash
            raise UnusableDataset(f"the dataset is truncated ({exc})") from exc
        if values.get("SOPInstanceUID") != sop_instance_uid:
            raise UnusableDataset("the dataset's SOP Instance UID differs from the one in the C-STORE request")
        if values.get("SOPClassUID") != sop_class_uid:
            raise UnusableDataset("the dataset's SOP Class UID differs from the one in the C-STORE request")
        if sop_class_uid not in NO_PIXELS:
            _check_pixels(walker, values)
    except UnusableDataset as exc:
        study = str(values.get("StudyInstanceUID", ""))
        if study and values.get("SOPInstanceUID") == sop_instance_uid:
            raise UnusableDatasetOf(str(exc), study, sop_instance_uid) from exc
        raise
    return values


def _check_pixels(walker: _Walker, values: dict[str, Any]) -> None:
    length = walker.pixel_length
    if length is None:
        raise UnusableDataset("an image without pixel data")
    missing = [k for k in IMAGE_PIXEL if values.get(k) in (None, "")]
    if missing:
        raise UnusableDataset("an image without " + ", ".join(missing))
    if length < 0:  # encapsulated: fragments checked by the walk, decoded by ingest
        return
    rows, columns = _number(values.get("Rows"), 0), _number(values.get("Columns"), 0)
    bits = _number(values.get("BitsAllocated"), 0)
    if not rows or not columns or bits not in (1, 8, 16, 32, 64):
        raise UnusableDataset("an image without valid rows, columns or bits allocated")
    n = rows * columns * _number(values.get("SamplesPerPixel"), 1) * _number(values.get("NumberOfFrames"), 1)
    expected = (n + 7) // 8 if bits == 1 else n * bits // 8
    if length not in (expected, expected + 1):
        raise UnusableDataset(f"the pixel data holds {length} bytes where the image needs {expected}")


def _meta_element(tag_element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    if vr == b"OB":
        return struct.pack("<HH2sHL", 2, tag_element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 2, tag_element, vr, len(value)) + value


def part10_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, implementation: str) -> bytes:
    """Zero preamble, ``DICM`` and the file meta information of a received dataset stored as it came."""
    group = _meta_element(0x0001, b"OB", b"\0\1", b"\0")
    group += _meta_element(0x0002, b"UI", sop_class_uid.encode("ascii"), b"\0")
    group += _meta_element(0x0003, b"UI", sop_instance_uid.encode("ascii"), b"\0")
    group += _meta_element(0x0010, b"UI", transfer_syntax.encode("ascii"), b"\0")
    group += _meta_element(0x0012, b"UI", implementation.encode("ascii"), b"\0")
    length = _meta_element(0x0000, b"UL", struct.pack("<L", len(group)), b"\0")
    return b"\0" * 128 + b"DICM" + length + group
