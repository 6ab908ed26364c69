"""`forward`: the original browser hit, passed on to its vendor's own collection endpoint.

The method, query and body go out as they came, to the configured endpoint only: the host never
comes from the request (no open proxy), and the path is the vendor's endpoint the hit was meant
for. Two things change: the client's IP and user agent are added (GA4's `_uip`, as Google's own
first-party proxy does; `User-Agent`), and personal data a tag sent in plain text is hashed by
the vendor's rules before it is stored, as the contract wants for everything on disk.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Literal
from urllib.parse import quote

import orjson
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
from gateway.event import JSON, Event, RawHit
from gateway.personal_data.detect import personal_field, personal_param, personal_text
from gateway.personal_data.hashing import already_hashed
from gateway.personal_data.match_keys import Rules, hashed
from gateway.personal_data.scrub import GONE, strip_personal
from gateway.rules.url_params import rewrite_pairs
from gateway.settings import DestinationSettings
from gateway.sources import MetaPixel, TikTokPixel
from gateway.sources.coerce import json_or_text, text_or_none
from gateway.sources.forms import form_fields

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


# --- what of the hit may go: the personal-data gate, applied to the vendor's format ---------------


@dataclass(frozen=True, slots=True)
class _Gate:
    """What the gateway decided about this event, applied to the raw hit's own fields."""

    page_url: str | None
    """The event's page URL after the personal-data gate and the rules (`redact_url_params`,
    `drop_fields`): the hit's own page URL parameter becomes this."""
    referrer: str | None
    identifiers: bool
    """Hashed match keys may go (`ad_user_data` granted; GPC denies it)."""

    @classmethod
    def of(cls, event: Event) -> _Gate:
        return cls(event.event_source_url, event.referrer, event.consent.granted("ad_user_data"))

    def page(self, value: str, wanted: str | None) -> str | None:
        """The browser's own bytes when the gate and the rules left the URL as it was."""
        if wanted is None:
            return None
        return value if text_or_none(value, 4096) == wanted else wanted

    # --- Meta pixel: query and urlencoded body ---

    def meta(self, key: str, value: str) -> str | None:
        """`ud[em]=<plain>` → Meta's hash of it (the pixel hashes these; a custom tag may
        not), and none at all without consent; a personal custom-data field (`cd[email]`)
        goes, as the pipeline drops it; `dl`/`rl` are the event's page URLs."""
        if key == "dl":
            return self.page(value, self.page_url)
        if key == "rl":
            return self.page(value, self.referrer)
        custom = _META_CUSTOM.fullmatch(key)
        if custom is not None:  # read as the Meta source reads it: JSON where it looks like JSON
            return None if personal_field(custom[1], json_or_text(value)) else value
        match = _META_PARAM.fullmatch(key)
        if match is None:
            return None if personal_param(key, value) else value
        if not self.identifiers:
            return None
        if not value.strip() or already_hashed(value.strip()) is not None:
            return value
        field = MetaPixel.user_keys.get(match[1])
        return hashed(_rules("meta"), field, value) if field else None

    # --- GA4 gtag: query and body lines ---

    def ga4(self, key: str, value: str) -> str | None:
        """A client-sent `_uip` goes (only the gateway says where the client is); plain-text
        segments of `em` (`tv.1~em.…~pn.…`) are hashed the way gtag would have, and `em` and
        `uid` go without consent; item and event parameters pass the gate."""
        if key == "_uip":
            return None
        if key == "dl":
            return self.page(value, self.page_url)
        if key == "dr":
            return self.page(value, self.referrer)
        if key in ("em", "uid") and not self.identifiers:
            return None
        if key == "uid":
            # The user ID is the shop's external_id: never on disk in plain text
            # (docs/operations.md §5).
            # Hashed by the rule ga4_mp hashes its user_id by, so both copies agree.
            return hashed(_rules("ga4"), "external_id", value)
        if key == "em":
            return _google_user_data(value)
        if _GA4_ITEM.fullmatch(key):
            return _ga4_item(value)
        free = _GA4_FREE.fullmatch(key)
        if free is not None:  # `ep.email=…`: personal data with no hashing rule goes
            return None if personal_field(free[1], value) else value
        return None if personal_param(key, value) else value

    # --- TikTok pixel: JSON message ---

    def tiktok(self, message: object) -> None:
        """Plain-text `context.user` match keys hashed (gone without consent), personal
        `properties` dropped, `context.page` the event's page URLs; in place."""
        if not isinstance(message, dict):
            return
        properties = message.get("properties")
        if isinstance(properties, dict):
            strip_personal("properties", properties)
        context = message.get("context")
        if not isinstance(context, dict):
            return
        page = context.get("page")
        if isinstance(page, dict):
            for key, wanted in (("url", self.page_url), ("referrer", self.referrer)):
                value = page.get(key)
                if isinstance(value, str):
                    kept = self.page(value, wanted)
                    if kept is None:
                        del page[key]
                    else:
                        page[key] = kept
        user = context.get("user")
        if isinstance(user, dict):
            self._tiktok_user(user)
        for key, value in list(context.items()):  # `context.ad`, `context.library`, ...
            if key not in ("user", "page") and strip_personal(key, value) is GONE:
                del context[key]

    def _tiktok_user(self, user: dict[str, object]) -> None:
        for key, field in TikTokPixel.user_keys.items():
            if key not in user:
                continue
            value = user[key]
            if not self.identifiers:
                del user[key]
            elif isinstance(value, list):  # identify() takes arrays: hash each, keep the shape
                user[key] = [h for v in value if (h := _tiktok_hash(v, field))]
            elif made := _tiktok_hash(value, field):
                user[key] = made
            else:
                del user[key]

    def tiktok_query(self, key: str, value: str) -> str | None:
        """`analytics_message=<base64 JSON>`: the same scrub inside the encoded message."""
        if key != "analytics_message":
            return None if personal_param(key, value) else value
        # Decoded exactly as the TikTok source decodes it (base64 of either alphabet, a `+`
        # that became a space, or plain JSON), so nothing the source could read escapes.
        message = TikTokPixel.decode_message(value)
        if message is None:
            return None  # unreadable: not kept, since we cannot tell what it holds
        # Always re-encoded, scrubbed or not: the stored message is then exactly what the
        # scrub saw (raw JSON may repeat a key; the parser keeps only the last copy).
        self.tiktok(message)
        return base64.b64encode(orjson.dumps(message)).decode()


