"""Shared fixtures: a gateway on a real socket, a real SQLite file, fake platforms on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import orjson
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import config as config_module
from gateway.app import create_app
from gateway.config import Config
from gateway.outbox import SqliteOutbox as Store
from gateway.typedefs import STORE

GIF_PREFIX = b"GIF89a"


@dataclass
class Recorded:
    """One request a fake platform received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    raw_query: str = ""
    """The query string as it came, undecoded."""

    def json(self) -> Any:
        return orjson.loads(self.body)


Reply = Callable[[Recorded], Awaitable[web.StreamResponse] | web.StreamResponse]


@dataclass
class FakePlatform:
    """A real HTTP server on 127.0.0.1 that records requests and answers as told."""

    server: TestServer
    requests: list[Recorded] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    default: Reply = field(default=lambda r: web.json_response({"events_received": 1}))

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def then(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order, then with the default."""
        self.replies.extend(replies)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        recorded = Recorded(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            await request.read(),
            request.rel_url.raw_query_string,
        )
        self.requests.append(recorded)
        reply = self.replies.pop(0) if self.replies else self.default
        result = reply(recorded)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, web.StreamResponse)
        return result


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """A test that runs a CLI command configures logging; the next test starts from defaults."""
    yield
    structlog.reset_defaults()


@pytest.fixture
async def fake_platform() -> AsyncIterator[FakePlatform]:
    """A fake platform endpoint; point a destination's `endpoint` at `fake_platform.url`."""
    app = web.Application()
    server = TestServer(app, host="127.0.0.1")
    platform = FakePlatform(server)
    app.router.add_route("*", "/{tail:.*}", platform.handle)
    await server.start_server()
    yield platform
    await server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every gateway test runs on both storage backends (storage.path and storage.url)."""
    return str(request.param)


@pytest.fixture
def sqlite_only(backend: str) -> None:
    """For a test that reaches into SQLite itself (its file, or holding its single writer)."""
    if backend != "sqlite":
        pytest.skip("reaches into the SQLite store itself")


@pytest.fixture
def db_path(tmp_path: Path, sqlite_only: None) -> Path:
    return tmp_path / "gateway.sqlite3"


@pytest.fixture
def make_config(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> Callable[[str], Config]:
    """Parse a YAML config, storage pointed at the test's own SQLite file or PostgreSQL
    database (by `backend`) unless the text says otherwise."""
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None

    def make(text: str, env: dict[str, str] | None = None) -> Config:
        cfg = config_module.parse(text, "test.yaml", env or {})
        if "storage:" not in text:
            update = {"url": url} if url else {"path": str(tmp_path / "gateway.sqlite3")}
            storage = cfg.storage.model_copy(update=update)
            cfg = Config(**{**_fields(cfg), "storage": storage})
        return cfg

    return make


def _fields(cfg: Config) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in cfg.__dataclass_fields__}


@dataclass
class Gateway:
    """A running gateway app and a client bound to its real socket."""

    client: TestClient[web.Request, web.Application]
    config: Config

    @property
    def app(self) -> web.Application:
        return self.client.server.app  # type: ignore[return-value]

    @property
    def store(self) -> Any:
        return self.app[STORE]

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run a read-only query on whichever backend the gateway uses (`?` placeholders)."""
        store = self.store
        if isinstance(store, Store):
            async with store.reader.execute(sql, params) as cur:
                return list(await cur.fetchall())
        numbered = sql
        for i in range(1, len(params) + 1):
            numbered = numbered.replace("?", f"${i}", 1)
        return [tuple(r) for r in await store.pool.fetch(numbered, *params)]


@pytest.fixture
async def start_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> Callable[[Config], Awaitable[Gateway]]:
    async def start(cfg: Config) -> Gateway:
        client = await aiohttp_client(create_app(cfg))
        return Gateway(client, cfg)

    return start


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float = 5.0) -> None:
    """Wait until `check()` is true, failing the test after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium; .ci/run installs it and sets TAG_GATEWAY_REQUIRE_BROWSER=1, so in CI
    a missing browser fails the test instead of skipping it."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("TAG_GATEWAY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{CHROMIUM} is required (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} not installed")


# --- PostgreSQL (storage.url) -------------------------------------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str]) -> None:
    # Root may not run PostgreSQL: as root, run its tools as the postgres OS user.
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL server URL (to its `postgres` database) for the whole session."""
    if url := os.environ.get("TAG_GATEWAY_PG_URL"):
        yield url
        return
    if not (PG_BIN / "initdb").exists():
        if os.environ.get("TAG_GATEWAY_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{PG_BIN} is required (apt-get install postgresql)")
        pytest.skip(f"{PG_BIN} not installed")
    root = Path(tempfile.mkdtemp(prefix="tag-gateway-pg-"))
    data, sockets, port = root / "data", root / "sockets", free_port()
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    # trust: a local, throwaway cluster. fsync off: these tests are about concurrency, not
    # power cuts, and it makes every commit cheap.
    _run(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ]
    )
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w"]
    _run([*pg_ctl, "-l", str(root / "log"), "-o", options, "start"])
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _run([*pg_ctl, "-m", "fast", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def pg_url(pg_server: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test, dropped after it."""
    name = f"tag_gateway_test_{secrets.token_hex(6)}"
    server = await asyncpg.connect(pg_server)
    try:
        await server.execute(f'CREATE DATABASE "{name}"')
        yield urlsplit(pg_server)._replace(path=f"/{name}").geturl()
        await server.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await server.close()


async def start_serve(
    cfg: Path, log: Path, port: int, *, pass_port: bool = False, ready: str = "/healthz"
) -> asyncio.subprocess.Process:
    """`python -m gateway serve` as a real process, once `ready` answers 200; its stderr (the
    JSON log) is appended to `log`."""
    args = ["-m", "gateway", "serve", "--config", str(cfg)]
    if pass_port:
        args += ["--port", str(port)]
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.DEVNULL, stderr=handle
        )
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"http://127.0.0.1:{port}{ready}") as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("gateway did not start: " + log.read_text()[-2000:])
