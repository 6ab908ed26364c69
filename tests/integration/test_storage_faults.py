"""Storage faults as an operator meets them, on a real `serve` process.

The outage is real: the process's RLIMIT_FSIZE is lowered (with prlimit, from outside) to the
size its SQLite WAL has, so every write that would grow a file fails with EFBIG, exactly as on
a full disk. Root ignores file modes, so a read-only folder would prove nothing here.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest
import structlog

from gateway import config as config_module
from gateway.config import Config
from gateway.ingest import browser
from tests.conftest import Gateway, eventually, start_serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, port: int, extra_storage: str = "") -> Path:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"""
listen: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {tmp_path / "gw.sqlite3"}{extra_storage}}}
destinations:
  audit: {{type: dry_run, requires: []}}
sources:
  meta_pixel: {{send_to: [audit]}}
  server: {{send_to: [audit], api_keys: [test-api-key-0001]}}
"""
    )
    return cfg


def pixel(port: int, event_id: str) -> str:
    return (
        f"http://127.0.0.1:{port}/tr?id=1234567890&ev=PageView&eid={event_id}"
        f"&ts={int(time.time() * 1000)}&dl=https%3A%2F%2Fshop.example%2F"
    )


def api_event(event_id: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "event_name": "lead",
        "event_time": int(time.time()) - 5,
        "event_source_url": "https://shop.example/thanks",
    }


def stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT event_id FROM events")}


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as r:
        await r.read()
        return r.status


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)


@pytest.mark.parametrize("log_fails_too", [False, True], ids=["log-ok", "log-full"])
async def test_a_storage_outage_holds_browser_hits_and_readyz_says_so(
    tmp_path: Path, log_fails_too: bool
) -> None:
    # log-full: stderr is a file on the same full disk, so every log line fails as well (the
    # hits must not notice that either).
    port = free_port()
    db = tmp_path / "gw.sqlite3"
    cfg = write_config(tmp_path, port, ", outage_buffer: {max_events: 5}")
    log = tmp_path / "gateway.log"
    proc = await start_serve(cfg, log, port, ready="/readyz")
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(headers={"User-Agent": "Mozilla/5.0"}) as session:
            assert await status(session, pixel(port, "before")) == 200
            await eventually(lambda: "before" in stored_ids(db))
            await asyncio.sleep(0.5)  # let the dry_run delivery write its row back

            wal = db.with_name(db.name + "-wal")
            limit = wal_before = wal.stat().st_size
            if log_fails_too:
                limit = min(limit, log.stat().st_size)
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            outage = [f"out-{i}" for i in range(8)]
            for event_id in outage:
                async with session.get(pixel(port, event_id)) as r:
                    assert r.status == 200  # the page never notices
                    assert (await r.read()).startswith(b"GIF")
            async with session.post(
                f"{base}/v1/events",
                json={"events": [api_event("api-1")]},
                headers={"Authorization": "Bearer test-api-key-0001"},
            ) as r:
                assert r.status == 503
                assert r.headers["Retry-After"]
                assert "retry" in (await r.json())["error"]

            async def unready() -> bool:
                return await status(session, f"{base}/readyz") == 503

            await eventually(unready, within=5)
            async with session.get(f"{base}/metrics") as r:
                text = await r.text()
            # Control: the writes really failed (nothing of the outage reached the file).
            assert not set(outage) & stored_ids(db)
            assert wal.stat().st_size == wal_before
            assert ("store.write_failed" in log.read_text()) is not log_fails_too
            assert metric(text, "tag_gateway_outage_buffer_events") == 5
            assert metric(text, "tag_gateway_outage_dropped_total") == 3
            assert metric(text, "tag_gateway_outage_buffer_bytes") > 0

            resource.prlimit(
                proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )

            async def recovered() -> bool:
                return set(outage[:5]) <= stored_ids(db) and (
                    await status(session, f"{base}/readyz") == 200
                )

            await eventually(recovered, within=20)
            async with session.get(f"{base}/metrics") as r:
                text = await r.text()
            assert metric(text, "tag_gateway_outage_buffer_events") == 0
            # Full buffer: the newest were dropped, the oldest kept (and counted above).
            assert not set(outage[5:]) & stored_ids(db)
            assert ("outage.buffer_full" in log.read_text()) is not log_fails_too
    finally:
        await stop(proc)
    assert proc.returncode == 0


async def test_a_commit_slower_than_the_browser_wait_answers_and_still_stores(
    start_gateway: Callable[[Config], Awaitable[Gateway]],
    make_config: Callable[[str], Config],
    sqlite_only: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(browser, "BROWSER_STORE_WAIT_S", 0.3)
    gw = await start_gateway(
        make_config("destinations: {audit: {type: dry_run}}\nsources: {meta_pixel: {}}\n")
    )
    release = asyncio.Event()

    async def hold(conn: object) -> None:  # the writer's transaction stays open until released
        await release.wait()

    blocker = asyncio.create_task(gw.store.write(hold))
    await asyncio.sleep(0.05)
    url = urlsplit(pixel(0, "slow"))
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        r = await gw.client.get(f"{url.path}?{url.query}")
        waited = time.monotonic() - started
        assert r.status == 200
        assert (await r.read()).startswith(b"GIF")
    # Control: the answer came after the wait ran out, while the commit was still held.
    assert 0.3 <= waited < 2.0
    assert [e["waited_s"] for e in logs if e["event"] == "hit.store_slow"] == [0.3]
    assert await gw.rows("SELECT event_id FROM events WHERE event_id = 'slow'") == []
    release.set()
    await blocker

    async def stored() -> bool:
        return bool(await gw.rows("SELECT event_id FROM events WHERE event_id = 'slow'"))

    await eventually(stored)


async def test_a_second_serve_on_the_same_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port)
    db = tmp_path / "gw.sqlite3"
    first = await start_serve(cfg, tmp_path / "first.log", port)
    try:
        second = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(cfg),
            "--port",
            str(free_port()),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(second.communicate(), 20)
        finally:
            if second.returncode is None:  # it started after all: stop it
                second.kill()
                await second.wait()
        text = err.decode()
        assert second.returncode == 1
        assert "Traceback" not in text
        lines = [line for line in text.splitlines() if "in use" in line]
        assert len(lines) == 1, text
        assert str(db) in lines[0]
        assert "another tag-gateway serve" in lines[0]
        # The first one goes on storing hits (it used to lose them: UNIQUE constraint failed).
        async with aiohttp.ClientSession(headers={"User-Agent": "Mozilla/5.0"}) as session:
            assert await status(session, pixel(port, "after-second")) == 200
        await eventually(lambda: "after-second" in stored_ids(db))
    finally:
        await stop(first)
    assert "UNIQUE constraint" not in (tmp_path / "first.log").read_text()


async def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path, port)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(cfg),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = err.decode()
    assert proc.returncode == 1
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if "in use" in line]
    assert lines == [f"tag-gateway: cannot listen on 127.0.0.1:{port}: address already in use"]


@pytest.mark.skipif(sys.platform != "linux", reason="prlimit on another process is Linux's")
def test_prlimit_reaches_a_child() -> None:
    # Control for the outage test: lowering a child's RLIMIT_FSIZE from outside really works.
    proc = os.posix_spawn(sys.executable, [sys.executable, "-c", "import time; time.sleep(5)"], {})
    try:
        resource.prlimit(proc, resource.RLIMIT_FSIZE, (1234, resource.RLIM_INFINITY))
        assert resource.prlimit(proc, resource.RLIMIT_FSIZE)[0] == 1234
    finally:
        os.kill(proc, signal.SIGKILL)
        os.waitpid(proc, 0)


async def test_postgresql_refusing_connections_holds_hits_until_it_is_back(
    pg_server: str, pg_url: str, start_gateway: Callable[[Config], Awaitable[Gateway]]
) -> None:
    cfg = config_module.parse(
        f"""
