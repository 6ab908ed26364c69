"""`tag-gateway deliveries`: filters and the --json fields the contract promises."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from gateway import cli
from gateway.outbox import NewDelivery, NewEvent, Status
from gateway.outbox import SqliteOutbox as Store

FIELDS = {
    "event_id",
    "event_name",
    "destination",
    "status",
    "attempts",
    "http_status",
    "message",
    "created_at",
    "updated_at",
}


async def _fill(db: Path) -> None:
    store = await Store.open(str(db))
    now = time.time()
    try:
        await store.add(
            [
                NewEvent(
                    "old-1",
                    "purchase",
                    "server",
                    int(now),
                    now - 7200,
                    True,
                    0,
                    [NewDelivery("meta", Status.DEAD, message="190/None: token expired")],
                ),
                NewEvent(
                    "new-1",
                    "purchase",
                    "server",
                    int(now),
                    now,
                    True,
                    0,
                    [
                        NewDelivery("meta", Status.QUEUED, b"{}"),
                        NewDelivery("ga4", Status.DROPPED_CONSENT, message="consent: x"),
                    ],
                ),
            ]
        )
    finally:
        await store.close()


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    db = tmp_path / "d.sqlite3"
    asyncio.run(_fill(db))
    path = tmp_path / "c.yaml"
    path.write_text(f"storage: {{path: {db}}}\ndestinations: {{meta: {{type: dry_run}}}}\n")
    return path


def run(cfg: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert cli.main(["deliveries", "--config", str(cfg), "--json", *args]) == 0
    return [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_json_rows_newest_first_with_the_promised_fields(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = run(cfg, capsys)
    assert [(r["event_id"], r["destination"]) for r in rows] == [
        ("new-1", "ga4"),
        ("new-1", "meta"),
        ("old-1", "meta"),
    ]
    assert all(set(r) >= FIELDS for r in rows)


def test_filters(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert [r["event_id"] for r in run(cfg, capsys, "--status", "dead")] == ["old-1"]
    assert [r["status"] for r in run(cfg, capsys, "--destination", "ga4")] == ["dropped_consent"]
    assert len(run(cfg, capsys, "--event-id", "new-1")) == 2
    assert [r["event_id"] for r in run(cfg, capsys, "--since", "1h")] == ["new-1", "new-1"]
    assert [r["event_id"] for r in run(cfg, capsys, "--until", "1h")] == ["old-1"]
    assert len(run(cfg, capsys, "--limit", "1")) == 1


def test_terminal_escapes_are_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An event ID or name comes from the internet: ESC[2J clears the operator's screen, ESC]0;
    # retitles the terminal, U+009B is a one-byte CSI, U+202E reverses what follows.
    hostile_id, hostile_name = "ord-\x1b[2J1", "lead\x1b]0;pwned\x07\u009b1m\u202eevil"
    db = tmp_path / "d.sqlite3"

    async def fill() -> None:
        store = await Store.open(str(db))
        try:
            now = time.time()
            delivery = NewDelivery("meta", Status.DEAD, message="bad \x1b[31m red")
            await store.add(
                [NewEvent(hostile_id, hostile_name, "server", int(now), now, True, 0, [delivery])]
            )
        finally:
            await store.close()

    asyncio.run(fill())
    path = tmp_path / "c.yaml"
    path.write_text(f"storage: {{path: {db}}}\ndestinations: {{meta: {{type: dry_run}}}}\n")
    assert cli.main(["deliveries", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ord-\\x1b[2J1" in out  # control: the row is printed, its escape made visible
    assert "lead\\x1b]0;pwned\\x07\\u009b1m\\u202eevil" in out
    assert "bad \\x1b[31m red" in out
    assert not any(ch in out for ch in "\x1b\x07\u009b\u202e")
    # --json stays exact: JSON escapes C0 controls itself, and the value round-trips.
    assert cli.main(["deliveries", "--config", str(path), "--json"]) == 0
    (row,) = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["event_id"], row["event_name"]) == (hostile_id, hostile_name)
    assert cli.main(["report", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "lead\\x1b]0;pwned" in out
    assert not any(ch in out for ch in "\x1b\x07\u009b\u202e")
