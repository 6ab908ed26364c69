"""Delivery you can trust (docs/operations.md §5): dedup, retries, dead letters, isolation, replay.

Each fault test has a control that shows the fault really fired.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from gateway.config import Config
from tests.conftest import FakePlatform, Gateway, Recorded, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]


def config_text(endpoint: str, *, timeout_ms: int = 2000, extra: str = "") -> str:
    return f"""
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: TOKEN
    endpoint: {endpoint}
    timeout_ms: {timeout_ms}
    batch: {{max_wait_ms: 0}}
    retry: {{base_ms: 20, max_ms: 50}}
{extra}
sources:
  meta_pixel: {{send_to: [meta]}}
  server: {{send_to: [meta], api_keys: [test-api-key-0001]}}
"""


def pixel(event_id: str, ev: str = "PageView", ts_ms: int | None = None) -> str:
    ts = ts_ms if ts_ms is not None else int(time.time() * 1000)
    return (
        f"/tr?id=1234567890&ev={ev}&eid={event_id}&ts={ts}"
        "&dl=https%3A%2F%2Fshop.example%2F&cd[value]=10&cd[currency]=EUR"
    )


async def hit(gw: Gateway, event_id: str, **kw: object) -> None:
    response = await gw.client.get(pixel(event_id, **kw), headers={"User-Agent": "UA"})  # type: ignore[arg-type]
    assert response.status == 200


def sent_ids(platform: FakePlatform) -> list[str]:
    return [e["event_id"] for r in platform.requests for e in r.json().get("data", [])]


async def statuses(gw: Gateway) -> list[tuple[str, str]]:
    return [
        (r[0], r[1]) for r in await gw.rows("SELECT event_id, status FROM deliveries ORDER BY id")
    ]


# --- at most once per destination --------------------------------------------------------------


async def test_pixel_twice_and_pixel_plus_server_deliver_once(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    await hit(gw, "pv-1")
    await hit(gw, "pv-1")
    await hit(gw, "ord-1", ev="Purchase")
    server_event = {
        "event_id": "ord-1",
        "event_name": "purchase",
        "event_source_url": "https://shop.example/thanks",
        "user": {"email": "jane@example.com", "user_agent": "UA"},
        "custom": {"value": "10", "currency": "EUR"},
    }
    response = await gw.client.post(
        "/v1/events",
        json={"events": [server_event]},
        headers={"Authorization": "Bearer test-api-key-0001"},
    )
    assert await response.json() == {"accepted": 0, "duplicates": 1, "rejected": []}

    await eventually(lambda: sorted(sent_ids(fake_platform)) == ["ord-1", "pv-1"])
    rows = await gw.rows("SELECT id, event_id, status, duplicate_of FROM deliveries ORDER BY id")
    first_pv, second_pv, first_ord, second_ord = rows
    assert second_pv[2:] == ("duplicate", first_pv[0])
    assert second_ord[2:] == ("duplicate", first_ord[0])
    await asyncio.sleep(0.2)
    assert sorted(sent_ids(fake_platform)) == ["ord-1", "pv-1"]  # nothing more went out


async def test_dedup_holds_across_a_restart(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    cfg = make_config(config_text(fake_platform.url))
    first = await start_gateway(cfg)
    await hit(first, "pv-7")
    await eventually(lambda: sent_ids(fake_platform) == ["pv-7"])
    await first.client.close()

    second = await start_gateway(cfg)
    await hit(second, "pv-7")
    assert (await statuses(second)) == [("pv-7", "sent"), ("pv-7", "duplicate")]


# --- retries, each with its control ------------------------------------------------------------


async def test_500s_are_retried_until_delivered(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.then(*[lambda r: web.Response(status=500, text="oops")] * 3)
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    await hit(gw, "pv-500")

    async def done() -> bool:
        return await gw.rows("SELECT status, attempts FROM deliveries") == [("sent", 4)]

    await eventually(done)
    assert len(fake_platform.requests) == 4  # control: three 500s really went out


async def test_429_waits_for_retry_after(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    seen: list[float] = []

    def throttled(r: Recorded) -> web.Response:
        seen.append(time.monotonic())
        return web.json_response(
            {"error": {"code": 17, "message": "User request limit reached"}},
            status=429,
            headers={"Retry-After": "1"},
        )

    def ok(r: Recorded) -> web.Response:
        seen.append(time.monotonic())
        return web.json_response({"events_received": 1})

    fake_platform.then(throttled, ok)
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    await hit(gw, "pv-429")
    await eventually(lambda: len(seen) == 2, within=5)
    assert seen[1] - seen[0] >= 0.95  # backoff is 20-50 ms; only Retry-After explains this

    async def sent() -> bool:
        return await gw.rows("SELECT status, attempts FROM deliveries") == [("sent", 2)]

    await eventually(sent)


async def test_a_meta_error_is_final_with_metas_message(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = lambda r: web.json_response(
        {
            "error": {
                "message": "Invalid parameter",
                "code": 100,
                "error_subcode": 2804019,
                "error_user_msg": "Purchase value missing",
            }
        },
        status=400,
    )
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    await hit(gw, "pv-400")

    async def dead() -> bool:
        rows = await gw.rows("SELECT status, attempts, http_status, message FROM deliveries")
        return bool(rows) and rows[0][0] == "dead"

    await eventually(dead)
    ((status, attempts, http_status, message),) = await gw.rows(
        "SELECT status, attempts, http_status, message FROM deliveries"
    )
    assert (status, attempts, http_status) == ("dead", 1, 400)
    assert "2804019" in message
    assert "Purchase value missing" in message
    await asyncio.sleep(0.2)
    assert len(fake_platform.requests) == 1  # never retried


async def test_a_hang_past_the_timeout_is_retried(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    async def hang(r: Recorded) -> web.Response:
        await asyncio.sleep(1.5)
        return web.json_response({"events_received": 1})

    fake_platform.then(hang)
    gw = await start_gateway(make_config(config_text(fake_platform.url, timeout_ms=300)))
    await hit(gw, "pv-hang")

    async def done() -> bool:
        return await gw.rows("SELECT status, attempts FROM deliveries") == [("sent", 2)]

    await eventually(done)
    assert len(fake_platform.requests) == 2  # control: the first request did hang


async def test_one_bad_event_does_not_block_its_batch(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform, sqlite_only: None
) -> None:
    def meta(r: Recorded) -> web.Response:
        ids = [e["event_id"] for e in r.json()["data"]]
        if "bad" in ids:
            return web.json_response(
                {"error": {"message": "Invalid parameter", "code": 100, "error_subcode": 2804050}},
                status=400,
            )
        return web.json_response({"events_received": len(ids)})

    fake_platform.default = meta
    cfg = make_config(config_text(fake_platform.url))
    gw = await start_gateway(cfg)
    # Hold the writer so all five hits land in the queue before the worker claims them.
    release = asyncio.Event()

    async def hold(conn: object) -> None:
        await release.wait()

    blocker = asyncio.create_task(gw.store.write(hold))
    hits = [asyncio.create_task(hit(gw, i)) for i in ("g1", "g2", "bad", "g3", "g4")]
    await asyncio.sleep(0.2)
    release.set()
    await asyncio.gather(blocker, *hits)

    async def settled() -> bool:
        return all(s in ("sent", "dead") for _, s in await statuses(gw))

    await eventually(settled)
    assert dict(await statuses(gw)) == {
        "g1": "sent",
        "g2": "sent",
        "bad": "dead",
        "g3": "sent",
        "g4": "sent",
    }
    assert len(fake_platform.requests[0].json()["data"]) == 5  # control: one batch was refused
    assert sorted(sent_ids(fake_platform)).count("g1") == 2  # sent in the batch, then its half


async def test_events_past_the_age_limit_are_never_sent(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    gw = await start_gateway(make_config(config_text(fake_platform.url)))
    eight_days_ago = int((time.time() - 8 * 86400) * 1000)
    await hit(gw, "old", ts_ms=eight_days_ago)
    await hit(gw, "fresh")  # control: the same path delivers a fresh event
    await eventually(lambda: sent_ids(fake_platform) == ["fresh"])

    async def old_dead() -> bool:
        return ("old", "dead") in await statuses(gw)

    await eventually(old_dead)
    assert sent_ids(fake_platform) == ["fresh"]


# --- isolation ------------------------------------------------------------------------------


async def test_a_failing_destination_slows_no_other(
    start_gateway: Start,
    make_config: MakeConfig,
    fake_platform: FakePlatform,
    aiohttp_server: Callable[..., Awaitable[object]],
) -> None:
    hung: list[float] = []

    async def down(request: web.Request) -> web.Response:
        hung.append(time.monotonic())
        await asyncio.sleep(3)
        return web.Response(status=503)

    broken = web.Application()
    broken.router.add_route("*", "/{tail:.*}", down)
    broken_server = await aiohttp_server(broken)
    broken_url = str(broken_server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    extra = f"""
  broken:
    type: meta_capi
    pixel_id: "1234567890"  # the same pixel through a second endpoint: it takes every hit
    access_token: T2
    endpoint: {broken_url}
    timeout_ms: 1000
    batch: {{max_wait_ms: 0}}
