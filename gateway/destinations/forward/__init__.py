"""`forward`: the original browser hit, passed on to its vendor's own collection endpoint.

The method, query and body go out as they came, to the configured endpoint only: the host never
comes from the request (no open proxy), and the path is the vendor's endpoint the hit was meant
for. Two things change: the client's IP and user agent are added (GA4's `_uip`, as Google's own
first-party proxy does; `User-Agent`), and personal data a tag sent in plain text is hashed by
the vendor's rules before it is stored, as the contract wants for everything on disk.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import ClassVar, Final, Literal
from urllib.parse import quote

from pydantic import Field

from gateway.destinations.base import (
    Answer,
    Destination,
    Item,
    OutRequest,
    Rejected,
    Result,
    Verdict,
    classify_by_status,
    shown_url,
)
from gateway.destinations.forward.gate import MATCH_RULES_OF, scrubbed
from gateway.event import JSON, Event
from gateway.personal_data.match_keys import Rules
from gateway.settings import DestinationSettings

Vendor = Literal["ga4", "meta", "tiktok"]

DEFAULT_ENDPOINTS: Final[dict[str, str]] = {
    "ga4": "https://www.google-analytics.com",
    "meta": "https://www.facebook.com",
    "tiktok": "https://analytics.tiktok.com",
}
_METHODS: Final = frozenset({"GET", "POST"})


class ForwardSettings(DestinationSettings):
    """`type: forward`."""

    type: Literal["forward"]
    vendor: Vendor
    """Only hits from this vendor's tag are forwarded, to this vendor."""
    endpoint: str | None = Field(default=None, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    """None: the vendor's own collection host."""


def vendor_path(vendor: str, path: str) -> str:
    """Which of the vendor's collection endpoints a hit was for, whatever path it arrived on
    (a source's path is configurable; the vendor's is not)."""
    slash = "/" if path.endswith("/") else ""
    if vendor == "meta":
        return "/tr" + slash
    if vendor == "ga4":
        return "/g/collect"
    tail = path.rstrip("/")
    for suffix in ("/act", "/track"):
        if tail.endswith(suffix):
            return "/api/v2/pixel" + suffix + slash
    return "/api/v2/pixel" + slash


# --- the destination ---------------------------------------------------------------------------


class Forward(Destination):
    """The browser hit, resent to its vendor."""

    type = "forward"
    settings_model = ForwardSettings
    max_batch = 1  # one hit, one request
    can_limit = False  # the original hit cannot be stripped of identifiers and stay itself

    settings: ForwardSettings
    match_rules_of: ClassVar[dict[str, Rules]] = MATCH_RULES_OF
    """Filled by the registry: vendor → its own destination's `match_rules`, so a tag's
    plain-text value is hashed here exactly as that destination hashes the canonical field."""

    @property
    def requires(self) -> tuple[str, ...]:
        """Consent a forwarded hit needs when the config says nothing: the ad purposes for
        Meta and TikTok. None for GA4: gtag itself sends a hit under denied consent (a
        cookieless ping Google models from, its gcs/gcd saying what was denied), so a forward
        passes it on, stripped of what consent forbids; `requires:` can still block it."""
        configured = self.settings.requires
        if configured is not None:
            return configured
        if self.settings.vendor == "ga4":
            return ()
        return ("ad_storage", "ad_user_data")

    @property
    def target(self) -> str:
        """The configured endpoint, else the vendor's collection host."""
        return (self.settings.endpoint or DEFAULT_ENDPOINTS[self.settings.vendor]).rstrip("/")

    def accepts(self, event: Event) -> bool:
        return event.raw is not None and event.raw.vendor == self.settings.vendor

    def prepare(self, event: Event) -> JSON | Rejected:
        raw = event.raw
        if raw is None:
            # A server event, or a hit `on_denied: limited` stripped (its raw hit goes too).
            return Rejected("forward: no browser hit to forward")
        if raw.vendor != self.settings.vendor:
            return Rejected(f"forward: not a {self.settings.vendor} hit")
        if raw.method not in _METHODS:
            return Rejected(f"forward: method {raw.method[:10]} is not forwarded")
        # A GA4 hit can hold many events, all carrying the same raw hit: each delivery forwards
        # the query with its own line, so the hit goes once in all, and an event the consent or
        # field rules kept from this destination never leaves in a neighbour's request.
        line = event.ga4.line if raw.vendor == "ga4" and event.ga4 else None
        clean = scrubbed(event, raw, line)
        if isinstance(clean, Rejected):
            return clean
        query, body = clean
        return {
            "method": raw.method,
            "path": vendor_path(raw.vendor, raw.path),
            "query": query,
            "body": base64.b64encode(body).decode(),
            "content_type": raw.content_type,
            "client_ip": event.user.client_ip,
            "user_agent": event.user.user_agent,
            "accept_language": raw.accept_language,
        }

    def build_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        return [self._request(item) for item in items]

    def _request(self, item: Item) -> OutRequest:
        p = item.payload
        query: str = p["query"]
        ip: str | None = p.get("client_ip")
        headers: dict[str, str] = {}
        if self.settings.vendor == "ga4":
            if ip:
                query += ("&" if query else "") + "_uip=" + quote(ip, safe="")
        elif ip:
            # Meta's and TikTok's pixel endpoints have no IP parameter (unverified that they read
            # this header; it costs nothing).
            headers["X-Forwarded-For"] = ip
        if p.get("user_agent"):
            headers["User-Agent"] = p["user_agent"]
        if p.get("accept_language"):
            headers["Accept-Language"] = p["accept_language"]
        body = base64.b64decode(p["body"]) if p["body"] else None
        if body is not None and p.get("content_type"):
            headers["Content-Type"] = p["content_type"]
        url = self.target + p["path"] + (f"?{query}" if query else "")
        return OutRequest(p["method"], url, [item], headers, body)

    def classify(self, request: OutRequest, answer: Answer) -> Result:
        if answer.status is not None and 200 <= answer.status < 300:
            # The body is the vendor's pixel answer (a GIF for Meta): nothing to read in it.
            return Result(Verdict.SENT, f"HTTP {answer.status}")
        return classify_by_status(answer)

    def describe(self) -> str:
        return f"forward {self.settings.vendor} hits to {shown_url(self.target)}"
