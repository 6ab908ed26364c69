"""Text for a terminal: what came from the internet must not drive the operator's terminal."""

from __future__ import annotations

import re
from typing import Final

_UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls (ESC starts a sequence; U+009B is a one-byte CSI), DEL, line and
paragraph separators, and the bidi embeddings and isolates that reorder the rest of a line."""


def printable(text: str) -> str:
    r"""`text` with every control character written as an escape (`\x1b`, `\u009b`, `\u202e`), so an
    event ID like `ord-ESC[2J` prints as `ord-\x1b[2J` instead of clearing the screen."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    # \uNNNN above ASCII, so a JSON line stays valid JSON once escaped.
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"
