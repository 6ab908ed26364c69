"""SHA-256 for match keys, and recognizing values that are hashed already (docs/http.md §4)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Final

_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
_B64URL43: Final = re.compile(r"[A-Za-z0-9_-]{43}")


def sha256_hex(text: str) -> str:
    """Lowercase hex SHA-256 of the NFC UTF-8 bytes (NFD `valéry` would hash differently)."""
    return hashlib.sha256(unicodedata.normalize("NFC", text).encode("utf-8")).hexdigest()


def is_sha256_hex(value: str) -> bool:
    """64 hex characters: a hash made already, to pass through (lowercased)."""
    return _HEX64.fullmatch(value) is not None


def b64url_digest_to_hex(value: str) -> str | None:
    """gtag's 43-char base64url SHA-256 as hex, or None when it is not one."""
    if _B64URL43.fullmatch(value) is None:
        return None
    try:
        digest = base64.urlsafe_b64decode(value + "=")
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 32 else None


def already_hashed(value: str) -> str | None:
    """The value as lowercase hex when it is a SHA-256 in either form, else None."""
    if is_sha256_hex(value):
        return value.lower()
    return b64url_digest_to_hex(value)


def hash_fields(
    fields: Mapping[str, tuple[str | None, Callable[[str], str | None]]],
) -> dict[str, str]:
    """`{key: (value, normalize)}` to `{key: hash}`, leaving out what is empty or unusable."""
    out: dict[str, str] = {}
    for key, (value, normalize) in fields.items():
        hashed = hash_normalized(value, normalize)
        if hashed:
            out[key] = hashed
    return out


def hash_normalized(value: str | None, normalize: Callable[[str], str | None]) -> str | None:
    """Pass a made hash through, else normalize with `normalize(value)` and hash; None if empty."""
    if value is None:
        return None
    made = already_hashed(value.strip())
    if made is not None:
        return made
    normalized = normalize(value)
    if not normalized:
        return None
    return sha256_hex(normalized)
