"""Pinterest Conversions API: web events to `{endpoint}/v5/ad_accounts/{ad_account_id}/events`.

Request and answer shapes from Pinterest's API v5 reference, "Send conversions"
(https://developers.pinterest.com/docs/api/v5/events-create): a bearer conversion token, up to
1,000 events in `data`, `?test=true` validates without recording. docs/platforms.md §6.
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

DEFAULT_ENDPOINT: Final = "https://api.pinterest.com"


class PinterestCapiSettings(DestinationSettings):
    """`type: pinterest_capi`."""

    type: Literal["pinterest_capi"]
    ad_account_id: str = Field(pattern=r"^[0-9]{1,18}$")
    access_token: SecretStr
    test: bool = False
    """Every request with `?test=true`: Pinterest validates the events and records none."""
    endpoint: str = Field(default=DEFAULT_ENDPOINT, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")

    def secrets(self) -> tuple[SecretStr, ...]:
        return (self.access_token,)


# The v5 reference's `event_name` values; a canonical event without one goes as `custom`.
EVENT_NAMES: Final = frozenset(
    {
        "add_to_cart",
        "checkout",
        "custom",
        "lead",
        "page_visit",
        "search",
        "signup",
        "view_category",
        "watch_video",
    }
)
names.register(
    "pinterest",
    "Pinterest",
    {
        "page_view": "page_visit",
        # The Pinterest tag reports a product page as a page visit with its product ID.
        "view_content": "page_visit",
        "search": "search",
        "add_to_cart": "add_to_cart",
        "purchase": "checkout",
        "lead": "lead",
        "complete_registration": "signup",
    },
)

# Canonical `action_source` → Pinterest's (`web`, `offline`, `app_android`, `app_ios`). An app
# event cannot say which store it came from: it is refused rather than guessed.
_ACTION_SOURCES: Final = {
    "website": "web",
    "email": "offline",
    "phone_call": "offline",
    "chat": "offline",
    "physical_store": "offline",
    "system_generated": "offline",
    "business_messaging": "offline",
    "other": "offline",
}

# `user_data` key → canonical user field; each value goes as a one-element list of SHA-256 hex.
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


# https://developers.pinterest.com/docs/api/v5/events-create (`user_data`): lowercase; phone
# digits with the country code, no `+` or leading zeros; city without spaces or punctuation;
# state a two-letter code; zip digits (a US one its first five).
MATCH_RULES: Final[Rules] = {
    "email": fixed(normalize.email),
    "phone": mk.phone_digits,
    "first_name": fixed(mk.lower),
    "last_name": fixed(mk.lower),
    "gender": fixed(normalize.gender_initial),
    "date_of_birth": fixed(normalize.date_yyyymmdd),
    "city": fixed(mk.letters),
    "state": mk.state_code_or_letters,
    "zip": mk.zip_code,
    "country": fixed(normalize.country_code),
    "external_id": fixed(mk.lower),
}


def click_id(event: Event) -> str | None:
    """`epik` from the page URL (the newest click), else the `_epik` cookie the browser had.
    Never for a consent-limited event: its click IDs were stripped on purpose."""
    if event.limited:
        return None
    return url_param(event.event_source_url, "epik") or event.user.ids.get("epik")


def pinterest_user_data(user: User, click: str | None = None) -> dict[str, JSON]:
    """`user_data` by Pinterest's rules: match keys hashed into lists, IP, UA, click ID clear."""
    out: dict[str, JSON] = {}
    for key, field in USER_DATA_KEYS.items():
        made = mk.hashed(MATCH_RULES, field, getattr(user, field), user.country)
        if made:
            out[key] = [made]
    clear = {
        "client_ip_address": user.client_ip,
        "client_user_agent": user.user_agent,
        "click_id": click,
    }
    out.update({k: v for k, v in clear.items() if v})
    return out


def _money(value: Decimal | None) -> str | None:
    # Pinterest takes `value` and `item_price` as strings, parsed into doubles.
    return None if value is None else format(value.normalize(), "f")


_CONTENT_KEYS: Final = {
    "id": "id",
    "quantity": "quantity",
    "name": "item_name",
    "category": "item_category",
    "brand": "item_brand",
}


def pinterest_custom_data(event: Event) -> dict[str, JSON]:
    """`custom_data`. Pinterest refuses keys it does not know, so `custom.extra` stays out."""
    custom = event.custom
    contents = line_items(custom.contents, _CONTENT_KEYS)
    for row, item in zip(contents, custom.contents, strict=True):
        if item.item_price is not None:
            row["item_price"] = _money(item.item_price)
    content_ids = list(custom.content_ids) or [c.id for c in custom.contents]
    fields: dict[str, JSON] = {
        "currency": custom.currency.upper() if custom.currency else None,
        "value": _money(custom.value),
        "content_ids": content_ids or None,
        "content_name": custom.content_name,
        "content_category": custom.content_category,
        "contents": contents or None,
        "num_items": custom.num_items,
        "order_id": custom.order_id,
        "search_string": custom.search_string,
    }
    # Limited Data Processing, where Meta's Limited Data Use would be (docs/consent.md §5).
    if event.limited or event.consent_signals.get("gpc") == "1":
        fields["opt_out_type"] = "LDP"
    return {k: v for k, v in fields.items() if v is not None}


