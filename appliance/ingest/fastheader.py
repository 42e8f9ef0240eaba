"""A fast reader for the header tags ingest needs, for the common case: a Part 10 file (preamble + ``DICM``) whose
data set is implicit or explicit VR little endian, without per-frame functional groups or a Siemens mosaic.

It walks the element stream with ``struct``, converts only the ~30 tags ingest uses, skips sequences, and stops
at Pixel Data, recording its file offset. Anything unusual returns ``None`` and the caller uses pydicom, so this
path only ever speeds things up; it never decides what a file means.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMPLICIT_LE = "1.2.840.10008.1.2"
#: Data set encodings this reader handles: implicit LE, and explicit LE (native and every encapsulated syntax).
_NOT_LITTLE_EXPLICIT = frozenset({"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.99"})
PIXEL_DATA = 0x7FE00010
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"})
#: Files that need pydicom (functional groups, CSA mosaic headers).
_FALLBACK_TAGS = frozenset({0x52009230, 0x52009229})
HEAD_BYTES = 1 << 17

#: tag -> (keyword, VR) of the tags ingest reads.
WANTED: dict[int, tuple[str, str]] = {
    0x00080008: ("ImageType", "CS"),
    0x00080016: ("SOPClassUID", "UI"),
    0x00080018: ("SOPInstanceUID", "UI"),
    0x00080060: ("Modality", "CS"),
    0x00080070: ("Manufacturer", "LO"),
    0x0008103E: ("SeriesDescription", "LO"),
    0x00180050: ("SliceThickness", "DS"),
    0x00180088: ("SpacingBetweenSlices", "DS"),
    0x00181120: ("GantryDetectorTilt", "DS"),
    0x00181164: ("ImagerPixelSpacing", "DS"),
    0x00185100: ("PatientPosition", "CS"),
    0x0020000D: ("StudyInstanceUID", "UI"),
    0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00200011: ("SeriesNumber", "IS"),
    0x00200012: ("AcquisitionNumber", "IS"),
    0x00200013: ("InstanceNumber", "IS"),
    0x00200032: ("ImagePositionPatient", "DS"),
    0x00200037: ("ImageOrientationPatient", "DS"),
    0x00200052: ("FrameOfReferenceUID", "UI"),
    0x00280002: ("SamplesPerPixel", "US"),
    0x00280004: ("PhotometricInterpretation", "CS"),
    0x00280008: ("NumberOfFrames", "IS"),
    0x00280010: ("Rows", "US"),
    0x00280011: ("Columns", "US"),
    0x00280030: ("PixelSpacing", "DS"),
    0x00280100: ("BitsAllocated", "US"),
    0x00280101: ("BitsStored", "US"),
    0x00280103: ("PixelRepresentation", "US"),
    0x00281052: ("RescaleIntercept", "DS"),
    0x00281053: ("RescaleSlope", "DS"),
}


class _Fallback(Exception):
    """Internal: this file needs pydicom."""


@dataclass
class RawPixels:
    """Where Pixel Data sits: ``value_tell`` (file offset of the value) and ``length`` (0xFFFFFFFF: encapsulated)."""

    value_tell: int
    length: int


@dataclass
class FastDataset:
    """The few tags ingest reads, with the small part of pydicom's Dataset interface that it uses."""

    values: dict[str, Any]
    file_meta: dict[str, str]
    _dict: dict[int, RawPixels] = field(default_factory=dict)
    original_encoding: tuple[bool, bool] = (False, True)

    def get(self, keyword: str, default: Any = None) -> Any:
        """Value of ``keyword`` or ``default``."""
        return self.values.get(keyword, default)

    def __contains__(self, keyword: object) -> bool:
        return keyword in self.values

    def __len__(self) -> int:
        return len(self.values) + len(self._dict)


def _convert(raw: bytes, vr: str) -> Any:
    if vr == "US":
        n = len(raw) // 2
        vals = struct.unpack(f"<{n}H", raw[: 2 * n])
        return vals[0] if n == 1 else list(vals)
    text = raw.decode("latin-1").strip("\x00 ")
    parts = [p.strip("\x00 ") for p in text.split("\\")]
    if vr in ("DS", "IS"):
        nums: list[Any] = []
        for p in parts:
            if not p:
                continue
            nums.append(int(float(p)) if vr == "IS" else float(p))
        if not nums:
            return None
        return nums[0] if len(nums) == 1 else nums
    return parts if len(parts) > 1 else text


