"""`listen.ops`: the operator's routes on a listener of their own; the public port keeps to what
browsers need, and `/readyz` there tells a load balancer only its status code."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.config import Config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Ports:
    public: str
    ops: str


CONFIG = """
listen: {{host: 127.0.0.1, port: {public}, ops: {{host: 127.0.0.1, port: {ops}}}}}
destinations:
  meta: {{type: meta_capi, pixel_id: "1234567890", access_token: tok, endpoint: "http://127.0.0.1:9"}}
sources: {{meta_pixel: {{send_to: [meta]}}}}
admin: {{token: admin-token-0123456789}}
"""


async def run(cfg: Config) -> AsyncIterator[web.AppRunner]:
    runner = web.AppRunner(create_app(cfg))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", cfg.listen.port).start()
    if cfg.listen.ops is not None:
        await web.TCPSite(runner, cfg.listen.ops.host or "127.0.0.1", cfg.listen.ops.port).start()
    try:
        yield runner
    finally:
        await runner.cleanup()


@pytest.fixture
async def ports(make_config: Callable[[str], Config]) -> AsyncIterator[Ports]:
    public, ops = free_port(), free_port()
    cfg = make_config(CONFIG.format(public=public, ops=ops))
    async for _ in run(cfg):
        yield Ports(f"http://127.0.0.1:{public}", f"http://127.0.0.1:{ops}")


async def test_the_public_port_hides_the_operator_routes(ports: Ports) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{ports.public}/readyz") as r:
            assert r.status == 200
            assert await r.read() == b""
        for path in ("/metrics", "/admin", "/admin/anything"):
            async with session.get(f"{ports.public}{path}") as r:
                assert r.status == 404, path
                assert b"tag_gateway" not in await r.read()
        # The browser routes and liveness stay where the browsers are.
        async with session.get(f"{ports.public}/tr?id=1&ev=PageView") as r:
            assert r.status == 200
        async with session.get(f"{ports.public}/healthz") as r:
            assert r.status == 200


async def test_the_ops_port_has_the_detail(ports: Ports) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{ports.ops}/readyz") as r:
            assert r.status == 200
            body = await r.json()
        assert body["config"] == "test.yaml"
        assert set(body["destinations"]) == {"meta"}
        async with session.get(f"{ports.ops}/metrics") as r:
            assert r.status == 200
            assert "tag_gateway_hits" in await r.text()
        async with session.get(
            f"{ports.ops}/admin", headers={"Authorization": "Bearer admin-token-0123456789"}
        ) as r:
            assert r.status == 200


async def test_without_ops_everything_is_on_the_one_port(
    make_config: Callable[[str], Config],
) -> None:
    # Control: as before, when `listen.ops` is not set.
    public = free_port()
    cfg = make_config(
        f"listen: {{host: 127.0.0.1, port: {public}}}\n"
        "destinations: {audit: {type: dry_run}}\nsources: {meta_pixel: {send_to: [audit]}}\n"
    )
    async for _ in run(cfg):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{public}/readyz") as r:
                assert r.status == 200
                assert "destinations" in await r.json()
            async with session.get(f"http://127.0.0.1:{public}/metrics") as r:
                assert r.status == 200
