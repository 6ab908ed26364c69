"""`tag-gateway validate`: sample events to each destination's test mode, and what came back.

Each destination says how its platform is tested (`test_mode`, `test_requests`,
`test_findings`): GA4 gets the real request body at `/debug/mp/collect` (nothing is recorded)
and answers with validation messages; Meta, TikTok and Reddit get it at their normal endpoint
with the configured `test_event_code`, which routes it to their test-events view (without a code
they are skipped: the sample would count as a real conversion); a platform whose test mode
records nothing (Pinterest's `?test=true`) is always checked there. Nothing here touches the
store.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import TextIO

import aiohttp

from gateway import destinations
from gateway.config import Config
from gateway.delivery import transport
from gateway.destinations.base import Destination, Item, Rejected
from gateway.event import Consent, ConsentState, Content, Custom, Event, User

SAMPLE_URL = "https://example.com/tag-gateway/validate"


def sample_events(now: int | None = None) -> list[Event]:
    """A product view and a purchase with test identities: what every platform wants to see.

    Not a page view: GA4 reserves `page_view`, and its validator may say so.
    """
    at = int(time.time()) if now is None else now
    run = secrets.token_hex(4)
    granted = ConsentState.GRANTED
    user = User(
        email="validate@example.com",
        phone="+1 415 555 0100",
        first_name="Test",
        last_name="User",
        country="US",
        external_id="tag-gateway-validate",
        client_ip="203.0.113.7",
        user_agent="Mozilla/5.0 (tag-gateway validate)",
        ids={"ga_client_id": "1234567890.1700000000"},
    )
    purchase = Custom(
        value=Decimal("1.00"),
        currency="EUR",
        order_id=f"tg-validate-{run}",
        contents=(Content("tg-validate-sku", 1, Decimal("1.00"), name="Sample"),),
    )
    return [
        Event(
            event_id=f"tg-validate-{run}-{i}",
            event_name=name,
            event_time=at,
            source="validate",
            event_source_url=SAMPLE_URL,
            user=user,
            custom=custom,
            consent=Consent(granted, granted, granted, granted),
        )
        for i, (name, custom) in enumerate((("view_content", Custom()), ("purchase", purchase)), 1)
    ]


class _Report:
    """What one destination's check printed and whether anything was wrong."""

    def __init__(self, name: str, out: TextIO) -> None:
        self.name = name
        self.out = out
        self.problems = 0
        self.skipped = False

    def line(self, text: str) -> None:
        print(f"{self.name}: {text}", file=self.out)

    def detail(self, text: str) -> None:
        print(f"  {text}", file=self.out)

    def problem(self, text: str) -> None:
        self.problems += 1
        self.detail(text)


def _items(dest: Destination, events: Sequence[Event], report: _Report) -> list[Item]:
    items = []
    for i, event in enumerate(events):
        prepared = dest.prepare(event)
        if isinstance(prepared, Rejected):
            report.problem(f"sample {event.event_name} rejected: {prepared.reason}")
        else:
            items.append(Item(i, prepared))
    return items


async def _check(
    dest: Destination, session: aiohttp.ClientSession, events: Sequence[Event], report: _Report
) -> None:
    """The samples to the destination's test mode, and what it made of them."""
    how = dest.test_how()
    for request in dest.test_requests(_items(dest, events, report)):
        answer = await transport(session, request, dest.settings.timeout_ms / 1000)
        report.line(f"{len(request.items)} sample events {how}: {_status(answer.status)}")
        details, problems = dest.test_findings(request, answer)
        for text in details:
            report.detail(text)
        for text in problems:
            report.problem(text)


def _status(status: int | None) -> str:
    return f"HTTP {status}" if status is not None else "no answer"


async def run_validate(config: Config, out: TextIO) -> int:
    """Validate every configured destination against its platform's test mode.

    Prints what each platform said; returns 1 if any reported a problem, else 0.
    """
    events = sample_events()
    problems = checked = skipped = 0
    async with aiohttp.ClientSession(headers={"User-Agent": "tag-gateway"}) as session:
        for name, settings in config.destinations.items():
            dest = destinations.TYPES[settings.type](name, settings)
            report = _Report(name, out)
            why_not = dest.test_skipped()
            if why_not is None:
                await _check(dest, session, events, report)
            else:
                report.line(f"skipped: {why_not}")
                report.skipped = True
            if report.problems:
                report.line(f"{report.problems} problem(s)")
            problems += report.problems
            skipped += report.skipped
            checked += not report.skipped
    # "ok" after checking nothing would pass a deploy pipeline that validated nothing.
    if not checked:
        print(f"validate: nothing was validated ({skipped} skipped)", file=out)
        return 1
    summary = f"{problems} problem(s)" if problems else "ok"
    print(f"validate: {summary} ({checked} checked, {skipped} skipped)", file=out)
    return 1 if problems else 0
