"""First-party cookies on a browser answer: which vendors' a source refreshes, and the one
planning call per request that also puts their values on the request's events."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Final

from gateway import cookies
from gateway import destinations as destination_types
from gateway.config import Config, Cookies
from gateway.event import ConsentState, Event, evolve
from gateway.pipeline import Pipeline
from gateway.sources.base import Hit

_RNG: Final = random.SystemRandom()


def cookie_vendors(config: Config, send_to: Sequence[str]) -> tuple[str, ...]:
    """Vendors whose first-party cookies a source's answers refresh: those its events go to
    (a GA4 hit routed to Meta gets `_fbp` and `_fbc` too)."""
    vendors = {destination_types.TYPES[config.destinations[d].type].vendor for d in send_to}
    return tuple(sorted(v for v in vendors if v in cookies.VENDORS))


def first_party_ids(
    pipeline: Pipeline,
    events: Sequence[Event],
    hit: Hit,
    settings: Cookies,
    vendors: Sequence[str],
    carried: Mapping[str, str],
) -> tuple[Sequence[Event], cookies.CookiePlan]:
    """Create or renew `_fbp`, `_fbc`, `_ttp`, `ttclid` once for this request, and put the same
    values on every event of it. Nothing is set when consent denies ad_storage."""
    # Consent is resolved here, before the pipeline does it again for the rows (memoized
    # there): whether a cookie may be set is decided by the request's first event.
    first = pipeline.resolve_consent(events[0])
    denied = first.consent.ad_storage is ConsentState.DENIED
    page_url = events[0].event_source_url or hit.referer
    plan = cookies.plan(
        hit.cookies,
        page_url,
        settings,
        int(hit.received_at * 1000),
        denied,
        _RNG,
        vendors=vendors,
        carried=carried,
    )
    fields = plan.user_fields()
    if not fields:
        return events, plan
    return [evolve(e, user=evolve(e.user, ids={**e.user.ids, **fields})) for e in events], plan
