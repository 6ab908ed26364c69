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
from collections.abc import Callable, Sequence
from typing import Final, Literal
from urllib.parse import parse_qsl, quote, urlencode

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
from gateway.personal_data.detect import personal_field
from gateway.personal_data.hashing import already_hashed, sha256_hex
from gateway.personal_data.platforms import hashed
from gateway.settings import DestinationSettings
from gateway.sources.coerce import json_or_text
from gateway.sources.forms import form_pairs
from gateway.sources.meta_pixel import USER_KEYS
from gateway.sources.tiktok_pixel import decode_message

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


# --- plain-text personal data, hashed before it is stored --------------------------------------

Rewrite = Callable[[str, str], str | None]
"""(key, value) → the value to keep, a replacement, or None to drop the pair."""


def _rewrite_form(text: str, rewrite: Rewrite) -> str | None:
    """The urlencoded text with values rewritten, or None when nothing changed (so an untouched
    hit keeps its exact bytes)."""
    out: list[tuple[str, str]] = []
    changed = False
    for key, value in parse_qsl(text, keep_blank_values=True):
        new = rewrite(key, value)
        changed = changed or new != value
        if new is not None:
            out.append((key, new))
    return urlencode(out) if changed else None


_META_PARAM: Final = re.compile(r"(?:ud|udff)\[(\w+)\]")


_META_CUSTOM: Final = re.compile(r"cd\[(.+)\]")
_GA4_FREE: Final = re.compile(r"(?:ep|epn|up|upn)\.(.+)")


def _meta_rewrite(key: str, value: str) -> str | None:
    """`ud[em]=<plain>` → Meta's hash of it (the pixel hashes these; a custom tag may not);
    a custom-data field that is personal data (`cd[email]`) goes, as the pipeline drops it."""
    custom = _META_CUSTOM.fullmatch(key)
    if custom is not None:  # read as the Meta source reads it: JSON where it looks like JSON
        return None if personal_field(custom[1], json_or_text(value)) else value
    match = _META_PARAM.fullmatch(key)
    if match is None or not value.strip() or already_hashed(value.strip()) is not None:
        return value
    field = USER_KEYS.get(match[1])
    if field is None:
        return value
    return hashed("meta", field, value)


_GOOGLE_HASHED: Final = re.compile(r"(em|pn|fn\d*|ln\d*|sa\d*)")


_GOOGLE_FIELDS: Final = {
    "em": "email",
    "pn": "phone",
    "fn": "first_name",
    "ln": "last_name",
    "sa": "street",
}


def _google_segment(key: str, value: str) -> str | None:
    """One `em` segment value hashed by Google's rules, as gtag sends it (base64url, no padding)."""
    hexdigest = hashed("google", _GOOGLE_FIELDS[key.rstrip("0123456789")], value)
    if hexdigest is None:
        return None
    return base64.urlsafe_b64encode(bytes.fromhex(hexdigest)).rstrip(b"=").decode()


def _ga4_rewrite(key: str, value: str) -> str | None:
    """A client-sent `_uip` goes (only the gateway says where the client is); plain-text
    segments of `em` (`tv.1~em.…~pn.…`) are hashed the way gtag would have."""
    if key == "_uip":
        return None
    free = _GA4_FREE.fullmatch(key)
    if free is not None:  # `ep.email=…`: personal data with no hashing rule goes
        return None if personal_field(free[1], value) else value
    if key == "uid":
        # The user ID is the shop's external_id: never on disk in plain text
        # (docs/operations.md §5).
        return already_hashed(value.strip()) or sha256_hex(value.strip())
    if key != "em":
        return value
    segments = []
    for segment in value.split("~"):
        name, dot, data = segment.partition(".")
        if dot and data and _GOOGLE_HASHED.fullmatch(name) and already_hashed(data) is None:
            hashed = _google_segment(name, data)
            if hashed is None:
                continue
            segment = f"{name}.{hashed}"
        segments.append(segment)
    return "~".join(segments)


_TIKTOK_USER: Final[dict[str, str]] = {
    "email": "email",
    "phone_number": "phone",
    "phone": "phone",
    "external_id": "external_id",  # seen raw in real hits (docs/platforms.md §3.1)
}


