"""TikTok Events API 2.0: web events to `{endpoint}/open_api/v1.3/event/track/`.

Payload, hashing rules and answers: docs/platforms.md §3.2 and §3.3. TikTok
answers HTTP 200 with its
own `code` in the body, and one bad event fails the whole batch.
"""

from __future__ import annotations

import random
import re
import string
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
from gateway.settings import DestinationSettings

DEFAULT_ENDPOINT: Final = "https://business-api.tiktok.com"
TRACK_PATH: Final = "/open_api/v1.3/event/track/"


class TikTokEventsSettings(DestinationSettings):
    """`type: tiktok_events`."""

    type: Literal["tiktok_events"]
    pixel_code: str = Field(pattern=r"^[A-Za-z0-9]{4,40}$")
    access_token: SecretStr
    test_event_code: str | None = None
    endpoint: str = Field(default=DEFAULT_ENDPOINT, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")

    def secrets(self) -> tuple[SecretStr, ...]:
        return (self.access_token,)


# `user` key → canonical user field (docs/platforms.md §3.3).
USER_KEYS: Final = {
    "email": "email",
    "phone": "phone",
    "external_id": "external_id",
    "first_name": "first_name",
    "last_name": "last_name",
    "zip_code": "zip",
}


TTP: Final = "_ttp"
TTCLID: Final = "ttclid"
# TikTok's `_ttp` and `ttclid` formats are undocumented (docs/platforms.md §3.1, §3.3). Observed
# values are url-safe letters and digits, with dots (`E.C.P.…` click IDs, `….tt.1` visitor IDs).
# Only values a cookie holds unquoted are accepted, so a renewed cookie is the same bytes.
_TIKTOK_ID: Final = re.compile(r"[A-Za-z0-9._~+-]{1,1024}")
TTP_LENGTH: Final = 27
"""New `_ttp` values: 27 url-safe random characters, the length of observed TikTok values. The
real format is undocumented; the pixel and the Events API treat the value as opaque."""
_TTP_ALPHABET: Final = string.ascii_letters + string.digits + "-_"


def _new_ttp(rng: random.Random, index: int, now_ms: int) -> str:
    return "".join(rng.choices(_TTP_ALPHABET, k=TTP_LENGTH))


VISITOR_ID: Final = Identifier(
    "ttp", cookie=TTP, shape=_TIKTOK_ID, sets=True, refresh=True, mint=_new_ttp
)
"""`_ttp`: kept and renewed like Meta's `_fbp`, else `TTP_LENGTH` random url-safe characters."""
CLICK_ID: Final = Identifier(
    "ttclid",
    cookie=TTCLID,
    shape=_TIKTOK_ID,
    sets=True,
    click_param="ttclid",
    click_shape=_TIKTOK_ID,
)
"""`ttclid`: like Meta's `_fbc`, from the page URL's `ttclid`, written when missing or different."""


# TikTok's match keys (docs/platforms.md §3.3); city, state and country are sent in clear
# (`clear`), as Stape maps them: TikTok publishes no normalization for them.
MATCH_RULES: Final[Rules] = {
    "email": fixed(normalize.email),
    "phone": mk.phone_e164,
    "external_id": fixed(mk.lower),
    "first_name": fixed(mk.lower),
    "last_name": fixed(mk.lower),
    "zip": fixed(mk.lower),
    "city": fixed(mk.lower),
    "state": mk.state_code_or_lower,
    "country": fixed(normalize.country_code),
}


def tiktok_user(user: User) -> dict[str, str]:
    """`user` by TikTok's rules: match keys hashed, ttp, ttclid, IP and UA as they are."""
    fields = {key: (field, getattr(user, field)) for key, field in USER_KEYS.items()}
    out = {
        key: made
        for key, (field, value) in fields.items()
        if (made := mk.hashed(MATCH_RULES, field, value, user.country))
    }
    clear = {
        **tiktok_location(user),
        "ttp": user.ids.get("ttp"),
        "ttclid": user.ids.get("ttclid"),
        "ip": user.client_ip,
        "user_agent": user.user_agent,
    }
    out.update({k: v for k, v in clear.items() if v})
    return out


def tiktok_location(user: User) -> dict[str, str | None]:
    """`city`, `state`, `country` in clear (docs/platforms.md §3.2)."""
    return {
        field: mk.clear(MATCH_RULES, field, getattr(user, field), user.country)
        for field in ("city", "state", "country")
    }


_CONTENT_KEYS: Final = {
    "id": "content_id",
    "name": "content_name",
    "item_price": "price",
    "quantity": "quantity",
    "brand": "brand",
    "category": "content_category",
}


def tiktok_properties(event: Event) -> dict[str, JSON]:
    """`properties` from the canonical `custom` (docs/platforms.md §4.3)."""
    custom = event.custom
    contents = line_items(custom.contents, _CONTENT_KEYS) or [
        {"content_id": i} for i in custom.content_ids
    ]
    fields: dict[str, JSON] = {
        "currency": custom.currency.upper() if custom.currency else None,
        "value": json_number(custom.value),
        "content_type": custom.content_type,
        "contents": contents or None,
        "query": custom.search_string,
        "order_id": custom.order_id,
    }
    return {k: v for k, v in fields.items() if v is not None}


def event_name(event: Event) -> str:
    """The name a TikTok pixel sent, unchanged, so it matches the browser's own copy
    (docs/platforms.md §4.2); else the canonical name mapped to TikTok's."""
    if event.tiktok and event.tiktok.event:
        return event.tiktok.event
    return names.from_canonical("tiktok", event.event_name)


def limited_data_use(event: Event) -> bool:
    """TikTok's per-event `limited_data_use`, set where Meta's Limited Data Use would be
    (docs/consent.md §5): an event consent limited, or one under Global Privacy Control (a US
    opt-out of sale and sharing, what LDU exists for)."""
    return event.limited or event.consent_signals.get("gpc") == "1"


def web_event(event: Event) -> dict[str, JSON]:
    """One `data[]` element of an Events API request."""
    body: dict[str, JSON] = {
        "event": event_name(event),
        "event_time": event.event_time,
        "event_id": event.event_id,
        "user": tiktok_user(event.user),
    }
    properties = tiktok_properties(event)
    if properties:
        body["properties"] = properties
    page = {"url": event.event_source_url, "referrer": event.referrer}
    if any(page.values()):
        body["page"] = {k: v for k, v in page.items() if v}
    # Set where Meta's Limited Data Use would be (docs/consent.md §5), by whoever resolved consent.
    if limited_data_use(event):
        body["limited_data_use"] = True
    return body


# --- answers (docs/platforms.md §3.2) -------------------------------------------------------------

# TikTok publishes no code list for this endpoint. These meanings come from public integrations
# (RudderStack's TikTok handler, Singer's tap-tiktok-ads backoff list; unverified): 40100 is its
# rate limit, 40700 and 50000/50002 are errors on TikTok's side.
_RETRY_CODES: Final = frozenset({40100, 40700, 50000, 50002})
# The access token is missing or wrong: no event is at fault, so splitting cannot help; the
# destination waits for a working token.
_AUTH_CODES: Final = frozenset({40104, 40105})


def classify_tiktok(answer: Answer, batch_size: int) -> Result:
    """TikTok's answer by its `code`; a non-zero code inside an HTTP 200 is a failure."""
    try:
        body = orjson.loads(answer.body) if answer.body else None
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or type(body.get("code")) is not int:
        if answer.status is not None and 200 <= answer.status < 300:
            return not_the_answer(answer, "TikTok")
        return classify_by_status(answer)
    code: int = body["code"]
    message = str(body.get("message") or "")
    text = f"code {code}: {message}" if message else f"code {code}"
    if request_id := body.get("request_id"):
        text += f" (request_id {request_id})"
    by_status = classify_by_status(answer)
    if code in _AUTH_CODES:
        return Result(Verdict.RETRY, text, auth=True)
    if answer.status is None or not 200 <= answer.status < 300:
        if code in _RETRY_CODES:
            return Result(Verdict.RETRY, text, by_status.retry_after_s)
        return Result(by_status.verdict, text, by_status.retry_after_s)
    if code == 0:
        return Result(Verdict.SENT, text)
    if code in _RETRY_CODES:
        return Result(Verdict.RETRY, text, by_status.retry_after_s)
    # Anything else refused the whole batch for what may be one event: isolate it.
    return Result(Verdict.SPLIT if batch_size > 1 else Verdict.DEAD, text)


class TikTokEvents(Destination):
    """TikTok Events API (web)."""

    type = "tiktok_events"
    vendor = "tiktok"
    match_rules = MATCH_RULES
    test_mode = TEST_EVENT_CODE
    identifiers = (VISITOR_ID, CLICK_ID)
    click_params = frozenset({"ttclid"})
    settings_model = TikTokEventsSettings
    max_batch = 1000
    default_requires = ("ad_storage", "ad_user_data")  # docs/consent.md §7 recommendation
    # TikTok matches on its own ttp/ttclid, never on Meta's fbp/fbc.
    match_keys = frozenset({"email", "phone", "external_id", "ip_ua"})

    settings: TikTokEventsSettings

    @classmethod
    def preview(cls, event: Event) -> JSON:
        """The web event as it would be sent, for `dry_run`."""
        return web_event(event)

    @property
    def own_id(self) -> str:
        return self.settings.pixel_code

    def hit_id(self, event: Event) -> str | None:
        return (event.tiktok.pixel_code or None) if event.tiktok else None

    def prepare(self, event: Event) -> JSON | Rejected:
        payload = web_event(event)
        if not payload["event"]:
            return Rejected("event: empty name")
        return payload

    def build_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        s = self.settings
        url = f"{s.endpoint.rstrip('/')}{TRACK_PATH}"
        headers = {
            "Content-Type": "application/json",
            "Access-Token": s.access_token.get_secret_value(),
        }
        size = self.batch_size
        requests = []
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            body: dict[str, JSON] = {"event_source": "web", "event_source_id": s.pixel_code}
            if s.test_event_code:
                body["test_event_code"] = s.test_event_code
            body["data"] = [i.payload for i in chunk]
            requests.append(OutRequest("POST", url, chunk, headers, orjson.dumps(body)))
        return requests

    def classify(self, request: OutRequest, answer: Answer) -> Result:
        return classify_tiktok(answer, len(request.items))

    def describe(self) -> str:
        s = self.settings
        test = f", test_event_code {s.test_event_code}" if s.test_event_code else ""
        return f"tiktok_events pixel {s.pixel_code} via {shown_url(s.endpoint)}{test}"
