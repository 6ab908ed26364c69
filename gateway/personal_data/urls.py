"""Page URLs (`event_source_url`, `referrer`, a forwarded hit's `dl`/`dr`/`rl`): a query
parameter whose value is a person goes before anything is stored or sent, whatever it is called.

`?email=jane@example.com`, `?customer_email=`, `?user[email]=`, `?e=`, `?tel=`, a phone number
written with its `+` under any name, and the same in a `#/cart?…` fragment. Parameters named in
`redact_url_params` go too. Every other byte of the URL stays as it was.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final
from urllib.parse import unquote

from gateway.personal_data.detect import personal_by_name, personal_param
from gateway.rules.url_params import without_params


def scrub_url(url: str, names: Collection[str] = frozenset()) -> str:
    """`url` without personal parameters, nor those called one of `names` (lower case)."""
    if "=" not in url:
        return url
    if _VALUE_MARKS.search(url) is None:
        # No value can hold an address or a `+` number (nor an encoded one): only names can
        # tell, and most page URLs are decided here without decoding a value.
        return without_params(
            url, lambda name, value: name.lower() in names or personal_by_name(name, value)
        )
    return without_params(url, lambda name, value: name.lower() in names or _personal(name, value))


# What a value holding an address or a `+` number shows even encoded (`%40`, `%2B`, `%25` for
# a nested URL); a `+` before a letter is a space (`q=wool+socks`).
_VALUE_MARKS: Final = re.compile(r"@|%40|%2b|%25|\+\d", re.IGNORECASE)


def _personal(name: str, value: str) -> bool:
    # A URL inside a parameter (`?next=https%3A%2F%2F…%3Fm%3Djane%2540…`) is encoded once more
    # for each level it is nested: judge every level.
    for _ in range(4):
        if personal_param(name, value):
            return True
        if "%" not in value:
            return False
        value = unquote(value)
    return False


def scrub_optional(url: str | None, names: Collection[str] = frozenset()) -> str | None:
    """As `scrub_url`; None stays None, and a URL left empty becomes None."""
    return (scrub_url(url, names) or None) if url else url
