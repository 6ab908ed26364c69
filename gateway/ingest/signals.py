"""Consent signals that come with the request rather than the tag.

The one place a hit's `Sec-GPC` and a configured TCF cookie become consent signals, for every
browser source alike; the sources parse only what their tag sends.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config import ConsentSettings
from gateway.event import Event, evolve
from gateway.sources.base import Hit


def with_request_signals(
    events: Sequence[Event], hit: Hit, consent: ConsentSettings
) -> Sequence[Event]:
    """The events with `gpc` (from `Sec-GPC: 1`) and `gdpr`/`gdpr_consent` (from the
    `consent.tcf_cookie` cookie) among their signals. A TC string on the hit itself wins over
    the cookie; GPC is added whatever the tag said."""
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    cookie = consent.tcf_cookie
    if cookie and (tc_string := hit.cookies.get(cookie)):
        before = {"gdpr": "1", "gdpr_consent": tc_string}
    if hit.gpc:
        after = {"gpc": "1"}
    if not before and not after:
        return events
    return [evolve(e, consent_signals={**before, **e.consent_signals, **after}) for e in events]
