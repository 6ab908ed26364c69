"""Removing query parameters from a URL while leaving every other byte of it as it was."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import unquote_plus


def redact_params(url: str, names: Collection[str]) -> str:
    """`url` without the parameters called one of `names` (lower case; matched case-insensitively).

    Parameters are looked for in the query and in a fragment that carries its own (`#/cart?x=1`
    in single-page shops, `#access_token=...` in login redirects): browsers report both as part
    of the page URL. Everything else, the order of the other parameters, their encoding, empty
    pieces, is kept as it was; a query or fragment left empty loses its `?` (`#` is kept).
    """
    if "?" not in url and "#" not in url:
        return url
    head, hash_mark, fragment = url.partition("#")
    head = _redact_query(head, names)
    if hash_mark:
        if "?" in fragment:
            fragment = _redact_query(fragment, names)
        elif "=" in fragment:
            fragment = _redact_pairs(fragment, names)
    return head + hash_mark + fragment


def _redact_query(text: str, names: Collection[str]) -> str:
    """`text` is `<anything>?<query>`; the query loses the named pairs."""
    before, mark, query = text.partition("?")
    if not mark:
        return text
    kept = _redact_pairs(query, names)
    if kept == query:
        return text
    return before + mark + kept if kept else before


def _redact_pairs(query: str, names: Collection[str]) -> str:
    pieces = query.split("&")
    kept = [p for p in pieces if not p or _name(p) not in names]
    if len(kept) == len(pieces):
        return query
    # Pieces that were empty (`a=1&&b=2`) only survive between pairs that are left.
    return "&".join(kept).strip("&") if any(kept) else ""


def _name(piece: str) -> str:
    # `%65mail` and `Email` are still `email`: a browser or tag may encode either way.
    return unquote_plus(piece.partition("=")[0]).lower()
