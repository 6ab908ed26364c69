"""Snapchat Conversions API v3: web events to `{endpoint}/v3/{pixel_id}/events`.

Request shapes from https://developers.snap.com/api/marketing-api/Conversions-API/UsingTheAPI and
.../Parameters; the test endpoint `/events/validate` and its `INVALID` 400 answers from
.../VerifySetUp; events at most 37 days old (.../Introduction). docs/platforms.md §8.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final, Literal

import orjson
from pydantic import Field, SecretStr

from gateway import names
from gateway.destinations.base import (
    Answer,
    Destination,
    Item,
    OutRequest,
    Rejected,
    Result,
    Verdict,
    classify_by_status,
    classify_refusal,
    line_items,
    not_the_answer,
    shown_url,
)
from gateway.event import JSON, Event, User
from gateway.identifiers import OPAQUE, Identifier
from gateway.personal_data import match_keys as mk
from gateway.personal_data import normalize
from gateway.personal_data.match_keys import Rules, fixed
from gateway.settings import DestinationSettings
from gateway.sources.coerce import url_param

DEFAULT_ENDPOINT: Final = "https://tr.snapchat.com"
THIRTY_SEVEN_DAYS: Final = 37 * 24 * 3600


class SnapchatCapiSettings(DestinationSettings):
    """`type: snapchat_capi`."""

    type: Literal["snapchat_capi"]
    pixel_id: str = Field(pattern=r"^[A-Za-z0-9-]{4,64}$")
    access_token: SecretStr
    test: bool = False
    """Every request to `/events/validate`: Snap checks the events and records none."""
    endpoint: str = Field(default=DEFAULT_ENDPOINT, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")

    def secrets(self) -> tuple[SecretStr, ...]:
        return (self.access_token,)


# Snap's standard event names; an event without one goes as CUSTOM_EVENT_1.
CUSTOM: Final = "CUSTOM_EVENT_1"
_NAMES: Final = {
    "page_view": "PAGE_VIEW",
    "view_content": "VIEW_CONTENT",
    "search": "SEARCH",
    "add_to_cart": "ADD_CART",
    "add_to_wishlist": "ADD_TO_WISHLIST",
    "initiate_checkout": "START_CHECKOUT",
    "add_payment_info": "ADD_BILLING",
    "purchase": "PURCHASE",
    "complete_registration": "SIGN_UP",
    "subscribe": "SUBSCRIBE",
    "start_trial": "START_TRIAL",
}
names.register("snapchat", "Snapchat", _NAMES)
_STANDARD: Final = frozenset(_NAMES.values())

_ACTION_SOURCES: Final = {"website": "WEB", "app": "MOBILE_APP"}
"""Anything else (a store, a phone call) is `OFFLINE`."""

USER_DATA_KEYS: Final = {
    "em": "email",
    "ph": "phone",
    "fn": "first_name",
    "ln": "last_name",
    "ge": "gender",
    "db": "date_of_birth",
    "ct": "city",
    "st": "state",
    "zp": "zip",
    "country": "country",
    "external_id": "external_id",
}


# https://developers.snap.com/api/marketing-api/Conversions-API/Parameters: email trimmed and
# lowercased; phone digits with the country code, no `00`, `+` or leading zero; names
# lowercase letters only (UTF-8 kept: `raphaël`).
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


def click_id(event: Event) -> str | None:
    """`ScCid` from the page URL, else the click ID the event carries (the server API's
    `user.sccid`). Never for a consent-limited event."""
    if event.limited:
        return None
    url = event.event_source_url
    return url_param(url, "ScCid") or url_param(url, "sccid") or event.user.ids.get("sccid")


def snapchat_user_data(user: User, click: str | None = None) -> dict[str, JSON]:
    """`user_data` by Snap's rules: match keys hashed into lists; IP, UA, click ID and the
    `_scid` cookie (`sc_cookie1`) clear."""
    out: dict[str, JSON] = {}
    for key, field in USER_DATA_KEYS.items():
        made = mk.hashed(MATCH_RULES, field, getattr(user, field), user.country)
        if made:
            out[key] = [made]
    clear = {
        "client_ip_address": user.client_ip,
        "client_user_agent": user.user_agent,
        "sc_click_id": click,
        "sc_cookie1": user.ids.get("scid"),
    }
    out.update({k: v for k, v in clear.items() if v})
    return out


def _money(value: Decimal | None) -> str | None:
    # Snap's own examples send `value` and `item_price` as strings.
    return None if value is None else format(value.normalize(), "f")


_CONTENT_KEYS: Final = {"id": "id", "quantity": "quantity", "brand": "brand"}


def snapchat_custom_data(event: Event) -> dict[str, JSON]:
    """`custom_data` from the canonical `custom`."""
    custom = event.custom
    contents = line_items(custom.contents, _CONTENT_KEYS)
    for row, item in zip(contents, custom.contents, strict=True):
        if item.item_price is not None:
            row["item_price"] = _money(item.item_price)
    content_ids = list(custom.content_ids) or [c.id for c in custom.contents]
    fields: dict[str, JSON] = {
        "currency": custom.currency.upper() if custom.currency else None,
        "value": _money(custom.value),
        "order_id": custom.order_id,
        "content_ids": content_ids or None,
        "contents": contents or None,
        "num_items": custom.num_items,
        "search_string": custom.search_string,
    }
    return {k: v for k, v in fields.items() if v is not None}


def event_name(event: Event) -> str:
    """Snap's name for the canonical event; CUSTOM_EVENT_1 where Snap has none."""
    name = names.from_canonical("snapchat", event.event_name)
    return name if name in _STANDARD else CUSTOM


