"""Reading form bodies the way browsers send them: urlencoded or multipart (sendBeacon)."""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Final
from urllib.parse import parse_qsl

MAX_FIELDS: Final = 128
"""Fields read from one body; the rest are counted, not parsed. A pixel hit has 30-70.
The bound is on the work: the email parser costs ~170 µs a part on the loop, so a 1 MiB
beacon of 17,000 parts stalled every other request for seconds (bench/hostile.py)."""
_BOUNDARY: Final = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def form_pairs(body: bytes, content_type: str | None) -> list[tuple[str, str]]:
    """Key/value pairs of a urlencoded or multipart/form-data body, keys percent-decoded, at
    most MAX_FIELDS of them.

    Anything else (or an undecodable body) yields no pairs; the caller decides what that means.
    """
    return form_fields(body, content_type)[0]


def form_fields(body: bytes, content_type: str | None) -> tuple[list[tuple[str, str]], int]:
    """`form_pairs`, and how many fields past MAX_FIELDS were left unread."""
    if not body:
        return [], 0
    ctype = (content_type or "").lower()
    if ctype.startswith("multipart/form-data"):
        return _multipart_pairs(body, content_type or "")
    text = body.decode("utf-8", errors="replace")
    fields = text.split("&", MAX_FIELDS)
    dropped = 0
    if len(fields) > MAX_FIELDS:
        dropped = fields.pop().count("&") + 1
    return parse_qsl("&".join(fields), keep_blank_values=True), dropped


def _multipart_pairs(body: bytes, content_type: str) -> tuple[list[tuple[str, str]], int]:
    body, dropped = _first_parts(body, content_type)
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return [], 0
    pairs: list[tuple[str, str]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        pairs.append((name, _part_text(part)))
    return pairs, dropped


def _first_parts(body: bytes, content_type: str) -> tuple[bytes, int]:
    """The body cut after its first MAX_FIELDS parts (closed again), and how many were cut.
    Finding delimiters is a C-speed scan; only what is kept goes to the email parser."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        return body, 0
    delimiter = b"--" + match[1].strip().encode("latin-1", "replace")
    at = -1
    for _ in range(MAX_FIELDS + 1):
        at = body.find(delimiter, at + 1)
        if at < 0:
            return body, 0
    rest = body[at:]
    dropped = rest.count(delimiter) - (1 if rest.rstrip().endswith(delimiter + b"--") else 0)
    return body[:at] + delimiter + b"--\r\n", max(dropped, 0)


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    return ""
