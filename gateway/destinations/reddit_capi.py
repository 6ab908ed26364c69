"""Reddit Conversions API v3: events to `{endpoint}/api/v3/pixels/{pixel_id}/conversion_events`.

Request shape from Reddit's Ads API v3 reference, "Post Conversion Events"
(https://ads-api.reddit.com/docs/v3/operations/Post%20Conversion%20Events): a bearer conversion
access token, `{"data": {"events": [...], "test_id": ...}}`, `event_at` in epoch milliseconds at
most 7 days old, `action_source` `WEBSITE`, `type.tracking_type` in UPPER_SNAKE (v2.0's
`Purchase` spelling is gone), `metadata.conversion_id` the dedup key shared with the pixel's
`conversionId`. The v2.0 `/conversions/events/{account_id}` endpoint is deprecated.
docs/platforms.md §7.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

import orjson
from pydantic import Field, SecretStr

from gateway import names
from gateway.destinations.base import (
    TEST_EVENT_CODE,
    Answer,
    Destination,
    Item,
    OutRequest,
    Rejected,
    Result,
    classify_by_status,
    classify_refusal,
    line_items,
    not_the_answer,
    shown_url,
)
from gateway.event import JSON, Event, User, json_number
from gateway.identifiers import OPAQUE, Identifier
from gateway.personal_data import match_keys as mk
from gateway.personal_data.match_keys import Rules, fixed
from gateway.settings import DestinationSettings
from gateway.sources.coerce import url_param

DEFAULT_ENDPOINT: Final = "https://ads-api.reddit.com"
SEVEN_DAYS: Final = 7 * 24 * 3600


class RedditCapiSettings(DestinationSettings):
    """`type: reddit_capi`."""

    type: Literal["reddit_capi"]
    pixel_id: str = Field(pattern=r"^[A-Za-z0-9_]{4,40}$")
    access_token: SecretStr
    test_event_code: str | None = None
    """Sent as `data.test_id`: the events show in Events Manager's test view, not as conversions."""
    endpoint: str = Field(default=DEFAULT_ENDPOINT, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")

    def secrets(self) -> tuple[SecretStr, ...]:
        return (self.access_token,)


names.register(
    "reddit",
    "Reddit",
    {
        "page_view": "PAGE_VISIT",
        "view_content": "VIEW_CONTENT",
        "search": "SEARCH",
        "add_to_cart": "ADD_TO_CART",
        "add_to_wishlist": "ADD_TO_WISHLIST",
        "purchase": "PURCHASE",
        "lead": "LEAD",
        "complete_registration": "SIGN_UP",
    },
)
TRACKING_TYPES: Final = frozenset(
    {
        "PAGE_VISIT",
        "VIEW_CONTENT",
        "SEARCH",
        "ADD_TO_CART",
        "ADD_TO_WISHLIST",
        "PURCHASE",
        "LEAD",
        "SIGN_UP",
    }
)

# Canonical `action_source` → Reddit's (`WEBSITE`, `APP`, `PHYSICAL_STORE`, `OTHER`).
_ACTION_SOURCES: Final = {"website": "WEBSITE", "app": "APP", "physical_store": "PHYSICAL_STORE"}

# `user` key → canonical user field, hashed by Reddit's rules.
USER_KEYS: Final = {"email": "email", "phone_number": "phone", "external_id": "external_id"}


# Reddit's match keys: the email with its local part bare, the phone in E.164, the external
# ID as given (lowercased, as every other platform here takes it).
MATCH_RULES: Final[Rules] = {
    "email": fixed(mk.email_bare_local),
    "phone": mk.phone_e164,
    "external_id": fixed(mk.lower),
}


def click_id(event: Event) -> str | None:
    """`rdt_cid` from the page URL. Never for a consent-limited event: its click IDs were
    stripped on purpose."""
    return None if event.limited else url_param(event.event_source_url, "rdt_cid")


def reddit_user(user: User) -> dict[str, JSON]:
    """`user`: match keys hashed, IP, UA and the pixel's `_rdt_uuid` as they are."""
    out: dict[str, JSON] = {}
    for key, field in USER_KEYS.items():
        if made := mk.hashed(MATCH_RULES, field, getattr(user, field), user.country):
            out[key] = made
    clear = {
        "ip_address": user.client_ip,
        "user_agent": user.user_agent,
        "uuid": user.ids.get("rdt_uuid"),
    }
    out.update({k: v for k, v in clear.items() if v})
    return out


_PRODUCT_KEYS: Final = {"id": "id", "name": "name", "category": "category"}


def reddit_metadata(event: Event) -> dict[str, JSON]:
    """`metadata`; `conversion_id` is the event ID, as the pixel's `conversionId` for dedup."""
    custom = event.custom
    # Reddit requires `id` and `category` on every product: one without either is left out
    # rather than have it refuse the event.
    products = [
        row
        for row in line_items(custom.contents, _PRODUCT_KEYS)
        if "id" in row and "category" in row
    ]
    count = custom.num_items
    if count is None and custom.contents:
        count = sum(c.quantity or 1 for c in custom.contents)
    fields: dict[str, JSON] = {
        "conversion_id": event.event_id,
        "currency": custom.currency.upper() if custom.currency else None,
        # A number in currency units (v2.0's `value` was integer cents).
        "value": json_number(custom.value),
        "item_count": count,
        "products": products or None,
    }
    return {k: v for k, v in fields.items() if v is not None}


def tracking_type(event: Event) -> dict[str, JSON]:
    """`type`: Reddit's standard event, or `CUSTOM` with the canonical name."""
    name = names.from_canonical("reddit", event.event_name)
    if name in TRACKING_TYPES:
        return {"tracking_type": name}
    return {"tracking_type": "CUSTOM", "custom_event_name": event.event_name}


def conversion_event(event: Event) -> dict[str, JSON]:
    """One `data.events[]` element."""
    body: dict[str, JSON] = {
        "event_at": event.event_time * 1000,
        "action_source": _ACTION_SOURCES.get(event.action_source, "OTHER"),
        "type": tracking_type(event),
        "user": reddit_user(event.user),
        "metadata": reddit_metadata(event),
    }
    if click := click_id(event):
        body["click_id"] = click
    # Reddit's Limited Data Use, where Meta's would be (docs/consent.md §5).
    if event.limited or event.consent_signals.get("gpc") == "1":
        user = body["user"]
        assert isinstance(user, dict)
        user["data_processing_options"] = {"modes": ["LDU"]}
    return body


# --- answers ----------------------------------------------------------------------------------

# 401: the conversion access token is invalid or revoked; 403: it has no right to this pixel.
# Never an event's fault: the destination waits, events queued, for a working token. One
# malformed event (400, 422) refuses the whole request: isolate it. Events resent carry the same
# `conversion_id`, which Reddit deduplicates on.
_BAD_EVENT: Final = frozenset({400, 422})


def _text(body: object, status: int | None) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{error.get('code', status)}: {error.get('message', '')}".strip()
    if isinstance(body, dict) and "message" in body:
        return f"{status}: {body['message']}"
    return f"HTTP {status}"


def classify_reddit(answer: Answer, batch_size: int) -> Result:
    """Reddit's answer by HTTP status, with its `error.message` as the text."""
    status = answer.status
    by_status = classify_by_status(answer)
    if status is None:
        return by_status
    try:
        body = orjson.loads(answer.body) if answer.body else None
    except orjson.JSONDecodeError:
        body = None
    if 200 <= status < 300:
        return by_status if isinstance(body, dict) else not_the_answer(answer, "Reddit")
    return classify_refusal(answer, status, _text(body, status), batch_size, _BAD_EVENT)


class RedditCapi(Destination):
    """Reddit Conversions API v3."""

    type = "reddit_capi"
    vendor = "reddit"
    match_rules = MATCH_RULES
    test_mode = TEST_EVENT_CODE
    # The Reddit pixel's visitor ID (`_rdt_uuid`): passed on, never set, as Reddit documents no
    # server-set one (docs/platforms.md §7); its click ID arrives as `rdt_cid` in the page URL.
    identifiers = (Identifier("rdt_uuid", cookie="_rdt_uuid", shape=OPAQUE),)
    click_params = frozenset({"rdt_cid"})
    settings_model = RedditCapiSettings
    max_batch = 1000
    max_age_s = SEVEN_DAYS  # Reddit refuses events older than this.
    default_requires = ("ad_storage", "ad_user_data")
    # Reddit matches on its own click ID and visitor ID, never on Meta's fbp/fbc.
    match_keys = frozenset({"email", "phone", "external_id", "ip_ua"})

    settings: RedditCapiSettings

    @classmethod
    def preview(cls, event: Event) -> JSON:
        """The conversion event as it would be sent, for `dry_run`."""
        return conversion_event(event)

    @property
    def own_id(self) -> str:
        return self.settings.pixel_id

    def prepare(self, event: Event) -> JSON | Rejected:
        return conversion_event(event)

    def build_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        s = self.settings
        url = f"{s.endpoint.rstrip('/')}/api/v3/pixels/{s.pixel_id}/conversion_events"
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {s.access_token.get_secret_value()}",
        }
        tail = b"]"
        if s.test_event_code:
            tail += b',"test_id":' + orjson.dumps(s.test_event_code)
        size = self.batch_size
        return [
            OutRequest(
                "POST",
                url,
                chunk,
                headers,
                # The stored events are JSON already: spliced in, not decoded and re-encoded.
                b'{"data":{"events":[' + b",".join(i.raw for i in chunk) + tail + b"}}",
            )
            for chunk in (items[start : start + size] for start in range(0, len(items), size))
        ]

    def classify(self, request: OutRequest, answer: Answer) -> Result:
        return classify_reddit(answer, len(request.items))

    def describe(self) -> str:
        s = self.settings
        test = f", test_event_code {s.test_event_code}" if s.test_event_code else ""
        return f"reddit_capi pixel {s.pixel_id} via {shown_url(s.endpoint)}{test}"
