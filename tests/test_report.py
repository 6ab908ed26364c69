"""`tag-gateway report`: two windows of data, the figures, and --fail-on-drop both ways."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from gateway import cli
from gateway.pipeline import MATCH_KEYS
from gateway.store import NewDelivery, NewEvent, Status, Store

EMAIL, FBP = 1 << MATCH_KEYS.index("email"), 1 << MATCH_KEYS.index("fbp")


def _event(i: int, at: float, *, keys: int, status: Status = Status.SENT) -> NewEvent:
    return NewEvent(
        event_id=f"e-{at:.0f}-{i}",
        event_name="purchase",
        source="server",
        event_time=int(at),
        received_at=at,
        dedupable=i % 2 == 0,
        match_keys=keys,
        deliveries=[NewDelivery("meta", status)],
        value="10.50",
        currency="EUR",
    )


async def _fill(path: Path, now: float) -> None:
    store = await Store.open(str(path))
    try:
        # The earlier hour: 10 purchases, all with email.
        await store.add([_event(i, now - 5400, keys=EMAIL | FBP) for i in range(10)])
        # The last hour (a "release"): 6 purchases, half of them without email, one dead.
        fresh = [_event(i, now - 1800, keys=(EMAIL if i < 3 else 0) | FBP) for i in range(5)]
        fresh.append(_event(5, now - 1700, keys=FBP, status=Status.DEAD))
        await store.add(fresh)
    finally:
        await store.close()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    db = tmp_path / "r.sqlite3"
    asyncio.run(_fill(db, time.time()))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage: {{path: {db}}}\ndestinations: {{meta: {{type: dry_run}}}}\n")
    return cfg


def test_json_report_compares_with_the_window_before(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["report", "--config", str(config_file), "--since", "1h", "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    (line,) = report["lines"]
    assert (line["destination"], line["event_name"]) == ("meta", "purchase")
    now, then = line["now"], line["then"]
    assert (now["in"], now["sent"], now["dead"]) == (6, 5, 1)
    assert (then["in"], then["sent"]) == (10, 10)
    assert now["match_keys"]["email"] == 0.5
    assert then["match_keys"]["email"] == 1.0
    assert now["match_keys"]["fbp"] == 1.0
    assert now["value"] == {"EUR": 52.5}  # five sent purchases of 10.50
    assert now["deduplicable_share"] == 0.5


def test_fail_on_drop_exits_1_only_past_the_threshold(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "--config", str(config_file), "--since", "1h"]
    # Volume fell 40 % and email coverage 50 %: a 60 % threshold lets it pass ...
    assert cli.main([*args, "--fail-on-drop", "60"]) == 0
    # ... a 30 % threshold does not, and says why.
    assert cli.main([*args, "--fail-on-drop", "30"]) == 1
    err = capsys.readouterr().err
    assert "meta/purchase: events 10 -> 6" in err
    assert "meta/purchase: email share 100.0% -> 50.0%" in err


def test_table_report_and_explicit_comparison(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "--config", str(config_file), "--since", "1h", "--compare-to", "2h..1h"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "purchase" in out
    assert "6 (-40%)" in out
    assert "50% (-50%)" in out
