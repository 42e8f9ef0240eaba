"""Identifiers out of texts shown without patient-data rights (REQ-PRIV-656).

``/api/health`` answers without authentication and the service engineer's screen shows the log tail; neither
may show a patient's or an instance's identifiers. :func:`redact_identifiers` replaces DICOM UIDs (Study, Series,
SOP Instance UIDs: dotted numbers, as in PS3.5 section 9) and absolute file paths (which carry UIDs, and on a
USB medium often patient names) with placeholders; the rest of the sentence stays readable.
"""

from __future__ import annotations

import re

#: A DICOM UID: at least three dotted components of digits (dates and versions such as 1.2 or 3.11.4 stay).
_UID = re.compile(r"(?<![\w.])[0-2](?:\.\d+){3,}(?![\w.])")
#: An absolute path: a slash-separated run of at least two components, up to white space or quoting.
_PATH = re.compile(r"(?<![\w:/.])/(?:[^\s/'\"`,;:()<>]+/)+[^\s/'\"`,;:()<>]*")

UID_PLACEHOLDER = "<uid>"
PATH_PLACEHOLDER = "<path>"


def redact_identifiers(text: str, paths: bool = True) -> str:
    """``text`` with DICOM UIDs (and, with ``paths``, absolute file paths) replaced by placeholders."""
    if paths:
        text = _PATH.sub(PATH_PLACEHOLDER, text)
    return _UID.sub(UID_PLACEHOLDER, text)
