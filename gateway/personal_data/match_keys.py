"""Match keys: the rules a canonical user field is normalized by before it is hashed.

The platforms differ on details (docs/platforms.md §1.3, §2.3, §3.3): the `+` of a phone number,
dots in a Gmail address, spaces in a name. Each rule here is named for what it does; each
destination declares its table (`Rules`: canonical field → rule) in its own module, and hashes
only through `hashed`/`clear` here, never by itself. A `forward` hashing a tag's plain-text
value by the same table as the platform's own destination therefore always agrees with it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Final

from gateway.personal_data import normalize
from gateway.personal_data.hashing import already_hashed, hash_normalized

Normalizer = Callable[[str], str | None]
Rule = Callable[[str | None], Normalizer]
"""A normalizer for the person's country (phones, states and zips depend on it)."""
Rules = Mapping[str, Rule]
"""One platform's table: canonical user field → its rule. A field not in it is never sent."""

_GMAIL_DOMAINS: Final = frozenset({"gmail.com", "googlemail.com"})


def phone_digits(country: str | None) -> Normalizer:
    """Digits with the calling code, no `+`."""

    def normalized(raw: str) -> str | None:
        e164 = normalize.phone_e164(raw, country)
        return e164[1:] if e164 else (normalize.digits(raw).lstrip("0") or None)

    return normalized


def state_code_or_letters(country: str | None) -> Normalizer:
    """A US state as its 2-letter code; elsewhere letters only."""

    def normalized(raw: str) -> str | None:
        code = normalize.country_code(country) if country else None
        if code in (None, "us"):
            state = normalize.us_state_code(raw)
            if state:
                return state
        return normalize.letters_only(raw) or None

    return normalized


def zip_code(country: str | None) -> Normalizer:
    """Lowercase without spaces or dashes; a US zip cut to its first five digits."""

    def normalized(raw: str) -> str | None:
        value = re.sub(r"[\s-]+", "", normalize.nfc(raw).lower())
        code = normalize.country_code(country) if country else None
        if code == "us" or (code is None and re.fullmatch(r"\d{5}(\d{4})?", value)):
            return value[:5] or None
        return value or None

    return normalized


def lower(raw: str) -> str | None:
    """Trimmed and lowercased (NFC again after lowercasing, so a second pass changes nothing)."""
    return unicodedata.normalize("NFC", normalize.nfc(raw).lower()) or None


def letters(raw: str) -> str | None:
    """Letters only, lowercase."""
    return normalize.letters_only(raw) or None


def email_bare_local(raw: str) -> str | None:
    """An address lowercased, the local part cut at its first `+` and held to
    letters and digits, on every domain, as Reddit wants it (its "Manual Advanced
    Matching" guide, whose vector is `Al.ice$+Apple@Example.Com` → `alice@example.com`)."""
    value = normalize.email(lower(raw) or "")
    if value is None:
        return None
    local, _, domain = value.rpartition("@")
    local = "".join(c for c in local.partition("+")[0] if c.isalnum())
    return f"{local}@{domain}" if local else None


def email_dotless_gmail(raw: str) -> str | None:
    """Trimmed, lowercased; for gmail.com and googlemail.com without dots in the local part."""
    value = normalize.email(lower(raw) or "")
    if value is None:
        return None
    local, _, domain = value.rpartition("@")
    if domain in _GMAIL_DOMAINS:
        local = local.replace(".", "")
    return f"{local}@{domain}" if local else None


def phone_e164(country: str | None) -> Normalizer:
    """E.164 with the `+` (Google and TikTok want the calling code; without one it is dropped)."""

    def normalized(raw: str) -> str | None:
        value = normalize.phone_e164(raw, country)
        # A number that reads back as another one (libphonenumber drops a NANP `1` after `+1`
        # again and again) is no number: drop it rather than hash a moving target.
        return value if value and normalize.phone_e164(value, None) == value else None

    return normalized


def name_words(raw: str) -> str | None:
    """Digits and symbols removed, lowercased, trimmed (inner spaces kept)."""
    return normalize.letters_only(lower(raw) or "", keep_spaces=True) or None


def street(raw: str) -> str | None:
    """A street address: punctuation removed, lowercased, spaces collapsed."""
    return " ".join(re.sub(r"[^\w\s]", "", raw.lower()).split()) or None


def country_upper(raw: str) -> str | None:
    """ISO 3166-1 alpha-2, upper case."""
    code = normalize.country_code(raw)
    return code.upper() if code else None


def state_code_or_lower(country: str | None) -> Normalizer:
    """Trimmed and lowercased; a US state as its two-letter code (`California` → `ca`)."""

    def state(raw: str) -> str | None:
        code = normalize.country_code(country) if country else None
        return (normalize.us_state_code(raw) if code in (None, "us") else None) or lower(raw)

    return state


def fixed(normalizer: Normalizer) -> Rule:
    """The rule of a normalizer that needs no country (`fixed(lower)`)."""

    def for_country(country: str | None) -> Normalizer:
        return normalizer

    return for_country


def rule(rules: Rules, field: str, country: str | None = None) -> Normalizer | None:
    """How a platform (`rules`, its table) normalizes a canonical user field (`country` helps
    phones and zips); None when the platform takes no such field."""
    make = rules.get(field)
    return make(country) if make else None


def hashed(rules: Rules, field: str, value: str | None, country: str | None = None) -> str | None:
    """The value as the platform of `rules` wants it hashed (hex), a made hash passed through;
    None when empty, unusable or not a field of the platform."""
    if value is None:
        return None  # most fields of most events: no normalizer to build for them
    normalizer = rule(rules, field, country)
    return hash_normalized(value, normalizer) if normalizer else None


def clear(rules: Rules, field: str, value: str | None, country: str | None = None) -> str | None:
    """A field the platform wants in clear, normalized. A value that arrived hashed (a Meta pixel
    hashes the city) cannot be un-hashed and would only be noise: it is dropped."""
    normalizer = rule(rules, field, country)
    if value is None or normalizer is None or already_hashed(value.strip()) is not None:
        return None
    return normalizer(value)
