"""The consent signals a request carries itself (`Sec-GPC`, the TCF cookie), added once for
every browser source: the sources parse only what their tag sends."""

from __future__ import annotations

import dataclasses

from gateway.config import ConsentSettings
from gateway.ingest.signals import with_request_signals
from gateway.settings import SourceSettings
from gateway.sources.meta_pixel import MetaPixel
from tests.sources import test_ga4 as ga4_hits
from tests.sources import test_tiktok_pixel as tiktok_hits

META_PAGEVIEW = "/tr/?id=1234567890&ev=PageView&dl=https%3A%2F%2Fshop.example%2F&eid=pv-1"


def test_gpc_is_a_consent_signal_of_a_ga4_hit() -> None:
    hit = ga4_hits.hit(f"{ga4_hits.SHARED}&gcs=G100", gpc=True)
    (event,) = with_request_signals(ga4_hits.source.parse(hit).events, hit, ConsentSettings())
    assert event.consent_signals == {"gcs": "G100", "gpc": "1"}


def test_gpc_is_a_consent_signal_of_a_tiktok_hit() -> None:
    hit = tiktok_hits.event_of(tiktok_hits.PAGEVIEW, gpc=True)
    (event,) = with_request_signals(tiktok_hits.source.parse(hit).events, hit, ConsentSettings())
    assert event.consent_signals == {"gpc": "1"}


def test_gpc_is_a_consent_signal_of_a_meta_hit() -> None:
    hit = ga4_hits.hit(META_PAGEVIEW, gpc=True)
    (event,) = MetaPixel(SourceSettings()).parse(hit).events
    (signalled,) = with_request_signals([event], hit, ConsentSettings())
    assert event.consent_signals == {}
    assert signalled.consent_signals == {"gpc": "1"}


def test_without_sec_gpc_the_events_are_left_as_parsed() -> None:
    hit = ga4_hits.hit(f"{ga4_hits.SHARED}&gcs=G100")
    events = ga4_hits.source.parse(hit).events
    assert with_request_signals(events, hit, ConsentSettings()) is events
    assert events[0].consent_signals == {"gcs": "G100"}


def test_the_tcf_cookie_is_read_and_a_tc_string_on_the_hit_wins() -> None:
    settings = ConsentSettings(tcf=True, tcf_cookie="euconsent-v2")
    hit = tiktok_hits.event_of(tiktok_hits.PAGEVIEW, cookies={"euconsent-v2": "COOKIE"})
    (event,) = with_request_signals(tiktok_hits.source.parse(hit).events, hit, settings)
    assert event.consent_signals == {"gdpr": "1", "gdpr_consent": "COOKIE"}
    on_hit = dataclasses.replace(
        ga4_hits.hit(f"{ga4_hits.SHARED}&gdpr=1&gdpr_consent=ONHIT", gpc=True),
        cookies={"euconsent-v2": "COOKIE"},
    )
    (event,) = with_request_signals(ga4_hits.source.parse(on_hit).events, on_hit, settings)
    assert event.consent_signals["gdpr_consent"] == "ONHIT"
    assert event.consent_signals["gpc"] == "1"
