"""What of a browser hit `forward` may pass on: the personal-data gate, in the vendor's format.

Plain-text personal data a tag sent is hashed by its vendor's rules, or removed without consent;
every parameter the gate leaves alone goes byte for byte.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Final

import orjson

from gateway.destinations.base import Rejected
from gateway.event import Event, RawHit
from gateway.personal_data.detect import personal_field, personal_param, personal_text
from gateway.personal_data.hashing import already_hashed
from gateway.personal_data.match_keys import Rules, hashed
from gateway.personal_data.scrub import GONE, strip_personal
from gateway.rules.url_params import rewrite_pairs
from gateway.sources import MetaPixel, TikTokPixel
from gateway.sources.coerce import json_or_text, text_or_none
from gateway.sources.forms import form_fields

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


MATCH_RULES_OF: Final[dict[str, Rules]] = {}
"""Filled by the registry (through `Forward.match_rules_of`): vendor → its own destination's
`match_rules`, so a tag's plain-text value is hashed here exactly as that destination hashes
the canonical field."""


def _rules(vendor: str) -> Rules:
    """The vendor's own destination's table: a tag's value is hashed as it would hash it."""
    return MATCH_RULES_OF[vendor]


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
