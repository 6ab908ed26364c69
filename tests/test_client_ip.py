"""The client IP behind trusted proxies, including `X-Forwarded-For` split over header lines."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable

from gateway.client_ip import client_ip, forwarded_for
from gateway.config import Config
from tests.conftest import FakePlatform, Gateway, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]
PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


def test_the_right_most_untrusted_hop_wins() -> None:
    assert client_ip("10.0.0.2", "198.51.100.1, 203.0.113.9", PROXIES) == "203.0.113.9"
    assert client_ip("10.0.0.2", "198.51.100.1, 203.0.113.9, 10.0.0.1", PROXIES) == "203.0.113.9"
    assert client_ip("192.0.2.4", "198.51.100.1", PROXIES) == "192.0.2.4"  # untrusted peer


def test_repeated_header_lines_are_one_list() -> None:
    # HAProxy's `option forwardfor` adds its own line after the one the client wrote (RFC 9110
    # §5.3: a repeated list header is the comma-joined list, in order).
    assert forwarded_for(["198.51.100.66", "203.0.113.9"]) == "198.51.100.66, 203.0.113.9"
    assert forwarded_for([]) is None
    joined = forwarded_for(["198.51.100.66", "203.0.113.9"])
    assert client_ip("10.0.0.2", joined, PROXIES) == "203.0.113.9"


async def test_a_second_forwarded_for_line_is_read_over_a_socket(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    gw = await start_gateway(
        make_config(
            f"""
trusted_proxies: [127.0.0.1/32]
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: TOKEN-abc
    endpoint: {fake_platform.url}
    batch: {{max_wait_ms: 0}}
sources:
  meta_pixel: {{send_to: [meta]}}
"""
        )
    )
    port = gw.client.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Written by hand: the client forges the first line, the trusted proxy appends the second.
    writer.write(
        b"GET /tr/?id=1234567890&ev=PageView&eid=xff-1&dl=https%3A%2F%2Fshop.example%2F"
        b" HTTP/1.1\r\nHost: t.shop.example\r\nUser-Agent: Mozilla/5.0 (X11)\r\n"
        b"Cookie: _fbp=fb.1.1748957013743.1524724929324944\r\n"
        b"X-Forwarded-For: 198.51.100.66\r\n"
        b"X-Forwarded-For: 203.0.113.9\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()
    await writer.wait_closed()
    await eventually(lambda: len(fake_platform.requests) == 1)
    (event,) = fake_platform.requests[0].json()["data"]
    assert event["user_data"]["client_ip_address"] == "203.0.113.9"
