"""The release report: volumes, dedup, drops and match-key coverage beside a comparison window.

The habit it serves: after every release, compare a fixed window with the one before it, and
fail the deploy when tracking fell (docs/operations.md §5, `tag-gateway report`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import orjson

from gateway.outbox import Storage
from gateway.pipeline import MATCH_KEYS
from gateway.terminal import printable
from gateway.times import iso

COUNTS: Final = ("in", "sent", "duplicates", "dropped_consent", "dropped_rule", "dead", "pending")
MIN_EVENTS: Final = 50
"""`--fail-on-drop` judges a line only with at least this many events in the earlier window
(and a share only with as many in both): below it, a 30 % swing is a handful of events."""


@dataclass(frozen=True, slots=True)
class Window:
    """A time window [since, until) in epoch seconds."""

    since: float
    until: float

    def before(self) -> Window:
        """The window of equal length just before this one."""
        length = self.until - self.since
        return Window(self.since - length, self.since)


@dataclass(slots=True)
class Figures:
    """One destination and event name over one window."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    deduplicable: int = 0
    keys: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MATCH_KEYS, 0))
    values: dict[str, float] = field(default_factory=dict)

    def share(self, count: int) -> float | None:
        """count / events in, or None when nothing came in."""
        total = self.counts["in"]
        return round(count / total, 4) if total else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            **self.counts,
            "deduplicable_share": self.share(self.deduplicable),
            "match_keys": {k: self.share(v) for k, v in self.keys.items()},
            "value": {c: round(v, 2) for c, v in sorted(self.values.items())},
        }


@dataclass(frozen=True, slots=True)
class Line:
    """A row of the report: figures now and in the comparison window."""

    destination: str
    event_name: str
    now: Figures
    then: Figures


COVERAGE_GOAL: Final = 0.75
"""Meta asks that at least 75 % of browser events have a server copy with the same ID."""


@dataclass(slots=True)
class Copies:
    """Pixel and server copies of one event name over one window (docs/operations.md §6). Each side
    counts distinct event IDs; `both` counts IDs whose two copies came within 48 hours."""

    browser: int = 0
    backend: int = 0
    both: int = 0
    median_lag_s: float | None = None

    @property
    def coverage(self) -> float | None:
        """both / browser: the share of browser events the backend confirmed."""
        return round(self.both / self.browser, 4) if self.browser else None

    @property
    def backend_only(self) -> int:
        """Server events no pixel copy matched: the conversions the browser lost."""
        return self.backend - self.both

    def never_meet(self) -> bool:
        """Both copies arrive but never share an ID: the classic broken setup."""
        return self.browser > 0 and self.backend > 0 and self.both == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (the keys of docs/operations.md §6, coverage to three places)."""
        coverage = self.coverage
        lag = self.median_lag_s
        return {
            "browser": self.browser,
            "backend": self.backend,
            "both": self.both,
            "coverage": None if coverage is None else round(coverage, 3),
            "backend_only": self.backend_only,
            "median_lag_s": None if lag is None else round(lag, 1),
        }


@dataclass(frozen=True, slots=True)
class Overlap:
    """One event name the server API sent: its copies now and in the comparison window."""

    event_name: str
    now: Copies
    then: Copies

    def warning(self) -> str | None:
        """The one line for IDs that never meet, else None."""
        c = self.now
        if not c.never_meet():
            return None
        return f"{self.event_name}: {c.browser} browser, {c.backend} backend, 0 share an event ID"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the window's figures, and the comparison window's under `then`."""
        return {"event_name": self.event_name, **self.now.as_dict(), "then": self.then.as_dict()}


