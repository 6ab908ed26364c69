"""Page URLs (`event_source_url`, `referrer`, a forwarded hit's `dl`/`dr`/`rl`): a query
parameter whose value is a person goes before anything is stored or sent, whatever it is called.

`?email=jane@example.com`, `?customer_email=`, `?user[email]=`, `?e=`, `?tel=`, a phone number
written with its `+` under any name, and the same in a `#/cart?…` fragment. Parameters named in
`redact_url_params` go too. Every other byte of the URL stays as it was.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import unquote

from gateway.personal_data.detect import personal_param
from gateway.rules.url_params import without_params


def scrub_url(url: str, names: Collection[str] = frozenset()) -> str:
    """`url` without personal parameters, nor those called one of `names` (lower case)."""
    if "=" not in url:
        return url
    return without_params(url, lambda name, value: name.lower() in names or _personal(name, value))


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
