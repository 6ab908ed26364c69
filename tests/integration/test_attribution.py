"""`tag-gateway attribution` (contract §11): touches recorded from real pixel hits, purchases
from the pixel, gtag and the server API, a spend file, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
import structlog

from gateway import cli
from gateway.config import Config
from gateway.outbox import NewDelivery, NewEvent, NewTouch, Status, open_outbox
from tests.conftest import Gateway

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

CONFIG = """
admin: {token: s3cret-admin-0123456789}
destinations:
  audit: {type: dry_run}
sources:
  meta_pixel: {send_to: [audit]}
  ga4: {send_to: [audit]}
  server: {send_to: [audit], api_keys: [key-1-0123456789abc]}
"""
AUTH = {"Authorization": "Bearer key-1-0123456789abc"}
FBP = "fb.1.1795000000000.111111111"
UA = {"User-Agent": "Mozilla/5.0 (X11)"}


async def meta_hit(gw: Gateway, ev: str, url: str, *extra: str) -> None:
    query = "&".join(
        (
            f"id=1234567890&ev={ev}&ts={int(time.time() * 1000)}",
            f"dl={quote(url, safe='')}",
            f"fbp={FBP}",
            *extra,
        )
    )
    response = await gw.client.get(f"/tr/?{query}", headers=UA)
    assert response.status == 200


async def ga4_hit(gw: Gateway, en: str, url: str, *extra: str) -> None:
    query = "&".join(
        ("v=2&tid=G-TEST1&cid=555.666", f"en={en}", f"dl={quote(url, safe='')}", *extra)
    )
    response = await gw.client.get(f"/g/collect?{query}", headers=UA)
    assert response.status == 204


async def backend_purchase(gw: Gateway, event_id: str, value: str, email: str) -> None:
    event = {
        "event_id": event_id,
        "event_name": "purchase",
        "event_time": int(time.time()) - 5,
        "event_source_url": "https://shop.example/thanks",
        "user": {"email": email},
        "custom": {"value": value, "currency": "EUR"},
    }
    response = await gw.client.post("/v1/events", json={"events": [event]}, headers=AUTH)
    assert response.status == 202
    assert (await response.json())["rejected"] == []


def config_file(gw: Gateway, tmp_path: Path) -> Path:
    storage = gw.config.storage
    where = f"url: '{storage.url}'" if storage.url else f"path: '{storage.path}'"
    path = tmp_path / "cli.yaml"
    path.write_text(f"storage: {{{where}}}\ndestinations: {{audit: {{type: dry_run}}}}\n")
    return path


async def command(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    # The gateway runs in this process: its log lines must not land in the command's stdout.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_one_ruler_for_meta_google_and_the_rest(
    start_gateway: Start,
    make_config: MakeConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = await start_gateway(make_config(CONFIG))
    # A Meta click lands, then a purchase of 100 EUR that the pixel and the backend both send.
    await meta_hit(gw, "PageView", "https://shop.example/?fbclid=IwAR1&utm_campaign=spring")
    await meta_hit(
        gw,
        "Purchase",
        "https://shop.example/thanks",
        "eid=ord-1",
        "cd[value]=100",
        "cd[currency]=EUR",
    )
    await backend_purchase(gw, "ord-1", "100.00", "jane@example.com")
    # A Google click, then a GA4 purchase of 50 EUR.
    await ga4_hit(gw, "page_view", "https://shop.example/?gclid=Cj0K&utm_campaign=brand")
    await ga4_hit(
        gw,
        "purchase",
        "https://shop.example/thanks",
        "ep.transaction_id=ord-2",
        "epn.value=50",
        "cu=EUR",
    )
    # A purchase with no touch at all.
    await backend_purchase(gw, "ord-3", "30.00", "someone@example.com")

    spend = tmp_path / "spend.csv"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    spend.write_text(
        "date,channel,campaign,spend,currency\n"
        f"{today},meta,spring,40,EUR\n"
        f"{today},google,brand,10.00,EUR\n"
        "2020-01-01,meta,spring,999,EUR\n"  # outside the window: ignored
    )
    cfg = config_file(gw, tmp_path)
    args = ["attribution", "--config", str(cfg), "--since", "1d", "--spend", str(spend)]
    code, out, err = await command([*args, "--json"], capsys)
    assert code == 0, err
    result = orjson.loads(out)
    assert (result["window"], result["model"], result["event"]) == ("7d", "last_click", "purchase")
    rows = {(r["channel"], r["campaign"]): r for r in result["rows"]}
    assert rows["meta", "spring"] == {
        "channel": "meta",
        "campaign": "spring",
        "touches": 1,
        "conversions": 1,
        "share": 0.333,
        "value": {"EUR": 100.0},
        "spend": {"EUR": 40.0},
        "cpa": {"EUR": 40.0},
        "roas": {"EUR": 2.5},
    }
    google = rows["google", "brand"]
    assert (google["conversions"], google["value"]) == (1, {"EUR": 50.0})
    assert (google["cpa"], google["roas"]) == ({"EUR": 10.0}, {"EUR": 5.0})
    assert result["unattributed"] == {"conversions": 1, "value": {"EUR": 30.0}}

    # The table's header states the ruler.
    code, out, _ = await command(args, capsys)
    assert code == 0
    header = out.splitlines()[0]
    assert "window 7d" in header
    assert "last_click" in header
    assert "event purchase" in header
    assert "view-through conversions cannot be seen first-party" in out
    assert "(unattributed)" in out

    # The same table on /admin, for the last 30 days.
    page = await gw.client.get(
        "/admin", headers={"Authorization": "Bearer s3cret-admin-0123456789"}
    )
    html = await page.text()
    assert '<tr data-channel="meta" data-campaign="spring">' in html
    assert "last 30 days" in html


async def test_a_denied_event_leaves_no_touch(
    start_gateway: Start, make_config: MakeConfig, tmp_path: Path
) -> None:
    gw = await start_gateway(make_config(CONFIG))
    # gcs=G100: ad_storage and analytics_storage denied.
    await ga4_hit(
        gw, "page_view", "https://shop.example/?gclid=Cj0K&utm_campaign=brand", "gcs=G100"
    )
    assert await gw.rows("SELECT COUNT(*) FROM touches") == [(0,)]
    # Control: the same hit with both granted is a touch, its visitor key never in plain text.
    await ga4_hit(
        gw, "page_view", "https://shop.example/?gclid=Cj0K&utm_campaign=brand", "gcs=G111"
    )
    rows = await gw.rows("SELECT channel, campaign, visitor FROM touches")
    assert [(channel, campaign) for channel, campaign, _ in rows] == [("google", "brand")]
    assert "555.666" not in rows[0][2]


def _stored(
    event_id: str, at: float, touches: Sequence[NewTouch], name: str = "purchase"
) -> NewEvent:
    return NewEvent(
        event_id=event_id,
        event_name=name,
        source="meta_pixel",
        event_time=int(at),
        received_at=at,
        dedupable=True,
        match_keys=0,
        deliveries=[NewDelivery("audit", Status.SENT)],
        value="20" if name == "purchase" else None,
        currency="EUR" if name == "purchase" else None,
        touches=touches,
    )


async def test_models_and_the_window(
    start_gateway: Start,
    make_config: MakeConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = await start_gateway(make_config(CONFIG))
    now, day = time.time(), 86400
    await gw.store.add(
        [
            # Visitor A: a Meta click 3 days ago, a TikTok click yesterday, a purchase now.
            _stored("a-1", now - 3 * day, [NewTouch("A", "meta", "first")], "page_view"),
            _stored("a-2", now - day, [NewTouch("A", "tiktok", "second")], "page_view"),
            _stored("a-3", now - 60, [NewTouch("A", None, None)]),
            # Visitor B: a Google click 8 days ago, a purchase now.
            _stored("b-1", now - 8 * day, [NewTouch("B", "google", "old")], "page_view"),
            _stored("b-2", now - 60, [NewTouch("B", None, None)]),
        ]
    )
    cfg = config_file(gw, tmp_path)
    base = ["attribution", "--config", str(cfg), "--since", "1h", "--json"]

    async def credited(*extra: str) -> dict[tuple[str, str], int]:
        code, out, err = await command([*base, *extra], capsys)
        assert code == 0, err
        result = orjson.loads(out)
        found = {(r["channel"], r["campaign"]): r["conversions"] for r in result["rows"]}
        found["(unattributed)", ""] = result["unattributed"]["conversions"]
        return {k: v for k, v in found.items() if v}

    assert await credited() == {("tiktok", "second"): 1, ("(unattributed)", ""): 1}
    assert await credited("--model", "first_click") == {
        ("meta", "first"): 1,
        ("(unattributed)", ""): 1,
    }
    # B's click is 8 days old: outside 7 days, inside 9.
    assert await credited("--window", "9d") == {("tiktok", "second"): 1, ("google", "old"): 1}


async def test_a_bad_spend_row_names_its_line(
    start_gateway: Start,
    make_config: MakeConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = await start_gateway(make_config(CONFIG))
    cfg = config_file(gw, tmp_path)
    spend = tmp_path / "spend.csv"
    spend.write_text(
        "date,channel,campaign,spend,currency\n2026-12-01,meta,spring,40,EUR\n"
        "2026-12-01,meta,spring,forty,EUR\n"
    )
    args = ["attribution", "--config", str(cfg), "--spend", str(spend)]
    code, out, err = await command(args, capsys)
    assert code == 2
    assert f"{spend}:3: spend: not a number: 'forty'" in err
    assert out == ""
    spend.write_text("day,channel,campaign,spend,currency\n")
    code, _, err = await command(args, capsys)
    assert code == 2
    assert "line 1: the header must be date,channel,campaign,spend,currency" in err


async def test_the_secret_is_made_once_and_touches_go_with_retention(
    start_gateway: Start, make_config: MakeConfig
) -> None:
    gw = await start_gateway(make_config(CONFIG))
    secret = gw.store.visitor_secret
    assert len(secret) == 32
    # A second store on the same storage (a replica, or the next start) reads the same secret.
    storage = gw.config.storage
    other = await open_outbox(storage.path, storage.url, storage.synchronous)
    try:
        assert other.visitor_secret == secret
    finally:
        await other.close()
    now = time.time()
    await gw.store.add(
        [
            _stored("old", now - 40 * 86400, [NewTouch("A", "meta", "x")], "page_view"),
            _stored("new", now - 60, [NewTouch("A", "meta", "x")], "page_view"),
        ]
    )
    assert await gw.store.prune(now - 30 * 86400) >= 1
    assert await gw.rows("SELECT event_id FROM touches") == [("new",)]


def test_touch_of_reads_click_ids_first_then_utm_source() -> None:
    from gateway.attribution import touch_of

    assert touch_of("https://s.example/?utm_source=Newsletter&gclid=x&utm_campaign=b") == (
        "google",
        "b",
    )
    assert touch_of("https://s.example/?utm_source=Newsletter") == ("newsletter", "(none)")
    assert touch_of("https://s.example/?ScCid=1") == ("snapchat", "(none)")
    assert touch_of("https://s.example/?utm_campaign=x%1b%5B31m") is None
    assert touch_of("https://s.example/?fbclid=1&utm_campaign=%1b%5B2Jspring") == (
        "meta",
        "[2Jspring",
    )
    assert touch_of("https://s.example/products") is None


def test_touch_of_finds_a_percent_encoded_click_id_and_skips_plain_page_urls() -> None:
    from gateway.attribution import touch_of

    # The name decodes to `fbclid`: a shortcut on the URL's text must not miss it.
    assert touch_of("https://s.example/p?color=blue&%66bclid=1") == ("meta", "(none)")
    assert touch_of("https://s.example/p?utm%5Fsource=News") == ("news", "(none)")
    assert touch_of("https://s.example/p?color=blue&size=m+l") is None
    assert touch_of("https://s.example/p?fbclid=") is None


async def test_a_plain_page_view_leaves_nothing(
    start_gateway: Start, make_config: MakeConfig
) -> None:
    gw = await start_gateway(make_config(CONFIG))
    # Most hits: a page view with a visitor key but no click ID or UTM source. It can be
    # neither a touch nor a conversion worth a ruler, so it costs no row.
    await meta_hit(gw, "PageView", "https://shop.example/products/socks")
    assert await gw.rows("SELECT COUNT(*) FROM touches") == [(0,)]
    # Control: the visitor's add-to-cart keeps its key (a conversion finds its visitor by it).
    await meta_hit(gw, "AddToCart", "https://shop.example/products/socks", "eid=cart-1")
    assert await gw.rows("SELECT event_name, channel FROM touches") == [("add_to_cart", None)]


async def test_an_event_the_rules_drop_leaves_no_touch(
    start_gateway: Start, make_config: MakeConfig
) -> None:
    rules = 'rules:\n  - drop_events: {user_agent_matches: "(?i)bot"}\n'
    gw = await start_gateway(make_config(CONFIG + rules))
    url = "https://shop.example/?gclid=Cj0K&utm_campaign=brand"
    response = await gw.client.get(
        f"/g/collect?v=2&tid=G-TEST1&cid=555.666&en=page_view&dl={quote(url, safe='')}",
        headers={"User-Agent": "Googlebot/2.1"},
    )
    assert response.status == 204
    assert await gw.rows("SELECT status FROM deliveries") == [("dropped_rule",)]
    assert await gw.rows("SELECT COUNT(*) FROM touches") == [(0,)]
    # Control: the same hit from a browser is a touch.
    await ga4_hit(gw, "page_view", url)
    assert await gw.rows("SELECT COUNT(*) FROM touches") == [(1,)]
