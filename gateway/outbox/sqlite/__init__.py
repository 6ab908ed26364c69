"""The SQLite backend: one file, one writer process (`storage.path`)."""

from gateway.outbox.sqlite.outbox import SCHEMA, SqliteOutbox

__all__ = ["SCHEMA", "SqliteOutbox"]
