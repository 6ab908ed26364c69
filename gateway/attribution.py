"""Conversions in a fixed attribution window, owned by the shop (docs/operations.md §6).

Each platform counts its own conversions under its own window (Meta and TikTok 7-day click and
1-day view, GA4 30 or 90 days), so their figures are different rulers. The gateway sees every
landing with its click ID and every purchase with its value, so it can measure all channels
with one: touches are recorded at ingest (`touches`), and `build` credits each conversion to
the last (or first) touch of one of its visitor keys within the window.

Visitor keys (`fbp`, `ga_client_id`, `ttp`, the hashed external_id and email) are stored only
as an HMAC under a secret the store makes once: they can be compared, never read back.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import parse_qsl, urlsplit

import orjson

from gateway.event import Event
from gateway.outbox import NewTouch, Storage
from gateway.personal_data import normalize
from gateway.personal_data.hashing import already_hashed, sha256_hex
from gateway.sources.coerce import known_currency
from gateway.times import iso

# Click IDs in the page URL, in the order they are looked for, and the channel each names.
CLICK_IDS: Final = (
    ("fbclid", "meta"),
    ("gclid", "google"),
    ("gbraid", "google"),
    ("wbraid", "google"),
    ("ttclid", "tiktok"),
    ("msclkid", "microsoft"),
    ("ScCid", "snapchat"),
    ("epik", "pinterest"),
    ("rdt_cid", "reddit"),
)
NO_CAMPAIGN: Final = "(none)"
PAGE_VIEW: Final = "page_view"
UNATTRIBUTED: Final = "(unattributed)"
MODELS: Final = ("last_click", "first_click")
SPEND_HEADER: Final = ("date", "channel", "campaign", "spend", "currency")
VIEW_THROUGH: Final = "view-through conversions cannot be seen first-party"
_KEY_BYTES: Final = 16
"""An HMAC truncated to 128 bits: collisions stay out of reach, rows stay small."""


_TOUCH_PARAMS: Final = (*(param for param, _ in CLICK_IDS), "utm_source")


def touch_of(url: str | None) -> tuple[str, str] | None:
    """(channel, campaign) when the page URL is a touch: a click ID, else `utm_source`."""
    if not url or "?" not in url:
        return None
    if "%" not in url and not any(param in url for param in _TOUCH_PARAMS):
        # Most page URLs: nothing percent-encoded, no touch's name, so no touch to split out.
        return None
    try:
        params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=False))
    except ValueError:
        return None
    campaign = _printable(params.get("utm_campaign", ""))[:200] or NO_CAMPAIGN
    for param, channel in CLICK_IDS:
        if params.get(param):
            return channel, campaign
    source = _printable(params.get("utm_source", "")).lower()[:100]
    return (source, campaign) if source else None


def _printable(text: str) -> str:
    """A URL parameter fit for a terminal and a table: no control characters (an escape
    sequence in a campaign name would reach the operator's terminal)."""
    return "".join(ch for ch in text if ch.isprintable()).strip()


def _hashed(value: str, normalized: str | None) -> str | None:
    made = already_hashed(value.strip())
    if made is not None:
        return made
    return sha256_hex(normalized) if normalized else None


def visitor_keys(event: Event, secret: bytes) -> list[str]:
    """The event's visitor keys as keyed hashes (kind-prefixed, so an fbp never equals a
    client ID by chance)."""
    u = event.user
    fbp, ga, ttp = (u.ids.get(name) for name in ("fbp", "ga_client_id", "ttp"))
    plain: list[tuple[str, str | None]] = [
        ("fbp", fbp.strip() if fbp else None),
        ("ga", ga.strip() if ga else None),
        ("ttp", ttp.strip() if ttp else None),
        (
            "xid",
            _hashed(u.external_id, u.external_id.strip().lower()) if u.external_id else None,
        ),
        ("em", _hashed(u.email, normalize.email(u.email)) if u.email else None),
    ]
    keys = []
    for kind, value in plain:
        if value:
            digest = hmac.new(secret, f"{kind}:{value}".encode(), hashlib.sha256).digest()
            keys.append(base64.urlsafe_b64encode(digest[:_KEY_BYTES]).decode().rstrip("="))
    return keys


def touches(event: Event, secret: bytes) -> tuple[NewTouch, ...]:
    """The rows an event leaves for attribution: one per visitor key, with its channel and
    campaign when a browser event's page URL makes it a touch (a conversion of any name but
    page_view finds its visitors by them). None without ad_storage or analytics_storage
    granted, and none for a page view that is no touch."""
    consent = event.consent
    if not (consent.granted("ad_storage") or consent.granted("analytics_storage")):
        return ()
    found = None if event.source == "server" else touch_of(event.event_source_url)
    if found is None and event.event_name == PAGE_VIEW:
        # Most hits: neither a touch nor a conversion to measure, so no row at all.
        return ()
    keys = visitor_keys(event, secret)
    if not keys:
        return ()
    channel, campaign = found if found else (None, None)
    return tuple(NewTouch(key, channel, campaign) for key in keys)


# --- spend -------------------------------------------------------------------------------------


class SpendError(ValueError):
    """A spend file that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Spend:
    """One spend row: a day, a campaign, an amount."""

    day: date
    channel: str
    campaign: str
    amount: Decimal
    currency: str


def read_spend(path: Path) -> list[Spend]:
    """The spend CSV (`date,channel,campaign,spend,currency`), every row checked."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpendError(f"{path}: cannot read: {exc}") from exc
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(c.strip().lower() for c in rows[0]) != SPEND_HEADER:
        raise SpendError(f"{path}:1: line 1: the header must be {','.join(SPEND_HEADER)}")
    spend = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{number}"
        if len(row) != len(SPEND_HEADER):
            raise SpendError(f"{where}: {len(row)} columns, expected {len(SPEND_HEADER)}")
        day, channel, campaign, amount, currency = (cell.strip() for cell in row)
        try:
            parsed_day = date.fromisoformat(day)
        except ValueError as exc:
            raise SpendError(f"{where}: date: not a date (YYYY-MM-DD): {day!r}") from exc
        try:
            money = Decimal(amount)
        except InvalidOperation as exc:
            raise SpendError(f"{where}: spend: not a number: {amount!r}") from exc
        if not money.is_finite() or money < 0:
            raise SpendError(f"{where}: spend: must be a number of at least 0: {amount!r}")
        if not channel:
            raise SpendError(f"{where}: channel: required")
        if not known_currency(currency.upper()):
            raise SpendError(f"{where}: currency: unknown currency {currency!r}")
        spend.append(
            Spend(parsed_day, channel.lower(), campaign or NO_CAMPAIGN, money, currency.upper())
        )
    return spend


def _in_window(day: date, since: float, until: float) -> bool:
    """A day's spend counts when the day overlaps [since, until)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    return start < until and start + 86400 > since


# --- the figures --------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One channel and campaign."""

    channel: str
    campaign: str
    touches: int = 0
    conversions: int = 0
    value: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    spend: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def cpa(self) -> dict[str, float]:
        """Spend / conversions, per spend currency."""
        if not self.conversions:
            return {}
        return {c: _money(s / self.conversions) for c, s in sorted(self.spend.items())}

    def roas(self) -> dict[str, float]:
        """Value / spend, only within one currency."""
        return {
            c: round(float(self.value.get(c, Decimal(0)) / s), 3)
            for c, s in sorted(self.spend.items())
            if s
        }


@dataclass(frozen=True, slots=True)
class Attribution:
    """The whole result."""

    window: str
    model: str
    event: str
    since: float
    until: float
    rows: Sequence[Row]
    unattributed: Row
    with_spend: bool

    @property
    def conversions(self) -> int:
        """All conversions, attributed or not."""
        return sum(r.conversions for r in self.rows) + self.unattributed.conversions

    def share(self, row: Row) -> float:
        """The row's share of all conversions."""
        total = self.conversions
        return round(row.conversions / total, 3) if total else 0.0

    def header(self) -> str:
        """What ruler this is: stated on every output, so figures are never compared across
        settings by mistake."""
        return (
            f"attribution: window {self.window}, model {self.model}, event {self.event},"
            f" {iso(self.since)} .. {iso(self.until)}"
        )

    def as_dict(self) -> dict[str, Any]:
        """docs/operations.md §6's JSON shape (money as JSON numbers)."""
        rows = []
        for r in self.rows:
            item: dict[str, Any] = {
                "channel": r.channel,
                "campaign": r.campaign,
                "touches": r.touches,
                "conversions": r.conversions,
                "share": self.share(r),
                "value": _amounts(r.value),
            }
            if self.with_spend:
                item.update(spend=_amounts(r.spend), cpa=r.cpa(), roas=r.roas())
            rows.append(item)
        return {
            "window": self.window,
            "model": self.model,
            "event": self.event,
            "since": iso(self.since),
            "until": iso(self.until),
            "note": VIEW_THROUGH,
            "rows": rows,
            "unattributed": {
                "conversions": self.unattributed.conversions,
                "value": _amounts(self.unattributed.value),
            },
        }


def _money(amount: Decimal) -> float:
    return float(round(amount, 2))


def _amounts(amounts: Mapping[str, Decimal]) -> dict[str, float]:
    return {c: _money(v) for c, v in sorted(amounts.items()) if c}


def _decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def parse_window(text: str) -> tuple[str, float]:
    """`7d`, `24h`, `30m`: the window as written and in seconds."""
    value = text.strip()
    units = {"m": 60, "h": 3600, "d": 86400}
    number, unit = value[:-1], value[-1:]
    if unit not in units or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"not a window: {text!r} (use 7d, 24h or 30m)")
    return value, int(number) * units[unit]


