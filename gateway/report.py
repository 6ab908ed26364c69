"""The release report: volumes, dedup, drops and match-key coverage beside a comparison window.

The habit it serves: after every release, compare a fixed window with the one before it, and
fail the deploy when tracking fell (docs/operations.md §5, `tag-gateway report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import orjson

from gateway.pipeline import MATCH_KEYS
from gateway.storage import Storage
from gateway.times import iso

COUNTS: Final = ("in", "sent", "duplicates", "dropped_consent", "dropped_rule", "dead", "pending")


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
class Report:
    """The whole report."""

    window: Window
    compare: Window
    lines: Sequence[Line]

    def drops(self, pct: float) -> list[str]:
        """What fell by more than `pct` percent against the comparison window."""
        found = []
        for line in self.lines:
            before, after = line.then.counts["in"], line.now.counts["in"]
            label = f"{line.destination}/{line.event_name}"
            if before and _fell(before, after, pct):
                found.append(f"{label}: events {before} -> {after}")
            for key in MATCH_KEYS:
                was, now = line.then.share(line.then.keys[key]), line.now.share(line.now.keys[key])
                if was and now is not None and _fell(was, now, pct):
                    found.append(f"{label}: {key} share {was:.1%} -> {now:.1%}")
        return found

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
    return f"{text} ({(now - then) / then:+.0%})"


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


def dump(report: Report, out: TextIO) -> None:
    """The report as one JSON document."""
    out.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
