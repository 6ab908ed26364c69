"""Preview through real HTTP: sessions, the `/preview/<id>` link, and what a trace holds for a
pixel hit, a multi-event GA4 POST and a server API batch, attempts included, against fake
platforms on 127.0.0.1."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.config import Config
from gateway.preview.pages import PREVIEW
from tests.conftest import FakePlatform, Gateway, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

ADMIN = {"Authorization": "Bearer adm1n-t0ken-0123456789"}
META_TOKEN = "EAAB-meta-secret-token-123"
GA4_SECRET = "ga4-secret-xyz"
API_KEY = "backend-key-987-0123456"


def config_text(platform: str, extra: str = "") -> str:
    return f"""
admin: {{token: adm1n-t0ken-0123456789}}
allowed_origins: [https://www.shop.example]
cookies: {{domain: shop.example}}
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: {META_TOKEN}
    endpoint: {platform}
    batch: {{max_wait_ms: 0}}
    retry: {{base_ms: 10, max_ms: 20}}
  ga4:
    type: ga4_mp
    measurement_id: G-ABC123
    api_secret: {GA4_SECRET}
    endpoint: {platform}
    batch: {{max_wait_ms: 0}}
  buys: {{type: dry_run, events: [purchase]}}
sources:
  meta_pixel: {{send_to: [meta, buys]}}
  ga4: {{send_to: [ga4, meta]}}
  server: {{send_to: [meta, ga4], api_keys: [{API_KEY}]}}
{extra}
"""


async def start_session(gw: Gateway) -> str:
    response = await gw.client.post("/admin/api/preview", headers=ADMIN)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["expires_at"] == pytest.approx(time.time() + 3600, abs=5)
    return str(body["id"])


async def traces(gw: Gateway, session: str, after: int = 0, wait: float = 0) -> dict[str, Any]:
    response = await gw.client.get(
        f"/admin/api/preview/{session}/traces", params={"after": after, "wait": wait}, headers=ADMIN
    )
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def settled(gw: Gateway, session: str, done: Callable[[list[dict[str, Any]]], bool]) -> Any:
    """The session's traces once `done` says they are complete."""
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        found[:] = (await traces(gw, session))["traces"]
        return done(found)

    await eventually(check, within=10)
    return sorted(found, key=lambda t: t["id"])


def attempts(trace: dict[str, Any], destination: str, index: int = 0) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = trace["events"][index]["destinations"][destination]["attempts"]
    return result


async def test_a_session_is_started_with_the_admin_token_only(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    refused = await gw.client.post("/admin/api/preview")
    assert refused.status == 401
    wrong = await gw.client.post("/admin/api/preview", headers={"Authorization": "Bearer no"})
    assert wrong.status == 401
    session = await start_session(gw)
    assert len(session) >= 22  # at least 128 bits in base64url
    assert session != await start_session(gw)
    assert (await gw.client.get(f"/admin/api/preview/{session}/traces")).status == 401
    unknown = await gw.client.get("/admin/api/preview/nope/traces", headers=ADMIN)
    assert unknown.status == 404


async def test_a_traced_pixel_hit_shows_request_events_consent_fates_and_attempts(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    fake_platform.default = lambda r: web.json_response({"events_received": 1, "fbtrace_id": "A1"})
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    session = await start_session(gw)
    dl = "https%3A%2F%2Fshop.example%2Fp%3Fsku%3D7%26token%3Dreset-abc-123"
    hit = await gw.client.get(
        f"/tr/?id=1234567890&ev=ViewContent&eid=vc-1&dl={dl}&cd[value]=5&cd[currency]=EUR",
        headers={
            "User-Agent": "Mozilla/5.0 preview",
            "Referer": "https://shop.example/",
            "X-Tag-Gateway-Preview": session,
        },
    )
    assert hit.status == 200
    (trace,) = await settled(gw, session, lambda ts: bool(ts and attempts(ts[0], "meta")))

    request = trace["request"]
    assert request["method"] == "GET"
    assert request["path"] == "/tr/"
    query = dict(request["query"])
    assert query["ev"] == "ViewContent"
    assert query["dl"] == "https://shop.example/p?sku=7&token=%E2%80%A2%E2%80%A2%E2%80%A2"
    assert request["headers"]["User-Agent"] == "Mozilla/5.0 preview"
    assert request["headers"]["Referer"] == "https://shop.example/"
    assert (trace["source"], trace["outcome"]) == ("meta_pixel", "ok")
    assert trace["received_at"] == pytest.approx(time.time(), abs=30)

    (event,) = trace["events"]
    assert (event["event_id"], event["event_name"]) == ("vc-1", "view_content")
    assert event["event"]["custom"]["currency"] == "EUR"
    assert event["consent"]["ad_user_data"] == {"state": "granted", "signal": "default"}
    dests = event["destinations"]
    assert dests["buys"]["status"] == "skipped"
    assert dests["buys"]["reason"] == "not in events: [purchase]"
    meta = dests["meta"]
    assert meta["status"] == "queued"
    assert meta["payload"]["event_id"] == "vc-1"
    assert meta["payload"]["event_name"] == "ViewContent"
    (attempt,) = meta["attempts"]
    assert attempt["url"].startswith(f"{fake_platform.url}/")
    assert attempt["url"].endswith("/1234567890/events")
    assert attempt["http_status"] == 200
    assert orjson.loads(attempt["response_body"]) == {"events_received": 1, "fbtrace_id": "A1"}
    assert attempt["verdict"] == "sent"
    assert attempt["latency_ms"] >= 0
    assert attempt["at"] == pytest.approx(time.time(), abs=30)
    sent = orjson.loads(attempt["request_body"])
    assert sent["data"][0]["event_id"] == "vc-1"
    assert sent["access_token"] == "•••"
    # The control: Meta itself got the token, the trace never did.
    assert fake_platform.requests[0].json()["access_token"] == META_TOKEN
    text = orjson.dumps(trace).decode()
    for secret in (META_TOKEN, "reset-abc-123", "adm1n-t0ken-0123456789"):
        assert secret not in text


async def test_a_traced_multi_event_ga4_post_shows_each_event_and_the_url_without_its_secret(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    fake_platform.default = lambda r: web.Response(status=204)
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    session = await start_session(gw)
    body = "en=page_view&ep.event_id=ga-1&_et=10\nen=add_to_cart&ep.event_id=ga-2&_et=20"
    hit = await gw.client.post(
        "/g/collect?v=2&tid=G-ABC123&cid=1489945657.1691089601&_p=1&gcs=G101"
        "&dl=https%3A%2F%2Fshop.example%2F",
        data=body,
        headers={"Content-Type": "text/plain", "Cookie": f"tg_preview={session}"},
    )
    assert hit.status == 204

    def complete(ts: list[dict[str, Any]]) -> bool:
        return bool(ts) and all(attempts(ts[0], "ga4", i) for i in range(len(ts[0]["events"])))

    (trace,) = await settled(gw, session, complete)
    assert (trace["source"], trace["outcome"]) == ("ga4", "ok")
    assert trace["request"]["method"] == "POST"
    assert trace["request"]["body_text"].splitlines()[1].startswith("en=add_to_cart")
    assert [e["event_id"] for e in trace["events"]] == ["ga-1", "ga-2"]
    for event in trace["events"]:
        # gcs=G101: ad_storage denied, analytics_storage granted, both decided by gcs.
        assert event["consent"]["ad_storage"] == {"state": "denied", "signal": "gcs"}
        assert event["consent"]["analytics_storage"] == {"state": "granted", "signal": "gcs"}
        meta = event["destinations"]["meta"]
        assert meta["status"] == "dropped_consent"
        assert "ad_storage denied (gcs)" in meta["reason"]
        ga4 = event["destinations"]["ga4"]
        (attempt,) = ga4["attempts"]
        assert "api_secret=%E2%80%A2%E2%80%A2%E2%80%A2" in attempt["url"]
        assert attempt["http_status"] == 204
        assert attempt["verdict"] == "sent"
    assert GA4_SECRET not in orjson.dumps(trace).decode()
    assert any(GA4_SECRET in r.query.get("api_secret", "") for r in fake_platform.requests)


async def test_a_traced_server_batch_shows_rejected_duplicate_and_queued(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    session = await start_session(gw)
    now = int(time.time())

    def event(event_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "event_name": "purchase",
            "event_time": now,
            "event_source_url": "https://shop.example/thanks",
            "user": {
                "email": "Jane.Doe@Example.com",
                "client_ip": "203.0.113.7",
                "user_agent": "Mozilla/5.0",
            },
            "custom": {"value": "10", "currency": "EUR"},
            **extra,
        }

    headers = {"Authorization": f"Bearer {API_KEY}", "X-Tag-Gateway-Preview": session}
    first = await gw.client.post("/v1/events", json={"events": [event("ord-1")]}, headers=headers)
    assert first.status == 202
    batch = {
        "events": [
            event("ord-1"),
            event("ord-2"),
            event("bad", custom={"value": "1", "currency": "EUR0"}),
        ]
    }
    second = await gw.client.post("/v1/events", json=batch, headers=headers)
    assert (await second.json())["duplicates"] == 1

    def complete(ts: list[dict[str, Any]]) -> bool:
        return len(ts) == 2 and all(
            d["attempts"] or d["status"] != "queued"
            for t in ts
            for e in t["events"]
            for d in e["destinations"].values()
        )

    one, two = await settled(gw, session, complete)
    assert (one["source"], one["outcome"]) == ("server", "ok")
    assert two["reason"].startswith("1 accepted, 1 duplicates, 1 rejected: [2] custom.currency")
    assert [e["event_id"] for e in two["events"]] == ["ord-1", "ord-2"]
    first_meta = one["events"][0]["destinations"]["meta"]
    dup = two["events"][0]["destinations"]["meta"]
    assert dup["status"] == "duplicate"
    assert dup["payload"] is None
    assert dup["duplicate_of"] > 0
    assert dup["reason"] == f"duplicate of delivery {dup['duplicate_of']}"
    assert first_meta["status"] == "queued"
    assert first_meta["attempts"][0]["verdict"] == "sent"
    assert two["events"][1]["destinations"]["meta"]["status"] == "queued"
    assert one["events"][0]["consent"]["ad_user_data"]["signal"] == "default"
    # Personal data as stored: hashed in the payload, masked in the request and the event.
    user = one["events"][0]["event"]["user"]
    assert user["email"] == "J•••@E•••.com"
    em = first_meta["payload"]["user_data"]["em"]
    assert hashlib.sha256(b"jane.doe@example.com").hexdigest() in (em, *em)
    body = one["request"]["body_json"]["events"][0]
    assert body["user"]["email"] == "J•••@E•••.com"
    text = orjson.dumps([one, two]).decode()
    assert "Jane.Doe" not in text
    assert "jane.doe" not in text
    assert API_KEY not in text


async def test_an_attempt_shows_the_answer_of_a_200_and_of_a_400_with_its_error(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    error = {"error": {"message": "Invalid parameter", "type": "OAuthException", "code": 100}}
    fake_platform.then(
        lambda r: web.json_response({"events_received": 1}),
        lambda r: web.json_response(error, status=400),
    )
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    session = await start_session(gw)
    for eid in ("ok-1", "bad-1"):
        await gw.client.get(
            f"/tr?id=1234567890&ev=PageView&dl=https%3A%2F%2Fshop.example%2F&eid={eid}",
            headers={"X-Tag-Gateway-Preview": session, "User-Agent": "UA"},
        )
        await eventually(
            lambda eid=eid: any(eid in r.body.decode() for r in fake_platform.requests)
        )

    def complete(ts: list[dict[str, Any]]) -> bool:
        return len(ts) == 2 and all(attempts(t, "meta") for t in ts)

    ok, bad = await settled(gw, session, complete)
    (a,) = attempts(ok, "meta")
    assert (a["http_status"], a["verdict"]) == (200, "sent")
    assert orjson.loads(a["response_body"]) == {"events_received": 1}
    (b,) = attempts(bad, "meta")
    assert (b["http_status"], b["verdict"]) == (400, "dead")
    assert orjson.loads(b["response_body"]) == error
    assert "Invalid parameter" in b["message"]


async def test_a_retried_delivery_shows_each_attempt_as_it_happens(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    fake_platform.then(lambda r: web.Response(status=503, text="busy"))
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    session = await start_session(gw)
    await gw.client.get(
        "/tr?id=1234567890&ev=PageView&dl=https%3A%2F%2Fshop.example%2F&eid=r-1",
        headers={"X-Tag-Gateway-Preview": session},
    )
    (trace,) = await settled(gw, session, lambda ts: bool(ts) and len(attempts(ts[0], "meta")) == 2)
    first, second = attempts(trace, "meta")
    assert (first["http_status"], first["verdict"]) == (503, "retry")
    assert first["response_body"] == "busy"
    assert (second["http_status"], second["verdict"]) == (200, "sent")


async def test_untraced_hits_are_absent_and_answered_the_same(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    session = await start_session(gw)
    answers = []
    for eid, header in (("plain", None), ("unknown", "not-a-session"), ("traced", session)):
        headers = {"X-Tag-Gateway-Preview": header} if header else {}
        response = await gw.client.get(
            f"/tr?id=1234567890&ev=PageView&dl=https%3A%2F%2Fshop.example%2F&eid={eid}",
            headers=headers,
        )
        answers.append((response.status, response.content_type, await response.read()))
    assert answers[0] == answers[1] == answers[2]
    (trace,) = (await traces(gw, session))["traces"]
    assert trace["events"][0]["event_id"] == "traced"
    # An expired session traces nothing.
    gw.app[PREVIEW].sessions[session].expires_at = time.time() - 1
    await gw.client.get(
        "/tr?id=1234567890&ev=PageView&dl=https%3A%2F%2Fshop.example%2F&eid=late",
        headers={"X-Tag-Gateway-Preview": session},
    )
    expired = await gw.client.get(f"/admin/api/preview/{session}/traces", headers=ADMIN)
    assert expired.status == 404
    rows = await gw.rows("SELECT event_id FROM events ORDER BY id")
    assert [r[0] for r in rows] == ["plain", "unknown", "traced", "late"]


async def test_the_long_poll_answers_when_a_hit_arrives(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    import asyncio

    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    session = await start_session(gw)
    empty = await traces(gw, session, wait=0)
    assert empty == {"traces": [], "next": 0, "expires_at": empty["expires_at"]}
    poll = asyncio.ensure_future(traces(gw, session, after=0, wait=20))
    await asyncio.sleep(0.2)
    assert not poll.done()  # the control: it is waiting
    started = time.monotonic()
    await gw.client.get(
        "/tr?id=1234567890&ev=PageView&dl=https%3A%2F%2Fshop.example%2F&eid=lp-1",
        headers={"X-Tag-Gateway-Preview": session},
    )
    result = await asyncio.wait_for(poll, 15)
    assert time.monotonic() - started < 10
    assert result["traces"][0]["events"][0]["event_id"] == "lp-1"
    assert result["next"] >= result["traces"][0]["seq"]
    # A trace comes again, with a higher seq, when its attempt is added.
    (later,) = await settled(gw, session, lambda ts: bool(ts) and bool(attempts(ts[0], "meta")))
    assert later["seq"] > result["traces"][0]["seq"]
    assert later["id"] == result["traces"][0]["id"]
    bad = await gw.client.get(f"/admin/api/preview/{session}/traces?after=x", headers=ADMIN)
    assert bad.status == 400


async def test_a_session_keeps_its_last_200_traces(
    start_gateway: Start, make_config: MakeConfig, sqlite_only: None
) -> None:
    gw = await start_gateway(
        make_config(
            "admin: {token: adm1n-t0ken-0123456789}\ndestinations: {audit: {type: dry_run}}\n"
            "sources: {meta_pixel: {send_to: [audit]}}\n"
        )
    )
    session = await start_session(gw)
    for i in range(205):
        await gw.client.get(
            f"/tr?id=1&ev=PageView&dl=https%3A%2F%2Fshop.example%2F&eid=m-{i}",
            headers={"X-Tag-Gateway-Preview": session},
        )
    kept = (await traces(gw, session))["traces"]
    ids = sorted(t["events"][0]["event_id"] for t in kept)
    assert len(kept) == 200
    assert "m-4" not in ids
    assert {"m-5", "m-204"} <= set(ids)
    preview = gw.app[PREVIEW]
    # Rows of forgotten traces are forgotten too (dry_run rows may already be done).
    assert len(preview.tracing.rows) <= 200
    for _ in range(12):
        await start_session(gw)
    assert len(preview.sessions) == 8


async def test_the_link_sets_the_cookie_and_redirects_only_to_the_shop(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    session = await start_session(gw)
    for good in (
        "https://shop.example/",
        "https://m.shop.example/p?x=1",
        "https://www.shop.example",
    ):
        response = await gw.client.get(
            f"/preview/{session}", params={"to": good}, allow_redirects=False
        )
        assert response.status == 302, good
        assert response.headers["Location"] == good
        cookie = response.cookies["tg_preview"]
        assert cookie.value == session
        assert cookie["httponly"]
        assert int(cookie["max-age"]) == pytest.approx(3600, abs=10)
    for bad in (
        "http://shop.example/",
        "https://evil.example/",
        "https://shop.example.evil.example/",
        "https://evil.example\\@shop.example/",
        "https://shop.example@evil.example/",
        "//evil.example/",
        "javascript:alert(1)",
        "",
    ):
        response = await gw.client.get(
            f"/preview/{session}", params={"to": bad}, allow_redirects=False
        )
        assert response.status == 400, bad
        assert "Location" not in response.headers
    unknown = await gw.client.get(
        "/preview/nope", params={"to": "https://shop.example/"}, allow_redirects=False
    )
    assert unknown.status == 404
    # The cookie the link set traces the visitor's hits.
    await gw.client.get(
        "/tr?id=1234567890&ev=PageView&dl=https%3A%2F%2Fshop.example%2F&eid=phone-1",
        headers={"Cookie": f"tg_preview={session}"},
    )
    (trace,) = (await traces(gw, session))["traces"]
    assert trace["events"][0]["event_id"] == "phone-1"


async def test_no_plaintext_personal_data_or_secret_reaches_a_trace(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    gw = await start_gateway(
        make_config(config_text(fake_platform.url, "rules:\n  - redact_url_params: [sid]\n"))
    )
    session = await start_session(gw)
    headers = {"X-Tag-Gateway-Preview": session, "User-Agent": "UA"}
    dl = "https%3A%2F%2Fshop.example%2F%3Fe%3Dcanary%40example.org%26sid%3Dsess-777"
    await gw.client.get(
        "/tr?id=1234567890&ev=Lead&eid=pii-1&ud[em]=canary%40example.org&ud[fn]=Zebediah"
        f"&ud[ln]=Quixote&ud[ph]=4155550199&ud[ct]=Springfieldia&cd[shipping_address]=1+Elm+St&dl={dl}",
        headers=headers,
    )
    await gw.client.post(
        "/g/collect?v=2&tid=G-ABC123&cid=1.2&en=sign_up&ep.event_id=pii-2"
        "&ep.email=canary%40example.org&up.phone=4155550199&ep.customer_name=Zebediah",
        headers=headers,
    )
    await gw.client.post(
        "/v1/events",
        json={
            "events": [
                {
                    "event_id": "pii-3",
                    "event_name": "lead",
                    "event_time": int(time.time()),
                    "user": {
                        "email": "canary@example.org",
                        "phone": "+1 415 555 0199",
                        "first_name": "Zebediah",
                        "last_name": "Quixote",
                        "city": "Springfieldia",
                        "external_id": "cust-canary-42",
                    },
                    "custom": {"note": "call canary@example.org"},
                }
            ]
        },
        headers={**headers, "Authorization": f"Bearer {API_KEY}"},
    )
    found = await settled(gw, session, lambda ts: len(ts) == 3)
    text = orjson.dumps(found).decode()
    for control in ("pii-1", "pii-2", "pii-3"):
        assert control in text
    for needle in (
        "canary@example.org",
        "canary%40example.org",
        "Zebediah",
        "Quixote",
        "4155550199",
        "415 555 0199",
        "Springfieldia",
        "Elm St",
        "cust-canary-42",
        "sess-777",
        META_TOKEN,
        GA4_SECRET,
        API_KEY,
        "adm1n-t0ken-0123456789",
    ):
        assert needle not in text, needle
    assert "c•••@e•••.org" in text


async def test_refused_and_malformed_hits_are_traced_with_their_reason(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    session = await start_session(gw)
    traced = {"X-Tag-Gateway-Preview": session}
    wrong_key = await gw.client.post(
        "/v1/events", json={"events": []}, headers={**traced, "Authorization": "Bearer nope"}
    )
    assert wrong_key.status == 401
    not_json = await gw.client.post(
        "/v1/events", data=b"{oops", headers={**traced, "Authorization": f"Bearer {API_KEY}"}
    )
    assert not_json.status == 400
    no_event = await gw.client.get("/g/collect?v=2&tid=G-ABC123&cid=1.2", headers=traced)
    assert no_event.status == 204
    found = await settled(gw, session, lambda ts: len(ts) == 3)
    outcomes = [(t["source"], t["outcome"]) for t in found]
    assert outcomes == [("server", "unauthorized"), ("server", "malformed"), ("ga4", "malformed")]
    assert found[0]["reason"] == "missing or wrong API key"
    assert found[1]["reason"]
    assert found[1]["events"] == []
    assert found[2]["reason"]
    assert "nope" not in orjson.dumps(found).decode()


async def test_a_trace_names_the_rule_that_dropped_and_the_consent_that_limited(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    text = config_text(
        fake_platform.url, 'rules:\n  - drop_events: {user_agent_matches: "(?i)bot"}\n'
    ).replace(
        "    batch: {max_wait_ms: 0}\n    retry:",
        "    on_denied: limited\n    batch: {max_wait_ms: 0}\n    retry:",
    )
    gw = await start_gateway(make_config(text))
    session = await start_session(gw)
    dl = "https%3A%2F%2Fshop.example%2F"
    for eid, ua in (("bot-1", "Googlebot/2.1"), ("human-1", "Mozilla/5.0")):
        await gw.client.get(
            f"/g/collect?v=2&tid=G-ABC123&cid=1.2&en=page_view&ep.event_id={eid}&gcs=G101&dl={dl}",
            headers={"X-Tag-Gateway-Preview": session, "User-Agent": ua},
        )
    bot, human = await settled(gw, session, lambda ts: len(ts) == 2)
    for dest in bot["events"][0]["destinations"].values():
        assert dest["status"] == "dropped_rule"
        assert dest["reason"].startswith("rules[0]")
    meta = human["events"][0]["destinations"]["meta"]
    assert meta["status"] == "limited"
    assert meta["reason"].startswith("limited by consent: ad_storage denied (gcs)")
    assert meta["payload"]["event_id"] == "human-1"
    assert human["events"][0]["destinations"]["ga4"]["status"] == "queued"


async def test_an_ignored_hit_traces_no_plaintext_personal_data(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    # An unknown pixel, and a hit with no pixel or event at all: neither reaches the stage
    # where the events' personal values are learned, yet both traces show the hit.
    text = config_text(fake_platform.url)  # without dry_run, which takes every pixel's hits
    gw = await start_gateway(make_config(text.replace("[meta, buys]", "[meta]")))
    session = await start_session(gw)
    headers = {"X-Tag-Gateway-Preview": session}
    person = "ud[ph]=4155550100&ud[fn]=janetta&ud[ln]=quixotic&ud[ct]=springfieldia"
    unknown = await gw.client.get(f"/tr?id=999999999&ev=Lead&{person}", headers=headers)
    bare = await gw.client.get(f"/tr?{person}", headers=headers)
    assert (unknown.status, bare.status) == (200, 200)
    found = await settled(gw, session, lambda ts: len(ts) == 2)
    # Control: both were traced, and ignored.
    assert [t["reason"] for t in found] == ["unknown id 999999999", "no id or ev"]
    text = orjson.dumps(found).decode()
    assert "ud[ph]" in text or "ud%5Bph%5D" in text  # control: the parameters are shown
    for needle in ("4155550100", "janetta", "quixotic", "springfieldia"):
        assert needle not in text, needle


async def test_a_trace_shows_every_vendors_id_cookies_and_no_other(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    """The ID cookies the gateway passes on to Pinterest, Reddit and Snapchat are shown beside
    Meta's: a trace is where a missing `_epik` should stand out."""
    fake_platform.default = lambda r: web.json_response({"events_received": 1})
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    session = await start_session(gw)
    cookies = {
        "_fbp": "fb.1.1596403881668.1116446470",
        "_epik": "ep-1",
        "_rdt_uuid": "1700000000000.rd",
        "_scid": "sc-1",
    }
    hit = await gw.client.get(
        "/tr/?id=1234567890&ev=PageView&eid=pv-9&dl=https%3A%2F%2Fshop.example%2F",
        headers={
            "User-Agent": "Mozilla/5.0 preview",
            "X-Tag-Gateway-Preview": session,
            "Cookie": "; ".join(f"{k}={v}" for k, v in {**cookies, "cart": "c-1"}.items()),
        },
    )
    assert hit.status == 200
    (trace,) = await settled(gw, session, lambda ts: bool(ts))
    assert trace["request"]["cookies"] == cookies
