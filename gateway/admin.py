"""`GET /admin`: one self-contained page (no external assets) with the report's figures,
charts drawn as inline SVG from the same data, and the latest dead deliveries.

Enabled only by `admin: {token: ...}`. The token is checked in constant time, given either as
`Authorization: Bearer <token>` or as the password of HTTP Basic auth (so a browser prompts).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections import defaultdict
from html import escape
from typing import Final

from aiohttp import web

from gateway import attribution, report
from gateway.outbox import DeliveryQuery, DeliveryRow, HourlyRow, Storage
from gateway.pipeline import MATCH_KEYS
from gateway.times import iso

STATUS_COLOURS: Final = {
    "sent": "#2e7d32",
    "queued": "#1565c0",
    "failed": "#f9a825",
    "dead": "#c62828",
    "duplicate": "#8e8e8e",
    "dropped_consent": "#6a1b9a",
    "dropped_rule": "#ad1457",
}
KEY_COLOUR: Final = "#00838f"
GOAL_COLOUR: Final = "#c62828"


def authorized(request: web.Request, token: str) -> bool:
    """Bearer token or Basic-auth password equal to the admin token."""
    header = request.headers.get("Authorization", "")
    given = ""
    if header.startswith("Bearer "):
        given = header[7:].strip()
    elif header.startswith("Basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        given = decoded.partition(":")[2]
    return hmac.compare_digest(given.encode(), token.encode())


async def page(store: Storage, now: float | None = None) -> str:
    """The admin page for the last 24 hours, compared with the 24 hours before."""
    until = time.time() if now is None else now
    window = report.Window(until - 86400, until)
    built = await report.build(store, window)
    hourly = await store.hourly(window.since, window.until)
    dead = await store.deliveries(DeliveryQuery(statuses=("dead",), limit=20))
    credited = await attribution.build(store, until - 30 * 86400, until)
    return _html(built, hourly, dead, window, credited)


def _attribution(result: attribution.Attribution) -> str:
    """docs/operations.md §6's table for the last 30 days, with the default window and model."""
    head = "".join(
        f"<th>{h}</th>" for h in ("channel", "campaign", "touches", "conversions", "share", "value")
    )
    rows = []
    for r in [*result.rows, result.unattributed]:
        if r is result.unattributed and not r.conversions:
            continue
        value = " ".join(f"{v:.2f} {escape(c)}" for c, v in r.value.items() if c) or "-"
        touches = "-" if r is result.unattributed else str(r.touches)
        cells = [escape(r.channel), escape(r.campaign), touches, str(r.conversions)]
        cells += [f"{result.share(r):.0%}", value]
        rows.append(
            f'<tr data-channel="{escape(r.channel)}" data-campaign="{escape(r.campaign)}">'
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    body = (
        f"<table class='attribution'><tr>{head}</tr>{''.join(rows)}</table>"
        if rows
        else "<p>No conversions and no touches in the last 30 days.</p>"
    )
    return (
        "<h2>Conversions by channel and campaign (last 30 days)</h2>"
        f"<p>Window {result.window}, model {result.model}, event {result.event}: each conversion"
        " is credited to the last click or UTM landing of the same visitor within 7 days before"
        f" it; {attribution.VIEW_THROUGH}. <code>tag-gateway attribution --spend FILE</code> adds"
        f" spend, CPA and ROAS.</p>{body}"
    )


def _hourly_chart(
    destination: str, rows: list[tuple[float, str, int]], window: report.Window
) -> str:
    """Stacked bars: deliveries per hour by status, one chart per destination."""
    hours = [int(window.since // 3600) * 3600 + 3600 * i for i in range(25)]
    by_hour: dict[int, dict[str, int]] = defaultdict(dict)
    for hour, status, count in rows:
        by_hour[int(hour)][status] = count
    peak = max((sum(v.values()) for v in by_hour.values()), default=0) or 1
    width, height, bar = 600, 140, 600 / len(hours)
    parts = [
        f'<svg class="chart hourly" data-destination="{escape(destination)}" '
        f'viewBox="0 0 {width} {height + 20}" width="{width}" height="{height + 20}" '
        f'role="img" aria-label="deliveries per hour for {escape(destination)}">'
    ]
    for i, hour in enumerate(hours):
        y = float(height)
        for status, colour in STATUS_COLOURS.items():
            count = by_hour.get(hour, {}).get(status, 0)
            if not count:
                continue
            h = count / peak * (height - 10)
            y -= h
            parts.append(
                f'<rect class="bar" data-series="{status}" data-hour="{iso(hour)}" '
                f'data-count="{count}" x="{i * bar + 1:.1f}" y="{y:.1f}" '
                f'width="{bar - 2:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{iso(hour)} {status}: {count}</title></rect>"
            )
    parts.append(f'<text x="0" y="{height + 15}" font-size="10">{iso(hours[0])}</text>')
    parts.append(
        f'<text x="{width}" y="{height + 15}" font-size="10" text-anchor="end">'
        f"{iso(hours[-1])}</text></svg>"
    )
    return "".join(parts)


def _coverage_chart(built: report.Report) -> str:
    """Horizontal bars: share of events carrying each match key, per destination."""
    totals: dict[str, report.Figures] = {}
    for line in built.lines:
        agg = totals.setdefault(line.destination, report.Figures())
        agg.counts["in"] += line.now.counts["in"]
        for key in MATCH_KEYS:
            agg.keys[key] += line.now.keys[key]
    rows = [(d, k, f.share(f.keys[k]) or 0.0) for d, f in totals.items() for k in MATCH_KEYS]
    height = 18 * len(rows) + 10
    parts = [
        f'<svg class="chart coverage" viewBox="0 0 600 {height}" width="600" '
        f'height="{height}" role="img" aria-label="match-key coverage">'
    ]
    for i, (dest, key, share) in enumerate(rows):
        y = 5 + i * 18
        parts.append(
            f'<text x="0" y="{y + 12}" font-size="11">{escape(dest)} {key}</text>'
            f'<rect class="bar" data-series="{escape(dest)}:{key}" data-share="{share:.4f}" '
            f'x="200" y="{y}" width="{share * 340:.1f}" height="14" fill="{KEY_COLOUR}">'
            f"<title>{escape(dest)} {key}: {share:.1%}</title></rect>"
            f'<text x="{205 + share * 340:.1f}" y="{y + 12}" font-size="11">{share:.0%}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _overlap(built: report.Report) -> str:
    """docs/operations.md §6: per event name the server API sent, a table of the copies and a bar of
    coverage with Meta's 75 % goal marked."""
    if not built.overlap:
        return "<p>The server API sent no events in the last 24 hours.</p>"
    head = "".join(
        f"<th>{h}</th>"
        for h in ("event", "browser", "backend", "both", "coverage", "backend only", "median lag")
    )
    rows = []
    for o in built.overlap:
        now, then = o.now, o.then
        coverage = "-" if now.coverage is None else f"{now.coverage:.0%}"
        was = "" if then.coverage is None else f" <small>({then.coverage:.0%})</small>"
        lag = "-" if now.median_lag_s is None else f"{now.median_lag_s:.0f} s"
        cells = [escape(o.event_name)]
        cells += [
            f"{v} <small>({w})</small>"
            for v, w in (
                (now.browser, then.browser),
                (now.backend, then.backend),
                (now.both, then.both),
            )
        ]
        cells += [coverage + was, f"{now.backend_only} <small>({then.backend_only})</small>", lag]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    height, goal_x = 18 * len(built.overlap) + 24, 200 + report.COVERAGE_GOAL * 340
    bars = [
        f'<svg class="chart overlap" viewBox="0 0 600 {height}" width="600" height="{height}" '
        'role="img" aria-label="share of browser events the backend confirmed">'
    ]
    for i, o in enumerate(built.overlap):
        y, share = 5 + i * 18, o.now.coverage or 0.0
        colour = KEY_COLOUR if share >= report.COVERAGE_GOAL else STATUS_COLOURS["failed"]
        label = "no browser events" if o.now.coverage is None else f"{share:.0%}"
        bars.append(
            f'<text x="0" y="{y + 12}" font-size="11">{escape(o.event_name)}</text>'
            f'<rect class="bar" data-event="{escape(o.event_name)}" data-coverage="{share:.4f}" '
            f'x="200" y="{y}" width="{share * 340:.1f}" height="14" fill="{colour}">'
            f"<title>{escape(o.event_name)}: {label}</title></rect>"
            f'<text x="{205 + share * 340:.1f}" y="{y + 12}" font-size="11">{label}</text>'
        )
    bars.append(
        f'<line class="goal" x1="{goal_x:.1f}" x2="{goal_x:.1f}" y1="0" y2="{height - 14}" '
        f'stroke="{GOAL_COLOUR}" stroke-dasharray="4 2"/>'
        f'<text x="{goal_x:.1f}" y="{height - 2}" font-size="10" text-anchor="middle" '
        f'fill="{GOAL_COLOUR}">Meta\'s goal 75%</text></svg>'
    )
    warnings = "".join(f"<p><strong>{escape(w)}</strong></p>" for w in report.warnings(built))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>{''.join(bars)}{warnings}"


def _table(built: report.Report) -> str:
    head = "".join(
        f"<th>{h}</th>" for h in ("destination", "event", *report.COUNTS, "dedupable", *MATCH_KEYS)
    )
    rows = []
    for line in built.lines:
        now, then = line.now, line.then
        cells = [escape(line.destination), escape(line.event_name)]
        cells += [f"{now.counts[c]} <small>({then.counts[c]})</small>" for c in report.COUNTS]
        shares = [now.share(now.deduplicable)] + [now.share(now.keys[k]) for k in MATCH_KEYS]
        cells += ["-" if s is None else f"{s:.0%}" for s in shares]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _dead(rows: list[DeliveryRow]) -> str:
    if not rows:
        return "<p>No dead deliveries.</p>"
    items = "".join(
        f"<tr><td>{iso(r.updated_at)}</td><td>{escape(r.destination)}</td>"
        f"<td>{escape(r.event_name)}</td><td>{escape(r.event_id)}</td>"
        f"<td>{r.http_status or ''}</td><td>{escape(r.message or '')}</td></tr>"
        for r in rows
    )
    return (
        "<table class='dead'><tr><th>when</th><th>destination</th><th>event</th><th>id</th>"
        f"<th>HTTP</th><th>platform message</th></tr>{items}</table>"
    )


def _html(
    built: report.Report,
    hourly: list[HourlyRow],
    dead: list[DeliveryRow],
    window: report.Window,
    credited: attribution.Attribution,
) -> str:
    per_dest: dict[str, list[tuple[float, str, int]]] = defaultdict(list)
    for hour, dest, status, count in hourly:
        per_dest[dest].append((hour, status, count))
    charts = (
        "".join(
            f"<h3>{escape(d)}</h3>{_hourly_chart(d, rows, window)}"
            for d, rows in sorted(per_dest.items())
        )
        or "<p>No events in the last 24 hours.</p>"
    )
    legend = " ".join(
        f'<span style="color:{c}">&#9632; {s}</span>' for s, c in STATUS_COLOURS.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tag-gateway</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right; }}
td:first-child, td:nth-child(2), th {{ text-align: left; }}
small {{ color: #777; }}
.dead td:last-child {{ text-align: left; max-width: 40em; }}
</style></head><body>
<h1>tag-gateway</h1>
<p>Last 24 hours ({iso(window.since)} .. {iso(window.until)}); figures in brackets are the
24 hours before.</p>
<h2>Deliveries per hour</h2><p>{legend}</p>{charts}
<h2>Match-key coverage</h2>{_coverage_chart(built)}
<h2>Pixel and backend: do the two copies meet?</h2>
<p>Per event name the server API sent: browser and backend events, those with the same event ID
from both within 48 hours, and coverage (both / browser).</p>{_overlap(built)}
<h2>Report</h2>{_table(built)}
{_attribution(credited)}
<h2>Latest dead deliveries</h2>{_dead(dead)}
</body></html>"""
