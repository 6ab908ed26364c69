"""What reaches each platform is the browser's own: its IDs, to its own pixel, and every skip has
a delivery row that says why. Gateway on a socket, real storage, fake platforms on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson
import pytest
import structlog
from aiohttp import web

from gateway.config import Config
from tests.conftest import FakePlatform, Gateway, Recorded, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

UA = "Mozilla/5.0 (X11)"
FBP_OWN = "fb.1.1748957013743.1524724929324944"
FBP_APPENDIX = "fb.1.1778869247376.52390506499288804.AQYCAQMA"
FBC_OWN = "fb.1.1748957013743.IwAR_own_click-1"


def _answer(recorded: Recorded) -> web.Response:
    """Each fake platform's normal answer, by path."""
    if recorded.path.startswith("/open_api/"):
        return web.json_response({"code": 0, "message": "OK", "request_id": "r-ok", "data": {}})
    if recorded.path.startswith("/mp/"):
        return web.Response(status=204)
    return web.json_response({"events_received": 1})


def _ms() -> int:
    return int(time.time() * 1000)


def _config(make_config: MakeConfig, endpoint: str, extra: str = "") -> Config:
    return make_config(
        f"""
trusted_proxies: [127.0.0.1/32]
cookies: {{domain: shop.example, max_age_days: 90}}
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: TOKEN-abc
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
  tiktok:
    type: tiktok_events
    pixel_code: CABC123
    access_token: TT-TOKEN
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
{extra}
sources:
  meta_pixel: {{send_to: [meta]}}
  tiktok_pixel: {{send_to: [tiktok]}}
"""
    )


def _set_cookies(response: object) -> dict[str, str]:
    headers = response.headers.getall("Set-Cookie", [])  # type: ignore[attr-defined]
    return {h.split("=", 1)[0]: h.split("=", 1)[1].split(";", 1)[0] for h in headers}


def _sent_user(platform: FakePlatform, key: str = "user_data") -> list[dict[str, str]]:
    return [e[key] for r in platform.requests for e in r.json()["data"]]


# --- the hit's own IDs win (contract §3) ------------------------------------------------------


@pytest.mark.parametrize("fbp", [FBP_OWN, FBP_APPENDIX])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_pixels_own_fbp_and_fbc_reach_meta_and_the_cookie(
    start_gateway: Start,
    make_config: MakeConfig,
    fake_platform: FakePlatform,
    fbp: str,
    method: str,
) -> None:
    fake_platform.default = _answer
    gw = await start_gateway(_config(make_config, fake_platform.url))
    params = (
        f"id=1234567890&ev=PageView&eid=pv-1&ts={_ms()}"
        "&dl=https%3A%2F%2Fshop.example%2F%3Ffbclid%3DIwAR_own_click-1"
        f"&fbp={fbp}&fbc={FBC_OWN}"
    )
    headers = {"User-Agent": UA}
    if method == "GET":
        response = await gw.client.get(f"/tr/?{params}", headers=headers)
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        response = await gw.client.post("/tr/", data=params, headers=headers)
    assert response.status == 200
    # No `_fbp` cookie on the request: the hit's own parameter is the browser's ID, refreshed
    # as it is, never overwritten by a minted one.
    assert _set_cookies(response)["_fbp"] == fbp
    await eventually(lambda: len(fake_platform.requests) == 1)
    (user,) = _sent_user(fake_platform)
    assert (user["fbp"], user["fbc"]) == (fbp, FBC_OWN)


