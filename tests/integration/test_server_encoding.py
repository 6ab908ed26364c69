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
  server: {send_to: [audit], api_keys: [key]}
"""
AUTH = {"Authorization": "Bearer key", "Content-Type": "application/json"}


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
    # aiohttp itself refuses an encoding it cannot decode at all (br without brotli).
    text = await r.text()
    error = orjson.loads(text)["error"] if r.content_type == "application/json" else text
    assert "\n" not in error.strip()
    assert encoding in error or error == "body is not JSON"
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
