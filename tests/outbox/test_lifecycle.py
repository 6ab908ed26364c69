"""Opening, closing, and what /readyz reads: `ping` and `write_health`."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from gateway.outbox import Storage, StoreClosed
from tests.outbox.builders import event
from tests.outbox.conftest import NewOutbox


async def test_close_finishes_queued_writes(new_outbox: NewOutbox) -> None:
    outbox = await new_outbox()
    pending = [asyncio.ensure_future(outbox.add([event(f"e{i}")])) for i in range(50)]
    await asyncio.sleep(0)  # they are queued, not yet written
    await outbox.close()
    assert all(p.result()[0].queued == 1 for p in pending)
    with pytest.raises(StoreClosed):
        await outbox.add([event("late")])


async def test_ping_says_storage_takes_writes(outbox: Storage) -> None:
    await outbox.ping()
    assert outbox.write_health.ok


async def test_a_failed_write_is_unhealthy_until_the_next_good_one(outbox: Storage) -> None:
    good = event("good")
    # NOT NULL on both backends: the database refuses the row, the whole transaction fails.
    bad = dataclasses.replace(good, event_name=None)
    with pytest.raises(Exception, match=r"(?i)not.null"):
        await outbox.add([bad])
    assert not outbox.write_health.ok
    assert outbox.write_health.failed_at is not None
    [added] = await outbox.add([good])
    assert added.queued == 1
    assert outbox.write_health.ok
