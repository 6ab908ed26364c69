"""Every source over a real socket: the same purchase from GA4 and the server is one event,
a three-event GA4 POST is three events, and no input to any source path breaks its answer."""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Config
from tests.conftest import GIF_PREFIX, Gateway

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

CONFIG = """
destinations:
  audit: {type: dry_run, format: canonical}
sources:
  meta_pixel: {send_to: [audit]}
  ga4: {send_to: [audit]}
  tiktok_pixel: {send_to: [audit]}
  server: {send_to: [audit], api_keys: [test-api-key-0001]}
"""


async def test_ga4_purchase_and_server_purchase_are_one_event(
    start_gateway: Start, make_config: MakeConfig
) -> None:
    gw = await start_gateway(make_config(CONFIG))
    hit = await gw.client.get(
        "/g/collect?v=2&tid=G-ABC123&cid=1489945657.1691089601&_p=1&en=purchase"
        "&ep.event_id=ord-1001&ep.transaction_id=ord-1001&cu=EUR&epn.value=129.9"
        "&dl=https%3A%2F%2Fshop.example%2Fthanks",
        headers={"User-Agent": "Mozilla/5.0"},
    )
    assert hit.status == 204
    response = await gw.client.post(
        "/v1/events",
        json={
            "events": [
                {
                    "event_id": "ord-1001",
                    "event_name": "purchase",
                    "event_time": int(time.time()),
                    "event_source_url": "https://shop.example/thanks",
                    "custom": {"value": "129.90", "currency": "EUR"},
                }
            ]
        },
        headers={"Authorization": "Bearer test-api-key-0001"},
    )
    assert await response.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    rows = await gw.rows(
        "SELECT e.source, d.event_name, d.event_id, d.status FROM deliveries d"
        " JOIN events e ON e.id = d.event_row ORDER BY d.id"
    )
    first, second = rows
    assert first[:3] == ("ga4", "purchase", "ord-1001")
    assert first[3] in ("queued", "sent")  # dry_run may have recorded it already
    assert second == ("server", "purchase", "ord-1001", "duplicate")


async def test_a_ga4_post_with_three_events(start_gateway: Start, make_config: MakeConfig) -> None:
    gw = await start_gateway(make_config(CONFIG))
    body = "en=page_view&_et=3674\nen=scroll&_et=10\nen=click&_et=799&dt=Test%20Page\n"
    response = await gw.client.post(
        "/g/collect?v=2&tid=G-ABC123&cid=1369988567.1756151735&_p=1758117262938&en=page_view",
        data=body,
        headers={"User-Agent": "Mozilla/5.0", "Content-Type": "text/plain"},
    )
    assert response.status == 204
    names = [r[0] for r in await gw.rows("SELECT event_name FROM events ORDER BY id")]
    assert names == ["page_view", "scroll", "click"]


async def test_tiktok_hit_with_contents(start_gateway: Start, make_config: MakeConfig) -> None:
    gw = await start_gateway(make_config(CONFIG))
    hit = {
        "event": "AddToCart",
        "event_id": "ID1",
        "timestamp": "2026-11-27T17:52:13.505Z",
        "context": {"pixel": {"code": "CABC123"}, "page": {"url": "https://shop.example/shop/"}},
        "properties": {
            "currency": "EUR",
            "value": "99.95",
            "contents": [{"content_id": 119, "price": 99.95, "quantity": 1}],
        },
    }
    response = await gw.client.post("/api/v2/pixel", data=orjson.dumps(hit))
    assert response.status == 200
    assert await response.json() == {"code": 0, "message": "OK"}
    encoded = base64.b64encode(orjson.dumps({**hit, "event_id": "ID2"})).decode()
    gif = await gw.client.get(f"/api/v2/pixel/act?analytics_message={encoded}")
    assert (await gif.read()).startswith(GIF_PREFIX)
    rows = await gw.rows("SELECT event_id, event_name, value, currency FROM events ORDER BY id")
    assert rows == [("ID1", "add_to_cart", "99.95", "EUR"), ("ID2", "add_to_cart", "99.95", "EUR")]


PATHS = [
    ("GET", "/tr"),
    ("POST", "/tr/"),
    ("GET", "/g/collect"),
    ("POST", "/g/collect"),
    ("POST", "/api/v2/pixel"),
    ("POST", "/api/v2/pixel/track/"),
    ("GET", "/api/v2/pixel/act"),
    ("GET", "/api/v2/pixel"),
]
EXPECTED = {"/tr": 200, "/tr/": 200, "/g/collect": 204}

query = st.dictionaries(
    st.sampled_from(
        [
            "id",
            "ev",
            "eid",
            "ts",
            "dl",
            "cd[value]",
            "cd[contents]",
            "ud[em]",
            "v",
            "tid",
            "cid",
            "en",
            "_p",
            "ep.event_id",
            "epn.value",
            "pr1",
            "em",
            "gcs",
            "gcd",
            "analytics_message",
            "noscript",
            "x",
        ]
    ),
    st.text(max_size=40),
    max_size=8,
)
body = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode))


async def test_no_input_breaks_any_source_answer(
    start_gateway: Start, make_config: MakeConfig
) -> None:
    gw = await start_gateway(make_config(CONFIG))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        path=st.sampled_from(PATHS),
        params=query,
        data=body,
        ctype=st.sampled_from(
            [
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/json",
                "text/plain",
                "",
            ]
        ),
    )
    def run(path: tuple[str, str], params: dict[str, str], data: bytes, ctype: str) -> None:
        samples.append((path, params, data, ctype))

    samples: list[tuple[tuple[str, str], dict[str, str], bytes, str]] = []
    run()
    assert len(samples) >= 30
    for (method, path), params, data, ctype in samples:
        response = await gw.client.request(
            method,
            path,
            params=params,
            data=data if method == "POST" else None,
            headers={"Content-Type": ctype} if ctype else {},
        )
        assert response.status == EXPECTED.get(path, 200), (method, path, params, data)
        await response.read()
