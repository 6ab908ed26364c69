"""`prune`: retention deletes old final rows in small batches, never a pending one."""

from __future__ import annotations

import time

from gateway.outbox import Storage
from tests.outbox.builders import past_retention
from tests.outbox.conftest import Sql


async def test_retention_prunes_final_rows_only(outbox: Storage, sql: Sql) -> None:
    await past_retention(outbox)
    assert await outbox.prune(time.time() - 30 * 86400) == 2
    assert await outbox.prune(time.time() - 30 * 86400) == 0
    events = await sql.rows("SELECT event_id FROM events ORDER BY id")
    assert [r[0] for r in events] == ["old-queued", "new-dropped"]
