"""`serve` as a real process against hostile or failing conditions: a start-up that fails exits
non-zero, malformed requests log one JSON line, slow clients are cut off, accepts are capped."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson

from gateway.outbox import SqliteOutbox as Store
from tests.conftest import free_port, start_serve


async def test_a_failed_start_up_exits_non_zero(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    store = await Store.open(str(db))  # the file and its schema exist: opening will succeed
    await store.close()
    port = free_port()
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"listen: {{host: 127.0.0.1, port: {port}}}\n"
        f"storage: {{path: {db}}}\n"
        "destinations: {audit: {type: dry_run}}\n"
        "sources: {meta_pixel: {send_to: [audit]}}\n"
    )
    # Another process holds the write lock past the busy wait: start-up then fails after
    # storage opened (aiosqlite's reader thread is running by then).
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    log = tmp_path / "serve.log"
    with log.open("wb") as handle:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", "--config", str(cfg), stderr=handle
        )
    try:
        started = time.monotonic()
        code = await asyncio.wait_for(proc.wait(), timeout=90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(
            "serve neither listened nor exited: " + log.read_text()[-1500:]
        ) from None
    finally:
        holder.rollback()
        holder.close()
    text = log.read_text()
    assert "database is locked" in text or "OperationalError" in text  # control: it failed
    assert code == 1, text[-1500:]
    assert time.monotonic() - started < 60  # the 5 s busy wait, then out
    assert '"serve.failed"' in text


def write_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"listen: {{host: 127.0.0.1, port: {port}{extra}}}\n"
        f"storage: {{path: {tmp_path / 'gw.sqlite3'}}}\n"
        "destinations: {audit: {type: dry_run}}\n"
        "sources: {meta_pixel: {send_to: [audit]}}\n"
    )
    return cfg


async def raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    await asyncio.wait_for(proc.wait(), timeout=30)


async def test_malformed_requests_log_one_json_line_not_tracebacks(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    proc = await start_serve(write_config(tmp_path, port), log, port)
    try:
        bad = [
            b"GET /tr/ HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
            b"GET /tr/ HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
            b"GET /tr/?email=jane@example.com HTTP/1.1\r\nHost: x\r\nX: \x01\r\n\r\n",
        ]
        for n in range(30):
            answer = await raw(port, bad[n % 3])
            assert answer.split(b" ")[1] == b"400", answer[:60]  # control: each was refused
    finally:
        await stop(proc)
    lines = log.read_text().splitlines()
    records = [orjson.loads(line) for line in lines]  # every line is JSON (no traceback lines)
    refused = [r for r in records if r["event"] == "http.bad_request"]
    # 30 malformed requests: one JSON line each, not ~20 lines of traceback each.
    assert len(refused) == 30, refused
    assert len(records) < 40
    for record in refused:
        assert "127.0.0.1" not in orjson.dumps(record).decode()  # no peer address
        assert "jane" not in orjson.dumps(record).decode()


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed (or answered and closed) the connection."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    return True


async def _slow_clients(
    port: int, n: int, writers: list[asyncio.StreamWriter]
) -> list[asyncio.Task[bool]]:
    """`n` half-sent requests (headers, or a body after them), one byte every 0.3 s after."""
    tasks = []
    for i in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        if i % 2:
            writer.write(b"POST /tr/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nid=1")
        else:
            writer.write(b"GET /tr/?id=1&ev=PageView HTTP/1.1\r\nHost: x\r\n")

        async def drip(writer: asyncio.StreamWriter = writer, header: bool = not i % 2) -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    await asyncio.sleep(0.3)
                    writer.write(b"X-a: b\r\n" if header else b"x")
                    await writer.drain()

        dripper = asyncio.create_task(drip())
        closed = asyncio.create_task(_closed_by_server(reader))
        closed.add_done_callback(lambda _, d=dripper: d.cancel())
        tasks.append(closed)
    return tasks


async def test_slow_clients_are_cut_off(tmp_path: Path) -> None:
    # Control first: with the timeouts as good as off, the same slow clients stay connected
    # (aiohttp has no header or body timeout of its own: 1,600 of them stayed open past 60 s).
    for timeout_s, expect_cut in ((3600, False), (1, True)):
        port = free_port()
        log = tmp_path / f"serve-{timeout_s}.log"
        extra = f", header_timeout_s: {timeout_s}, body_timeout_s: {timeout_s}"
        proc = await start_serve(write_config(tmp_path, port, extra), log, port)
        writers: list[asyncio.StreamWriter] = []
        try:
            clients = await _slow_clients(port, 20, writers)
            done, pending = await asyncio.wait(clients, timeout=4 if not expect_cut else 20)
            if expect_cut:
                assert not pending, f"{len(pending)} slow clients still connected"
            else:
                assert not done, f"{len(done)} closed without a timeout"
            assert await _healthz(port, 10) == 200  # others are still served
            for task in pending:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
        finally:
            for writer in writers:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            await stop(proc)


def _fd_limit(n: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return limit


async def _healthz(port: int, within_s: float) -> int | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within_s)) as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as answer,
        ):
            return answer.status
    except (TimeoutError, aiohttp.ClientError):
        return None


async def test_the_connection_cap_keeps_the_gateway_answering(tmp_path: Path) -> None:
    # 300 idle half-sent requests against a process limited to 256 descriptors. Control first:
    # with the cap lifted, accepts fail (EMFILE) and /healthz gets no answer; with it, the
    # oldest half-sent connection makes room and /healthz answers.
    for cap, answers in ((1_000_000, False), (100, True)):
        port = free_port()
        log = tmp_path / f"serve-{cap}.log"
        cfg = write_config(tmp_path, port, f", header_timeout_s: 3600, max_connections: {cap}")
        with log.open("ab") as handle:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--config",
                str(cfg),
                stderr=handle,
                preexec_fn=_fd_limit(256),
            )
        writers: list[asyncio.StreamWriter] = []
        try:
            for _ in range(300):
                if await _healthz(port, 1) == 200:
                    break
                await asyncio.sleep(0.1)
            for _ in range(300):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /tr/ HTTP/1.1\r\nHost: x\r\n")
                writers.append(writer)
            await asyncio.sleep(1.0)
            status = None
            for _ in range(5):
                status = await _healthz(port, 2)
                if status == 200:
                    break
            assert (status == 200) is answers, (cap, status)
            await asyncio.sleep(2.0)
        finally:
            for writer in writers:
                writer.close()
            await asyncio.sleep(0.5)
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=30)
        records = [orjson.loads(line) for line in log.read_text().splitlines()]
        # Failed accepts and shed connections: a line per interval, never one per accept.
        assert len(records) < 15, [r["event"] for r in records]
        if answers:
            assert any(r["event"] == "connections.shed" for r in records)
        else:
            assert any(r.get("errno") == errno.EMFILE for r in records)  # control: it fired