async def build(
    store: Storage,
    since: float,
    until: float,
    *,
    window: str = "7d",
    model: str = "last_click",
    event: str = "purchase",
    spend: Sequence[Spend] | None = None,
) -> Attribution:
    """Read conversions, credits and touches from the store and put them side by side."""
    label, window_s = parse_window(window)
    conversions, credits, touch_counts = await store.attribution(
        event, since, until, window_s, model == "first_click"
    )
    # Each event ID once, whichever sources sent it, with the first copy's value that has one.
    values: dict[str, tuple[Decimal, str] | None] = {}
    for event_id, value, currency in conversions:
        amount = _decimal(value)
        if values.get(event_id) is None:
            values[event_id] = (amount, currency or "?") if amount is not None else None
    rows: dict[tuple[str, str], Row] = {}

    def row(channel: str, campaign: str) -> Row:
        return rows.setdefault((channel, campaign), Row(channel, campaign))

    for channel, campaign, count in touch_counts:
        row(channel, campaign).touches = int(count)
    unattributed = Row(UNATTRIBUTED, "")
    credited = {event_id: (channel, campaign) for event_id, channel, campaign in credits}
    for event_id, money in values.items():
        where = credited.get(event_id)
        target = unattributed if where is None else row(*where)
        target.conversions += 1
        if money is not None:
            target.value[money[1]] += money[0]
    for item in spend or ():
        if _in_window(item.day, since, until):
            row(item.channel, item.campaign).spend[item.currency] += item.amount
    ordered = sorted(
        rows.values(), key=lambda r: (-r.conversions, -r.touches, r.channel, r.campaign)
    )
    return Attribution(label, model, event, since, until, ordered, unattributed, spend is not None)