class _Reader:
    def __init__(self, buf: bytes, implicit: bool) -> None:
        self.buf = buf
        self.implicit = implicit

    def header(self, pos: int) -> tuple[int, bytes | None, int, int]:
        """(tag, vr, length, value position) of the element at ``pos``."""
        b = self.buf
        if pos + 8 > len(b):
            raise _Fallback("header runs past the bytes read")
        group, elem = struct.unpack_from("<HH", b, pos)
        tag = (group << 16) | elem
        if group == 0xFFFE or self.implicit:
            (length,) = struct.unpack_from("<I", b, pos + 4)
            return tag, None, length, pos + 8
        vr = b[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(b):
                raise _Fallback("header runs past the bytes read")
            (length,) = struct.unpack_from("<I", b, pos + 8)
            return tag, vr, length, pos + 12
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise _Fallback("not an explicit VR")
        (length,) = struct.unpack_from("<H", b, pos + 6)
        return tag, vr, length, pos + 8

    def skip_sequence(self, pos: int) -> int:
        """Position after an undefined-length sequence starting at ``pos`` (its first item)."""
        while True:
            tag, _, length, vpos = self.header(pos)
            if tag == SEQ_END:
                return vpos
            if tag != ITEM:
                raise _Fallback("malformed sequence")
            if length != UNDEFINED:
                pos = vpos + length
                continue
            pos = vpos
            while True:
                tag, vr, length, vpos = self.header(pos)
                if tag == ITEM_END:
                    pos = vpos
                    break
                pos = self.skip_sequence(vpos) if length == UNDEFINED else vpos + length
                if vr == b"UN" and length == UNDEFINED:
                    raise _Fallback("undefined-length UN")


def read_fast(path: Path) -> FastDataset | None:
    """The header of ``path``, or None when pydicom must read it (see module docstring)."""
    try:
        with path.open("rb") as fh:
            buf = fh.read(HEAD_BYTES)
            if buf[128:132] != b"DICM":
                return None
            try:
                return _parse(buf)
            except _Fallback:
                if len(buf) < HEAD_BYTES:
                    return None
            fh.seek(0)
            buf = fh.read(64 * 1024 * 1024)
            return _parse(buf)
    except (_Fallback, OSError, struct.error, ValueError, UnicodeDecodeError):
        return None


def _parse(buf: bytes) -> FastDataset:
    meta = _Reader(buf, implicit=False)
    pos = 132
    file_meta: dict[str, str] = {}
    while pos < len(buf):
        tag, _, length, vpos = meta.header(pos)
        if tag >> 16 != 0x0002:
            break
        if length == UNDEFINED:
            raise _Fallback("undefined length in file meta")
        if tag == 0x00020010:
            file_meta["TransferSyntaxUID"] = buf[vpos:vpos + length].decode("latin-1").strip("\x00 ")
        elif tag == 0x00020002:
            file_meta["MediaStorageSOPClassUID"] = buf[vpos:vpos + length].decode("latin-1").strip("\x00 ")
        pos = vpos + length
    ts = file_meta.get("TransferSyntaxUID", "")
    if not ts or ts in _NOT_LITTLE_EXPLICIT:
        raise _Fallback("data set encoding needs pydicom")
    implicit = ts == IMPLICIT_LE
    reader = _Reader(buf, implicit)
    values: dict[str, Any] = {}
    raw: dict[int, RawPixels] = {}
    while pos < len(buf):
        tag, vr, length, vpos = reader.header(pos)
        if tag in _FALLBACK_TAGS:
            raise _Fallback("functional groups")
        if tag == PIXEL_DATA:
            if length == UNDEFINED:  # encapsulated: pydicom checks the fragments reach their delimiter
                raise _Fallback("encapsulated pixel data")
            raw[PIXEL_DATA] = RawPixels(vpos, length)
            break
        if tag > PIXEL_DATA:
            break
        if length == UNDEFINED:
            if vr == b"UN" or (vr is not None and vr != b"SQ"):
                raise _Fallback("undefined length outside a sequence")
            pos = reader.skip_sequence(vpos)
            continue
        if vpos + length > len(buf):
            raise _Fallback("value runs past the bytes read")
        want = WANTED.get(tag)
        if want is not None:
            values[want[0]] = _convert(buf[vpos:vpos + length], want[1])
        pos = vpos + length
    image_type = values.get("ImageType")
    if image_type is not None and "MOSAIC" in (image_type if isinstance(image_type, list) else [image_type]):
        raise _Fallback("Siemens mosaic needs the CSA header")
    return FastDataset(values, file_meta, raw, (implicit, True))
