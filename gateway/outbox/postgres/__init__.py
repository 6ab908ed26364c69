"""The PostgreSQL backend: many replicas on one database (`storage.url`)."""

from gateway.outbox.postgres.outbox import PostgresOutbox

__all__ = ["PostgresOutbox"]
