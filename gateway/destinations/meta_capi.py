"""Meta Conversions API: server events to `{endpoint}/{api_version}/{pixel_id}/events`.

Payload, hashing rules and error codes: docs/platforms.md §1.2 and §1.3.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any, Final, Literal

import orjson
from pydantic import Field, SecretStr

from gateway import __version__, names
from gateway.destinations.base import (
    TEST_EVENT_CODE,
    Answer,
    Destination,
    Item,
    OutRequest,
    Rejected,
    Result,
    Verdict,
    classify_by_status,
    line_items,
    not_the_answer,
    shown_url,
)
from gateway.event import JSON, Event, User, json_number
from gateway.identifiers import Identifier
from gateway.personal_data import match_keys as mk
from gateway.personal_data import normalize
from gateway.personal_data.match_keys import Rules, fixed
from gateway.settings import DestinationSettings, StrictModel
from gateway.sources import MetaPixel

DEFAULT_ENDPOINT: Final = "https://graph.facebook.com"
DEFAULT_API_VERSION: Final = "v25.0"
PARTNER_AGENT: Final = f"tag-gateway-{__version__}"
SEVEN_DAYS: Final = 7 * 24 * 3600


class LimitedDataUse(StrictModel):
    """Meta's Limited Data Use options (docs/consent.md §5): `[LDU], 0, 0` lets Meta geolocate."""

    options: tuple[str, ...] = ("LDU",)
    country: int = Field(default=0, ge=0)
    state: int = Field(default=0, ge=0)


class MetaCapiSettings(DestinationSettings):
    """`type: meta_capi`."""

    type: Literal["meta_capi"]
    pixel_id: str = Field(pattern=r"^[0-9]{5,20}$")
    access_token: SecretStr
    test_event_code: str | None = None
    endpoint: str = Field(default=DEFAULT_ENDPOINT, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    api_version: str = Field(default=DEFAULT_API_VERSION, pattern=r"^v[0-9]+\.[0-9]+$")
    partner_agent: str = PARTNER_AGENT
    limited_data_use: LimitedDataUse = LimitedDataUse()
    """Sent with events that consent limited (`on_denied: limited`)."""

    def secrets(self) -> tuple[SecretStr, ...]:
        return (self.access_token,)


# `user_data` key → canonical user field (docs/platforms.md §1.3): Meta's names, the same as
# the pixel's `ud[…]` keys, so they are read from the one table the pixel's source declares.
USER_DATA_KEYS: Final = MetaPixel.user_keys


FBP: Final = "_fbp"
FBC: Final = "_fbc"
# docs/platforms.md §1.3: `fb`, a decimal index, a 13-digit ms timestamp, a payload without dots,
# then optionally one 2- or 8-char appendix written by Meta's Parameter Builder. The payload is
# held to `[A-Za-z0-9_-]` (digits for fbp, the click ID for fbc) so a kept value can be set again
# byte for byte: anything outside the cookie-safe set would come back quoted.
_META_ID: Final = re.compile(
    r"fb\.(\d{1,2})\.(\d{13})\.([A-Za-z0-9_-]{1,1024})(?:\.(?:[A-Za-z0-9_-]{2}|[A-Za-z0-9_-]{8}))?"
)
# Meta click IDs are base64url-like; `-` and `_` must be accepted (docs/platforms.md §1.3).
_FBCLID: Final = re.compile(r"[A-Za-z0-9_-]{1,1024}")


def valid_meta_id(value: str) -> bool:
    """True for an `_fbp`/`_fbc` value of the shape in docs/platforms.md §1.3 (appendix allowed)."""
    return _META_ID.fullmatch(value) is not None


def _new_fbp(rng: random.Random, index: int, now_ms: int) -> str:
    # Meta's own pixel uses a random integer below 2**31; 10 digits keeps that shape.
    return f"fb.{index}.{now_ms}.{rng.randrange(10**9, 2**31)}"


def _fbc_of(fbclid: str, index: int, now_ms: int) -> str:
    return f"fb.{index}.{now_ms}.{fbclid}"


def _click_in(fbc: str) -> str | None:
    match = _META_ID.fullmatch(fbc)
    return match[3] if match else None


BROWSER_ID: Final = Identifier(
    "fbp", cookie=FBP, shape=_META_ID, sets=True, refresh=True, mint=_new_fbp
)
"""`_fbp`: kept byte for byte and renewed (same value, new Max-Age); a missing or invalid one is
replaced by `fb.<subdomainIndex>.<now_ms>.<10 random digits>`."""
CLICK_ID: Final = Identifier(
    "fbc",
    cookie=FBC,
    shape=_META_ID,
    sets=True,
    click_param="fbclid",
    click_shape=_FBCLID,
    from_click=_fbc_of,
    click_of=_click_in,
)
"""`_fbc`: written only when the page URL carries a `fbclid` and the cookie is missing, invalid or
holds a different click ID (the new click wins): `fb.<subdomainIndex>.<now_ms>.<fbclid>`. A
cookie for the same click is kept and not renewed: docs/platforms.md §1.3 has the gateway set
`_fbc` "only when the cookie is missing or its click ID differs", so its lifetime counts from
the click."""


# How Meta normalizes each match key before hashing (docs/platforms.md §1.3).
MATCH_RULES: Final[Rules] = {
    "email": fixed(normalize.email),
    "phone": mk.phone_digits,
    "first_name": fixed(mk.letters),
    "last_name": fixed(mk.letters),
    "gender": fixed(normalize.gender_initial),
    "date_of_birth": fixed(normalize.date_yyyymmdd),
    "city": fixed(mk.letters),
    "state": mk.state_code_or_letters,
    "zip": mk.zip_code,
    "country": fixed(normalize.country_code),
    "external_id": fixed(mk.lower),
}


def meta_user_data(user: User) -> dict[str, str]:
    """`user_data` by Meta's rules: match keys hashed, IP, UA, fbp and fbc as they are."""
    fields = {key: (field, getattr(user, field)) for key, field in USER_DATA_KEYS.items()}
    out = {
        key: made
        for key, (field, value) in fields.items()
        if (made := mk.hashed(MATCH_RULES, field, value, user.country))
    }
    clear = {
        "client_ip_address": user.client_ip,
        "client_user_agent": user.user_agent,
        "fbp": user.ids.get("fbp"),
        "fbc": user.ids.get("fbc"),
    }
    out.update({k: v for k, v in clear.items() if v})
    return out


_CONTENT_KEYS: Final = {"id": "id", "quantity": "quantity", "item_price": "item_price"}


def meta_custom_data(event: Event) -> dict[str, JSON]:
    """`custom_data` from the canonical `custom` (docs/platforms.md §4.3)."""
    custom = event.custom
    data: dict[str, JSON] = dict(custom.extra)
    contents = line_items(custom.contents, _CONTENT_KEYS)
    content_ids = list(custom.content_ids) or [c.id for c in custom.contents]
    fields: dict[str, JSON] = {
        "value": json_number(custom.value),
        "currency": custom.currency.upper() if custom.currency else None,
        "order_id": custom.order_id,
        "contents": contents or None,
        "content_ids": content_ids or None,
        "content_type": custom.content_type,
        "content_name": custom.content_name,
        "content_category": custom.content_category,
        "num_items": custom.num_items,
        "search_string": custom.search_string,
    }
    data.update({k: v for k, v in fields.items() if v is not None})
    return data


# Since v13.0 an event whose customer information is only one of these sets is invalid (2804050).
_INSUFFICIENT: Final = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)


