"""Mutated real instances for the receiver fuzz test, and an oracle independent of the receiver (pydicom).

A mutant keeps its source's file meta (so the sender proposes the source's transfer syntax and names its UIDs) with
dataset bytes that are truncated, carry a changed length field, a changed VR or flipped bits. Every mutant gets its
own SOP Instance UID (same length, changed in meta and dataset alike) before it is mutated.
"""

from __future__ import annotations

import io
import logging
import random
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.datadict import DicomDictionary, dictionary_VR
from pydicom.filereader import data_element_generator, read_file_meta_info
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.values import convert_SQ
from receiver_helpers import split_part10

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
VRS = ["AE", "AS", "CS", "DA", "DS", "FD", "IS", "LO", "OB", "OW", "PN", "SH", "SQ", "UI", "UL", "UN", "US", "ZZ"]
#: Type 1 attributes of the Image Pixel module (DICOM PS3.3 C.7.6.3).
IMAGE_PIXEL = ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored",
               "PixelRepresentation")  # fmt: skip
KINDS = ("truncate", "length", "vr", "bitflip", "none")


@dataclass(frozen=True)
class Mutant:
    """One instance to send: its file, SOP Instance UID and how it was made."""

    path: Path
    sop_uid: str
    kind: str


def _elements(dataset: bytes, transfer_syntax: str) -> list[tuple[int, int, int, bool]]:
    """``(header start, value start, length field size, explicit)`` of each top-level element."""
    implicit = transfer_syntax == ImplicitVRLittleEndian
    little = transfer_syntax != ExplicitVRBigEndian
    out = []
    for raw in data_element_generator(io.BytesIO(dataset), implicit, little):
        vr = raw.VR or ""
        long_form = implicit or vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV")
        size = 4 if long_form else 2
        header = 8 if implicit or size == 2 else 12
        out.append((raw.value_tell - header, raw.value_tell, size, not implicit))
    return out


