"""GA4 Measurement Protocol: events to `{endpoint}/mp/collect?measurement_id=…&api_secret=…`.

Payload, limits and Google's hashing rules: docs/platforms.md §2.2 and §2.3. GA4 answers
2xx to every
request it receives, even one it drops, so there is no per-event error to classify; `tag-gateway
validate` asks the debug endpoint instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal
from urllib.parse import quote

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
    shown_url,
)
from gateway.destinations.ga4_mp.params import event_params, user_properties, valid_name
from gateway.event import JSON, ConsentState, Event, User
from gateway.identifiers import Identifier
from gateway.personal_data import match_keys as mk
from gateway.personal_data.hashing import sha256_hex
from gateway.personal_data.match_keys import Rules, fixed
from gateway.settings import DestinationSettings

DEFAULT_ENDPOINT: Final = "https://www.google-analytics.com"
SEVENTY_TWO_HOURS: Final = 72 * 3600
MAX_EVENTS: Final = 25
MAX_BODY_BYTES: Final = 130_000
"""GA4 refuses bodies of 130 kB and more (docs/platforms.md §2.2)."""

# Request-level keys: one request carries one client and one user, so events are grouped by them.
_REQUEST_KEYS: Final = (
    "client_id",
    "user_id",
    "ip_override",
    "user_properties",
    "user_data",
    "consent",
)


class Ga4MpSettings(DestinationSettings):
    """`type: ga4_mp`."""

    type: Literal["ga4_mp"]
    measurement_id: str = Field(pattern=r"^G-[A-Z0-9]{4,20}$")
    api_secret: SecretStr
    endpoint: str = Field(default=DEFAULT_ENDPOINT, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")

    def secrets(self) -> tuple[SecretStr, ...]:
        return (self.api_secret,)


# --- user data (docs/platforms.md §2.3) -----------------------------------------------------------


# How Google normalizes user-provided data (docs/platforms.md §2.3); city, state, zip and
# country are sent in clear (`clear`), never hashed.
MATCH_RULES: Final[Rules] = {
    "email": fixed(mk.email_dotless_gmail),
    "phone": mk.phone_e164,
    "first_name": fixed(mk.name_words),
    "last_name": fixed(mk.name_words),
    "street": fixed(mk.street),
    "city": fixed(mk.name_words),
    "state": fixed(mk.name_words),
    "zip": fixed(mk.lower),
    "country": fixed(mk.country_upper),
    "external_id": fixed(mk.lower),
}


def google_user_data(user: User) -> dict[str, JSON]:
    """`user_data` by Google's rules: email, phone and names hashed (hex), the rest in clear."""
    data: dict[str, JSON] = {}
    country = user.country
    email = mk.hashed(MATCH_RULES, "email", user.email)
    if email:
        data["sha256_email_address"] = [email]
    phone = mk.hashed(MATCH_RULES, "phone", user.phone, country)
    if phone:
        data["sha256_phone_number"] = [phone]
    address = {
        "sha256_first_name": mk.hashed(MATCH_RULES, "first_name", user.first_name),
        "sha256_last_name": mk.hashed(MATCH_RULES, "last_name", user.last_name),
        "city": mk.clear(MATCH_RULES, "city", user.city),
        "region": mk.clear(MATCH_RULES, "state", user.state),
        "postal_code": mk.clear(MATCH_RULES, "zip", user.zip),
        "country": mk.clear(MATCH_RULES, "country", user.country),
    }
    kept = {k: v for k, v in address.items() if v}
    if kept:
        data["address"] = [kept]
    return data


NO_CLIENT_ID: Final = "no ga_client_id"


def client_id_for(event: Event) -> str | None:
    """`user.ga_client_id` (gtag's `_ga` client ID, byte for byte), else None: an invented ID
    would make every such event a new, unattributed GA4 user.

    Two cases have an ID to go on instead. With a `user_id` (the hashed external_id) GA4 joins
    the events by user, so the client ID is derived from it and stays the same for that user.
    A consent-limited event (`on_denied: limited` clears every identifier) gets one per event,
    as the contract asks.
    """
    user = event.user
    if client_id := user.ids.get("ga_client_id"):
        return client_id
    basis = mk.hashed(MATCH_RULES, "external_id", user.external_id)
    if basis is None and event.limited:
        basis = event.event_id
    if basis is None:
        return None
    digest = sha256_hex(f"tag-gateway:ga4:{basis}")
    return f"{int(digest[:8], 16)}.{int(digest[8:16], 16)}"