def server_event(event: Event, ldu: LimitedDataUse | None = None) -> dict[str, JSON]:
    """One `data[]` element of a Conversions API request (`ldu` for consent-limited events)."""
    body: dict[str, JSON] = {
        "event_name": names.from_canonical("meta", event.event_name),
        "event_time": event.event_time,
        "event_id": event.event_id,
        "action_source": event.action_source,
        "user_data": meta_user_data(event.user),
    }
    if event.event_source_url:
        body["event_source_url"] = event.event_source_url
    if event.referrer:
        body["referrer_url"] = event.referrer
    custom = meta_custom_data(event)
    if custom:
        body["custom_data"] = custom
    meta = event.meta
    if event.limited:
        ldu = ldu or LimitedDataUse()
        body["data_processing_options"] = list(ldu.options)
        body["data_processing_options_country"] = ldu.country
        body["data_processing_options_state"] = ldu.state
    elif meta is not None and meta.dpo is not None:
        options = [o for o in meta.dpo.split(",") if o]
        body["data_processing_options"] = options
        if options:
            body["data_processing_options_country"] = _int(meta.dpoco)
            body["data_processing_options_state"] = _int(meta.dpost)
    return body


def _int(raw: object) -> int:
    try:
        return int(str(raw))
    except ValueError:
        return 0