async def test_a_minted_fbp_only_when_the_hit_carries_none(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    """Control: the same hit without `fbp=` does get a new ID, sent and set."""
    fake_platform.default = _answer
    gw = await start_gateway(_config(make_config, fake_platform.url))
    response = await gw.client.get(
        f"/tr/?id=1234567890&ev=PageView&eid=pv-2&ts={_ms()}&dl=https%3A%2F%2Fshop.example%2F",
        headers={"User-Agent": UA},
    )
    minted = _set_cookies(response)["_fbp"]
    assert minted.startswith("fb.1.")
    assert minted not in (FBP_OWN, FBP_APPENDIX)
    await eventually(lambda: len(fake_platform.requests) == 1)
    assert _sent_user(fake_platform)[0]["fbp"] == minted


async def test_the_tiktok_pixels_own_anonymous_id_reaches_tiktok(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    gw = await start_gateway(_config(make_config, fake_platform.url))
    own = "01HZX3Q8G1ABCDEFGHJKMNPQRS_.tt.1"
    hit = {
        "event": "ViewContent",
        "event_id": "tt-1",
        "context": {
            "pixel": {"code": "CABC123"},
            "page": {"url": "https://shop.example/p"},
            "user": {"anonymous_id": own},
        },
    }
    response = await gw.client.post(
        "/api/v2/pixel", data=orjson.dumps(hit), headers={"User-Agent": UA}
    )
    assert response.status == 200
    assert _set_cookies(response)["_ttp"] == own
    await eventually(lambda: len(fake_platform.requests) == 1)
    assert _sent_user(fake_platform, "user")[0]["ttp"] == own


# --- one pixel's hits go to that pixel ----------------------------------------------------------


def _multi_config(make_config: MakeConfig, endpoint: str) -> Config:
    def dest(name: str, body: str) -> str:
        return f"  {name}: {{{body}, endpoint: {endpoint}, batch: {{max_wait_ms: 0}}}}\n"

    return make_config(
        "trusted_proxies: [127.0.0.1/32]\ndestinations:\n"
        + dest("meta_a", 'type: meta_capi, pixel_id: "111111111", access_token: A')
        + dest("meta_b", 'type: meta_capi, pixel_id: "222222222", access_token: B')
        + dest("ga4_a", "type: ga4_mp, measurement_id: G-AAAA1111, api_secret: SA")
        + dest("ga4_b", "type: ga4_mp, measurement_id: G-BBBB2222, api_secret: SB")
        + dest("tt_a", "type: tiktok_events, pixel_code: CAAAA1, access_token: TA")
        + dest("tt_b", "type: tiktok_events, pixel_code: CBBBB2, access_token: TB")
        + """sources:
  meta_pixel: {send_to: [meta_a, meta_b]}
  ga4: {send_to: [ga4_a, ga4_b, meta_a, meta_b]}
  tiktok_pixel: {send_to: [tt_a, tt_b]}
"""
    )


def _meta_hit(pixel: str, eid: str) -> str:
    return f"/tr/?id={pixel}&ev=PageView&eid={eid}&ts={_ms()}&dl=https%3A%2F%2Fshop.example%2F"


def _ga4_hit(tid: str, eid: str) -> str:
    return (
        f"/g/collect?v=2&tid={tid}&cid=123.456&_p=1&en=page_view&ep.event_id={eid}"
        "&dl=https%3A%2F%2Fshop.example%2F"
    )


def _tiktok_hit(code: str, eid: str) -> bytes:
    return orjson.dumps(
        {
            "event": "ViewContent",
            "event_id": eid,
            "context": {"pixel": {"code": code}, "page": {"url": "https://shop.example/"}},
        }
    )


def _delivered(platform: FakePlatform) -> set[tuple[str, str]]:
    """(which pixel or stream, event ID) for every event the fake platforms got."""
    out: set[tuple[str, str]] = set()
    for r in platform.requests:
        body = r.json()
        if r.path.startswith("/mp/"):
            out |= {(r.query["measurement_id"], e["params"]["event_id"]) for e in body["events"]}
        elif r.path.startswith("/open_api/"):
            out |= {(body["event_source_id"], e["event_id"]) for e in body["data"]}
        else:
            out |= {(r.path.split("/")[2], e["event_id"]) for e in body["data"]}
    return out


async def test_each_pixel_and_stream_gets_only_its_own_hits(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    gw = await start_gateway(_multi_config(make_config, fake_platform.url))
    headers = {"User-Agent": UA}
    for path in (
        _meta_hit("111111111", "m-a"),
        _meta_hit("222222222", "m-b"),
        _ga4_hit("G-AAAA1111", "g-a"),
        _ga4_hit("G-BBBB2222", "g-b"),
    ):
        assert (await gw.client.get(path, headers=headers)).status in (200, 204)
    for code, eid in (("CAAAA1", "t-a"), ("CBBBB2", "t-b")):
        posted = await gw.client.post("/api/v2/pixel", data=_tiktok_hit(code, eid), headers=headers)
        assert posted.status == 200
    expected = {
        ("111111111", "m-a"),
        ("222222222", "m-b"),
        ("G-AAAA1111", "g-a"),
        ("G-BBBB2222", "g-b"),
        ("CAAAA1", "t-a"),
        ("CBBBB2", "t-b"),
        # Cross-vendor routes are unchanged: a GA4 hit sent to Meta goes to every Meta pixel.
        ("111111111", "g-a"),
        ("222222222", "g-a"),
        ("111111111", "g-b"),
        ("222222222", "g-b"),
    }
    await eventually(lambda: _delivered(fake_platform) >= expected)
    rows = await gw.rows("SELECT destination, event_id FROM deliveries ORDER BY 1, 2")
    assert len(rows) == len(expected)
    assert _delivered(fake_platform) == expected


async def test_a_hit_for_a_pixel_nobody_configured_is_ignored_with_its_id(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    gw = await start_gateway(_multi_config(make_config, fake_platform.url))
    headers = {"User-Agent": UA}
    with structlog.testing.capture_logs() as logs:
        assert (await gw.client.get(_meta_hit("333333333", "m-x"), headers=headers)).status == 200
    (line,) = [entry for entry in logs if entry["event"] == "hit"]
    assert line["outcome"] == "ignored"
    assert line["notes"]["unknown_id"] == "333333333"
    assert (await gw.client.get(_ga4_hit("G-XXXX9999", "g-x"), headers=headers)).status == 204
    posted = await gw.client.post("/api/v2/pixel", data=_tiktok_hit("CXXXX9", "t-x"))
    assert posted.status == 200
    # Control: a known pixel's hit after them is delivered, so the others had their chance.
    assert (await gw.client.get(_meta_hit("111111111", "m-a"), headers=headers)).status == 200
    await eventually(lambda: ("111111111", "m-a") in _delivered(fake_platform))
    delivered = _delivered(fake_platform)
    assert {eid for _, eid in delivered} == {"m-a", "g-x"}  # the GA4 hit still goes to Meta
    assert not any(pixel == "G-XXXX9999" for pixel, _ in delivered)
    rows = await gw.rows("SELECT destination, event_id FROM deliveries WHERE event_id = 'm-x'")
    assert rows == []
    metrics = await (await gw.client.get("/metrics")).text()
    ignored = [
        line
        for line in metrics.splitlines()
        if line.startswith("tag_gateway_hits_total") and 'outcome="ignored"' in line
    ]
    assert sorted(ignored) == [
        'tag_gateway_hits_total{outcome="ignored",source="meta_pixel"} 1.0',
        'tag_gateway_hits_total{outcome="ignored",source="tiktok_pixel"} 1.0',
    ]


# --- what each platform needs from a page and a server event -------------------------------------


def _server_config(
    make_config: MakeConfig, endpoint: str, extra: str = "", meta_pixel_to: str = "meta"
) -> Config:
    return make_config(
        f"""
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: TOKEN-abc
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
  tiktok:
    type: tiktok_events
    pixel_code: CABC123
    access_token: TT-TOKEN
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
  ga4:
    type: ga4_mp
    measurement_id: G-ABC123
    api_secret: GA4-SECRET
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
{extra}
sources:
  meta_pixel: {{send_to: [{meta_pixel_to}]}}
  server: {{send_to: [meta, tiktok, ga4], api_keys: [key-1-0123456789abc]}}
"""
    )


async def _post_events(gw: Gateway, *events: dict[str, object]) -> dict[str, object]:
    response = await gw.client.post(
        "/v1/events",
        json={"events": list(events)},
        headers={"Authorization": "Bearer key-1-0123456789abc"},
    )
    assert response.status == 202
    body: dict[str, object] = await response.json()
    return body


async def _statuses(gw: Gateway) -> set[tuple[str, str, str, str | None]]:
    rows = await gw.rows("SELECT destination, event_id, status, message FROM deliveries")
    return {(r[0], r[1], r[2], r[3]) for r in rows}


async def test_a_meta_noscript_hit_takes_its_page_from_the_referer(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    gw = await start_gateway(_server_config(make_config, fake_platform.url))
    response = await gw.client.get(
        "/tr?id=1234567890&ev=PageView&noscript=1",
        headers={"User-Agent": UA, "Referer": "https://shop.example/landing?fbclid=IwAR_ns-1"},
    )
    assert response.status == 200
    await eventually(lambda: len(fake_platform.requests) == 1)
    (event,) = fake_platform.requests[0].json()["data"]
    assert event["event_source_url"] == "https://shop.example/landing?fbclid=IwAR_ns-1"
    assert event["user_data"]["fbc"].endswith(".IwAR_ns-1")

    async def sent() -> bool:
        return {s for _, _, s, _ in await _statuses(gw)} == {"sent"}

    await eventually(sent)


async def test_tiktok_gets_city_state_and_country_in_clear(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    gw = await start_gateway(_server_config(make_config, fake_platform.url))
    event = {
        "event_id": "ord-7",
        "event_name": "lead",
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks",
        "user": {
            "email": "jane@example.com",
            "user_agent": UA,
            "city": " San Francisco ",
            "state": "CA",
            "country": "United States",
            "ga_client_id": "123.456",
        },
    }
    await _post_events(gw, event)

    def tiktok_user() -> dict[str, str] | None:
        for r in fake_platform.requests:
            if r.path.startswith("/open_api/"):
                user: dict[str, str] = r.json()["data"][0]["user"]
                return user
        return None

    await eventually(lambda: tiktok_user() is not None)
    user = tiktok_user()
    assert user is not None
    assert (user["city"], user["state"], user["country"]) == ("san francisco", "ca", "us")


async def test_ga4_never_gets_an_invented_client_id(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    gw = await start_gateway(_server_config(make_config, fake_platform.url))
    base = {
        "event_name": "purchase",
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks",
        "custom": {"value": "10", "currency": "EUR"},
    }
    await _post_events(
        gw,
        {**base, "event_id": "no-cid", "user": {"email": "a@example.com", "user_agent": UA}},
        {**base, "event_id": "with-cid", "user": {"ga_client_id": "111.222", "user_agent": UA}},
        {**base, "event_id": "with-uid", "user": {"external_id": "cust-9", "user_agent": UA}},
    )

    def ga4_bodies() -> list[dict[str, object]]:
        return [r.json() for r in fake_platform.requests if r.path.startswith("/mp/")]

    await eventually(lambda: len(ga4_bodies()) == 2)
    by_event = {b["events"][0]["params"]["event_id"]: b for b in ga4_bodies()}  # type: ignore[index]
    assert set(by_event) == {"with-cid", "with-uid"}
    assert by_event["with-cid"]["client_id"] == "111.222"  # the browser's own, byte for byte
    assert "user_id" in by_event["with-uid"]
    statuses = await _statuses(gw)
    assert ("ga4", "no-cid", "dropped_rule", "no ga_client_id") in statuses

    # The other platforms still get it.
    async def meta_sent() -> bool:
        return ("meta", "no-cid", "sent", "events_received=1") in await _statuses(gw)

    await eventually(meta_sent)


async def test_a_browser_hits_ga_cookie_is_its_ga4_client_id(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    """A Meta pixel hit routed to GA4 carries gtag's `_ga` cookie (same registrable domain):
    its client ID, not an invented one, joins the browser's GA4 user."""
    fake_platform.default = _answer
    gw = await start_gateway(
        _server_config(make_config, fake_platform.url, meta_pixel_to="meta, ga4")
    )
    for eid, cookie in (("pv-ga", "_ga=GA1.1.1489945657.1691089601"), ("pv-none", "x=1")):
        await gw.client.get(
            f"/tr/?id=1234567890&ev=PageView&eid={eid}&ts={_ms()}&dl=https%3A%2F%2Fshop.example%2F",
            headers={"User-Agent": UA, "Cookie": cookie},
        )

    def ga4_client_ids() -> list[str]:
        return [r.json()["client_id"] for r in fake_platform.requests if r.path.startswith("/mp/")]

    await eventually(lambda: len(ga4_client_ids()) == 1)
    assert ga4_client_ids() == ["1489945657.1691089601"]
    assert ("ga4", "pv-none", "dropped_rule", "no ga_client_id") in await _statuses(gw)


async def test_an_event_left_out_of_events_gets_a_row_saying_so(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    cfg = make_config(
        f"""
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: T
    endpoint: {fake_platform.url}
    events: [purchase]
    batch: {{max_wait_ms: 0}}
sources:
  server: {{send_to: [meta], api_keys: [key-1-0123456789abc]}}
"""
    )
    gw = await start_gateway(cfg)
    base = {"action_source": "website", "event_source_url": "https://shop.example/"}
    user = {"email": "a@example.com", "user_agent": UA}
    await _post_events(
        gw,
        {**base, "event_id": "l-1", "event_name": "lead", "user": user},
        {
            **base,
            "event_id": "p-1",
            "event_name": "purchase",
            "user": user,
            "custom": {"value": "5", "currency": "EUR"},
        },
    )

    async def settled() -> bool:
        return {s for _, _, s, _ in await _statuses(gw)} == {"sent", "dropped_rule"}

    await eventually(settled)
    assert await _statuses(gw) == {
        ("meta", "p-1", "sent", "events_received=1"),
        ("meta", "l-1", "dropped_rule", "not in events:"),
    }


# --- an invalid or expired token pauses the destination, loudly --------------------------------


def _meta_190(recorded: Recorded) -> web.Response:
    return web.json_response(
        {
            "error": {
                "message": "Error validating access token: Session has expired",
                "type": "OAuthException",
                "code": 190,
                "error_subcode": 463,
            }
        },
        status=401,
    )


def _gauge(metrics: str, destination: str) -> str | None:
    prefix = f'tag_gateway_destination_auth_failed{{destination="{destination}"}} '
    return next(
        (line[len(prefix) :] for line in metrics.splitlines() if line.startswith(prefix)), None
    )


async def test_an_expired_token_pauses_delivery_until_it_works(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    fake_platform.then(_meta_190, _meta_190)  # the token fails twice, then works again
    gw = await start_gateway(
        make_config(
            f"""
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: EXPIRED
    endpoint: {fake_platform.url}
    batch: {{max_wait_ms: 0}}
    retry: {{max_attempts: 2, base_ms: 10, max_ms: 20, auth_probe_ms: 1000}}
sources:
  meta_pixel: {{send_to: [meta]}}
"""
        )
    )
    with structlog.testing.capture_logs() as logs:
        await gw.client.get(_meta_hit("1234567890", "e-1"), headers={"User-Agent": UA})
        await eventually(lambda: len(fake_platform.requests) == 1)

        async def paused() -> bool:
            ready = await (await gw.client.get("/readyz")).json()
            return ready["destinations"]["meta"]["healthy"] is False

        await eventually(paused)
        # Later deliveries wait, queued: no request, no attempt spent, nothing dead.
        for eid in ("e-2", "e-3"):
            await gw.client.get(_meta_hit("1234567890", eid), headers={"User-Agent": UA})
        rows = await gw.rows("SELECT event_id, status FROM deliveries ORDER BY event_id")
        assert rows == [("e-1", "queued"), ("e-2", "queued"), ("e-3", "queued")]
        assert len(fake_platform.requests) == 1  # nothing sent before the next probe
        metrics = await (await gw.client.get("/metrics")).text()
        assert _gauge(metrics, "meta") == "1.0"
        ready = await (await gw.client.get("/readyz")).json()
        assert "190/463" in ready["destinations"]["meta"]["last_error"]

        async def all_sent() -> bool:
            rows = await gw.rows("SELECT status FROM deliveries")
            return [r[0] for r in rows] == ["sent"] * 3

        # One probe every auth_probe_ms: the second fails too, the third finds the token working.
        await eventually(all_sent, within=15)
    sizes = [len(r.json()["data"]) for r in fake_platform.requests]
    assert sizes[:3] == [1, 1, 1]  # e-1; then one event a probe: a failed one, a good one
    assert sum(sizes) == 5  # then the two that waited
    sent = [e["event_id"] for r in fake_platform.requests[2:] for e in r.json()["data"]]
    assert sorted(sent) == ["e-1", "e-2", "e-3"]
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["delivery.auth_failed"]  # once per episode
    assert errors[0]["destination"] == "meta"
    assert "EXPIRED" not in str(logs)
    metrics = await (await gw.client.get("/metrics")).text()
    assert _gauge(metrics, "meta") == "0.0"
    ready = await (await gw.client.get("/readyz")).json()
    assert ready["destinations"]["meta"]["healthy"] is True
    attempts = await gw.rows("SELECT attempts FROM deliveries")
    assert max(a for (a,) in attempts) <= 2  # paused tries are not attempts: max_attempts held


async def test_tiktoks_auth_codes_pause_it_too(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.then(
        lambda r: web.json_response({"code": 40105, "message": "Access token is incorrect"})
    )
    fake_platform.default = _answer
    gw = await start_gateway(
        make_config(
            f"""
destinations:
  tiktok:
    type: tiktok_events
    pixel_code: CABC123
    access_token: WRONG
    endpoint: {fake_platform.url}
    batch: {{max_wait_ms: 0}}
    retry: {{auth_probe_ms: 300}}
sources:
  tiktok_pixel: {{send_to: [tiktok]}}
"""
        )
    )
    response = await gw.client.post("/api/v2/pixel", data=_tiktok_hit("CABC123", "t-1"))
    assert response.status == 200

    async def sent() -> bool:
        return await gw.rows("SELECT status FROM deliveries") == [("sent",)]

    await eventually(sent, within=10)
    assert len(fake_platform.requests) == 2  # the refusal, then the probe that worked
