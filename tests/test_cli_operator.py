"""The commands as an operator runs them: only their output, a clear word when something is
missing or misspelt, and `check` showing what the config really sets up."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson
import pytest

from gateway import cli
from gateway.outbox import DeliveryQuery, NewDelivery, NewEvent, Status
from gateway.outbox import SqliteOutbox as Store

Capture = pytest.CaptureFixture[str]


async def _fill(db: Path) -> None:
    store = await Store.open(str(db))
    now = time.time()
    try:
        await store.add(
            [
                NewEvent(
                    "dead-1",
                    "purchase",
                    "server",
                    int(now),
                    now,
                    True,
                    0,
                    [NewDelivery("meta", Status.DEAD, b"{}", message="190: token expired")],
                ),
            ]
        )
        await store.write(
            lambda conn: conn.execute("UPDATE deliveries SET latency_ms = 12.345678901")
        )
    finally:
        await store.close()


def config(tmp_path: Path, db: Path, extra: str = "") -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"storage: {{path: {db}}}\n"
        "destinations: {meta: {type: dry_run}}\n"
        "sources: {meta_pixel: {send_to: [meta]}}\n" + extra
    )
    return path


@pytest.fixture
def filled(tmp_path: Path, capsys: Capture) -> Path:
    db = tmp_path / "d.sqlite3"
    asyncio.run(_fill(db))
    capsys.readouterr()  # what filling it logged is not the command's
    return config(tmp_path, db)


# --- read commands print only their output ---------------------------------------------------


def test_deliveries_json_is_json_lines_and_nothing_on_stderr(filled: Path, capsys: Capture) -> None:
    assert cli.main(["deliveries", "--config", str(filled), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert [r["event_id"] for r in rows] == ["dead-1"]
    assert rows[0]["latency_ms"] == 12.35  # rounded


@pytest.mark.parametrize(
    "args",
    [["deliveries"], ["replay"], ["report", "--since", "1h"]],
)
def test_read_commands_log_nothing(filled: Path, capsys: Capture, args: list[str]) -> None:
    assert cli.main([*args, "--config", str(filled)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "store.closed" not in out
    assert out


# --- no store -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["deliveries"], ["deliveries", "--json"], ["replay"], ["report", "--since", "1h"]]
)
def test_no_store_says_which_and_creates_nothing(
    tmp_path: Path, capsys: Capture, args: list[str]
) -> None:
    db = tmp_path / "nowhere" / "missing.sqlite3"
    cfg = config(tmp_path, db)
    before = set(os.listdir(tmp_path))
    assert cli.main([*args, "--config", str(cfg)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"no store at {db} (storage.path in {cfg}); has serve run with it?"
    assert set(os.listdir(tmp_path)) == before
    assert not db.parent.exists()


# --- unknown values --------------------------------------------------------------------------


def test_an_unknown_status_lists_the_valid_ones(filled: Path, capsys: Capture) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["deliveries", "--config", str(filled), "--status", "deadd"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'deadd'" in err
    for status in Status:
        assert str(status) in err


def test_an_unknown_destination_lists_the_configured_ones(filled: Path, capsys: Capture) -> None:
    for command in ("deliveries", "replay"):
        assert cli.main([command, "--config", str(filled), "--destination", "mtea"]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.strip() == (
            "unknown destination 'mtea': not in the config (meta) nor in the delivery log"
        )


def test_a_destination_only_in_the_log_is_still_known(tmp_path: Path, capsys: Capture) -> None:
    # A destination removed from the config keeps its rows in the log: they stay readable.
    db = tmp_path / "d.sqlite3"
    asyncio.run(_fill(db))
    capsys.readouterr()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage: {{path: {db}}}\ndestinations: {{ga4x: {{type: dry_run}}}}\n")
    assert cli.main(["deliveries", "--config", str(cfg), "--destination", "meta", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


# --- check -----------------------------------------------------------------------------------

BASE = """
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: secret-token
"""


def check(tmp_path: Path, text: str, capsys: Capture) -> tuple[int, list[str]]:
    path = tmp_path / "check.yaml"
    path.write_text(text)
    code = cli.main(["check", "--config", str(path)])
    out, err = capsys.readouterr()
    assert err == ""
    assert "secret-token" not in out
    return code, out.splitlines()


def test_check_catches_a_source_path_without_a_slash(tmp_path: Path, capsys: Capture) -> None:
    code, lines = check(
        tmp_path, BASE + "sources: {meta_pixel: {send_to: [meta], path: tr}}", capsys
    )
    assert code == 1
    assert lines == ["sources.meta_pixel.path: must start with /"]


def test_check_catches_base_above_max(tmp_path: Path, capsys: Capture) -> None:
    text = (
        BASE + "    retry: {base_ms: 5000, max_ms: 1000}\nsources: {meta_pixel: {send_to: [meta]}}"
    )
    code, lines = check(tmp_path, text, capsys)
    assert code == 1
    assert lines == ["destinations.meta.retry: base_ms (5000) is above max_ms (1000)"]


def test_check_catches_a_batch_over_the_platform_limit(tmp_path: Path, capsys: Capture) -> None:
    text = """
destinations:
  ga4: {type: ga4_mp, measurement_id: G-ABC123, api_secret: s, batch: {max_events: 100}}