def make_mutants(sources: list[Path], out: Path, n: int, seed: int) -> list[Mutant]:
    """``n`` mutants of ``sources`` (round robin) written under ``out``; every fifth is left intact."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    parsed = []
    for src in sources:
        meta, dataset = split_part10(src)
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        ts = str(ds.file_meta.TransferSyntaxUID)
        parsed.append((meta, dataset, str(ds.SOPInstanceUID), ts, _elements(dataset, ts)))
    mutants = []
    for i in range(n):
        meta, dataset, uid, ts, elements = parsed[i % len(parsed)]
        new_uid = uid[: -7] + f".9{i:05d}" if len(uid) > 12 else uid
        new_meta = meta.replace(uid.encode(), new_uid.encode())
        data = bytearray(dataset.replace(uid.encode(), new_uid.encode()))
        kind = "none" if i % 5 == 0 else KINDS[rng.randrange(4)]
        if kind == "truncate":
            cut = rng.randrange(len(data)) if rng.random() < 0.3 else rng.randrange(min(len(data), 3000))
            del data[cut:]
        elif kind == "length":
            _, value, size, _ = elements[rng.randrange(len(elements))]
            at = value - size
            if size == 4:
                choice = rng.choice([0xFFFFFFF0, 0xFFFFFFFF, 0, rng.randrange(1 << 32), -1, 1])
                current = struct.unpack_from("<L", data, at)[0]
                new = (current + choice) & 0xFFFFFFFF if choice in (-1, 1) else choice
                struct.pack_into("<L", data, at, new)
            else:
                struct.pack_into("<H", data, at, rng.choice([0xFFF0, 0xFFFF, 0, rng.randrange(1 << 16)]))
        elif kind == "vr":
            explicit = [e for e in elements if e[3]]
            if explicit:
                start = explicit[rng.randrange(len(explicit))][0]
                data[start + 4 : start + 6] = rng.choice(VRS).encode()
            else:
                kind = "bitflip"
        if kind == "bitflip":
            span = min(len(data), 4000) if rng.random() < 0.7 else len(data)
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(span)
                data[pos] ^= 1 << rng.randrange(8)
        path = out / f"m{i:04d}.dcm"
        path.write_bytes(new_meta + bytes(data))
        mutants.append(Mutant(path, new_uid, kind))
    return mutants


#: What pydicom logs where it reads past a structural error instead of failing (it is lenient; DICOM is not). An
#: unknown tag is only an error in explicit VR (there its VR bytes are garbage; in implicit VR it is just unknown).
STRUCTURAL = ("Expected sequence item", "Expected delimiter", "Unknown Value Representation")
STRUCTURAL_EXPLICIT = ("VR lookup failed",)
#: Rules of DICOM the receiver enforces inside sequences where pydicom reads on (the receiver's error comment names
#: them): item tags, delimiters, and values longer than what is left of their item (pydicom reads a short value
#: inside a sequence silently; at the top level the oracle checks lengths itself).
STRICTER_THAN_PYDICOM = ("sequence item", "delimiter", "claims")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def readable(path: Path, sop_uid: str) -> bool:
    """The oracle: pydicom reads the file completely (every element and item value, sequences inside UN elements
    of undefined length too) without logging a structural error and every value is as long as its length field;
    explicit VRs agree with DICOM's data dictionary; the identifiers are valid and agree with the file meta; an
    image has the Image Pixel module's type 1 attributes and complete pixel data (native: as long as the image;
    encapsulated: its fragments parse). pydicom alone is more lenient than DICOM, hence the extra rules."""
    collect = _Collect()
    logger = logging.getLogger("pydicom")
    logger.addHandler(collect)
    switch = pydicom.config.assume_implicit_vr_switch
    pydicom.config.assume_implicit_vr_switch = False  # garbage VR bytes are an error, not a hint at implicit VR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts = read_file_meta_info(path).TransferSyntaxUID
            structural = STRUCTURAL + (STRUCTURAL_EXPLICIT if ts != ImplicitVRLittleEndian else ())
            return _complete(path, sop_uid) and not any(s in m for m in collect.messages for s in structural)
    except Exception:
        return False
    finally:
        pydicom.config.assume_implicit_vr_switch = switch
        logger.removeHandler(collect)


def _vr_as_defined(tag: int, vr: str) -> bool:
    """An explicit VR agrees with DICOM's data dictionary (UN always allowed, OB and OW interchangeable)."""
    if tag not in DicomDictionary or vr == "UN":
        return True
    allowed = set(dictionary_VR(tag).split(" or "))
    if allowed & {"OB", "OW"}:
        allowed |= {"OB", "OW"}
    return vr in allowed or "NONE" in allowed


def _whole_values(path: Path) -> bool:
    """Every top-level element's value is as long as its length field says (pydicom reads short values silently)."""
    _, dataset = split_part10(path)
    ts = read_file_meta_info(path).TransferSyntaxUID
    implicit, little = ts == ImplicitVRLittleEndian, ts != ExplicitVRBigEndian
    for raw in data_element_generator(io.BytesIO(dataset), implicit, little):
        if raw.length != 0xFFFFFFFF and len(raw.value or b"") != raw.length:
            return False
    return True


def _complete(path: Path, sop_uid: str) -> bool:
    if not _whole_values(path):
        return False
    ds = pydicom.dcmread(path)
    explicit = ds.file_meta.TransferSyntaxUID != ImplicitVRLittleEndian
    for elem in ds.iterall():
        _ = elem.value
        if elem.VR == "UN" and elem.is_undefined_length:
            convert_SQ(elem.value, True, True)
        if explicit and not _vr_as_defined(elem.tag, elem.VR):
            return False
    keys = [str(ds.get(k, "")).strip() for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    if not all(UID_RE.match(k) and len(k) <= 64 for k in keys) or keys[2] != sop_uid:
        return False
    if str(ds.SOPClassUID) != str(ds.file_meta.MediaStorageSOPClassUID):
        return False
    if "PixelData" not in ds or any(k not in ds for k in IMAGE_PIXEL):
        return False
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return len(list(pydicom.encaps.generate_fragments(ds.PixelData))) > 0
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames
    bits = int(ds.BitsAllocated)
    expected = (n + 7) // 8 if bits == 1 else n * bits // 8
    return len(ds.PixelData) in (expected, expected + 1)