def _tiktok_scrub(message: object) -> bool:
    """Hash plain-text `context.user` match keys in a pixel message and drop `properties`
    that are personal data, in place; True if anything changed."""
    changed = False
    properties = message.get("properties") if isinstance(message, dict) else None
    if isinstance(properties, dict):
        for key in [k for k, v in properties.items() if personal_field(str(k), v)]:
            del properties[key]
            changed = True
    context = message.get("context") if isinstance(message, dict) else None
    user = context.get("user") if isinstance(context, dict) else None
    if not isinstance(user, dict):
        return changed
    for key, field in _TIKTOK_USER.items():
        if key not in user:
            continue
        value = user[key]
        if isinstance(value, list):  # identify() takes arrays: hash each, keep the shape
            hashed_list = [h for v in value if (h := _tiktok_hash(v, field))]
            if hashed_list != value:
                user[key] = hashed_list
                changed = True
            continue
        made = _tiktok_hash(value, field)
        if made == value:
            continue
        if made:
            user[key] = made
        else:
            del user[key]
        changed = True
    return changed


def _tiktok_hash(value: object, field: str) -> str | None:
    """A match key as TikTok wants it stored: a made hash as it is, else normalized and hashed;
    None for anything that is neither (it is dropped, never kept in plain text)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    if already_hashed(value.strip()) is not None:
        return value
    return hashed("tiktok", field, value)


def _tiktok_query(key: str, value: str) -> str | None:
    """`analytics_message=<base64 JSON>`: the same scrub inside the encoded message."""
    if key != "analytics_message":
        return value
    # Decoded exactly as the TikTok source decodes it (base64 of either alphabet, a `+` that
    # became a space, or plain JSON), so nothing the source could read escapes the scrub.
    message = decode_message(value)
    if message is None:
        return None  # unreadable: not kept, since we cannot tell what it holds
    # Always re-encoded, scrubbed or not: the stored message is then exactly what the scrub saw
    # (raw JSON may repeat a key; the parser keeps only the last copy).
    _tiktok_scrub(message)
    return base64.b64encode(orjson.dumps(message)).decode()


def _is_urlencoded(content_type: str | None) -> bool:
    return (content_type or "").lower().startswith("application/x-www-form-urlencoded")


def scrubbed(raw: RawHit, line: int | None = None) -> tuple[str, bytes] | Rejected:
    """The hit's query and body with plain-text personal data hashed by its vendor's rules.

    `line`: for a GA4 hit, the body line of the event at hand; only that line is kept.
    """
    query, body = raw.query_string, raw.body
    if raw.vendor == "meta":
        query = _rewrite_form(query, _meta_rewrite) or query
        if _is_urlencoded(raw.content_type):
            text = _rewrite_form(body.decode("utf-8", "replace"), _meta_rewrite)
            body = text.encode() if text is not None else body
        elif any(_meta_rewrite(k, v) != v for k, v in form_pairs(body, raw.content_type)):
            return Rejected("forward: the hit's body carries plain-text personal data")
    elif raw.vendor == "ga4":
        query = _rewrite_form(query, _ga4_rewrite) or query
        # One event per non-blank body line, each a urlencoded list (docs/platforms.md §2.1).
        lines = [t for t in body.decode("utf-8", "replace").split("\n") if t.strip()]
        if line is not None and 0 <= line < len(lines):
            lines = [lines[line].strip()]
        if lines:
            body = "\n".join(_rewrite_form(t, _ga4_rewrite) or t for t in lines).encode()
    else:
        query = _rewrite_form(query, _tiktok_query) or query
        if body.strip():
            try:
                message = orjson.loads(body)
            except orjson.JSONDecodeError:
                message = None
            if message is not None:  # re-serialized always, as in _tiktok_query
                _tiktok_scrub(message)
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

    @property
    def requires(self) -> tuple[str, ...]:
        """Consent a forwarded hit needs when the config says nothing: the ad purposes for
        Meta and TikTok, analytics for GA4 (whose hit carries gcs/gcd for Google itself).
        Signals the vendor cannot see on the hit (GPC, a TCF cookie) are honoured here."""
        configured = self.settings.requires
        if configured is not None:
            return configured
        if self.settings.vendor == "ga4":
            return ("analytics_storage",)
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
        line = event.vendor_data.get("ga4", {}).get("line") if raw.vendor == "ga4" else None
        clean = scrubbed(raw, line if isinstance(line, int) else None)
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
