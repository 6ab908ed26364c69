"""Canonical event names to and from each platform's names (docs/platforms.md §4.2).

One table, read in both directions. A name not in it passes through unchanged.
"""

from __future__ import annotations

import difflib
from typing import Final

# canonical: (meta, ga4, tiktok)
_TABLE: Final[dict[str, tuple[str, str, str]]] = {
    "page_view": ("PageView", "page_view", "Pageview"),
    "view_content": ("ViewContent", "view_item", "ViewContent"),
    "search": ("Search", "search", "Search"),
    "add_to_cart": ("AddToCart", "add_to_cart", "AddToCart"),
    "add_to_wishlist": ("AddToWishlist", "add_to_wishlist", "AddToWishlist"),
    "initiate_checkout": ("InitiateCheckout", "begin_checkout", "InitiateCheckout"),
    "add_payment_info": ("AddPaymentInfo", "add_payment_info", "AddPaymentInfo"),
    "purchase": ("Purchase", "purchase", "Purchase"),
    "lead": ("Lead", "generate_lead", "Lead"),
    "complete_registration": ("CompleteRegistration", "sign_up", "CompleteRegistration"),
    "contact": ("Contact", "contact", "Contact"),
    "subscribe": ("Subscribe", "subscribe", "Subscribe"),
    "start_trial": ("StartTrial", "start_trial", "StartTrial"),
}
_COLUMN: Final = {"meta": 0, "ga4": 1, "tiktok": 2}

# TikTok renamed these on 1 May 2025; the old names still arrive from older pages.
# The no-script image sends `PageView` where ttq.page() sends `Pageview`.
_LEGACY_INBOUND: Final = {
    "tiktok": {"CompletePayment": "purchase", "SubmitForm": "lead", "PageView": "page_view"}
}

_OUTBOUND: Final = {
    vendor: {canonical: names[col] for canonical, names in _TABLE.items()}
    for vendor, col in _COLUMN.items()
}
_INBOUND: Final = {
    vendor: {names[col]: canonical for canonical, names in _TABLE.items()}
    | _LEGACY_INBOUND.get(vendor, {})
    for vendor, col in _COLUMN.items()
}


# Every platform's spelling of a canonical name, for events that name no vendor (the server
# API): a shop's backend often copies `Purchase` from Meta's docs while the pixel's `Purchase`
# became `purchase`, and the two copies would never deduplicate.
_ANY_INBOUND: Final = {
    name: canonical for table in _INBOUND.values() for name, canonical in table.items()
}


def register(vendor: str, label: str, outbound: dict[str, str]) -> None:
    """A destination's own table (canonical → its name), read both ways like the one above; its
    module calls this once. Where two canonical events share a name, the first listed wins back.
    `_ANY_INBOUND` keeps only the tags' vendors: a backend's `checkout` stays its own event."""
    _OUTBOUND[vendor] = dict(outbound)
    _INBOUND[vendor] = {}
    for canonical, name in outbound.items():
        _INBOUND[vendor].setdefault(name, canonical)
    _VENDOR_NAMES[vendor] = label


def to_canonical(vendor: str, name: str) -> str:
    """A platform's event name as the canonical snake_case name (unknown names unchanged)."""
    return _INBOUND[vendor].get(name, name)


def any_to_canonical(name: str) -> str:
    """Any platform's name of a canonical event (`Purchase`, `CompletePayment`,
    `begin_checkout`) as the canonical name; other names unchanged."""
    return _ANY_INBOUND.get(name, name)


def from_canonical(vendor: str, name: str) -> str:
    """The canonical name as the platform calls it (unknown names unchanged)."""
    return _OUTBOUND[vendor].get(name, name)


_VENDOR_NAMES: Final = {"meta": "Meta", "ga4": "GA4", "tiktok": "TikTok"}


def _folded(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def never_matches(name: str) -> str | None:
    """Why a destination's `events:` entry can never match, or None when it can.

    `events:` compares canonical names, and every source maps a platform's names to them, so a
    platform's spelling of a canonical event (`Purchase`, GA4's `generate_lead`) never arrives
    as such; nor does a different case or a near miss of a canonical name (`purchse`). Any other
    name passes through the sources unchanged (a custom event, GA4's `scroll`), so it can match.
    """
    if name in _TABLE:
        return None
    for vendor, inbound in _INBOUND.items():
        if (canonical := inbound.get(name)) is not None:
            label = _VENDOR_NAMES[vendor]
            return f"{label}'s name for the canonical event '{canonical}'; write '{canonical}'"
    folded = _folded(name)
    for canonical in _TABLE:
        if _folded(canonical) == folded:
            return f"canonical names are snake_case; write '{canonical}'"
    # 0.85: `purchse`, `leads` and `page_veiw` are caught; GA4's own `add_shipping_info` or
    # `view_cart` (0.67 from the nearest canonical name) are not.
    close = difflib.get_close_matches(name.lower(), _TABLE, n=1, cutoff=0.85)
    if close:
        return f"no source produces it; did you mean '{close[0]}'?"
    return None


def is_known(name: str) -> bool:
    """True for the canonical names of docs/http.md §4."""
    return name in _TABLE
