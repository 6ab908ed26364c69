"""What the shared statements need to know of a dialect: its placeholders, and the SQL lists of
states derived from `Status`.

Shared statements are written once with SQLite's numbered placeholders (`?1`, `?2`: each value
bound once, however often it is used); `numbered` turns them into asyncpg's `$1`, `$2`.
Statements built at run time (a `DeliveryQuery`'s filters) bind through `Params`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Final

from gateway.outbox.records import BLOCKS_DEDUP, PENDING, Status


class Style(StrEnum):
    """A driver's placeholder style."""

    SQLITE = "?"
    """sqlite3: `?1`, `?2`, ..."""
    POSTGRES = "$"
    """asyncpg: `$1`, `$2`, ..."""


class Params:
    """The values of one statement built at run time, each bound where its placeholder goes."""

    def __init__(self, style: Style, *values: Any) -> None:
        self.style = style
        self.values: list[Any] = list(values)
        self.sql = ""
        """The statement, once built."""

    def __call__(self, value: Any) -> str:
        """Bind `value`; its placeholder, to write where it goes."""
        self.values.append(value)
        return f"{self.style}{len(self.values)}"


_NUMBERED: Final = re.compile(r"\?(\d+)")


def numbered(sql: str) -> str:
    """A shared statement in asyncpg's placeholders: `?3` becomes `$3`."""
    return _NUMBERED.sub(r"$\1", sql)


def states(statuses: Iterable[Status]) -> str:
    """A list of states as SQL, `('queued', 'failed')`: fixed words, never user input."""
    return "(" + ", ".join(f"'{s}'" for s in statuses) + ")"


PENDING_SQL: Final = states(PENDING)
"""`('queued', 'failed')`: a worker still has to send the row."""
BLOCKS_DEDUP_SQL: Final = states(BLOCKS_DEDUP)
"""`('queued', 'failed', 'sent')`: the row blocks a later copy of its event."""


class Dialect:
    """The fragments in which the two dialects differ inside otherwise shared statements."""

    def __init__(
        self, style: Style, *, skip_locked: str, collate: str, value_sum: str, hour: str
    ) -> None:
        self.style = style
        self.skip_locked = skip_locked
        """Appended to a subquery that picks rows to change: PostgreSQL's `FOR UPDATE SKIP
        LOCKED` passes over rows another replica is changing; SQLite has one writer."""
        self.collate = collate
        """After an ORDER BY term: byte order, as SQLite sorts, whatever the locale."""
        self.value_sum = value_sum
        """The sum of `e.value` (text) as a number."""
        self.hour = hour
        """`e.received_at` truncated to its hour, as an integer."""

    def params(self, *values: Any) -> Params:
        """A run-time statement's parameters, starting with `values`."""
        return Params(self.style, *values)

    def sql(self, statement: str) -> str:
        """A shared statement (written with `?N`) in this dialect's placeholders."""
        return statement if self.style is Style.SQLITE else numbered(statement)