def event_name(event: Event) -> str:
    """Pinterest's name for the canonical event; `custom` where Pinterest has none."""
    name = names.from_canonical("pinterest", event.event_name)
    return name if name in EVENT_NAMES else "custom"


def conversion_event(event: Event) -> dict[str, JSON]:
    """One `data[]` element (`action_source` unmapped for an app event: `prepare` refuses it)."""
    body: dict[str, JSON] = {
        "event_name": event_name(event),
        "action_source": _ACTION_SOURCES.get(event.action_source, event.action_source),
        "event_time": event.event_time,
        # Pinterest dedups against the tag's `event_id`: the same ID the browser sent.
        "event_id": event.event_id,
        "user_data": pinterest_user_data(event.user, click_id(event)),
    }
    if event.event_source_url:
        body["event_source_url"] = event.event_source_url
    custom = pinterest_custom_data(event)
    if custom:
        body["custom_data"] = custom
    return body


def invalid_reason(payload: dict[str, Any]) -> str | None:
    """Why Pinterest would refuse this event (and with it the request), or None."""
    if payload["action_source"] not in _ACTION_SOURCES.values():
        return f"action_source {payload['action_source']}: Pinterest needs app_android or app_ios"
    user = payload["user_data"]
    if "em" not in user and not ("client_ip_address" in user and "client_user_agent" in user):
        return "user_data: Pinterest needs em, or client_ip_address with client_user_agent"
    return None


# --- answers ----------------------------------------------------------------------------------

# 401 (code 2, "Authentication failed") and 403 (code 29, not permitted on this ad account) are
# the token's fault, never an event's: the destination waits for a working one. One bad event
# (400, 422) fails what it came with: isolate it. Events already processed are sent again with the
# same `event_id`, which Pinterest deduplicates on.
_BAD_EVENT: Final = frozenset({400, 422})


def _text(body: object, status: int | None) -> str:
    if not isinstance(body, dict):
        return f"HTTP {status}"
    text = f"code {body.get('code')}: {body.get('message', '')}".strip()
    events = body.get("events")
    if isinstance(events, list):
        failed = [e for e in events if isinstance(e, dict) and e.get("status") == "failed"]
        if failed:
            text += f" ({failed[0].get('error_message', '')})"
    return text


def classify_pinterest(answer: Answer, batch_size: int) -> Result:
    """Pinterest's answer by HTTP status, with its `code` and per-event messages as the text."""
    try:
        body = orjson.loads(answer.body) if answer.body else None
    except orjson.JSONDecodeError:
        body = None
    status = answer.status
    by_status = classify_by_status(answer)
    if status is None:
        return by_status
    if 200 <= status < 300 and isinstance(body, dict):
        received, processed = body.get("num_events_received"), body.get("num_events_processed")
        if received == processed:
            return Result(Verdict.SENT, f"num_events_processed={processed}")
        status = 422  # some failed: as Pinterest's own "not all events were processed"
    elif 200 <= status < 300:
        return not_the_answer(answer, "Pinterest")
    return classify_refusal(answer, status, _text(body, status), batch_size, _BAD_EVENT)


class PinterestCapi(Destination):
    """Pinterest Conversions API (web and offline events)."""

    type = "pinterest_capi"
    vendor = "pinterest"
    match_rules = MATCH_RULES
    # The Pinterest tag's click ID (`epik` in the landing URL, its `_epik` cookie): passed on as
    # the browser has it, never set: Pinterest documents no server-set `_epik`
    # (docs/platforms.md §6).
    identifiers = (Identifier("epik", cookie="_epik", shape=OPAQUE),)
    click_params = frozenset({"epik"})
    settings_model = PinterestCapiSettings
    max_batch = 1000
    default_requires = ("ad_storage", "ad_user_data")
    # Pinterest matches on its own click ID, never on Meta's fbp/fbc.
    match_keys = frozenset({"email", "phone", "external_id", "ip_ua"})
    test_mode = "?test=true"

    settings: PinterestCapiSettings

    @classmethod
    def preview(cls, event: Event) -> JSON:
        """The conversion event as it would be sent, for `dry_run`."""
        return conversion_event(event)

    @property
    def own_id(self) -> str:
        return self.settings.ad_account_id

    def prepare(self, event: Event) -> JSON | Rejected:
        payload = conversion_event(event)
        reason = invalid_reason(payload)
        return Rejected(reason) if reason else payload

    def _requests(self, items: Sequence[Item], test: bool) -> list[OutRequest]:
        s = self.settings
        url = f"{s.endpoint.rstrip('/')}/v5/ad_accounts/{s.ad_account_id}/events"
        if test:
            url += "?test=true"
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {s.access_token.get_secret_value()}",
        }
        size = self.batch_size
        return [
            OutRequest(
                "POST",
                url,
                chunk,
                headers,
                # The stored events are JSON already: spliced in, not decoded and re-encoded.
                b'{"data":[' + b",".join(i.raw for i in chunk) + b"]}",
            )
            for chunk in (items[start : start + size] for start in range(0, len(items), size))
        ]

    def build_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        return self._requests(items, self.settings.test)

    def test_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        return self._requests(items, test=True)

    def classify(self, request: OutRequest, answer: Answer) -> Result:
        return classify_pinterest(answer, len(request.items))

    def describe(self) -> str:
        s = self.settings
        test = ", test mode" if s.test else ""
        return f"pinterest_capi ad account {s.ad_account_id} via {shown_url(s.endpoint)}{test}"
