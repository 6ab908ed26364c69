"""The pipeline against a fake outbox and fake destinations: a canonical event through the
personal-data gate, consent, field rules and routing, to the rows the outbox is given."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from gateway.config import ConsentSettings
from gateway.destinations.base import Rejected
from gateway.event import Consent, ConsentState, Custom, Event, MetaExtras, User
from gateway.outbox import NewEvent, Status
from gateway.pipeline import NOT_IN_EVENTS, Pipeline, match_keys
from gateway.rules.field_rules import parse_rules
from tests.fakes import FakeDestination, FakeOutbox, FakeSettings

DENIED = ConsentState.DENIED
GRANTED = ConsentState.GRANTED


def event(**kw: Any) -> Event:
    kw.setdefault("user", User(email="ada@example.com", ids={"ga_client_id": "111.222"}))
    kw.setdefault("custom", Custom(value=Decimal("12.50"), currency="EUR"))
    kw.setdefault("source", "server")
    return Event(kw.pop("event_id", "ev-1"), kw.pop("name", "purchase"), 1_700_000_000, **kw)


def server_consent(**states: ConsentState) -> Consent:
    """A server event's own consent object (its purposes' basis is `server`)."""
    return Consent(**states, basis=dict.fromkeys(states, "server"))


def pipeline(
    *dests: FakeDestination, rules: Sequence[dict[str, Any]] = (), **consent: Any
) -> Pipeline:
    parsed, problems = parse_rules(rules, [d.name for d in dests])
    assert not problems
    return Pipeline(
        FakeOutbox(),  # type: ignore[arg-type]
        {d.name: d for d in dests},
        consent=ConsentSettings(**consent),
        rules=parsed,
    )


def by_destination(row: NewEvent) -> dict[str, tuple[Status, str | None]]:
    return {d.destination: (d.status, d.message) for d in row.deliveries}


def test_each_destination_gets_a_queued_row_with_what_it_prepared() -> None:
    a, b = FakeDestination("a"), FakeDestination("b")
    row = pipeline(a, b).rows(event(), ["a", "b"])
    assert [(d.destination, d.status, d.message) for d in row.deliveries] == [
        ("a", Status.QUEUED, None),
        ("b", Status.QUEUED, None),
    ]
    payload = orjson.loads(row.deliveries[0].payload or b"")
    assert payload["id"] == "ev-1"
    assert payload["email"] == "ada@example.com"  # the destination hashes; the pipeline hands on
    assert (row.event_id, row.event_name, row.source) == ("ev-1", "purchase", "server")
    assert (row.value, row.currency) == ("12.50", "EUR")
    assert row.match_keys == 0b1  # email only (no IP and user agent pair)
    assert [d.event_name for d in row.deliveries] == ["purchase", "purchase"]


def test_match_keys_set_one_bit_per_key() -> None:
    user = User(phone="+33", client_ip="192.0.2.1", user_agent="ua", ids={"fbc": "fb.1"})
    assert match_keys(event(user=user)) == 0b100000 | 0b10000 | 0b10
    assert match_keys(event(user=User(client_ip="192.0.2.1"))) == 0  # IP needs its user agent


def test_a_tag_hit_goes_only_to_the_destination_of_its_own_pixel() -> None:
    mine = FakeDestination("mine", pixel="111")
    theirs = FakeDestination("theirs", pixel="222")
    anyone = FakeDestination("anyone")  # no pixel of its own: every event routed to it
    p = pipeline(mine, theirs, anyone)
    hit = event(source="meta_pixel", meta=MetaExtras(pixel_id="111"))
    row = p.rows(hit, ["mine", "theirs", "anyone"])
    assert [d.destination for d in row.deliveries] == ["mine", "anyone"]
    assert theirs.prepared == []
    assert p.routed(hit, ["theirs", "anyone"])
    assert not p.routed(hit, ["theirs"])
    assert p.unknown_id(hit, ["theirs"]) == "111"  # nobody configured pixel 111 there
    assert p.unknown_id(hit, ["mine", "theirs"]) is None
    assert p.unknown_id(event(), ["theirs"]) is None  # not a tag's hit


def test_an_event_a_destination_does_not_list_gets_a_row_that_says_so() -> None:
    only_leads = FakeDestination("leads", FakeSettings(events=("lead",)))
    row = pipeline(only_leads).rows(event(), ["leads"])
    [d] = row.deliveries
    assert (d.status, d.payload) == (Status.DROPPED_RULE, None)
    assert d.message is not None
    assert d.message.startswith(NOT_IN_EVENTS)
    assert only_leads.prepared == []


def test_a_destination_that_does_not_accept_an_event_gets_no_row() -> None:
    picky = FakeDestination("picky", accepts=lambda e: False)
    assert pipeline(picky).rows(event(), ["picky"]).deliveries == []


def test_a_shared_drop_rule_drops_for_every_destination_and_leaves_no_touch() -> None:
    p = pipeline(
        FakeDestination("a"),
        FakeDestination("b"),
        rules=[
            {"drop_events": {"user_agent_matches": "bot"}},
            {"destination": "a", "drop_fields": ["user.email"]},
        ],
    )
    row = p.rows(event(user=User(user_agent="a bot", ids={"ga_client_id": "1.2"})), ["a", "b"])
    reason = "rules[0].drop_events: user_agent_matches 'bot'"
    assert by_destination(row) == {
        "a": (Status.DROPPED_RULE, reason),
        "b": (Status.DROPPED_RULE, reason),
    }
    assert row.touches == ()
    # The control: without the bot, the same event is a visit.
    assert p.rows(
        event(user=User(user_agent="Firefox", ids={"ga_client_id": "1.2"})), ["a"]
    ).touches


def test_a_scoped_rule_applies_to_its_destination_only() -> None:
    a, b = FakeDestination("a"), FakeDestination("b")
    p = pipeline(
        a,
        b,
        rules=[
            {"destination": "a", "drop_fields": ["user.email"]},
            {"destination": "b", "drop_events": {"event_names": ["purchase"]}},
        ],
    )
    row = p.rows(event(), ["a", "b"])
    assert by_destination(row) == {
        "a": (Status.QUEUED, None),
        "b": (Status.DROPPED_RULE, "rules[1].drop_events: event_names has 'purchase'"),
    }
    [prepared] = a.prepared
    assert prepared.user.email is None
    assert row.touches  # one destination kept it: the event counts for attribution


def test_an_event_every_destinations_rules_drop_leaves_no_touch() -> None:
    p = pipeline(
        FakeDestination("a"),
        rules=[{"destination": "a", "drop_events": {"event_names": ["purchase"]}}],
    )
    assert p.rows(event(), ["a"]).touches == ()


def test_a_renamed_event_is_stored_and_prepared_under_its_new_name() -> None:
    a = FakeDestination("a")
    row = pipeline(a, rules=[{"rename_event": {"from": "purchase", "to": "order"}}]).rows(
        event(), ["a"]
    )
    assert row.event_name == "order"
    assert [d.event_name for d in row.deliveries] == ["order"]
    assert [e.event_name for e in a.prepared] == ["order"]


def test_denied_consent_drops_the_event_for_a_destination_that_requires_it() -> None:
    ads = FakeDestination("ads", FakeSettings(requires=("ad_storage",)))
    stats = FakeDestination("stats", FakeSettings(requires=("analytics_storage",)))
    row = pipeline(ads, stats).rows(
        event(consent=server_consent(ad_storage=DENIED, analytics_storage=GRANTED)),
        ["ads", "stats"],
    )
    assert by_destination(row) == {
        "ads": (Status.DROPPED_CONSENT, "consent: ad_storage denied (server)"),
        "stats": (Status.QUEUED, None),
    }
    assert next(d.payload for d in row.deliveries) is None
    assert [e.event_id for e in ads.prepared] == []


def test_on_denied_limited_sends_the_event_stripped_of_identifiers() -> None:
    ads = FakeDestination("ads", FakeSettings(requires=("ad_storage",), on_denied="limited"))
    user = User(email="ada@example.com", client_ip="192.0.2.77", user_agent="Firefox")
    row = pipeline(ads).rows(event(user=user, consent=server_consent(ad_storage=DENIED)), ["ads"])
    [d] = row.deliveries
    assert (d.status, d.message) == (
        Status.QUEUED,
        "limited by consent: ad_storage denied (server)",
    )
    payload = orjson.loads(d.payload or b"")
    assert payload["limited"] is True
    assert payload["email"] is None
    assert payload["ip"] != "192.0.2.77"  # truncated
    assert row.match_keys & 0b1  # the report counts what the event came with


def test_on_denied_limited_drops_where_the_destination_cannot_limit() -> None:
    ads = FakeDestination(
        "ads", FakeSettings(requires=("ad_storage",), on_denied="limited"), can_limit=False
    )
    row = pipeline(ads).rows(event(consent=server_consent(ad_storage=DENIED)), ["ads"])
    assert by_destination(row) == {
        "ads": (Status.DROPPED_CONSENT, "consent: ad_storage denied (server)")
    }


def test_consent_falls_back_to_the_configured_default_and_gpc_beats_it() -> None:
    ads = FakeDestination("ads", FakeSettings(requires=("ad_storage",)))
    stats = FakeDestination("stats", FakeSettings(requires=("analytics_storage",)))
    denied_by_default = pipeline(ads, stats, default="denied").rows(event(), ["ads", "stats"])
    assert {d.destination: d.status for d in denied_by_default.deliveries} == {
        "ads": Status.DROPPED_CONSENT,
        "stats": Status.DROPPED_CONSENT,
    }
    gpc = pipeline(ads, stats).rows(event(consent_signals={"gpc": "1"}), ["ads", "stats"])
    assert by_destination(gpc) == {
        "ads": (Status.DROPPED_CONSENT, "consent: ad_storage denied (gpc)"),
        "stats": (Status.QUEUED, None),  # GPC leaves analytics alone
    }
    record = orjson.loads(gpc.consent or "")
    assert record["ad_storage"] == ["denied", "gpc"]
    assert record["analytics_storage"] == ["granted", "default"]
    ignored = pipeline(ads, honor_gpc=False).rows(event(consent_signals={"gpc": "1"}), ["ads"])
    assert [d.status for d in ignored.deliveries] == [Status.QUEUED]


def test_a_signal_the_hit_carries_is_not_taken_for_the_servers_word() -> None:
    # Only a server event's own consent (basis `server`) is explicit; a state some earlier step
    # resolved is decided again from the signals, which here deny ad storage.
    ads = FakeDestination("ads", FakeSettings(requires=("ad_storage",)))
    resolved = Consent(ad_storage=GRANTED, basis={"ad_storage": "default"})
    row = pipeline(ads).rows(event(consent=resolved, consent_signals={"gcs": "G100"}), ["ads"])
    assert by_destination(row) == {
        "ads": (Status.DROPPED_CONSENT, "consent: ad_storage denied (gcs)")
    }


@pytest.mark.parametrize(
    ("rejected", "status"),
    [
        (Rejected("no pixel for this event"), Status.DEAD),
        (Rejected("no client ID", skipped=True), Status.DROPPED_RULE),
    ],
)
def test_an_event_prepare_refuses_is_stored_without_payload(
    rejected: Rejected, status: Status
) -> None:
    refusing = FakeDestination("r", prepare=lambda e: rejected)
    [d] = pipeline(refusing).rows(event(), ["r"]).deliveries
    assert (d.status, d.message, d.payload) == (status, rejected.reason, None)


def test_personal_data_outside_user_is_dropped_before_any_destination_sees_it() -> None:
    a = FakeDestination("a")
    hit = event(custom=Custom(extra={"email": "ada@example.com", "plan": "gold"}))
    with capture_logs() as logs:
        pipeline(a).rows(hit, ["a"])
    [prepared] = a.prepared
    assert dict(prepared.custom.extra) == {"plan": "gold"}
    [warning] = [e for e in logs if e["event"] == "event.personal_data_dropped"]
    assert warning["fields"] == ["custom.email"]
    assert "ada@example.com" not in repr(logs)  # named, never quoted


async def test_ingest_commits_the_rows_and_counts_each_delivery_by_status() -> None:
    a = FakeDestination("a")
    leads = FakeDestination("leads", FakeSettings(events=("lead",)))
    p = pipeline(a, leads)
    outbox = p.store
    assert isinstance(outbox, FakeOutbox)
    woken: list[str] = []
    outbox.on_queued = woken.extend
    stored: list[tuple[Sequence[NewEvent], Sequence[Any]]] = []
    p.on_stored = lambda rows, added: stored.append((rows, added))
    added = await p.ingest([event(event_id="1"), event(event_id="2")], ["a", "leads"])
    assert [a.queued for a in added] == [1, 1]
    assert [e.event_id for e in outbox.events] == ["1", "2"]
    assert sorted((r.destination, r.status) for r in outbox.rows.values()) == [
        ("a", Status.QUEUED),
        ("a", Status.QUEUED),
        ("leads", Status.DROPPED_RULE),
        ("leads", Status.DROPPED_RULE),
    ]
    assert woken == ["a"]
    [(rows, stored_added)] = stored
    assert [r.event_id for r in rows] == ["1", "2"]
    assert list(stored_added) == added
    sample = p.metrics.registry.get_sample_value
    assert sample("tag_gateway_deliveries_total", {"destination": "a", "status": "queued"}) == 2
    assert (
        sample("tag_gateway_deliveries_total", {"destination": "leads", "status": "dropped_rule"})
        == 2
    )
