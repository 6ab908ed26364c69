"""Field rules: parsing with key-path errors, and applying them to canonical events."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.event import Custom, Event, User
from gateway.rules.field_rules import (
    DropEvents,
    Dropped,
    RenameEvent,
    Rule,
    apply_rules,
    parse_rules,
    split_shared,
)
from gateway.rules.url_params import redact_params

DESTINATIONS = ("meta", "tiktok", "ga4")
BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BROWSER_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15"


def make_event(**overrides: Any) -> Event:
    base: dict[str, Any] = {
        "event_id": "ord-1001",
        "event_name": "purchase",
        "event_time": 1_795_000_000,
        "source": "server",
        "event_source_url": "https://shop.example/thanks?order=1001&email=jane%40example.com",
        "referrer": "https://shop.example/checkout?Token=abc&step=3#pay",
        "user": User(
            email="jane@example.com",
            phone="+14155550100",
            client_ip="203.0.113.7",
            user_agent=BROWSER_UA,
        ),
        "custom": Custom(value=Decimal("129.90"), currency="EUR", extra={"coupon": "XMAS"}),
        "received_at": 1_795_000_001.5,
    }
    return Event(**(base | overrides))


def rules_of(*raw: dict[str, Any]) -> tuple[Rule, ...]:
    rules, problems = parse_rules(list(raw), DESTINATIONS)
    assert problems == []
    return rules


def problems_of(*raw: Any) -> list[str]:
    _, problems = parse_rules(list(raw), DESTINATIONS)
    assert problems
    return problems


def applied(event: Event, *raw: dict[str, Any], destination: str | None = "meta") -> Event:
    result = apply_rules(event, rules_of(*raw), destination)
    assert isinstance(result, Event)
    return result


# --- the contract's example ------------------------------------------------------------------


def test_the_contract_example_parses() -> None:
    rules = rules_of(
        {"redact_url_params": ["email", "phone", "token"]},
        {"drop_events": {"user_agent_matches": "(?i)bot|crawler|spider"}},
        {"destination": "tiktok", "drop_fields": ["user.phone"]},
    )
    assert [r.index for r in rules] == [0, 1, 2]
    event = make_event()
    meta = apply_rules(event, rules, "meta")
    tiktok = apply_rules(event, rules, "tiktok")
    assert isinstance(meta, Event)
    assert isinstance(tiktok, Event)
    assert meta.event_source_url == "https://shop.example/thanks?order=1001"
    assert meta.referrer == "https://shop.example/checkout?step=3#pay"
    assert meta.user.phone == "+14155550100"
    assert tiktok.user.phone is None
    bot = make_event(user=User(user_agent=BOT_UA))
    assert apply_rules(bot, rules, "meta") == Dropped(
        1, "rules[1].drop_events: user_agent_matches '(?i)bot|crawler|spider'"
    )


# --- redact_url_params -----------------------------------------------------------------------


def test_redaction_keeps_other_params_and_the_fragment_byte_for_byte() -> None:
    url = "https://shop.example/p?utm_source=x%20y&EMAIL=a%40b.c&q=caf%C3%A9+au+lait&&z=#frag?a"
    assert redact_params(url, {"email"}) == (
        "https://shop.example/p?utm_source=x%20y&q=caf%C3%A9+au+lait&&z=#frag?a"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://s.example/?email=a", "https://s.example/"),
        ("https://s.example/?email=a#top", "https://s.example/#top"),
        ("https://s.example/?a=1&email=x", "https://s.example/?a=1"),
        ("https://s.example/?email=x&a=1", "https://s.example/?a=1"),
        ("https://s.example/?%65mail=x&a=1", "https://s.example/?a=1"),
        ("https://s.example/?email&a=1", "https://s.example/?a=1"),
        ("https://s.example/?emails=x", "https://s.example/?emails=x"),
        ("https://s.example/?a=email", "https://s.example/?a=email"),
        ("https://s.example/#/cart?token=t&x=1", "https://s.example/#/cart?x=1"),
        ("https://s.example/#token=t&state=s", "https://s.example/#state=s"),
        ("https://s.example/#token", "https://s.example/#token"),
        ("https://s.example/?", "https://s.example/?"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_redaction_edge_cases(url: str, expected: str) -> None:
    assert redact_params(url, {"email", "token"}) == expected


def test_redaction_leaves_an_event_without_those_params_untouched() -> None:
    event = make_event(event_source_url="https://shop.example/", referrer=None)
    assert applied(event, {"redact_url_params": ["email"]}) is event


def test_redaction_names_are_case_insensitive_in_the_config_too() -> None:
    event = applied(make_event(), {"redact_url_params": ["TOKEN", "Email"]})
    assert event.event_source_url == "https://shop.example/thanks?order=1001"
    assert event.referrer == "https://shop.example/checkout?step=3#pay"


# --- drop_fields and set ---------------------------------------------------------------------


def test_drop_fields_clears_user_custom_extra_and_url_fields() -> None:
    event = make_event()
    out = applied(
        event,
        {"drop_fields": ["user.phone", "custom.value", "custom.coupon", "referrer", "custom.nope"]},
    )
    assert out.user == User(
        email="jane@example.com", client_ip="203.0.113.7", user_agent=BROWSER_UA
    )
    assert out.custom.value is None
    assert out.custom.currency == "EUR"
    assert out.custom.extra == {}
    assert out.referrer is None
    assert out.event_source_url == event.event_source_url
    # the input is never changed
    assert event.user.phone == "+14155550100"
    assert event.custom.extra == {"coupon": "XMAS"}


def test_drop_fields_empties_tuples() -> None:
    event = make_event(custom=Custom(content_ids=("a", "b")))
    assert applied(event, {"drop_fields": ["custom.content_ids"]}).custom.content_ids == ()


def test_set_converts_constants_to_the_fields_types() -> None:
    out = applied(
        make_event(),
        {
            "set": {
                "user.country": "us",
                "user.zip": 94107,
                "custom.value": "10.50",
                "custom.currency": "usd",
                "custom.num_items": 3,
                "custom.content_ids": ["sku-1", 2],
                "custom.shop": {"region": "eu", "ids": [1, 2]},
                "action_source": "physical_store",
                "event_source_url": "https://shop.example/store",
            }
        },
    )
    assert out.user.country == "us"
    assert out.user.zip == "94107"
    assert out.custom.value == Decimal("10.50")
    assert out.custom.currency == "USD"
    assert out.custom.num_items == 3
    assert out.custom.content_ids == ("sku-1", "2")
    assert out.custom.extra == {"coupon": "XMAS", "shop": {"region": "eu", "ids": [1, 2]}}
    assert out.action_source == "physical_store"
    assert out.event_source_url == "https://shop.example/store"


def test_set_gives_each_event_its_own_copy_of_a_container() -> None:
    rules = rules_of({"set": {"custom.tags": ["a"]}})
    first = apply_rules(make_event(), rules, None)
    second = apply_rules(make_event(), rules, None)
    assert isinstance(first, Event)
    assert isinstance(second, Event)
    first.custom.extra["tags"].append("b")
    assert second.custom.extra["tags"] == ["a"]


# --- drop_events -----------------------------------------------------------------------------


def test_drop_events_by_name() -> None:
    rules = rules_of({"drop_events": {"event_names": ["page_view"]}})
    assert apply_rules(make_event(event_name="page_view"), rules, "meta") == Dropped(
        0, "rules[0].drop_events: event_names has 'page_view'"
    )
    assert isinstance(apply_rules(make_event(), rules, "meta"), Event)


@pytest.mark.parametrize(
    ("ip", "dropped"),
    [
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),
        ("2001:db8::1", True),
        ("203.0.113.7", False),
        ("2001:db9::1", False),
        ("not an ip", False),
        ("", False),
        (None, False),
    ],
)
def test_drop_events_by_ip(ip: str | None, dropped: bool) -> None:
    rules = rules_of({"drop_events": {"ip_in": ["10.0.0.0/8", "2001:db8::/32"]}})
    result = apply_rules(make_event(user=User(client_ip=ip)), rules, "meta")
    assert isinstance(result, Dropped) is dropped


def test_drop_events_reason_names_the_network_not_the_ip() -> None:
    rules = rules_of({"drop_events": {"ip_in": ["192.0.2.1", "10.0.0.0/8"]}})
    result = apply_rules(make_event(user=User(client_ip="10.9.8.7")), rules, None)
    assert result == Dropped(0, "rules[0].drop_events: ip_in 10.0.0.0/8")


@pytest.mark.parametrize(("agent", "dropped"), [(BOT_UA, True), (BROWSER_UA, False), (None, False)])
def test_drop_events_by_user_agent_uses_search(agent: str | None, dropped: bool) -> None:
    rules = rules_of({"drop_events": {"user_agent_matches": "bot"}})
    result = apply_rules(make_event(user=User(user_agent=agent)), rules, "meta")
    assert isinstance(result, Dropped) is dropped


def test_drop_events_conditions_all_have_to_hold() -> None:
    rules = rules_of(
        {
            "drop_events": {
                "user_agent_matches": "(?i)bot",
                "ip_in": ["10.0.0.0/8"],
                "event_names": ["page_view"],
            }
        }
    )
    all_three = make_event(
        event_name="page_view", user=User(user_agent=BOT_UA, client_ip="10.0.0.1")
    )
    assert apply_rules(all_three, rules, "meta") == Dropped(
        0,
        "rules[0].drop_events: event_names has 'page_view'; user_agent_matches '(?i)bot'; "
        "ip_in 10.0.0.0/8",
    )
    for partial in (
        make_event(event_name="purchase", user=User(user_agent=BOT_UA, client_ip="10.0.0.1")),
        make_event(event_name="page_view", user=User(user_agent=BROWSER_UA, client_ip="10.0.0.1")),
        make_event(event_name="page_view", user=User(user_agent=BOT_UA, client_ip="192.0.2.1")),
        make_event(event_name="page_view", user=User(user_agent=BOT_UA)),
    ):
        assert isinstance(apply_rules(partial, rules, "meta"), Event)


def test_the_regex_is_compiled_once_at_parse_time() -> None:
    (rule,) = rules_of({"drop_events": {"user_agent_matches": "(?i)bot"}})
    assert isinstance(rule.action, DropEvents)
    assert rule.action.user_agent is not None
    assert rule.action.user_agent.pattern == "(?i)bot"


def test_dropped_carries_the_index_of_the_rule_that_dropped() -> None:
    rules = rules_of(
        {"redact_url_params": ["email"]},
        {"drop_events": {"event_names": ["lead"]}},
        {"drop_events": {"event_names": ["purchase"]}},
        {"drop_events": {"event_names": ["purchase"]}},
    )
    result = apply_rules(make_event(), rules, "meta")
    assert isinstance(result, Dropped)
    assert result.rule_index == 2


# --- rename_event, scope and order -----------------------------------------------------------


def test_rename_event() -> None:
    rules = rules_of({"rename_event": {"from": "generate_lead", "to": "lead"}})
    (rule,) = rules
    assert rule.action == RenameEvent("generate_lead", "lead")
    out = apply_rules(make_event(event_name="generate_lead"), rules, "meta")
    assert isinstance(out, Event)
    assert out.event_name == "lead"
    other = make_event()
    assert apply_rules(other, rules, "meta") is other


def test_a_rule_after_a_rename_sees_the_new_name() -> None:
    rules = rules_of(
        {"events": ["generate_lead"], "set": {"custom.origin": "before"}},
        {"rename_event": {"from": "generate_lead", "to": "lead"}},
        {"events": ["lead"], "set": {"custom.form": "newsletter"}},
        {"events": ["generate_lead"], "drop_fields": ["user.email"]},
    )
    out = apply_rules(make_event(event_name="generate_lead"), rules, "meta")
    assert isinstance(out, Event)
    assert out.event_name == "lead"
    assert out.custom.extra == {"coupon": "XMAS", "origin": "before", "form": "newsletter"}
    assert out.user.email == "jane@example.com"


def test_rules_run_in_order() -> None:
    out = applied(
        make_event(),
        {"set": {"custom.coupon": "ONE"}},
        {"drop_fields": ["custom.coupon"]},
        {"set": {"user.city": "Berlin"}},
        {"set": {"user.city": "Paris"}},
    )
    assert out.custom.extra == {}
    assert out.user.city == "Paris"


def test_scope_by_destination() -> None:
    rules = rules_of({"destination": "tiktok", "drop_events": {"event_names": ["purchase"]}})
    event = make_event()
    assert apply_rules(event, rules, "meta") is event
    assert apply_rules(event, rules, None) is event
    assert isinstance(apply_rules(event, rules, "tiktok"), Dropped)


def test_scope_by_events() -> None:
    rules = rules_of({"events": ["purchase", "lead"], "drop_fields": ["user.email"]})
    purchase = apply_rules(make_event(), rules, "meta")
    page_view = apply_rules(make_event(event_name="page_view"), rules, "meta")
    assert isinstance(purchase, Event)
    assert isinstance(page_view, Event)
    assert purchase.user.email is None
    assert page_view.user.email == "jane@example.com"


def test_scope_by_destination_and_events_together() -> None:
    rules = rules_of(
        {"destination": "ga4", "events": ["page_view"], "set": {"custom.page_title": "Shop"}}
    )
    hits = [
        apply_rules(make_event(event_name=name), rules, dest)
        for name in ("page_view", "purchase")
        for dest in ("ga4", "meta")
    ]
    titles = [h.custom.page_title for h in hits if isinstance(h, Event)]
    assert titles == ["Shop", None, None, None]


def test_split_shared_keeps_only_the_unscoped_prefix() -> None:
    rules = rules_of(
        {"redact_url_params": ["email"]},
        {"events": ["purchase"], "drop_fields": ["user.phone"]},
        {"destination": "tiktok", "rename_event": {"from": "purchase", "to": "order"}},
        {"events": ["order"], "drop_events": {"event_names": ["order"]}},
    )
    shared, scoped = split_shared(rules)
    assert [r.index for r in shared] == [0, 1]
    assert [r.index for r in scoped] == [2, 3]
    once = apply_rules(make_event(), shared, None)
    assert isinstance(once, Event)
    for dest in DESTINATIONS:
        assert apply_rules(once, scoped, dest) == apply_rules(make_event(), rules, dest)
    assert apply_rules(once, scoped, "tiktok") == Dropped(
        3, "rules[3].drop_events: event_names has 'order'"
    )
    assert split_shared(rules[:2]) == (rules[:2], ())


# --- config errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("drop_fields", "rules[0]: must be a mapping"),
        (
            {},
            "rules[0]: needs one action (redact_url_params, drop_fields, drop_events, set, "
            "rename_event)",
        ),
        (
            {"destination": "meta"},
            "rules[0]: needs one action (redact_url_params, drop_fields, "
            "drop_events, set, rename_event)",
        ),
        (
            {"drop_fields": ["user.phone"], "set": {"user.city": "x"}},
            "rules[0]: more than one action (drop_fields, set); write one rule each",
        ),
        ({"redact_url_params": ["email"], "foo": 1}, "rules[0].foo: unknown key"),
        (
            {"destination": "tiktk", "drop_fields": ["user.phone"]},
            "rules[0].destination: unknown destination 'tiktk'",
        ),
        (
            {"destination": 3, "drop_fields": ["user.phone"]},
            "rules[0].destination: must be a string",
        ),
        ({"events": [], "drop_fields": ["user.phone"]}, "rules[0].events: must not be empty"),
        ({"events": "purchase", "drop_fields": ["user.phone"]}, "rules[0].events: must be a list"),
        (
            {"events": ["purchase", ""], "drop_fields": ["user.phone"]},
            "rules[0].events[1]: must not be empty",
        ),
        ({"redact_url_params": []}, "rules[0].redact_url_params: must not be empty"),
        ({"redact_url_params": "email"}, "rules[0].redact_url_params: must be a list"),
        ({"redact_url_params": ["email", 7]}, "rules[0].redact_url_params[1]: must be a string"),
        ({"drop_fields": ["user.phon"]}, "rules[0].drop_fields[0]: unknown field path 'user.phon'"),
        (
            {"drop_fields": ["user.phone", "phone"]},
            "rules[0].drop_fields[1]: unknown field path 'phone'",
        ),
        ({"drop_fields": ["user"]}, "rules[0].drop_fields[0]: unknown field path 'user'"),
        (
            {"drop_fields": ["custom.a.b"]},
            "rules[0].drop_fields[0]: unknown field path 'custom.a.b'",
        ),
        ({"drop_fields": ["custom."]}, "rules[0].drop_fields[0]: unknown field path 'custom.'"),
        (
            {"drop_fields": ["consent.ad_storage"]},
            "rules[0].drop_fields[0]: unknown field path 'consent.ad_storage'",
        ),
        (
            {"drop_fields": ["event_id"]},
            "rules[0].drop_fields[0]: 'event_id' cannot be dropped "
            "(the platforms deduplicate on it)",
        ),
        (
            {"drop_fields": ["event_name"]},
            "rules[0].drop_fields[0]: 'event_name' cannot be dropped (use rename_event)",
        ),
        (
            {"drop_fields": ["event_time"]},
            "rules[0].drop_fields[0]: 'event_time' cannot be dropped "
            "(it is when the source saw the event)",
        ),
        (
            {"drop_fields": ["action_source"]},
            "rules[0].drop_fields[0]: 'action_source' cannot be "
            "dropped (every event has one); set it",
        ),
        (
            {"drop_events": {}},
            "rules[0].drop_events: needs at least one of user_agent_matches, ip_in, event_names",
        ),
        (
            {"drop_events": None},
            "rules[0]: needs one action (redact_url_params, drop_fields, "
            "drop_events, set, rename_event)",
        ),
        ({"drop_events": ["bot"]}, "rules[0].drop_events: must be a mapping"),
        ({"drop_events": {"user_agent": "bot"}}, "rules[0].drop_events.user_agent: unknown key"),
        (
            {"drop_events": {"user_agent_matches": "(?i)bot|("}},
            "rules[0].drop_events.user_agent_matches: invalid regex: "
            "missing ), unterminated subpattern at position 8",
        ),
        (
            {"drop_events": {"user_agent_matches": ""}},
            "rules[0].drop_events.user_agent_matches: must not be empty",
        ),
        (
            {"drop_events": {"ip_in": ["10.0.0.0/8", "10.0.0.0/33"]}},
            "rules[0].drop_events.ip_in[1]: not an IP network: '10.0.0.0/33'",
        ),
        ({"drop_events": {"ip_in": []}}, "rules[0].drop_events.ip_in: must not be empty"),
        (
            {"drop_events": {"event_names": []}},
            "rules[0].drop_events.event_names: must not be empty",
        ),
        ({"set": {}}, "rules[0].set: must not be empty"),
        ({"set": ["user.city"]}, "rules[0].set: must be a mapping"),
        ({"set": {"user.phon": "1"}}, "rules[0].set.user.phon: unknown field path 'user.phon'"),
        (
            {"set": {"event_name": "x"}},
            "rules[0].set.event_name: 'event_name' cannot be set (use rename_event)",
        ),
        (
            {"set": {"event_id": "x"}},
            "rules[0].set.event_id: 'event_id' cannot be set (the platforms deduplicate on it)",
        ),
        (
            {"set": {"event_time": 1}},
            "rules[0].set.event_time: 'event_time' cannot be set "
            "(it is when the source saw the event)",
        ),
        (
            {"set": {"user.city": None}},
            "rules[0].set.user.city: must not be null (to remove a field, use drop_fields)",
        ),
        ({"set": {"user.city": ""}}, "rules[0].set.user.city: must not be empty"),
        ({"set": {"user.city": ["x"]}}, "rules[0].set.user.city: must be a string"),
        ({"set": {"user.city": True}}, "rules[0].set.user.city: must be a string"),
        (
            {"set": {"action_source": "web"}},
            "rules[0].set.action_source: must be one of app, "
            "business_messaging, chat, email, other, phone_call, physical_store, system_generated, "
            "website",
        ),
        (
            {"set": {"custom.value": "ten"}},
            "rules[0].set.custom.value: must be a decimal number, not negative",
        ),
        (
            {"set": {"custom.value": -1}},
            "rules[0].set.custom.value: must be a decimal number, not negative",
        ),
        (
            {"set": {"custom.currency": "EUR0"}},
            "rules[0].set.custom.currency: unknown currency 'EUR0'",
        ),
        (
            {"set": {"custom.num_items": 2.5}},
            "rules[0].set.custom.num_items: must be a whole number, not negative",
        ),
        (
            {"set": {"custom.content_ids": "sku-1"}},
            "rules[0].set.custom.content_ids: must be a non-empty list of IDs",
        ),
        (
            {"set": {"custom.contents": []}},
            "rules[0].set.custom.contents: 'custom.contents' cannot be set, only dropped",
        ),
        (
            {"set": {"custom.launch": float("nan")}},
            "rules[0].set.custom.launch: must be a string, number, boolean, list or mapping",
        ),
        (
            {"set": {"custom.launch": {1: "x"}}},
            "rules[0].set.custom.launch: must be a string, number, boolean, list or mapping",
        ),
        ({"rename_event": {"from": "a"}}, "rules[0].rename_event.to: required"),
        (
            {"rename_event": {"from": "a", "to": "a"}},
            "rules[0].rename_event.to: the same name as from",
        ),
        ({"rename_event": "a"}, "rules[0].rename_event: must be a mapping"),
    ],
)
def test_config_errors_name_the_key_path(raw: Any, problem: str) -> None:
    assert problems_of(raw) == [problem]


def test_problems_are_exactly_these_lines() -> None:
    # A mapping of old to new names is not the form: every key it lacks and has is named.
    assert problems_of({"rename_event": {"a": "b"}}) == [
        "rules[0].rename_event.from: required",
        "rules[0].rename_event.to: required",
        "rules[0].rename_event.a: unknown key",
    ]


def test_every_problem_of_every_rule_is_reported_with_its_index() -> None:
    rules, problems = parse_rules(
        [
            {"redact_url_params": ["email"]},
            {"drop_events": {"user_agent_matches": "(", "ip_in": ["nope"]}},
            {"destination": "tiktk", "drop_fields": ["user.phon", "user.phone", "custom.ok"]},
            {"redact_url_params": ["email"], "foo": 1},
        ],
        DESTINATIONS,
    )
    assert problems == [
        "rules[1].drop_events.user_agent_matches: invalid regex: "
        "missing ), unterminated subpattern at position 0",
        "rules[1].drop_events.ip_in[0]: not an IP network: 'nope'",
        "rules[2].destination: unknown destination 'tiktk'",
        "rules[2].drop_fields[0]: unknown field path 'user.phon'",
        "rules[3].foo: unknown key",
    ]
    assert [r.index for r in rules] == [0]


def test_a_host_address_counts_as_its_single_address_network() -> None:
    (rule,) = rules_of({"drop_events": {"ip_in": ["192.0.2.1", "10.1.2.3/8"]}})
    assert isinstance(rule.action, DropEvents)
    assert rule.action.networks == (
        ipaddress.ip_network("192.0.2.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )


def test_rules_are_immutable() -> None:
    (rule,) = rules_of({"events": ["purchase"], "redact_url_params": ["email"]})
    with pytest.raises(AttributeError):
        rule.index = 3  # type: ignore[misc]
    assert isinstance(rule.events, frozenset)


# --- never raises ----------------------------------------------------------------------------

_RULES = rules_of(
    {"redact_url_params": ["email", "token", "é"]},
    {"drop_fields": ["user.phone", "custom.coupon"]},
    {"set": {"custom.tag": ["a"], "user.country": "de"}},
    {"rename_event": {"from": "x", "to": "page_view"}},
    {"events": ["page_view"], "drop_events": {"user_agent_matches": "(?i)bot|crawl"}},
    {"destination": "meta", "drop_events": {"ip_in": ["10.0.0.0/8", "::ffff:0:0/96", "fe80::/10"]}},
)
_url_text = st.text(st.characters(codec="utf-8"), max_size=80)
_url_like = st.builds(
    lambda base, sep, pairs, frag: base + sep + "&".join(pairs) + frag,
    st.sampled_from(["https://s.example/p", "", "?", "#", "https://s.example/#/c"]),
    st.sampled_from(["?", "#", "#?", ""]),
    st.lists(st.sampled_from(["email=a", "EMAIL", "%65mail=1", "token=", "a=b", "", "=", "é=1"])),
    st.sampled_from(["", "#", "#email=1", "#x?token=2&y"]),
)
_ips = st.one_of(
    st.none(),
    st.ip_addresses().map(str),
    st.text(max_size=40),
    st.sampled_from(["fe80::1%eth0", "::ffff:10.0.0.1", "10.0.0.1 ", "10.0.0.1:443"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    url=st.one_of(st.none(), _url_text, _url_like),
    referrer=st.one_of(st.none(), _url_text, _url_like),
    agent=st.one_of(st.none(), st.text(max_size=120), st.just(BOT_UA)),
    ip=_ips,
    name=st.sampled_from(["x", "page_view", "purchase", ""]),
    destination=st.sampled_from([None, *DESTINATIONS]),
)
def test_apply_rules_never_raises(
    url: str | None,
    referrer: str | None,
    agent: str | None,
    ip: str | None,
    name: str,
    destination: str | None,
) -> None:
    event = make_event(
        event_name=name,
        event_source_url=url,
        referrer=referrer,
        user=User(user_agent=agent, client_ip=ip, phone="1"),
    )
    result = apply_rules(event, _RULES, destination)
    if isinstance(result, Event):
        assert result.user.phone is None
        for text in (result.event_source_url, result.referrer):
            if text is not None:
                # redacting again finds nothing left to take out
                assert redact_params(text, {"email", "token", "é"}) == text
    else:
        assert result.rule_index in (4, 5)
