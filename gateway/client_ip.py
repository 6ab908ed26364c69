"""The client's IP address behind trusted proxies (docs/http.md §1)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(texts: Sequence[str], path: str, problems: list[str]) -> tuple[IPNetwork, ...]:
    """The networks a config lists (`10.0.0.0/8`, `2001:db8::/32`, a bare address), host bits
    ignored; one problem under `path[i]` for each entry that is not one."""
    nets = []
    for i, text in enumerate(texts):
        try:
            nets.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            problems.append(f"{path}[{i}]: not an IP network: {text!r}")
    return tuple(nets)


@lru_cache(maxsize=4096)
def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = text.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "203.0.113.7:51234"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=4096)
def _trusted_cached(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: tuple[IPNetwork, ...]
) -> bool:
    return any(address in net for net in nets)


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Sequence[IPNetwork]
) -> bool:
    return _trusted_cached(address, tuple(nets))


def forwarded_for(lines: Sequence[str]) -> str | None:
    """Every `X-Forwarded-For` header line as one list. A proxy may append its own line (HAProxy's
    `option forwardfor`) instead of extending the client's: RFC 9110 §5.3 reads repeated lines
    as one comma-joined list, and reading only the first would take the client-written one."""
    return ", ".join(lines) if lines else None


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]
) -> str | None:
    """The socket peer, or, when the peer is a trusted proxy, the right-most `X-Forwarded-For`
    address that is not itself a trusted proxy. A client can forge the left of that header,
    never the right.
    """
    address = _parse(peer) if peer else None
    if address is None:
        return None
    if not forwarded_for or not _trusted(address, trusted):
        return str(address)
    for hop in reversed(forwarded_for.split(",")):
        candidate = _parse(hop)
        if candidate is None:
            # Garbage in the chain: stop at the last address we could vouch for.
            return str(address)
        if not _trusted(candidate, trusted):
            return str(candidate)
        address = candidate
    return str(address)
