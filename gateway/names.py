"""Canonical event names to and from each platform's names (docs/platforms.md §4.2).

The canonical names are listed here; each vendor declares its own table (canonical → its name)
in its own module with `register`, read in both directions. A name not in a table passes
through unchanged. A tag's vendor registers from its source module, so its table is there
before anything parses a hit; a vendor with only a destination registers from that.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Final

CANONICAL: Final = (
    "page_view",
    "view_content",
    "search",
    "add_to_cart",
    "add_to_wishlist",
    "initiate_checkout",
    "add_payment_info",
    "purchase",
    "lead",
    "complete_registration",
    "contact",
    "subscribe",
    "start_trial",
)
"""The canonical event names of docs/http.md §4."""

_OUTBOUND: Final[dict[str, dict[str, str]]] = {}
_INBOUND: Final[dict[str, dict[str, str]]] = {}
_VENDOR_NAMES: Final[dict[str, str]] = {}

# Every tag's spelling of a canonical name, for events that name no vendor (the server API): a
# shop's backend often copies `Purchase` from Meta's docs while the pixel's `Purchase` became
# `purchase`, and the two copies would never deduplicate.
_ANY_INBOUND: Final[dict[str, str]] = {}


def register(
    vendor: str,
    label: str,
    outbound: Mapping[str, str],
    *,
    tag: bool = False,
    inbound: Mapping[str, str] | None = None,
) -> None:
    """A vendor's own table (canonical → its name), read both ways; its module calls this once.

    Where two canonical events share a name, the first listed wins back. `inbound`: names its
    tag still sends besides (a renamed event's old name → canonical). `tag`: a browser tag's
    vendor, whose names the server API takes for the canonical ones; a destination-only
    vendor's stay a backend's own events (`checkout` is not Pinterest's purchase there).
    """
    _OUTBOUND[vendor] = dict(outbound)
    table: dict[str, str] = {}
    for canonical, name in outbound.items():
        table.setdefault(name, canonical)
    table.update(inbound or {})
    _INBOUND[vendor] = table
    _VENDOR_NAMES[vendor] = label
    if tag:
        _ANY_INBOUND.update(table)


def to_canonical(vendor: str, name: str) -> str:
    """A platform's event name as the canonical snake_case name (unknown names unchanged)."""
    return _INBOUND[vendor].get(name, name)


def any_to_canonical(name: str) -> str:
    """Any tag's name of a canonical event (`Purchase`, `CompletePayment`, `begin_checkout`) as
    the canonical name; other names unchanged."""
    return _ANY_INBOUND.get(name, name)


def from_canonical(vendor: str, name: str) -> str:
    """The canonical name as the platform calls it (unknown names unchanged)."""
    return _OUTBOUND[vendor].get(name, name)


def _folded(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def never_matches(name: str) -> str | None:
    """Why a destination's `events:` entry can never match, or None when it can.

    `events:` compares canonical names, and every source maps a platform's names to them, so a
    platform's spelling of a canonical event (`Purchase`, GA4's `generate_lead`) never arrives
    as such; nor does a different case or a near miss of a canonical name (`purchse`). Any other
    name passes through the sources unchanged (a custom event, GA4's `scroll`), so it can match.
    """
    if name in CANONICAL:
        return None
    for vendor, inbound in _INBOUND.items():
        if (canonical := inbound.get(name)) is not None:
            label = _VENDOR_NAMES[vendor]
            return f"{label}'s name for the canonical event '{canonical}'; write '{canonical}'"
    folded = _folded(name)
    for canonical in CANONICAL:
        if _folded(canonical) == folded:
            return f"canonical names are snake_case; write '{canonical}'"
    # 0.85: `purchse`, `leads` and `page_veiw` are caught; GA4's own `add_shipping_info` or
    # `view_cart` (0.67 from the nearest canonical name) are not.
    close = difflib.get_close_matches(name.lower(), CANONICAL, n=1, cutoff=0.85)
    if close:
        return f"no source produces it; did you mean '{close[0]}'?"
    return None


def is_known(name: str) -> bool:
    """True for the canonical names of docs/http.md §4."""
    return name in CANONICAL