sources: {ga4: {send_to: [ga4]}}
"""
    code, lines = check(tmp_path, text, capsys)
    assert code == 1
    assert lines == ["destinations.ga4.batch.max_events: at most 25 (the ga4_mp limit)"]


def test_check_speaks_plainly(tmp_path: Path, capsys: Capture) -> None:
    text = BASE + "sources: {meta_pixel: {send_to: meta}}\nlisten: {port: lots}"
    code, lines = check(tmp_path, text, capsys)
    assert code == 1
    assert sorted(lines) == [
        "listen.port: must be a whole number",
        "sources.meta_pixel.send_to: must be a list",
    ]


def test_check_warns_when_no_source_is_on(tmp_path: Path, capsys: Capture) -> None:
    code, lines = check(tmp_path, BASE, capsys)
    assert code == 0
    assert "warning: no source is configured, so the gateway takes no hits" in lines


def test_check_prints_the_effective_settings(tmp_path: Path, capsys: Capture) -> None:
    text = (
        BASE
        + """
  audit: {type: dry_run}
sources: {meta_pixel: {send_to: [meta, audit]}}
cookies: {domain: shop.example}
scripts:
  - {path: /fbevents.js, upstream: "https://connect.facebook.net/en_US/fbevents.js"}
admin: {token: admin-secret-0123456789}
rules:
  - redact_url_params: [email]
  - destination: meta
    drop_fields: [user.phone]
"""
    )
    code, lines = check(tmp_path, text, capsys)
    out = "\n".join(lines)
    assert code == 0
    assert "admin-secret-0123456789" not in out
    assert (
        "  meta: meta_capi pixel 1234567890 via https://graph.facebook.com v25.0\n"
        "    requires ad_storage, ad_user_data (on_denied: drop); events: all;"
        " batch 1000, retry for 4h, 500-300000 ms, timeout 10000 ms"
    ) in out
    # format auto: each hit needs what its own vendor's server API needs.
    assert (
        "  audit: dry_run (format auto), sends nothing\n    requires by format:"
        " meta ad_storage, ad_user_data; ga4 analytics_storage;"
    ) in out
    assert "; server events ad_storage, ad_user_data (on_denied: drop)" in out
    assert "cookies: _fbp/_fbc/_ttp/ttclid on shop.example for 90 days" in out
    assert (
        "scripts:\n  /fbevents.js <- https://connect.facebook.net/en_US/fbevents.js (ttl 1h)" in out
    )
    assert "admin: /admin (token set)" in out
    assert "consent: default granted, honor_gpc on, tcf off" in out
    assert "rules:\n  1. redact_url_params: email\n  2. [meta] drop_fields: user.phone" in out
    assert "outage buffer: 20000 events / 96 MiB   retention: 30 days" in out


# --- validate --------------------------------------------------------------------------------


def test_validate_with_nothing_to_validate_says_so_and_fails(
    tmp_path: Path, capsys: Capture
) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(BASE + "  audit: {type: dry_run}\n")
    assert cli.main(["validate", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "meta: skipped: no test_event_code configured" in out
    assert "audit: skipped: dry_run has no test mode" in out
    assert out.splitlines()[-1] == "validate: nothing was validated (2 skipped)"


# --- replay ----------------------------------------------------------------------------------


async def _replayable(db: Path) -> None:
    store = await Store.open(str(db))
    now = time.time()

    def event(event_id: str, *statuses: Status, age_s: float = 0) -> NewEvent:
        deliveries = [NewDelivery("meta", s, b"{}", message="190: token expired") for s in statuses]
        return NewEvent(event_id, "purchase", "server", int(now - age_s), now, True, 0, deliveries)

    try:
        await store.add(
            [
                event("fresh", Status.DEAD),
                event("inflight", Status.DEAD),
                event("later", Status.DEAD, Status.SENT),
                event("old", Status.DEAD, age_s=8 * 86400),
                event("twice", Status.DEAD, Status.DEAD),
            ]
        )
        await store.write(
            lambda conn: conn.execute(
                "UPDATE deliveries SET leased_until = ? WHERE event_id = 'inflight'", (now + 60,)
            )
        )
    finally:
        await store.close()


def test_replay_says_what_it_left_and_why(tmp_path: Path, capsys: Capture) -> None:
    db = tmp_path / "r.sqlite3"
    asyncio.run(_replayable(db))
    cfg = tmp_path / "r.yaml"
    cfg.write_text(
        f"storage: {{path: {db}}}\n"
        'destinations: {meta: {type: meta_capi, pixel_id: "1234567890", access_token: t}}\n'
    )
    capsys.readouterr()
    assert cli.main(["replay", "--config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        "re-queued 2 deliveries",
        "left 4:",
        "  1 in flight (a worker is sending it)",
        "  1 a later copy of the event is queued or was sent within 48 hours",
        "  1 an older row of an event whose newest row was re-queued",
        "  1 past the platform's age limit (it would be refused)",
    ]

    async def queued() -> list[str]:
        store = await Store.open(str(db))
        try:
            rows = await store.deliveries(DeliveryQuery(statuses=("queued",)))
        finally:
            await store.close()
        return sorted(r.event_id for r in rows)

    # Control: what it says it re-queued is what it re-queued; the old row stays dead.
    assert asyncio.run(queued()) == ["fresh", "twice"]
