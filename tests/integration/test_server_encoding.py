"""`POST /v1/events` with a `Content-Encoding` its body does not honour: bad input, so a 400."""

from __future__ import annotations

import gzip
import time
import zlib
from collections.abc import Awaitable, Callable

import orjson
import pytest

from gateway.config import Config
from tests.conftest import Gateway

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

CONFIG = """
destinations:
  audit: {type: dry_run}
sources:
  server: {send_to: [audit], api_keys: [test-api-key-0001]}
"""
AUTH = {"Authorization": "Bearer test-api-key-0001", "Content-Type": "application/json"}


def body(event_id: str) -> bytes:
    event = {
        "event_id": event_id,
        "event_name": "lead",
        "event_time": int(time.time()) - 5,
        "event_source_url": "https://shop.example/thanks",
    }
    return orjson.dumps({"events": [event]})


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("gzip", b"this is not gzip"),
        ("gzip", gzip.compress(b'{"events": []}')[:12]),  # cut short
        ("deflate", b"\x00\x01not deflate"),
        ("br", b"not brotli either"),
    ],
)
async def test_a_body_that_is_not_its_encoding_is_a_400_with_one_line(
    start_gateway: Start, make_config: MakeConfig, encoding: str, data: bytes
) -> None:
    gw = await start_gateway(make_config(CONFIG))
    r = await gw.client.post(
        "/v1/events", data=data, headers={**AUTH, "Content-Encoding": encoding}
    )
    assert r.status == 400
    error = (await r.json())["error"]
    assert "\n" not in error
    assert encoding in error
    assert not await gw.rows("SELECT id FROM events")


async def test_a_real_gzip_body_is_taken(start_gateway: Start, make_config: MakeConfig) -> None:
    # Control: the same request, honestly encoded, is stored.
    gw = await start_gateway(make_config(CONFIG))
    sent = {"gzip": gzip.compress(body("enc-gzip")), "deflate": zlib.compress(body("enc-zlib"))}
    for encoding, data in sent.items():
        r = await gw.client.post(
            "/v1/events", data=data, headers={**AUTH, "Content-Encoding": encoding}
        )
        assert r.status == 202, await r.text()
    rows = await gw.rows("SELECT event_id FROM events ORDER BY id")
    assert [row[0] for row in rows] == ["enc-gzip", "enc-zlib"]


async def test_a_gzip_bomb_is_a_413(start_gateway: Start, make_config: MakeConfig) -> None:
    gw = await start_gateway(make_config(CONFIG))
    bomb = gzip.compress(b" " * 5_000_000)  # about 5 kB on the wire, 5 MB decoded
    r = await gw.client.post("/v1/events", data=bomb, headers={**AUTH, "Content-Encoding": "gzip"})
    assert r.status == 413
    assert "decoded" in (await r.json())["error"]


async def test_a_browser_route_answers_a_bad_encoding_normally(
    start_gateway: Start, make_config: MakeConfig
) -> None:
    gw = await start_gateway(
        make_config(CONFIG + "  meta_pixel: {send_to: [audit]}\n  ga4: {send_to: [audit]}\n")
    )
    for path, status in (("/tr/", 200), ("/g/collect", 204)):
        r = await gw.client.post(
            path, data=b"not gzip", headers={"Content-Encoding": "gzip", "User-Agent": "UA"}
        )
        assert r.status == status
        # The connection stays usable: the answer was read whole.
        assert (await gw.client.get("/healthz")).status == 200
