"""`tag-gateway report`: two windows of data, the figures, and --fail-on-drop both ways."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from gateway import cli
from gateway.outbox import NewDelivery, NewEvent, Status
from gateway.outbox import SqliteOutbox as Store
from gateway.pipeline import MATCH_KEYS

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
    args = ["report", "--config", str(config_file), "--since", "1h", "--min-events", "5"]
    # Volume fell 40 % and email coverage 50 %: a 60 % threshold lets it pass ...
    assert cli.main([*args, "--fail-on-drop", "60"]) == 0
    # ... a 30 % threshold does not, and says why.
    assert cli.main([*args, "--fail-on-drop", "30"]) == 1
    err = capsys.readouterr().err
    # The earlier value beside the change.
    assert "meta/purchase: events 10 -> 6 (-40%)" in err
    assert "meta/purchase: email share 100.0% -> 50.0% (-50%)" in err


def test_table_report_and_explicit_comparison(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "--config", str(config_file), "--since", "1h", "--compare-to", "2h..1h"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "purchase" in out
    # Each figure beside the comparison window's, and the change.
    assert "6 (was 10, -40%)" in out
    assert "50% (was 100%, -50%)" in out


def test_lines_below_min_events_are_not_judged(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "--config", str(config_file), "--since", "1h", "--fail-on-drop", "30"]
    # 10 -> 6 events is under the default minimum (50 in the earlier window): noise, not a drop.
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "1 line below --min-events 50 not judged: meta/purchase (10 events)" in err
    # Control: the same data with a minimum it passes fails the check.
    assert cli.main([*args, "--min-events", "10"]) == 1


def _keyed(i: int, at: float, dest: str, keys: int) -> NewEvent:
    return NewEvent(
        event_id=f"k-{dest}-{at:.0f}-{i}",
        event_name="purchase",
        source="server",
        event_time=int(at),
        received_at=at,
        dedupable=True,
        match_keys=keys,
        deliveries=[NewDelivery(dest, Status.SENT)],
    )


def test_only_match_keys_the_destination_uses_are_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, now = tmp_path / "k.sqlite3", time.time()
    fbc = 1 << MATCH_KEYS.index("fbc")

    async def fill() -> None:
        store = await Store.open(str(db))
        try:
            for dest in ("meta", "ga4"):
                # fbc on every event an hour ago, on none now; volume and email steady.
                await store.add([_keyed(i, now - 5400, dest, EMAIL | fbc) for i in range(60)])
                await store.add([_keyed(i, now - 1800, dest, EMAIL) for i in range(60)])
        finally:
            await store.close()

    asyncio.run(fill())
    capsys.readouterr()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"storage: {{path: {db}}}\n"
        "destinations:\n"
        "  meta: {type: meta_capi, pixel_id: '12345', access_token: t}\n"
        "  ga4: {type: ga4_mp, measurement_id: G-TEST1, api_secret: s}\n"
    )
    args = ["report", "--config", str(cfg), "--since", "1h", "--fail-on-drop", "20", "--json"]
    assert cli.main(args) == 1
    captured = capsys.readouterr()
    # GA4's Measurement Protocol never gets an fbc: its share falling is no drop.
    assert "meta/purchase: fbc share 100.0% -> 0.0% (-100%)" in captured.err
    assert "ga4/purchase" not in captured.err
    drops = orjson.loads(captured.out)["drops"]
    assert drops == [
        {
            "destination": "meta",
            "event_name": "purchase",
            "figure": "fbc",
            "then": 1.0,
            "now": 0.0,
            "change": -1.0,
        }
    ]


def test_json_without_fail_on_drop_has_no_drops_key(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["report", "--config", str(config_file), "--since", "1h", "--json"]) == 0
    assert "drops" not in orjson.loads(capsys.readouterr().out)