def conversion_event(event: Event) -> dict[str, JSON]:
    """One `data[]` element."""
    body: dict[str, JSON] = {
        "event_name": event_name(event),
        "action_source": _ACTION_SOURCES.get(event.action_source, "OFFLINE"),
        "event_time": event.event_time,
        # Snap dedups it against the pixel's `client_dedup_id` (48 h): the browser's event ID.
        "event_id": event.event_id,
        "user_data": snapchat_user_data(event.user, click_id(event)),
    }
    if event.event_source_url:
        body["event_source_url"] = event.event_source_url
    custom = snapchat_custom_data(event)
    if custom:
        body["custom_data"] = custom
    # Limited Data Use (`LMU`), where Meta's would be (docs/consent.md §5).
    if event.limited or event.consent_signals.get("gpc") == "1":
        body["data_processing_options"] = ["LMU"]
    return body


def invalid_reason(payload: dict[str, Any]) -> str | None:
    """Why Snap would refuse this event (VerifySetUp's INVALID causes we can see), or None."""
    user = payload["user_data"]
    if not ({"em", "ph"} & user.keys()) and not (
        "client_ip_address" in user and "client_user_agent" in user
    ):
        return "user_data: Snapchat needs em, ph, or client_ip_address with client_user_agent"
    if payload["action_source"] == "WEB" and "event_source_url" not in payload:
        return "event_source_url: required for web events"
    if payload["event_name"] == "PURCHASE":
        custom = payload.get("custom_data", {})
        if "value" not in custom or "currency" not in custom:
            return "custom_data: PURCHASE needs value and currency"
    return None


# --- answers ----------------------------------------------------------------------------------


_BAD_EVENT: Final = frozenset({400})


def classify_snapchat(answer: Answer, batch_size: int) -> Result:
    """Snap's answer by HTTP status, its `status` and `reason` as the text."""
    try:
        body = orjson.loads(answer.body) if answer.body else None
    except orjson.JSONDecodeError:
        body = None
    by_status = classify_by_status(answer)
    status = answer.status
    if status is None:
        return by_status
    if not isinstance(body, dict):
        return not_the_answer(answer, "Snap") if 200 <= status < 300 else by_status
    text = " ".join(str(body[k]) for k in ("status", "reason") if body.get(k)) or f"HTTP {status}"
    if 200 <= status < 300:
        return Result(Verdict.SENT, text)
    # 401/403: the token is wrong, expired or not for this pixel, no event is at fault. 400
    # INVALID: one event spoils the request (VerifySetUp); isolate it.
    return classify_refusal(answer, status, text, batch_size, _BAD_EVENT)


class SnapchatCapi(Destination):
    """Snapchat Conversions API (v3, web and offline events)."""

    type = "snapchat_capi"
    vendor = "snapchat"
    match_rules = MATCH_RULES
    # Snapchat's click ID (`ScCid` in the landing URL) and the Snap pixel's `_scid` cookie
    # (Snapchat's `sc_cookie1`): passed on, never set, as Pinterest's `_epik`.
    identifiers = (Identifier("sccid"), Identifier("scid", cookie="_scid", shape=OPAQUE))
    click_params = frozenset({"sccid"})
    settings_model = SnapchatCapiSettings
    # Snap documents no per-request limit; an unofficial schema says 2,000. 1,000 stays under.
    max_batch = 1000
    max_age_s = THIRTY_SEVEN_DAYS
    default_requires = ("ad_storage", "ad_user_data")
    match_keys = frozenset({"email", "phone", "external_id", "ip_ua"})
    test_mode = "/events/validate"

    settings: SnapchatCapiSettings

    @classmethod
    def preview(cls, event: Event) -> JSON:
        """The conversion event as it would be sent, for `dry_run`."""
        return conversion_event(event)

    @property
    def own_id(self) -> str:
        return self.settings.pixel_id

    def prepare(self, event: Event) -> JSON | Rejected:
        payload = conversion_event(event)
        reason = invalid_reason(payload)
        return Rejected(reason) if reason else payload

    def _requests(self, items: Sequence[Item], test: bool) -> list[OutRequest]:
        s = self.settings
        path = "/events/validate" if test else "/events"
        # Snap takes the token in the query string only; delivery never prints a query.
        url = (
            f"{s.endpoint.rstrip('/')}/v3/{s.pixel_id}{path}"
            f"?access_token={s.access_token.get_secret_value()}"
        )
        headers = {"Content-Type": "application/json"}
        size = self.batch_size
        return [
            OutRequest(
                "POST", url, chunk, headers, b'{"data":[' + b",".join(i.raw for i in chunk) + b"]}"
            )
            for chunk in (items[start : start + size] for start in range(0, len(items), size))
        ]

    def build_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        return self._requests(items, self.settings.test)

    def test_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        return self._requests(items, test=True)

    def classify(self, request: OutRequest, answer: Answer) -> Result:
        return classify_snapchat(answer, len(request.items))

    def describe(self) -> str:
        s = self.settings
        test = ", test mode" if s.test else ""
        return f"snapchat_capi pixel {s.pixel_id} via {shown_url(s.endpoint)}{test}"