# --- payload --------------------------------------------------------------------------------------


def _consent(event: Event) -> dict[str, str]:
    out = {}
    for purpose in ("ad_user_data", "ad_personalization"):
        state = event.consent.get(purpose)
        if state is not None:
            out[purpose] = "GRANTED" if state is ConsentState.GRANTED else "DENIED"
    return out


def event_payload(event: Event) -> dict[str, JSON] | Rejected:
    """What is stored for one event: the request-level fields it needs and its `events[]` entry."""
    name = names.from_canonical("ga4", event.event_name)
    if not valid_name(name):
        return Rejected(
            f"event name {name[:60]!r}: GA4 needs at most 40 letters, digits or underscores,"
            " starting with a letter, and no reserved prefix"
        )
    client_id = client_id_for(event)
    if client_id is None:
        return Rejected(NO_CLIENT_ID, skipped=True)
    payload: dict[str, JSON] = {
        "client_id": client_id,
        "timestamp_micros": event.event_time * 1_000_000,
    }
    # Denied ad_user_data (GPC denies it): Google gets no user-provided data at all, hashed or
    # not, the user ID (the shop's hashed external_id) included.
    user_provided = event.consent.get("ad_user_data") is not ConsentState.DENIED
    user_id = (
        mk.hashed(MATCH_RULES, "external_id", event.user.external_id) if user_provided else None
    )
    if user_id:
        # Hashed like everywhere else: the contract never lets a plaintext external_id reach disk.
        payload["user_id"] = user_id
    if event.user.client_ip:
        # The request comes from the gateway, so GA4 would otherwise locate the gateway.
        payload["ip_override"] = event.user.client_ip
    if user_provided:
        user_data = google_user_data(event.user)
        if user_data:
            payload["user_data"] = user_data
    consent = _consent(event)
    if consent:
        payload["consent"] = consent
    properties = user_properties(event) if not event.limited else {}
    if properties:
        payload["user_properties"] = properties
    payload["event"] = {"name": name, "params": event_params(event)}
    return payload


def request_body(payloads: Sequence[Mapping[str, Any]], **extra: JSON) -> dict[str, JSON]:
    """One Measurement Protocol body for payloads that share their request-level fields.

    Each event keeps its own `timestamp_micros` (it overrides the request's); the request's is the
    earliest of them.
    """
    first = payloads[0]
    body: dict[str, JSON] = {"client_id": first["client_id"]}
    if "user_id" in first:
        body["user_id"] = first["user_id"]
    body["timestamp_micros"] = min(p["timestamp_micros"] for p in payloads)
    body.update({k: first[k] for k in _REQUEST_KEYS[2:] if k in first})
    body.update(extra)
    body["events"] = [{**p["event"], "timestamp_micros": p["timestamp_micros"]} for p in payloads]
    return body


