"""How the two SQL dialects differ in what the shared statements need: placeholders, and how a
list of states is written.

A statement is written once, with `{}` where a value goes, and a `Params` of the backend's
style binds each value: SQLite's `?` (values in order) or PostgreSQL's `$1`, `$2`, ...
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Final

from gateway.outbox.records import BLOCKS_DEDUP, PENDING, Status


class Style(StrEnum):
    """A driver's placeholder style."""

    QMARK = "qmark"
    """sqlite3: `?`, one value per occurrence, in order."""
    NUMBERED = "numbered"
    """asyncpg: `$n`, the n-th value."""


class Params:
    """The values of one statement, in the order its placeholders are written."""

    def __init__(self, style: Style) -> None:
        self.style = style
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        """Bind `value`; its placeholder, to write where it goes."""
        self.values.append(value)
        return "?" if self.style is Style.QMARK else f"${len(self.values)}"


def states(statuses: Iterable[Status]) -> str:
    """A list of states as SQL, `('queued', 'failed')`: fixed words, never user input."""
    return "(" + ", ".join(f"'{s}'" for s in statuses) + ")"


PENDING_SQL: Final = states(PENDING)
"""`('queued', 'failed')`: a worker still has to send the row."""
BLOCKS_DEDUP_SQL: Final = states(BLOCKS_DEDUP)
"""`('queued', 'failed', 'sent')`: the row blocks a later copy of its event."""