@dataclass(frozen=True, slots=True)
class Drop:
    """A figure that fell by more than the threshold: its value then and now."""

    destination: str | None
    """None for a figure of the whole event name (the overlap's coverage)."""
    event_name: str
    figure: str
    """`events`, a match key, or `coverage`."""
    then: float
    now: float

    @property
    def change(self) -> float:
        """The relative change, -1 for a fall to nothing."""
        return (self.now - self.then) / self.then

    def text(self) -> str:
        """One line for people: the earlier value, the new one and the change."""
        label = f"{self.destination}/{self.event_name}" if self.destination else self.event_name
        if self.figure == "events":
            values = f"events {self.then:g} -> {self.now:g}"
        else:
            name = self.figure if self.figure == "coverage" else f"{self.figure} share"
            values = f"{name} {self.then:.1%} -> {self.now:.1%}"
        return f"{label}: {values} ({self.change:+.0%})"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready drop."""
        return {
            "destination": self.destination,
            "event_name": self.event_name,
            "figure": self.figure,
            "then": self.then,
            "now": self.now,
            "change": round(self.change, 4),
        }


@dataclass(frozen=True, slots=True)
class Report:
    """The whole report."""

    window: Window
    compare: Window
    lines: Sequence[Line]
    overlap: Sequence[Overlap] = ()

    def drops(
        self,
        pct: float,
        min_events: int = MIN_EVENTS,
        uses: Mapping[str, frozenset[str] | None] | None = None,
    ) -> list[Drop]:
        """What fell by more than `pct` percent against the comparison window, on lines with
        at least `min_events` (see MIN_EVENTS); a destination's match keys only where
        `uses` says it matches on them (a destination it does not name: every key)."""
        found = []
        for line in self.lines:
            before, after = line.then.counts["in"], line.now.counts["in"]
            if before < min_events:
                continue
            if _fell(before, after, pct):
                found.append(Drop(line.destination, line.event_name, "events", before, after))
            if after < min_events:
                continue
            keys = (uses or {}).get(line.destination)
            for key in MATCH_KEYS:
                if keys is not None and key not in keys:
                    continue
                was, now = line.then.share(line.then.keys[key]), line.now.share(line.now.keys[key])
                if was and now is not None and _fell(was, now, pct):
                    found.append(Drop(line.destination, line.event_name, key, was, now))
        for o in self.overlap:
            was, now = o.then.coverage, o.now.coverage
            if min(o.then.browser, o.now.browser) < min_events or not was or now is None:
                continue
            if _fell(was, now, pct):
                found.append(Drop(None, o.event_name, "coverage", was, now))
        return found

    def below(self, min_events: int = MIN_EVENTS) -> list[Line]:
        """Lines `drops` does not judge: some but fewer than `min_events` events before."""
        return [line for line in self.lines if 0 < line.then.counts["in"] < min_events]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "window": {"since": iso(self.window.since), "until": iso(self.window.until)},
            "compare_to": {"since": iso(self.compare.since), "until": iso(self.compare.until)},
            "lines": [
                {
                    "destination": line.destination,
                    "event_name": line.event_name,
                    "now": line.now.as_dict(),
                    "then": line.then.as_dict(),
                }
                for line in self.lines
            ],
            "overlap": [o.as_dict() for o in self.overlap],
        }


def _fell(before: float, after: float, pct: float) -> bool:
    return (before - after) / before * 100 > pct


async def _figures(store: Storage, window: Window) -> dict[tuple[str, str], Figures]:
    out: dict[tuple[str, str], Figures] = {}
    for row in await store.window(window.since, window.until):
        figures = Figures()
        figures.counts = dict(zip(COUNTS, (int(v or 0) for v in row.counts), strict=True))
        figures.deduplicable = int(row.dedupable or 0)
        figures.keys = dict(zip(MATCH_KEYS, (int(v or 0) for v in row.keys), strict=True))
        out[(row.destination, row.event_name)] = figures
    for value in await store.values(window.since, window.until):
        line = out.get((value.destination, value.event_name))
        if line is not None and value.total is not None:
            line.values[value.currency or "?"] = float(value.total)
    return out


async def _copies(store: Storage, window: Window) -> dict[str, Copies]:
    out: dict[str, Copies] = {}
    for row in await store.overlap(window.since, window.until):
        copies = out.setdefault(row.event_name, Copies())
        if row.kind == "both":
            copies.both, copies.median_lag_s = int(row.copies), float(row.median_lag_s or 0)
        else:
            setattr(copies, row.kind, int(row.copies))
    return out


async def build(store: Storage, window: Window, compare: Window | None = None) -> Report:
    """Read both windows from the store."""
    other = compare or window.before()
    now, then = await _figures(store, window), await _figures(store, other)
    keys = sorted(set(now) | set(then))
    lines = [Line(d, n, now.get((d, n), Figures()), then.get((d, n), Figures())) for d, n in keys]
    copies_now, copies_then = await _copies(store, window), await _copies(store, other)
    overlap = [
        Overlap(name, copies_now.get(name, Copies()), copies_then.get(name, Copies()))
        for name in sorted(set(copies_now) | set(copies_then))
    ]
    return Report(window, other, lines, overlap)


def _change(now: float | None, then: float | None, share: bool) -> str:
    if now is None:
        return "-"
    text = f"{now:.0%}" if share else f"{now:g}"
    if then is None or then == 0:
        return text
    was = f"{then:.0%}" if share else f"{then:g}"
    return f"{text} (was {was}, {(now - then) / then:+.0%})"


def render(report: Report, out: TextIO) -> None:
    """The report as a table for people."""
    out.write(
        f"window {iso(report.window.since)} .. {iso(report.window.until)}"
        f"   compared to {iso(report.compare.since)} .. {iso(report.compare.until)}\n"
    )
    if not report.lines:
        out.write("no events in either window\n")
        return
    head = ["destination", "event", *COUNTS[:-1], "dedupable", *MATCH_KEYS, "value"]
    rows = [head]
    for line in report.lines:
        now, then = line.now, line.then
        cells = [line.destination, line.event_name]
        cells += [_change(now.counts[c], then.counts[c], False) for c in COUNTS[:-1]]
        cells.append(_change(now.share(now.deduplicable), then.share(then.deduplicable), True))
        cells += [
            _change(now.share(now.keys[k]), then.share(then.keys[k]), True) for k in MATCH_KEYS
        ]
        values = " ".join(f"{v:.2f} {c}" for c, v in sorted(now.values.items()))
        cells.append(values or "-")
        rows.append(cells)
    _columns(rows, out)
    if report.overlap:
        out.write(
            "\npixel and backend copies (same event ID within 48 h; Meta asks 75 % coverage)\n"
        )
        rows = [["event", "browser", "backend", "both", "coverage", "backend_only", "median_lag"]]
        for o in report.overlap:
            cn, ct = o.now, o.then
            lag = "-" if cn.median_lag_s is None else f"{cn.median_lag_s:.0f}s"
            rows.append(
                [
                    o.event_name,
                    _change(cn.browser, ct.browser, False),
                    _change(cn.backend, ct.backend, False),
                    _change(cn.both, ct.both, False),
                    _change(cn.coverage, ct.coverage, True),
                    _change(cn.backend_only, ct.backend_only, False),
                    lag,
                ]
            )
        _columns(rows, out)
        for warning in warnings(report):
            out.write(printable(warning) + "\n")


def warnings(report: Report) -> list[str]:
    """One line per event name whose pixel and backend copies never share an ID."""
    return [w for o in report.overlap if (w := o.warning()) is not None]


def _columns(rows: list[list[str]], out: TextIO) -> None:
    rows = [[printable(cell) for cell in row] for row in rows]  # names came from the internet
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        out.write("\n")


def dump(report: Report, out: TextIO, drops: Sequence[Drop] | None = None) -> None:
    """The report as one JSON document; with `drops` (from `--fail-on-drop`) listing them."""
    document = report.as_dict()
    if drops is not None:
        document["drops"] = [drop.as_dict() for drop in drops]
    out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
