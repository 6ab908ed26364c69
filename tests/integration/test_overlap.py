"""Do the pixel's and the backend's copies meet (contract §10)? Purchases from a real Meta pixel
hit and the real server API, then `report --json`, the warning line, `--fail-on-drop` and
`/admin`, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import orjson
import pytest
import structlog

from gateway import cli
from gateway.config import Config
from gateway.outbox import NewDelivery, NewEvent, Status
from tests.conftest import Gateway

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

CONFIG = """
admin: {token: s3cret-admin-0123456789}
destinations:
  audit: {type: dry_run}
sources:
  meta_pixel: {send_to: [audit]}
  server: {send_to: [audit], api_keys: [key-1-0123456789abc]}
"""
AUTH = {"Authorization": "Bearer key-1-0123456789abc"}


async def pixel(gw: Gateway, *ids: str) -> None:
    for event_id in ids:
        response = await gw.client.get(
            f"/tr/?id=1234567890&ev=Purchase&eid={event_id}&ts={int(time.time() * 1000)}"
            "&dl=https%3A%2F%2Fshop.example%2Fthanks&cd[value]=10&cd[currency]=EUR",
            headers={"User-Agent": "Mozilla/5.0 (X11)"},
        )
        assert response.status == 200


async def backend(gw: Gateway, *ids: str) -> None:
    events = [
        {
            "event_id": event_id,
            "event_name": "purchase",
            "event_time": int(time.time()) - 5,
            "event_source_url": "https://shop.example/thanks",
            "custom": {"value": "10.00", "currency": "EUR"},
        }
        for event_id in ids
    ]
    response = await gw.client.post("/v1/events", json={"events": events}, headers=AUTH)
    assert response.status == 202
    assert (await response.json())["rejected"] == []


def config_file(gw: Gateway, tmp_path: Path) -> Path:
    """A YAML file on the gateway's own storage, for the commands."""
    storage = gw.config.storage
    where = f"url: '{storage.url}'" if storage.url else f"path: '{storage.path}'"
    path = tmp_path / "cli.yaml"
    path.write_text(f"storage: {{{where}}}\ndestinations: {{audit: {{type: dry_run}}}}\n")
    return path


async def command(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run a command beside the running gateway (its own event loop, in a thread)."""
    # The gateway runs in this process: its log lines must not land in the command's stdout.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_report_json_carries_the_overlap(
    start_gateway: Start,
    make_config: MakeConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = await start_gateway(make_config(CONFIG))
    await pixel(gw, "A", "B", "C")
    await backend(gw, "A", "B", "D")
    cfg = config_file(gw, tmp_path)
    code, out, err = await command(
        ["report", "--config", str(cfg), "--since", "1h", "--json"], capsys
    )
    assert code == 0
    (overlap,) = orjson.loads(out)["overlap"]
    lag = overlap.pop("median_lag_s")
    then = overlap.pop("then")
    assert overlap == {
        "event_name": "purchase",
        "browser": 3,
        "backend": 3,
        "both": 2,
        "coverage": 0.667,
        "backend_only": 1,
    }
    assert 0 <= lag < 60
    assert then == {
        "browser": 0,
        "backend": 0,
        "both": 0,
        "coverage": None,
        "backend_only": 0,
        "median_lag_s": None,
    }
    assert "share an event ID" not in err

    # The table says the same, and /admin shows it with Meta's 75 % goal.
    code, out, _ = await command(["report", "--config", str(cfg), "--since", "1h"], capsys)
    assert code == 0
    assert "purchase  3        3        2     67%" in out
    page = await gw.client.get(
        "/admin", headers={"Authorization": "Bearer s3cret-admin-0123456789"}
    )
    html = await page.text()
    assert 'data-event="purchase" data-coverage="0.6667"' in html
    assert 'class="goal"' in html
    assert "goal 75%" in html


async def test_ids_that_never_meet_get_one_line(
    start_gateway: Start,
    make_config: MakeConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = await start_gateway(make_config(CONFIG))
    await pixel(gw, "px-1", "px-2", "px-3")
    # The classic broken setup: the backend sends the order number, the pixel its own ID.
    await backend(gw, "1001", "1002")
    cfg = config_file(gw, tmp_path)
    args = ["report", "--config", str(cfg), "--since", "1h"]
    code, out, _ = await command(args, capsys)
    assert code == 0
    assert "purchase: 3 browser, 2 backend, 0 share an event ID" in out
    # With --json the document stays JSON; the line goes to stderr.
    code, out, err = await command([*args, "--json"], capsys)
    assert orjson.loads(out)["overlap"][0]["both"] == 0
    assert "purchase: 3 browser, 2 backend, 0 share an event ID" in err
    # Control: once IDs meet, the line is gone.
    await pixel(gw, "1003")
    await backend(gw, "1003")
    code, out, _ = await command(args, capsys)
    assert "share an event ID" not in out


def _copy(event_id: str, source: str, at: float) -> NewEvent:
    return NewEvent(
        event_id=event_id,
        event_name="purchase",
        source=source,
        event_time=int(at),
        received_at=at,
        dedupable=True,
        match_keys=0,
        deliveries=[NewDelivery("audit", Status.SENT)],
    )


async def test_fail_on_drop_judges_coverage(
    start_gateway: Start,
    make_config: MakeConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = await start_gateway(make_config(CONFIG))
    now = time.time()
    # The hour before: 10 pixel purchases, the backend confirms all 10 with the same ID, 30 s
    # later. The last hour: 10 again, the backend confirms 4 (the other 6 under a new ID).
    events = [_copy(f"old-{i}", "meta_pixel", now - 5400) for i in range(10)]
    events += [_copy(f"old-{i}", "server", now - 5370) for i in range(10)]
    events += [_copy(f"new-{i}", "meta_pixel", now - 1800) for i in range(10)]
    events += [
        _copy(f"new-{i}" if i < 4 else f"order-{i}", "server", now - 1790) for i in range(10)
    ]
    await gw.store.add(events)
    cfg = config_file(gw, tmp_path)
    args = ["report", "--config", str(cfg), "--since", "1h", "--min-events", "5", "--json"]
    code, out, err = await command([*args, "--fail-on-drop", "50"], capsys)
    assert code == 1
    assert "dropped more than 50%: purchase: coverage 100.0% -> 40.0% (-60%)" in err
    report = orjson.loads(out)
    assert {
        "destination": None,
        "event_name": "purchase",
        "figure": "coverage",
        "then": 1.0,
        "now": 0.4,
        "change": -0.6,
    } in report["drops"]
    (overlap,) = report["overlap"]
    assert (overlap["median_lag_s"], overlap["then"]["median_lag_s"]) == (10.0, 30.0)
    # Control: a threshold above the fall passes (volumes held steady).
    code, _, _ = await command([*args, "--fail-on-drop", "70"], capsys)
    assert code == 0