def invalid_reason(payload: dict[str, Any]) -> str | None:
    """Why Meta would refuse this event (and with it the whole batch), or None."""
    user_keys = frozenset(payload.get("user_data", {}))
    if not user_keys:
        return "user_data: no customer information"
    if any(user_keys <= bad for bad in _INSUFFICIENT):
        return "user_data: insufficient customer information (Meta 2804050)"
    if payload["action_source"] == "website":
        if "client_user_agent" not in user_keys:
            return "user_data.client_user_agent: required for website events"
        if "event_source_url" not in payload:
            return "event_source_url: required for website events"
    if payload["event_name"] == "Purchase":
        custom = payload.get("custom_data", {})
        if "value" not in custom or "currency" not in custom:
            return "custom_data: Purchase needs value and currency"
    return None


# --- answers (docs/platforms.md §1.2) -------------------------------------------------------------

_RETRY_CODES: Final = frozenset({1, 2, 4, 17, 341, 368, 80003})
# The access token is invalid, expired or undecryptable (docs/platforms.md §1.2).
_AUTH_CODES: Final = frozenset({190})


def classify_meta(answer: Answer, batch_size: int) -> Result:
    """Meta's answer by `error.code` / `error_subcode`, never by its localised text."""
    try:
        body = orjson.loads(answer.body) if answer.body else None
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        if answer.status is not None and 200 <= answer.status < 300:
            received = body.get("events_received") if isinstance(body, dict) else None
            if type(received) is int:
                return Result(Verdict.SENT, f"events_received={received}")
            return not_the_answer(answer, "Meta")
        return classify_by_status(answer)
    code, subcode = error.get("code"), error.get("error_subcode")
    text = f"{code}/{subcode}: {error.get('message', '')}"
    if user_msg := error.get("error_user_msg"):
        text += f" ({user_msg})"
    if code in _RETRY_CODES or (code not in (100, 190) and error.get("is_transient") is True):
        return Result(Verdict.RETRY, text, classify_by_status(answer).retry_after_s)
    if code in _AUTH_CODES:
        return Result(Verdict.RETRY, text, auth=True)
    if code == 100 and subcode == 33:
        return Result(Verdict.DEAD, text)
    if code == 100:
        # Invalid parameter: one event spoils the whole request; isolate it.
        return Result(Verdict.SPLIT if batch_size > 1 else Verdict.DEAD, text)
    fallback = classify_by_status(answer)
    return Result(fallback.verdict, text, fallback.retry_after_s)


class MetaCapi(Destination):
    """Meta Conversions API."""

    type = "meta_capi"
    vendor = "meta"
    match_rules = MATCH_RULES
    test_mode = TEST_EVENT_CODE
    identifiers = (BROWSER_ID, CLICK_ID)
    click_params = frozenset({"fbclid"})
    user_data = staticmethod(meta_user_data)
    settings_model = MetaCapiSettings
    max_batch = 1000
    max_age_s = SEVEN_DAYS  # Meta refuses the whole request for one event older than this.
    default_requires = ("ad_storage", "ad_user_data")

    settings: MetaCapiSettings

    @classmethod
    def preview(cls, event: Event) -> JSON:
        """The server event as it would be sent, for `dry_run`."""
        return server_event(event)

    @property
    def own_id(self) -> str:
        return self.settings.pixel_id

    def hit_id(self, event: Event) -> str | None:
        return (event.meta.pixel_id or None) if event.meta else None

    def prepare(self, event: Event) -> JSON | Rejected:
        payload = server_event(event, self.settings.limited_data_use)
        reason = invalid_reason(payload)
        return Rejected(reason) if reason else payload

    def build_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        s = self.settings
        url = f"{s.endpoint.rstrip('/')}/{s.api_version}/{s.pixel_id}/events"
        size = self.batch_size
        requests = []
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            envelope: dict[str, JSON] = {
                # In the body, not the query string, so no URL ever holds the token.
                "access_token": s.access_token.get_secret_value(),
                "partner_agent": s.partner_agent,
            }
            if s.test_event_code:
                envelope["test_event_code"] = s.test_event_code
            # The stored events are JSON already: splice them in rather than decode and
            # re-encode a thousand of them per request.
            body = (
                b'{"data":[' + b",".join(i.raw for i in chunk) + b"]," + orjson.dumps(envelope)[1:]
            )
            requests.append(
                OutRequest("POST", url, chunk, {"Content-Type": "application/json"}, body)
            )
        return requests

    def classify(self, request: OutRequest, answer: Answer) -> Result:
        return classify_meta(answer, len(request.items))

    def describe(self) -> str:
        s = self.settings
        test = f", test_event_code {s.test_event_code}" if s.test_event_code else ""
        return f"meta_capi pixel {s.pixel_id} via {shown_url(s.endpoint)} {s.api_version}{test}"
