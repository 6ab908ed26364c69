"""Removing query parameters from a URL while leaving every other byte of it as it was."""

from __future__ import annotations

from collections.abc import Callable, Collection
from urllib.parse import quote, unquote, unquote_plus

Judge = Callable[[str, str], bool]
"""(decoded name, decoded value) → True to remove the pair."""


def redact_params(url: str, names: Collection[str]) -> str:
    """`url` without the parameters called one of `names` (lower case; any case matches)."""
    return without_params(url, lambda name, _: name.lower() in names)


def without_params(url: str, drop: Judge) -> str:
    """`url` without the parameters `drop` judges, looked for in the query and in a fragment that
    carries its own (`#/cart?x=1` in single-page shops, `#access_token=...` in login redirects):
    browsers report both as part of the page URL. Everything else, the order of the other
    parameters, their encoding, empty pieces, is kept as it was; a query or fragment left empty
    loses its `?` (`#` is kept).
    """
    if "?" not in url and "#" not in url:
        return url
    head, hash_mark, fragment = url.partition("#")
    head = _redact_query(head, drop)
    if hash_mark:
        if "?" in fragment:
            fragment = _redact_query(fragment, drop)
        elif "=" in fragment:
            fragment = _redact_pairs(fragment, drop)
    return head + hash_mark + fragment


def _redact_query(text: str, drop: Judge) -> str:
    """`text` is `<anything>?<query>`; the query loses the judged pairs."""
    before, mark, query = text.partition("?")
    if not mark:
        return text
    kept = _redact_pairs(query, drop)
    if kept == query:
        return text
    return before + mark + kept if kept else before


def _redact_pairs(query: str, drop: Judge) -> str:
    pieces = query.split("&")
    kept = [p for p in pieces if not p or not _judged(p, drop)]
    if len(kept) == len(pieces):
        return query
    # Pieces that were empty (`a=1&&b=2`) only survive between pairs that are left.
    return "&".join(kept).strip("&") if any(kept) else ""


def _judged(piece: str, drop: Judge) -> bool:
    # `%65mail` and `Email` are still `email`: a browser or tag may encode either way.
    name, _, value = piece.partition("=")
    return drop(unquote_plus(name), unquote_plus(value)) or (
        # A `+` in a query is a space, but a tag may have left a phone number's `+` unescaped.
        "+" in value and drop(unquote_plus(name), unquote(value))
    )


def rewrite_pairs(query: str, rewrite: Callable[[str, str], str | None]) -> str | None:
    """A urlencoded text with some values rewritten, every other byte as it came; None when
    nothing changed.

    `rewrite(name, value)` gets the decoded pair and returns the decoded value to keep (the same
    one: the pair stays byte for byte), a new one (encoded as a browser's encodeURIComponent
    would), or None to drop the pair.
    """
    pieces = query.split("&")
    out: list[str] = []
    changed = False
    for piece in pieces:
        if not piece:
            out.append(piece)
            continue
        raw_name, _eq, raw_value = piece.partition("=")
        name, value = unquote_plus(raw_name), unquote_plus(raw_value)
        new = rewrite(name, value)
        if new == value:
            out.append(piece)
            continue
        changed = True
        if new is not None:
            out.append(raw_name + "=" + quote_component(new))
    if not changed:
        return None
    return "&".join(p for p in out if p)


def quote_component(value: str) -> str:
    """As JavaScript's encodeURIComponent, which the tags use for their parameters."""
    return quote(value, safe="-_.!~*'()")
