"""The SQLite backend: one file, one writer process (`storage.path`)."""

from gateway.outbox.sqlite.outbox import SqliteOutbox
from gateway.outbox.sqlite.schema import SCHEMA

__all__ = ["SCHEMA", "SqliteOutbox"]
