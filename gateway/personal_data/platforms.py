"""Each platform's rules for a canonical user field: how it is normalized before hashing.

Meta, Google and TikTok differ on details (docs/platforms.md §1.3, §2.3, §3.3): the `+` of a phone
number, dots in a Gmail address, spaces in a name. A destination asks `rule(platform, field)`
and never normalizes by itself, so a `forward` hashing a tag's plain-text value and the
platform's own destination hashing the canonical field always agree.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Final, Literal

from gateway.personal_data import normalize
from gateway.personal_data.hashing import already_hashed, hash_normalized

Platform = Literal["meta", "google", "tiktok", "pinterest", "reddit", "snapchat"]
Normalizer = Callable[[str], str | None]

_GMAIL_DOMAINS: Final = frozenset({"gmail.com", "googlemail.com"})


# --- Meta (docs/platforms.md §1.3) ----------------------------------------------------------------


def meta_phone(country: str | None) -> Normalizer:
    """Digits with the calling code, no `+`."""

    def normalized(raw: str) -> str | None:
        e164 = normalize.phone_e164(raw, country)
        return e164[1:] if e164 else (normalize.digits(raw).lstrip("0") or None)

    return normalized


def meta_state(country: str | None) -> Normalizer:
    """A US state as its 2-letter code; elsewhere letters only."""

    def normalized(raw: str) -> str | None:
        code = normalize.country_code(country) if country else None
        if code in (None, "us"):
            state = normalize.us_state_code(raw)
            if state:
                return state
        return normalize.letters_only(raw) or None

    return normalized


def meta_zip(country: str | None) -> Normalizer:
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


# --- Reddit (docs/platforms.md §7) --------------------------------------------------------------


def reddit_email(raw: str) -> str | None:
    """Reddit's canonical address: lowercased, the local part cut at its first `+` and held to
    letters and digits, on every domain (Reddit's "Manual Advanced Matching" guide, whose
    vector is `Al.ice$+Apple@Example.Com` → `alice@example.com`)."""
    value = normalize.email(lower(raw) or "")
    if value is None:
        return None
    local, _, domain = value.rpartition("@")
    local = "".join(c for c in local.partition("+")[0] if c.isalnum())
    return f"{local}@{domain}" if local else None


# --- Google (docs/platforms.md §2.3) --------------------------------------------------------------


def google_email(raw: str) -> str | None:
    """Trimmed, lowercased; for gmail.com and googlemail.com without dots in the local part."""
    value = normalize.email(lower(raw) or "")
    if value is None:
        return None
    local, _, domain = value.rpartition("@")
    if domain in _GMAIL_DOMAINS:
        local = local.replace(".", "")
    return f"{local}@{domain}" if local else None


def e164_phone(country: str | None) -> Normalizer:
    """E.164 with the `+` (Google and TikTok want the calling code; without one it is dropped)."""

    def normalized(raw: str) -> str | None:
        value = normalize.phone_e164(raw, country)
        # A number that reads back as another one (libphonenumber drops a NANP `1` after `+1`
        # again and again) is no number: drop it rather than hash a moving target.
        return value if value and normalize.phone_e164(value, None) == value else None

    return normalized


google_phone = e164_phone


def google_name(raw: str) -> str | None:
    """Digits and symbols removed, lowercased, trimmed (inner spaces kept)."""
    return normalize.letters_only(lower(raw) or "", keep_spaces=True) or None


def google_street(raw: str) -> str | None:
    """A street address: punctuation removed, lowercased, spaces collapsed."""
    return " ".join(re.sub(r"[^\w\s]", "", raw.lower()).split()) or None


def google_country(raw: str) -> str | None:
    """ISO 3166-1 alpha-2, upper case."""
    code = normalize.country_code(raw)
    return code.upper() if code else None


def google_postal(raw: str) -> str | None:
    """Trimmed and lowercased."""
    return lower(raw)


def tiktok_state(country: str | None) -> Normalizer:
    """Trimmed and lowercased; a US state as its two-letter code (`California` → `ca`)."""

    def state(raw: str) -> str | None:
        code = normalize.country_code(country) if country else None
        return (normalize.us_state_code(raw) if code in (None, "us") else None) or lower(raw)

    return state


# --- the table ------------------------------------------------------------------------------------

_RULES: Final[dict[str, dict[str, Callable[[str | None], Normalizer]]]] = {
    "meta": {
        "email": lambda _: normalize.email,
        "phone": meta_phone,
        "first_name": lambda _: letters,
        "last_name": lambda _: letters,
        "gender": lambda _: normalize.gender_initial,
        "date_of_birth": lambda _: normalize.date_yyyymmdd,
        "city": lambda _: letters,
        "state": meta_state,
        "zip": meta_zip,
        "country": lambda _: normalize.country_code,
        "external_id": lambda _: lower,
    },
    "google": {
        "email": lambda _: google_email,
        "phone": e164_phone,
        "first_name": lambda _: google_name,
        "last_name": lambda _: google_name,
        "street": lambda _: google_street,
        # Sent in clear (`clear`), never hashed:
        "city": lambda _: google_name,
        "state": lambda _: google_name,
        "zip": lambda _: google_postal,
        "country": lambda _: google_country,
        "external_id": lambda _: lower,
    },
    "tiktok": {
        "email": lambda _: normalize.email,
        "phone": e164_phone,
        "external_id": lambda _: lower,
        "first_name": lambda _: lower,
        "last_name": lambda _: lower,
        "zip": lambda _: lower,
        # Sent in clear (`clear`), as Stape maps them; TikTok publishes no normalization.
        "city": lambda _: lower,
        "state": tiktok_state,
        "country": lambda _: normalize.country_code,
    },
    # https://developers.pinterest.com/docs/api/v5/events-create (`user_data`): lowercase;
    # phone digits with the country code, no `+` or leading zeros; city without spaces or
    # punctuation; state a two-letter code; zip digits (a US one its first five).
    "pinterest": {
        "email": lambda _: normalize.email,
        "phone": meta_phone,
        "first_name": lambda _: lower,
        "last_name": lambda _: lower,
        "gender": lambda _: normalize.gender_initial,
        "date_of_birth": lambda _: normalize.date_yyyymmdd,
        "city": lambda _: letters,
        "state": meta_state,
        "zip": meta_zip,
        "country": lambda _: normalize.country_code,
        "external_id": lambda _: lower,
    },
    # Reddit's match keys: the email as above, the phone in E.164, the external ID as given
    # (lowercased, as every other platform here takes it).
    "reddit": {
        "email": lambda _: reddit_email,
        "phone": e164_phone,
        "external_id": lambda _: lower,
    },
    # https://developers.snap.com/api/marketing-api/Conversions-API/Parameters: email trimmed and
    # lowercased; phone digits with the country code, no `00`, `+` or leading zero; names
    # lowercase letters only (UTF-8 kept: `raphaël`).
    "snapchat": {
        "email": lambda _: normalize.email,
        "phone": meta_phone,
        "first_name": lambda _: letters,
        "last_name": lambda _: letters,
        "gender": lambda _: normalize.gender_initial,
        "date_of_birth": lambda _: normalize.date_yyyymmdd,
        "city": lambda _: letters,
        "state": meta_state,
        "zip": meta_zip,
        "country": lambda _: normalize.country_code,
        "external_id": lambda _: lower,
    },
}


def rule(platform: Platform, field: str, country: str | None = None) -> Normalizer | None:
    """How `platform` normalizes a canonical user field (`country` helps phones and zips); None
    when the platform takes no such field."""
    make = _RULES[platform].get(field)
    return make(country) if make else None


def hashed(
    platform: Platform, field: str, value: str | None, country: str | None = None
) -> str | None:
    """The value as `platform` wants it hashed (hex), a made hash passed through; None when
    empty, unusable or not a field of the platform."""
    normalizer = rule(platform, field, country)
    return hash_normalized(value, normalizer) if normalizer else None


def clear(
    platform: Platform, field: str, value: str | None, country: str | None = None
) -> str | None:
    """A field the platform wants in clear, normalized. A value that arrived hashed (a Meta pixel
    hashes the city) cannot be un-hashed and would only be noise: it is dropped."""
    normalizer = rule(platform, field, country)
    if value is None or normalizer is None or already_hashed(value.strip()) is not None:
        return None
    return normalizer(value)