_META_PARAM: Final = re.compile(r"(?:ud|udff)\[(\w+)\]")
_META_CUSTOM: Final = re.compile(r"cd\[(.+)\]")
_GA4_FREE: Final = re.compile(r"(?:ep|epn|up|upn)\.(.+)")
_GA4_ITEM: Final = re.compile(r"pr[0-9]+")
_GOOGLE_HASHED: Final = re.compile(r"(em|pn|fn\d*|ln\d*|sa\d*)")
_GOOGLE_FIELDS: Final = {
    "em": "email",
    "pn": "phone",
    "fn": "first_name",
    "ln": "last_name",
    "sa": "street",
}


def _rules(vendor: str) -> Rules:
    """The vendor's own destination's table: a tag's value is hashed as it would hash it."""
    return Forward.match_rules_of[vendor]


def _google_user_data(value: str) -> str:
    segments = []
    for segment in value.split("~"):
        name, dot, data = segment.partition(".")
        if dot and data and _GOOGLE_HASHED.fullmatch(name) and already_hashed(data) is None:
            made = _google_segment(name, data)
            if made is None:
                continue
            segment = f"{name}.{made}"
        segments.append(segment)
    return "~".join(segments)


def _google_segment(key: str, value: str) -> str | None:
    """One `em` segment value hashed by Google's rules, as gtag sends it (base64url, no padding)."""
    hexdigest = hashed(_rules("ga4"), _GOOGLE_FIELDS[key.rstrip("0123456789")], value)
    if hexdigest is None:
        return None
    return base64.urlsafe_b64encode(bytes.fromhex(hexdigest)).rstrip(b"=").decode()


def _ga4_item(value: str) -> str | None:
    """`pr1=id…~nm…~k0…~v0…`: a part whose text is an address or a phone number goes (a
    custom item parameter's name stays without its value)."""
    parts = value.split("~")
    kept = [part for part in parts if not personal_text(part[2:])]
    return value if len(kept) == len(parts) else "~".join(kept)


def _tiktok_hash(value: object, field: str) -> str | None:
    """A match key as TikTok wants it stored: a made hash as it is, else normalized and hashed;
    None for anything that is neither (it is dropped, never kept in plain text)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    if already_hashed(value.strip()) is not None:
        return value
    return hashed(_rules("tiktok"), field, value)


def _is_urlencoded(content_type: str | None) -> bool:
    return (content_type or "").lower().startswith("application/x-www-form-urlencoded")


def _unless_same(rewritten: str | None, text: str) -> str:
    """`rewrite_pairs`' answer, else the text as it came. Only None means unchanged: "" is
    every pair removed, which must not fall back to the unscrubbed text."""
    return text if rewritten is None else rewritten


def scrubbed(event: Event, raw: RawHit, line: int | None = None) -> tuple[str, bytes] | Rejected:
    """The hit's query and body as the gate lets them go: plain-text personal data hashed by
    its vendor's rules or removed, every untouched parameter byte for byte.

    `line`: for a GA4 hit, the body line of the event at hand; only that line is kept.
    """
    gate = _Gate.of(event)
    query, body = raw.query_string, raw.body
    if raw.vendor == "meta":
        query = _unless_same(rewrite_pairs(query, gate.meta), query)
        if _is_urlencoded(raw.content_type):
            text = rewrite_pairs(body.decode("utf-8", "replace"), gate.meta)
            body = text.encode() if text is not None else body
        else:
            # Sent as it came, so every part must be read and clean; parts past the field
            # bound were never looked at, and a body we could not read whole is not vouched for.
            pairs, unread = form_fields(body, raw.content_type)
            if unread:
                return Rejected("forward: the hit's body has more fields than the gateway reads")
            if any(gate.meta(k, v) != v for k, v in pairs):
                return Rejected("forward: the hit's body carries plain-text personal data")
    elif raw.vendor == "ga4":
        query = _unless_same(rewrite_pairs(query, gate.ga4), query)
        # One event per non-blank body line, each a urlencoded list (docs/platforms.md §2.1).
        lines = [t for t in body.decode("utf-8", "replace").split("\n") if t.strip()]
        if line is not None and 0 <= line < len(lines):
            lines = [lines[line].strip()]
        if lines:
            body = "\n".join(_unless_same(rewrite_pairs(t, gate.ga4), t) for t in lines).encode()
    else:
        query = _unless_same(rewrite_pairs(query, gate.tiktok_query), query)
        if body.strip():
            try:
                message = orjson.loads(body)
            except orjson.JSONDecodeError:
                message = None
            if message is not None:  # re-serialized always, as in tiktok_query
                gate.tiktok(message)
                body = orjson.dumps(message)
    return query, body


# --- the destination ---------------------------------------------------------------------------


class Forward(Destination):
    """The browser hit, resent to its vendor."""

    type = "forward"
    settings_model = ForwardSettings
    max_batch = 1  # one hit, one request
    can_limit = False  # the original hit cannot be stripped of identifiers and stay itself

    settings: ForwardSettings
    match_rules_of: ClassVar[dict[str, Rules]] = {}
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