"""
    text = config_text(fake_platform.url, extra=extra).replace(
        "meta_pixel: {send_to: [meta]}", "meta_pixel: {send_to: [meta, broken]}"
    )
    gw = await start_gateway(make_config(text))
    latencies = []
    for i in range(5):
        started = time.monotonic()
        await hit(gw, f"iso-{i}")
        await eventually(lambda i=i: f"iso-{i}" in sent_ids(fake_platform))
        latencies.append(time.monotonic() - started)
    assert hung  # control: the other destination really was hanging meanwhile
    assert max(latencies) < 1.0, latencies  # the other waits 1 s per try


# --- operators --------------------------------------------------------------------------------


async def test_replay_requeues_dead_deliveries(
    start_gateway: Start,
    make_config: MakeConfig,
    fake_platform: FakePlatform,
    tmp_path: Path,
) -> None:
    fake_platform.then(
        lambda r: web.json_response(
            {"error": {"message": "Unsupported post request", "code": 100, "error_subcode": 33}},
            status=400,
        )
    )
    cfg = make_config(config_text(fake_platform.url))
    # The CLI, another process, reads the same store the gateway writes (either backend).
    where = f'url: "{cfg.storage.url}"' if cfg.storage.url else f"path: {cfg.storage.path}"
    cfg_file = tmp_path / "gateway.yaml"
    cfg_file.write_text(config_text(fake_platform.url) + f"\nstorage: {{{where}}}\n")
    gw = await start_gateway(cfg)
    await hit(gw, "pv-dead")

    async def dead() -> bool:
        return await statuses(gw) == [("pv-dead", "dead")]

    await eventually(dead)
    replay = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "replay",
        "--config",
        str(cfg_file),
        "--destination",
        "meta",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await replay.communicate()
    assert replay.returncode == 0
    assert out.decode().strip() == "re-queued 1 deliveries"
    await eventually(lambda: sent_ids(fake_platform) == ["pv-dead", "pv-dead"])

    async def sent() -> bool:
        return await gw.rows("SELECT status, attempts FROM deliveries") == [("sent", 2)]

    await eventually(sent)