storage: {{url: "{pg_url}"}}
destinations:
  audit: {{type: dry_run, requires: []}}
sources:
  meta_pixel: {{send_to: [audit]}}
  server: {{send_to: [audit], api_keys: [test-api-key-0001]}}
""",
        "test.yaml",
        {},
    )
    gw = await start_gateway(cfg)
    name = urlsplit(pg_url).path.lstrip("/")
    probe = await asyncpg.connect(pg_url)  # kept open: it reads what reached the database
    admin = await asyncpg.connect(pg_server)

    async def stored() -> set[str]:
        return {r[0] for r in await probe.fetch("SELECT event_id FROM events")}

    headers = {"User-Agent": "Mozilla/5.0"}
    try:
        assert (await gw.client.get(pixel(0, "before")[len("http://127.0.0.1:0") :])).status == 200
        await eventually(lambda: _contains(stored(), "before"))
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> $2",
            name,
            probe.get_server_pid(),
        )
        outage = [f"pg-out-{i}" for i in range(5)]
        for event_id in outage:
            url = pixel(0, event_id)[len("http://127.0.0.1:0") :]
            r = await gw.client.get(url, headers=headers)
            assert r.status == 200
        r = await gw.client.post(
            "/v1/events",
            json={"events": [api_event("pg-api")]},
            headers={"Authorization": "Bearer test-api-key-0001"},
        )
        assert r.status == 503
        assert r.headers["Retry-After"]

        async def unready() -> bool:
            return (await gw.client.get("/readyz")).status == 503

        await eventually(unready, within=10)
        text = await (await gw.client.get("/metrics")).text()
        assert metric(text, "tag_gateway_outage_buffer_events") == 5
        assert not set(outage) & await stored()  # control: nothing reached the database
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()

    async def recovered() -> bool:
        return set(outage) <= await stored() and (await gw.client.get("/readyz")).status == 200

    try:
        await eventually(recovered, within=20)
    finally:
        await probe.close()
    assert "pg-api" not in await _ids(pg_url)


async def _contains(ids: Awaitable[set[str]], event_id: str) -> bool:
    return event_id in await ids


async def _ids(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {r[0] for r in await conn.fetch("SELECT event_id FROM events")}
    finally:
        await conn.close()


async def test_a_preview_trace_shows_a_hit_the_full_outage_buffer_dropped(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "gw.sqlite3"
    cfg = write_config(tmp_path, port, ", outage_buffer: {max_events: 1}")
    cfg.write_text(cfg.read_text() + "admin: {token: adm1n-t0ken-0123456789}\n")
    admin = {"Authorization": "Bearer adm1n-t0ken-0123456789"}
    proc = await start_serve(cfg, tmp_path / "gateway.log", port, ready="/readyz")
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(headers={"User-Agent": "Mozilla/5.0"}) as session:
            async with session.post(f"{base}/admin/api/preview", headers=admin) as r:
                assert r.status == 201
                preview = {"X-Tag-Gateway-Preview": str((await r.json())["id"])}
            assert await status(session, pixel(port, "before")) == 200
            await eventually(lambda: "before" in stored_ids(db))
            await asyncio.sleep(0.5)  # let the dry_run delivery write its row back
            size = db.with_name(db.name + "-wal").stat().st_size
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
            for event_id in ("held-1", "lost-1"):  # the first fills the buffer
                async with session.get(pixel(port, event_id), headers=preview) as r:
                    assert r.status == 200
            url = f"{base}/admin/api/preview/{preview['X-Tag-Gateway-Preview']}/traces"
            fates: dict[str, str] = {}

            async def traced() -> bool:
                async with session.get(url, headers=admin) as r:
                    for trace in (await r.json())["traces"]:
                        for event in trace["events"]:
                            fates[event["event_id"]] = event["destinations"]["audit"]["status"]
                return len(fates) == 2

            await eventually(traced, within=10)
            assert fates["held-1"] == "queued"  # control: held in memory, still to be written
            assert fates["lost-1"] == "dropped"
            resource.prlimit(
                proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
    finally:
        await stop(proc)
