"""Delivery: moving rows from the outbox to the destinations (docs/operations.md §5).

- `worker`: one `Worker` per destination: leases, batches, concurrency, a graceful stop.
- `retry`: when a row is tried again or given up (backoff, budget, age limit), as pure functions.
- `health`: how a destination's requests have been going, for `/readyz`.
- `transport`: one HTTP request, its failures as answers.
"""

from gateway.delivery.health import Health
from gateway.delivery.retry import backoff_s
from gateway.delivery.transport import transport
from gateway.delivery.worker import Worker

__all__ = ["Health", "Worker", "backoff_s", "transport"]
