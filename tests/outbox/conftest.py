"""One behaviour suite for both outboxes: a test that takes `outbox` runs once on SQLite and
once on PostgreSQL (the `backend` parameter of tests/conftest.py, ids `sqlite` and
`postgresql`). The PostgreSQL cluster is the session's (`pg_server`); each test gets a fresh
database of its own, as each SQLite test gets a fresh file. With
TAG_GATEWAY_REQUIRE_POSTGRES=1 a missing PostgreSQL fails the `postgresql` cases instead of
skipping them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.outbox import Storage, open_outbox

NewOutbox = Callable[..., Awaitable[Storage]]
Replicas = Callable[[int], Awaitable[list[Storage]]]


@dataclass(frozen=True)
class Place:
    """Where this test's outbox lives: a SQLite file, or a PostgreSQL database when `url`."""

    path: str
    url: str | None


@pytest.fixture
def place(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Place:
    url = str(request.getfixturevalue("pg_url")) if backend == "postgresql" else None
    return Place(str(tmp_path / "outbox.sqlite3"), url)


@pytest.fixture
async def new_outbox(place: Place) -> AsyncIterator[NewOutbox]:
    """Open an outbox on this test's storage, as the gateway does (`open_outbox`); every one
    opened is closed after the test (closing twice is harmless)."""
    opened: list[Storage] = []

    async def open_(synchronous: str = "full") -> Storage:
        outbox = await open_outbox(place.path, place.url, synchronous)
        opened.append(outbox)
        return outbox

    yield open_
    for outbox in reversed(opened):
        await outbox.close()


@pytest.fixture
async def outbox(new_outbox: NewOutbox) -> Storage:
    """The outbox under test, open on a fresh file or database."""
    return await new_outbox()


@pytest.fixture
def replicas(backend: str, outbox: Storage, new_outbox: NewOutbox) -> Replicas:
    """`await replicas(n)`: `outbox` and n - 1 more gateways on its storage. On PostgreSQL each
    is another replica (a pool and writer of its own on the same database); SQLite takes one
    writer per file, so there every one is `outbox` itself."""

    async def more(n: int) -> list[Storage]:
        if backend == "sqlite":
            return [outbox] * n
        return [outbox, *[await new_outbox() for _ in range(n - 1)]]

    return more


@pytest.fixture
async def replica(replicas: Replicas) -> Storage:
    """Another replica of `outbox` (see `replicas`)."""
    return (await replicas(2))[1]


@dataclass(frozen=True)
class Sql:
    """Statements straight on the outbox's database, for what the interface does not show (a
    table's rows) or a state a test sets by hand; `?` placeholders on both backends."""

    outbox: Any
    backend: str

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.backend == "sqlite":
            async with self.outbox.reader.execute(sql, params) as cur:
                return [tuple(row) for row in await cur.fetchall()]
        return [tuple(row) for row in await self.outbox.pool.fetch(_numbered(sql), *params)]

    async def execute(self, sql: str, *params: Any) -> None:
        if self.backend == "sqlite":  # through the single writer, as every write there
            await self.outbox.write(lambda conn: conn.execute(sql, params))
        else:
            await self.outbox.pool.execute(_numbered(sql), *params)


def _numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...`."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


@pytest.fixture
def sql(outbox: Storage, backend: str) -> Sql:
    return Sql(outbox, backend)
