"""Several gateway replicas on one PostgreSQL (storage.url): one shared truth.

Three `tag-gateway serve` processes share a database; the same purchase reaches two of them
(pixel to one, server event to another) and goes out once; one replica is SIGKILLed under
load and every acknowledged event is still delivered, each exactly once, no row sent twice.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import Config
from tests.conftest import Gateway, free_port, start_serve

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]


def pixel(port: int, event_id: str, ev: str = "PageView") -> str:
    ts = int(time.time() * 1000)
    return (
        f"http://127.0.0.1:{port}/tr?id=1234567890&ev={ev}&eid={event_id}&ts={ts}"
        "&dl=https%3A%2F%2Fshop.example%2F&cd[value]=5&cd[currency]=EUR"
    )


@dataclass
class CountingMeta:
    """A fake Meta that counts every event ID it receives."""

    received: Counter[str] = field(default_factory=Counter)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(0.05)
        self.received.update(e["event_id"] for e in body["data"])
        return web.json_response({"events_received": len(body["data"])})


@pytest.fixture
async def counting_meta() -> AsyncIterator[tuple[CountingMeta, str]]:
    meta = CountingMeta()
    app = web.Application()
    app.router.add_post("/{tail:.*}", meta.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield meta, str(server.make_url("")).rstrip("/")
    await server.close()


async def start_replica(cfg: Path, port: int, log: Path) -> asyncio.subprocess.Process:
    return await start_serve(cfg, log, port, pass_port=True, ready="/readyz")


async def test_three_replicas_one_truth(
    tmp_path: Path, pg_url: str, counting_meta: tuple[CountingMeta, str]
) -> None:
    meta, endpoint = counting_meta
    cfg = tmp_path / "replica.yaml"
    cfg.write_text(
        f"""
listen: {{host: 127.0.0.1}}
storage: {{url: "{pg_url}"}}
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: T
    endpoint: {endpoint}
    timeout_ms: 1000
    batch: {{max_events: 50, max_wait_ms: 0}}
    retry: {{base_ms: 50, max_ms: 200}}
sources:
  meta_pixel: {{send_to: [meta]}}
  server: {{send_to: [meta], api_keys: [test-api-key-0001]}}
"""
    )
    ports = [free_port() for _ in range(3)]
    log = tmp_path / "replicas.log"
    # Started together: migrations must be safe when several replicas race.
    procs = list(await asyncio.gather(*(start_replica(cfg, p, log) for p in ports)))
    acked: set[str] = set()
    try:
        async with aiohttp.ClientSession() as session:
            # The same purchase: the pixel to replica 0, the server event to replica 1.
            async with session.get(
                pixel(ports[0], "ord-77", "Purchase"), headers={"User-Agent": "UA"}
            ) as r:
                assert r.status == 200
            acked.add("ord-77")
            server_event = {
                "event_id": "ord-77",
                "event_name": "purchase",
                "event_source_url": "https://shop.example/thanks",
                "user": {"email": "jane@example.com", "user_agent": "UA"},
                "custom": {"value": "5", "currency": "EUR"},
            }
            async with session.post(
                f"http://127.0.0.1:{ports[1]}/v1/events",
                json={"events": [server_event]},
                headers={"Authorization": "Bearer test-api-key-0001"},
            ) as r:
                assert await r.json() == {"accepted": 0, "duplicates": 1, "rejected": []}

            async def send(i: int) -> None:
                port = ports[i % 3]
                try:
                    async with session.get(
                        pixel(port, f"load-{i}"), headers={"User-Agent": "UA"}
                    ) as r:
                        if r.status == 200 and (await r.read()).startswith(b"GIF"):
                            acked.add(f"load-{i}")
                except aiohttp.ClientError:
                    pass  # the killed replica: not acknowledged

            tasks = [asyncio.create_task(send(i)) for i in range(450)]
            while len(acked) < 200:
                await asyncio.sleep(0.005)
            procs[2].send_signal(signal.SIGKILL)
            await procs[2].wait()
            await asyncio.gather(*tasks)

        deadline = time.monotonic() + 45  # a killed replica's leases expire after 10 s
        while not acked <= set(meta.received) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        for proc in procs[:2]:
            proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*(p.wait() for p in procs[:2]))

    missing = acked - set(meta.received)
    twice = {k: n for k, n in meta.received.items() if n > 1}
    print(
        f"\nreplicas: acknowledged={len(acked)} delivered={len(meta.received)} twice={len(twice)}"
    )
    assert not missing
    assert meta.received["ord-77"] == 1
    # No row was sent by two replicas; the killed replica's in-flight batch may have reached
    # Meta before it died and be sent again after its lease ran out (Meta dedups by event ID).
    assert len(twice) <= 50, twice
