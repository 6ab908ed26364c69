"""The release report: volumes, dedup, drops and match-key coverage beside a comparison window.

The habit it serves: after every release, compare a fixed window with the one before it, and
fail the deploy when tracking fell (docs/operations.md §5, `tag-gateway report`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import orjson

from gateway.pipeline import MATCH_KEYS
from gateway.storage import Storage
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
        }


def _fell(before: float, after: float, pct: float) -> bool:
    return (before - after) / before * 100 > pct


async def _figures(store: Storage, window: Window) -> dict[tuple[str, str], Figures]:
    out: dict[tuple[str, str], Figures] = {}
    for row in await store.window(window.since, window.until):
        figures = Figures()
        figures.counts = dict(zip(COUNTS, (int(v or 0) for v in row[2:9]), strict=True))
        figures.deduplicable = int(row[9] or 0)
        figures.keys = dict(zip(MATCH_KEYS, (int(v or 0) for v in row[10:16]), strict=True))
        out[(row[0], row[1])] = figures
    for dest, name, currency, total in await store.values(window.since, window.until):
        if (dest, name) in out and total is not None:
            out[(dest, name)].values[currency or "?"] = float(total)
    return out


async def build(store: Storage, window: Window, compare: Window | None = None) -> Report:
    """Read both windows from the store."""
    other = compare or window.before()
    now, then = await _figures(store, window), await _figures(store, other)
    keys = sorted(set(now) | set(then))
    lines = [Line(d, n, now.get((d, n), Figures()), then.get((d, n), Figures())) for d, n in keys]
    return Report(window, other, lines)


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
        cells.append(" ".join(f"{v:.2f} {c}" for c, v in sorted(now.values.items())) or "-")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        out.write("\n")


def dump(report: Report, out: TextIO, drops: Sequence[Drop] | None = None) -> None:
    """The report as one JSON document; with `drops` (from `--fail-on-drop`) listing them."""
    document = report.as_dict()
    if drops is not None:
        document["drops"] = [drop.as_dict() for drop in drops]
    out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
