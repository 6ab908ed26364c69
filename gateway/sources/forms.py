"""Reading form bodies the way browsers send them: urlencoded or multipart (sendBeacon)."""

from __future__ import annotations

from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl


def form_pairs(body: bytes, content_type: str | None) -> list[tuple[str, str]]:
    """Key/value pairs of a urlencoded or multipart/form-data body, keys percent-decoded.

    Anything else (or an undecodable body) yields no pairs; the caller decides what that means.
    """
    if not body:
        return []
    ctype = (content_type or "").lower()
    if ctype.startswith("multipart/form-data"):
        return _multipart_pairs(body, content_type or "")
    text = body.decode("utf-8", errors="replace")
    return parse_qsl(text, keep_blank_values=True)


def _multipart_pairs(body: bytes, content_type: str) -> list[tuple[str, str]]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return []
    pairs: list[tuple[str, str]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        pairs.append((name, _part_text(part)))
    return pairs


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    return ""