class Ga4Mp(Destination):
    """GA4 Measurement Protocol (web stream)."""

    type = "ga4_mp"
    vendor = "ga4"
    test_mode = "/debug/mp/collect"
    match_rules = MATCH_RULES
    # gtag's client ID (its `_ga` cookie, which the browser sources read) and Google Ads' click
    # ID (`gclid`, kept by gtag in `_gcl_aw`); the cookie plan touches neither. `_gl` is Google's
    # cross-domain linker, which carries the client ID and the gclid.
    identifiers = (
        Identifier("ga_client_id", cookie="_ga"),
        Identifier("gclid", cookie="_gcl_aw"),
    )
    click_params = frozenset({"gclid", "gbraid", "wbraid", "dclid", "_gl"})
    settings_model = Ga4MpSettings
    max_batch = MAX_EVENTS
    max_age_s = SEVENTY_TWO_HOURS  # timestamp_micros may be at most 72 hours in the past
    default_requires = ("analytics_storage",)  # docs/consent.md §7 recommendation
    # user_data (email, phone), user_id and ip_override: Google has no use for Meta's fbp/fbc.
    match_keys = frozenset({"email", "phone", "external_id", "ip_ua"})
    # A request carries one visitor, so a batch of 25 visitors is 25 requests: one after
    # another, 100 ms of latency capped GA4 at ~20 events/s; 64 at once: 490-600 (bench/ga4.py).
    default_concurrency = 64

    settings: Ga4MpSettings

    @classmethod
    def preview(cls, event: Event) -> JSON | None:
        """The request body this event alone would make, for `dry_run`."""
        payload = event_payload(event)
        return None if isinstance(payload, Rejected) else request_body([payload])

    @property
    def own_id(self) -> str:
        return self.settings.measurement_id

    def hit_id(self, event: Event) -> str | None:
        return (event.ga4.measurement_id or None) if event.ga4 else None

    def prepare(self, event: Event) -> JSON | Rejected:
        return event_payload(event)

    def _url(self, path: str) -> str:
        s = self.settings
        return (
            f"{s.endpoint.rstrip('/')}{path}?measurement_id={quote(s.measurement_id)}"
            f"&api_secret={quote(s.api_secret.get_secret_value(), safe='')}"
        )

    def _requests(self, items: Sequence[Item], path: str, **extra: JSON) -> list[OutRequest]:
        groups: dict[bytes, list[Item]] = {}
        for item in items:
            shared = {k: item.payload.get(k) for k in _REQUEST_KEYS}
            groups.setdefault(orjson.dumps(shared, option=orjson.OPT_SORT_KEYS), []).append(item)
        url = self._url(path)
        size = self.batch_size
        out: list[OutRequest] = []
        for group in groups.values():
            for start in range(0, len(group), size):
                out.extend(self._sized(url, group[start : start + size], extra))
        return out

    def _sized(self, url: str, chunk: Sequence[Item], extra: dict[str, JSON]) -> list[OutRequest]:
        body = orjson.dumps(request_body([i.payload for i in chunk], **extra))
        if len(body) >= MAX_BODY_BYTES and len(chunk) > 1:
            half = len(chunk) // 2
            return self._sized(url, chunk[:half], extra) + self._sized(url, chunk[half:], extra)
        return [OutRequest("POST", url, chunk, {"Content-Type": "application/json"}, body)]

    def build_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        return self._requests(items, "/mp/collect")

    def debug_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        """The same requests for the validation server, which records nothing."""
        return self._requests(
            items, "/debug/mp/collect", validation_behavior="ENFORCE_RECOMMENDATIONS"
        )

    def test_how(self) -> str:
        return f"to {self.settings.endpoint.rstrip('/')}/debug/mp/collect"  # without the secret

    def test_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        return self.debug_requests(items)

    def test_findings(self, request: OutRequest, answer: Answer) -> tuple[list[str], list[str]]:
        """The validation server's `validationMessages`, each a problem: it answers 2xx to
        anything, so only the messages say whether the events were valid."""
        if answer.status is None or not 200 <= answer.status < 300:
            return [], [answer.error or answer.body[:300].decode("utf-8", "replace")]
        try:
            body = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            return [], ["the answer is not JSON"]
        messages = body.get("validationMessages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            return [], ["the answer has no validationMessages"]
        problems = []
        for message in messages:
            if not isinstance(message, dict):
                message = {"description": str(message)}
            where = f"{message.get('validationCode', '?')} {message.get('fieldPath', '')}"
            problems.append(f"{where.strip()}: {message.get('description', '')}")
        return ([] if problems else ["no validation messages"]), problems

    def classify(self, request: OutRequest, answer: Answer) -> Result:
        if answer.status is not None and 200 <= answer.status < 300:
            # GA4 says 2xx to anything it received, valid or not: there is nothing more to read.
            return Result(Verdict.SENT, f"HTTP {answer.status}")
        return classify_by_status(answer)

    def describe(self) -> str:
        s = self.settings
        return f"ga4_mp {s.measurement_id} via {shown_url(s.endpoint)}"
