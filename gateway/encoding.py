"""Request bodies under a `Content-Encoding`, decoded by the handlers rather than by aiohttp.

aiohttp's parser decodes bodies itself by default. A body that is not what its header says
(`Content-Encoding: gzip` on plain bytes) then fails inside the parser: the handler sees an
error it cannot tell from a broken connection, and when the handler answered without reading
the body (a 404, a 405), aiohttp's read of the rest after the answer fails too and it drops the
connection, so the caller never sees the answer (the fuzzing bench found 118 such requests in
10,000). Decoded here, a bad body is an ordinary bad input: a 400 with its reason on the server
API, the vendor's normal answer on a browser route.
"""

from __future__ import annotations

import zlib
from typing import Final

SUPPORTED: Final = ("gzip", "x-gzip", "deflate", "identity")


class EncodingError(ValueError):
    """The body is not what its Content-Encoding says, or the coding is not supported."""


class DecodedTooLarge(ValueError):
    """The decoded body is over the limit (a small gzip can expand a thousandfold)."""


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """`body` with its codings undone, last applied first; at most `limit` bytes."""
    if not content_encoding:
        return body
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, coding, limit)
        elif coding == "deflate":
            try:
                body = _inflate(body, zlib.MAX_WBITS, coding, limit)
            except EncodingError:
                # HTTP's deflate is zlib-wrapped, but some clients send raw deflate.
                body = _inflate(body, -zlib.MAX_WBITS, coding, limit)
        else:
            raise EncodingError(
                f"Content-Encoding {coding[:40]} is not supported (gzip or deflate)"
            )
    return body


def _inflate(body: bytes, wbits: int, coding: str, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise EncodingError(f"body is not valid {coding}") from exc
    if len(out) > limit:
        raise DecodedTooLarge(f"body over {limit} bytes once decoded")
    if not decompressor.eof:
        raise EncodingError(f"body is not valid {coding} (it ends too soon)")
    return out
