"""`on_denied: limited` (docs/consent.md §7): the event without the identifiers consent forbids."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Final
from urllib.parse import unquote_plus

from gateway.destinations import CLICK_PARAMS, IDENTIFIERS
from gateway.event import HASHED_USER_FIELDS, Event

# Every field hashed before storage counts as an identifier, address fields included: the
# contract strips "hashed personal data", and city + zip + date of birth narrow a person down.
STRIPPED_USER_FIELDS: Final = HASHED_USER_FIELDS
"""User fields `limited` clears, besides every vendor identifier (`User.ids`) whose declaration
does not say `limited_keeps` (none does). `user_agent` stays and `client_ip` is truncated."""
_KEPT_IDS: Final = frozenset(name for name, i in IDENTIFIERS.items() if i.limited_keeps)

OTHER_CLICK_IDS: Final = frozenset({"msclkid"})
"""Click IDs of platforms the gateway has no destination for (Microsoft Ads)."""
CLICK_ID_PARAMS: Final = CLICK_PARAMS | OTHER_CLICK_IDS
"""URL parameters `limited` removes from `event_source_url` and `referrer`: every platform's
click IDs as its destination declares them (and Google's `_gl` cross-domain linker, which
carries the client ID and gclid), which would otherwise travel on inside the page URL."""

_IPV4_PREFIX: Final = 24
_IPV6_PREFIX: Final = 48


def truncate_ip(ip: str | None) -> str | None:
    """IPv4 to its /24, IPv6 to its /48 (docs/consent.md §7); None when it is not an address.

    An IPv4-mapped IPv6 address is treated as the IPv4 address it carries.
    """
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        mask = ((1 << _IPV4_PREFIX) - 1) << (32 - _IPV4_PREFIX)
        return str(ipaddress.IPv4Address(int(address) & mask))
    mask = ((1 << _IPV6_PREFIX) - 1) << (128 - _IPV6_PREFIX)
    return str(ipaddress.IPv6Address(int(address) & mask))  # drops any %zone too


def strip_click_ids(url: str | None) -> str | None:
    """The URL without click-ID query parameters; otherwise unchanged, byte for byte."""
    if not url or "?" not in url:
        return url
    base, _, rest = url.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    params = query.split("&")
    kept = [p for p in params if unquote_plus(p.partition("=")[0]).lower() not in CLICK_ID_PARAMS]
    if len(kept) == len(params):
        return url
    return base + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment


def limited(event: Event) -> Event:
    """The event stripped of identifiers, for `on_denied: limited` (docs/consent.md §7).

    Cleared: hashed personal data (address fields included), external_id, fbp/fbc/ttp and click
    IDs, and the raw hit (a `forward` destination would resend every identifier in it).
    Truncated: the client IP. Kept: the user agent and the business data.
    """
    user = replace(
        event.user,
        **dict.fromkeys(STRIPPED_USER_FIELDS),
        client_ip=truncate_ip(event.user.client_ip),
        ids={k: v for k, v in event.user.ids.items() if k in _KEPT_IDS},
    )
    return replace(
        event,
        user=user,
        event_source_url=strip_click_ids(event.event_source_url),
        referrer=strip_click_ids(event.referrer),
        raw=None,
    )
