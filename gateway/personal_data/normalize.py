"""Normalizing personal data before it is hashed: the pieces the platforms' rules share.

Each destination composes these into its platform's rules (Meta, Google and TikTok differ on
details such as the `+` of a phone number or dots in a Gmail address).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from functools import lru_cache
from typing import Final

import phonenumbers
import pycountry

_NON_DIGITS: Final = re.compile(r"\D+")


def nfc(text: str) -> str:
    """Unicode NFC, trimmed."""
    return unicodedata.normalize("NFC", text).strip()


def email(text: str) -> str | None:
    """Trimmed, lowercased; None unless it looks like an address."""
    value = nfc(text).lower()
    return value if "@" in value and not value.startswith("@") and not value.endswith("@") else None


def letters_only(text: str, keep_spaces: bool = False) -> str:
    """Lowercase, with punctuation, digits and symbols removed; UTF-8 letters kept."""
    out = []
    for ch in nfc(text).lower():
        category = unicodedata.category(ch)
        if category.startswith(("L", "M")) or (keep_spaces and ch == " "):
            out.append(ch)
    return " ".join("".join(out).split()) if keep_spaces else "".join(out)


@lru_cache(maxsize=512)
def country_code(text: str) -> str | None:
    """ISO 3166-1 alpha-2, lowercase, from a code or an English name (`United States` → `us`)."""
    value = nfc(text)
    if not value:
        return None
    if len(value) == 2 and value.isalpha():
        return value.lower() if pycountry.countries.get(alpha_2=value.upper()) else None
    try:
        found = pycountry.countries.lookup(value)
    except LookupError:
        return None
    return str(found.alpha_2).lower()


def phone_e164(text: str, country: str | None) -> str | None:
    """E.164 with `+`, using the country to add a missing calling code; None when impossible.

    A national trunk `0` goes (`+44 (0)7911 123456` → `+447911123456`).
    """
    raw = nfc(text)
    if not _NON_DIGITS.sub("", raw):
        return None
    region = (country_code(country) or "").upper() if country else ""
    candidates = [raw]
    if not raw.startswith("+"):
        digits = _NON_DIGITS.sub("", raw).lstrip("0")
        if raw.startswith("00"):
            candidates = ["+" + digits]
        elif not region:
            # No country: assume the number already starts with its calling code.
            candidates = ["+" + digits]
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region or None)
        except phonenumbers.NumberParseException:
            continue
        if number.national_number:
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


@lru_cache(maxsize=256)
def us_state_code(text: str) -> str | None:
    """The 2-letter code of a US state from its code or name, lowercase; None if not one."""
    value = nfc(text)
    if len(value) == 2 and value.isalpha():
        found = pycountry.subdivisions.get(code=f"US-{value.upper()}")  # type: ignore[no-untyped-call]
        return value.lower() if found else None
    wanted = letters_only(value)
    for sub in pycountry.subdivisions.get(country_code="US") or []:  # type: ignore[no-untyped-call]
        if letters_only(str(sub.name)) == wanted:
            return str(sub.code).split("-", 1)[1].lower()
    return None


_DATE_FORMATS: Final = (
    re.compile(r"(?P<y>\d{4})-?(?P<m>\d{1,2})-?(?P<d>\d{1,2})"),
    re.compile(r"(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})"),
    re.compile(r"(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})"),
)


def date_yyyymmdd(text: str) -> str | None:
    """A date of birth as `YYYYMMDD` (year 1900 to now), from ISO, US or dotted forms."""
    value = nfc(text)
    for pattern in _DATE_FORMATS:
        match = pattern.fullmatch(value)
        if not match:
            continue
        try:
            day = date(int(match["y"]), int(match["m"]), int(match["d"]))
        except ValueError:
            return None
        if 1900 <= day.year <= date.today().year:
            return day.strftime("%Y%m%d")
        return None
    return None


def gender_initial(text: str) -> str | None:
    """`f` or `m` from a gender word or initial."""
    value = letters_only(text)[:1]
    return value if value in ("f", "m") else None


def digits(text: str) -> str:
    """Only the ASCII digits of a string."""
    return _NON_DIGITS.sub("", text)
