"""Personal data where none belongs: free-form fields and free text that hold a person."""

from __future__ import annotations

import re
from enum import Enum
from functools import lru_cache
from typing import Final

import phonenumbers

_NON_DIGITS: Final = re.compile(r"\D+")


# Free-form fields (custom.extra, GA4 user properties, a pixel's custom data) that hold a person:
# a shop's `ep.customer_phone`, `cd[email]` or `shipping_address`. A key is read as words (split
# on punctuation and camelCase, trailing digits dropped: "addressLine1" → address, line) and
# judged by how it ends, so `hotel_id`, `streetwear_collection` and `birthday_coupon` stay. A
# name alone is not enough where the value can be checked: a phone field needs 7 digits or more
# (`phone_model: "iPhone 15"` stays), and flags never count (`is_mobile: true`).
_ENDINGS: Final = frozenset(
    {
        "firstname",
        "lastname",
        "fullname",
        "surname",
        "givenname",
        "familyname",
        "customername",
        "billingname",
        "shippingname",
        "recipientname",
        "contactname",
        "address",
        "addressline",
        "street",
        "streetaddress",
        "zip",
        "zipcode",
        "postcode",
        "postalcode",
        "dob",
        "birthdate",
        "dateofbirth",
        "ssn",
        "ip",
        "userid",
        "externalid",
        "customerid",
    }
)
_PHONE_WORDS: Final = frozenset({"phone", "telephone", "tel", "mobile", "cell", "cellphone"})
_NUMBER_WORDS: Final = frozenset({"number", "no", "nr", "num"})
_WORD: Final = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_EMAIL_IN_TEXT: Final = re.compile(r"[^@\s\"'<>/:]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
# `sku-1@2x.jpg` names an image, `jane@example.com.png` still holds an address.
_FILE_ENDING: Final = re.compile(
    r"\.(?:jpe?g|png|gif|webp|svg|avif|heic|heif|tiff?|bmp|ico|pdf|css|js|mp4|webm)$", re.I
)
_MAX_DEPTH: Final = 8


def personal_field(key: str, value: object) -> bool:
    """True when a free-form field holds personal data: by its name and the kind of value it
    holds, or an email address or a `+` phone number anywhere in it (keys and values, nested
    ones included)."""
    return _personal(str(key), value, 0)


def _personal(key: str, value: object, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return True  # nested deeper than anything a tag sends: not worth the risk
    kind = _key_kind(key)
    if kind is _Kind.ADDRESS:
        return True
    if isinstance(value, str) and kind is _Kind.PLAIN and "@" not in value and "+" not in value:
        return False  # the common case, decided without a regex on the value
    if _named_personal(kind, value):
        return True
    if isinstance(value, dict):
        return any(_personal(str(k), v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_personal(key, v, depth + 1) for v in value)
    return personal_text(value)


class _Kind(Enum):
    PLAIN = "plain"
    PERSONAL = "personal"  # a person's name, address, ... by the key's last words
    PHONE = "phone"  # a phone number when the value has the digits of one
    ADDRESS = "address"  # the key itself holds an email address


def _key_kind(key: str) -> _Kind:
    if "@" in key:
        # Never cached: a key holding an address must not stay in memory.
        return _Kind.ADDRESS if holds_email(key) else _word_kind(key)
    return _word_kind_cached(key) if len(key) <= 64 else _word_kind(key)


def _word_kind(key: str) -> _Kind:
    words = [w.lower() for w in _WORD.findall(key) if not w.isdigit()]
    if not words:
        return _Kind.PLAIN
    endings = {words[-1], "".join(words[-2:]), "".join(words[-3:])}
    if endings & _ENDINGS:
        return _Kind.PERSONAL
    while len(words) > 1 and words[-1] in _NUMBER_WORDS:
        words.pop()  # phone_number, mobile_no
    return _Kind.PHONE if words[-1] in _PHONE_WORDS else _Kind.PLAIN


_word_kind_cached: Final = lru_cache(maxsize=4096)(_word_kind)
"""Field names repeat (`utm_source`, `coupon`) on every hit: each is read as words once."""


def _named_personal(kind: _Kind, value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return False  # a flag (`has_email: true`), or a container checked item by item
    if kind is _Kind.PERSONAL:
        return True
    if kind is _Kind.PHONE:
        return len(_NON_DIGITS.sub("", str(value))) >= 7
    return False


def holds_email(value: object) -> bool:
    """True when a text holds something shaped like an email address (not an image name)."""
    if not isinstance(value, str) or "@" not in value:
        return False
    for match in _EMAIL_IN_TEXT.finditer(value):
        domain = _FILE_ENDING.sub("", match.group(1))
        labels = domain.split(".")
        if len(labels) >= 2 and labels[-1].isalpha() and len(labels[-1]) >= 2:
            return True
    return False


# A phone number in free text: a `+`, its country code and at least 7 more digits, separated
# only as people write them (`+1 (415) 555-0100`, `+44 20 7946 0958`). Without the `+` a run of
# digits is as likely an order number or a timestamp, and is left alone.
_PHONE_IN_TEXT: Final = re.compile(r"(?<![\w+])\+[1-9][\d \t().\-/]{6,24}\d")


def holds_phone(value: object) -> bool:
    """True when a text holds a phone number written with `+` and its country code."""
    if not isinstance(value, str) or "+" not in value:
        return False
    for match in _PHONE_IN_TEXT.finditer(value):
        digits = _NON_DIGITS.sub("", match.group())
        if 8 <= len(digits) <= 15:
            try:
                number = phonenumbers.parse(match.group(), None)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_possible_number(number):
                return True
    return False


def personal_text(value: object) -> bool:
    """True when a free text (a title, a product name, a note) holds an email address or a
    phone number. Names cannot be told from other words: free text must not carry them."""
    return holds_email(value) or holds_phone(value)


def personal_by_name(key: str, value: object) -> bool:
    """True when a field is personal by its name alone (`first_name`, a `tel` with the digits
    of a phone number, a key that is an address), whatever else its value holds."""
    kind = _key_kind(key)
    return kind is _Kind.ADDRESS or _named_personal(kind, value)


def personal_param(name: str, value: str) -> bool:
    """True when a URL or form parameter is personal data, judged as a free-form field is."""
    return personal_field(name, value)