def render(result: Attribution, out: TextIO) -> None:
    """The table for people, under the header that states the ruler."""
    out.write(result.header() + "\n")
    out.write(
        f"each {result.event} is credited to the {result.model.replace('_', ' ')} of the same"
        f" visitor within {result.window} before it; {VIEW_THROUGH}\n"
    )
    head = ["channel", "campaign", "touches", "conversions", "share", "value"]
    if result.with_spend:
        head += ["spend", "cpa", "roas"]
    table = [head]

    def amounts(values: Mapping[str, float], digits: int = 2) -> str:
        return " ".join(f"{v:.{digits}f} {c}" for c, v in values.items()) or "-"

    for r in [*result.rows, result.unattributed]:
        if r is result.unattributed and not r.conversions:
            continue
        cells = [
            r.channel,
            r.campaign,
            str(r.touches) if r is not result.unattributed else "-",
            str(r.conversions),
            f"{result.share(r):.0%}",
            amounts(_amounts(r.value)),
        ]
        if result.with_spend:
            cells += [amounts(_amounts(r.spend)), amounts(r.cpa()), amounts(r.roas(), 3)]
        table.append(cells)
    if len(table) == 1:
        out.write(f"no {result.event} events and no touches in the window\n")
        return
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    for line in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")


def dump(result: Attribution, out: TextIO) -> None:
    """The result as one JSON object."""
    out.write(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
