"""Queue depth per destination, read from the store at most every few seconds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

from gateway.outbox import Storage

QueueStats = dict[str, tuple[int, float | None]]
"""Per destination: how many deliveries wait, and since when the oldest does (epoch s)."""

REREAD_AFTER_S: Final = 5.0
"""A load balancer and a scraper polling every second must not each cost a count query."""


@dataclass(slots=True)
class QueueCache:
    """Queue statistics, re-read at most every few seconds for /readyz and /metrics."""

    read_at: float = float("-inf")
    stats: QueueStats = field(default_factory=dict)

    async def read(self, store: Storage) -> QueueStats:
        """Queue depth and oldest waiting delivery per destination, read at most every 5 s."""
        if time.monotonic() - self.read_at > REREAD_AFTER_S:
            self.stats = await store.queue_stats()
            self.read_at = time.monotonic()
        return self.stats
