"""The text of a PDF as Chromium (Skia) writes it, for tests where no PDF library is installed.

Uses ``pypdf`` when it is importable. Otherwise a small reader of what Skia emits: objects, Flate streams,
Type0/Identity-H fonts with ``/ToUnicode`` CMaps (``bfchar`` and ``bfrange``), and the ``Tf``/``Tj``/``TJ``
operators of the page content streams. Text of one ``BT ... ET`` block is joined, blocks are separated by
newlines. It is a test reader, not a general PDF parser.
"""

from __future__ import annotations

import re
import unicodedata
import zlib

#: CJK Radicals Supplement characters that fonts map shared glyphs to (NFKC leaves these unchanged).
_RADICALS = {"\u2ec6": "角", "\u2ee3": "骨", "\u2ec5": "见", "\u2ed3": "长", "\u2ed4": "门", "\u2ee2": "马",
             "\u2edd": "食", "\u2ee9": "黄", "\u2eec": "齐", "\u2eee": "齿", "\u2ef0": "龙", "\u2ecf": "阝"}

_OBJ = re.compile(rb"(?:^|[\r\n])(\d+) 0 obj\s")


def _objects(data: bytes) -> dict[int, tuple[bytes, bytes | None]]:
    """Object number -> (dictionary text, decoded stream or None); streams are cut by their /Length."""
    out: dict[int, tuple[bytes, bytes | None]] = {}
    pos = 0
    while (m := _OBJ.search(data, pos)) is not None:
        start = m.end()
        stream_at = data.find(b"stream", start)
        end_at = data.find(b"endobj", start)
        if stream_at == -1 or stream_at > end_at:
            out[int(m.group(1))] = (data[start:end_at], None)
            pos = end_at
            continue
        head = data[start:stream_at]
        body = stream_at + len(b"stream") + (2 if data[stream_at + 6:stream_at + 8] == b"\r\n" else 1)
        length = re.search(rb"/Length (\d+)(?! \d+ R)", head)
        raw = data[body:body + int(length.group(1))] if length else data[body:data.find(b"endstream", body)]
        out[int(m.group(1))] = (head, zlib.decompress(raw) if b"/FlateDecode" in head else raw)
        pos = data.find(b"endobj", body + len(raw))
    return out


def _cmap(text: bytes) -> dict[int, str]:
    table: dict[int, str] = {}
    for block in re.findall(rb"beginbfchar(.*?)endbfchar", text, re.DOTALL):
        for src, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            table[int(src, 16)] = bytes.fromhex(dst.decode()).decode("utf-16-be")
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", text, re.DOTALL):
        for lo, hi, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            start = int(dst, 16)
            for i, code in enumerate(range(int(lo, 16), int(hi, 16) + 1)):
                table[code] = chr(start + i)
    return table


def pdf_text(data: bytes) -> str:
    """All text of the PDF ``data``."""
    try:
        import pypdf  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        pypdf = None
    if pypdf is not None:
        import io

        return "\n".join(page.extract_text() or "" for page in pypdf.PdfReader(io.BytesIO(data)).pages)
    objects = _objects(data)
    fonts: dict[int, tuple[dict[int, str], int]] = {}  # font object -> (code -> text, bytes per code)
    for num, (head, _) in objects.items():
        m = re.search(rb"/ToUnicode (\d+) 0 R", head)
        if m and objects.get(int(m.group(1)), (b"", None))[1] is not None:
            fonts[num] = (_cmap(objects[int(m.group(1))][1] or b""), 2 if b"/Type0" in head else 1)
    names: dict[bytes, int] = {}
    for head, _ in objects.values():
        for block in re.findall(rb"/Font\s*<<(.*?)>>", head, re.DOTALL):
            for name, ref in re.findall(rb"/(\w+) (\d+) 0 R", block):
                names[name] = int(ref)
    lines: list[str] = []
    for head, stream in objects.values():
        if stream is None or b"BT" not in stream or b"/ToUnicode" in head:
            continue
        table: tuple[dict[int, str], int] = ({}, 1)
        for block in re.findall(rb"BT(.*?)ET", stream, re.DOTALL):
            parts: list[str] = []
            for tok in re.finditer(rb"/(\w+)\s+[\d.]+\s+Tf|\[(.*?)\]\s*TJ|<([0-9A-Fa-f]*)>\s*Tj", block, re.DOTALL):
                if tok.group(1):
                    table = fonts.get(names.get(tok.group(1), -1), ({}, 1))
                    continue
                for hexa in re.findall(rb"<([0-9A-Fa-f]*)>", tok.group(2) or b"<" + (tok.group(3) or b"") + b">"):
                    codes = bytes.fromhex(hexa.decode())
                    cmap, width = table
                    parts += [cmap.get(int.from_bytes(codes[i:i + width], "big"), "\ufffd")
                              for i in range(0, len(codes) - width + 1, width)]  # fmt: skip
            lines.append("".join(parts))
    return "\n".join(lines)


def normalised(text: str) -> str:
    """``text`` with compatibility characters folded (NFKC, radicals), ligatures split and all whitespace removed,
    so words broken across lines by the layout compare equal to the source string likewise normalised."""
    folded = unicodedata.normalize("NFKC", "".join(_RADICALS.get(c, c) for c in text))
    return re.sub(r"\s+", "", folded)
