"""Prometheus metrics, one registry per app (so tests can build many apps in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """The gateway's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.hits = Counter(
            "tag_gateway_hits",
            "Browser and server requests by source and outcome.",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "tag_gateway_deliveries",
            "Delivery rows by destination and status: as written on arrival (queued, duplicate,"
            " dropped_consent, dropped_rule, dead) and as each attempt ends.",
            ["destination", "status"],
            registry=self.registry,
        )
        self.delivery_latency = Histogram(
            "tag_gateway_delivery_latency_seconds",
            "Time for one request to a destination.",
            ["destination"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )

        self.queue_depth = Gauge(
            "tag_gateway_queue_depth",
            "Deliveries waiting (queued or failed, to be retried) per destination.",
            ["destination"],
            registry=self.registry,
        )
        self.oldest_queued = Gauge(
            "tag_gateway_oldest_queued_seconds",
            "Age of the oldest waiting delivery per destination.",
            ["destination"],
            registry=self.registry,
        )
        self.outage_buffer_events = Gauge(
            "tag_gateway_outage_buffer_events",
            "Browser events held in memory because storage refused their write.",
            registry=self.registry,
        )
        self.outage_buffer_bytes = Gauge(
            "tag_gateway_outage_buffer_bytes",
            "Approximate memory held by those events.",
            registry=self.registry,
        )
        self.outage_held = Counter(
            "tag_gateway_outage_held",
            "Browser events ever held in memory during a storage outage.",
            registry=self.registry,
        )
        self.outage_dropped = Counter(
            "tag_gateway_outage_dropped",
            "Browser events dropped because the outage buffer was full.",
            registry=self.registry,
        )

        self.auth_failed = Gauge(
            "tag_gateway_destination_auth_failed",
            "1 while the platform refuses the destination's credentials (an invalid or expired"
            " token): its deliveries wait queued. Alert on it.",
            ["destination"],
            registry=self.registry,
        )

        self._children: dict[tuple[str, str, str], Any] = {}

    def count_hit(self, source: str, outcome: str) -> None:
        """One more hit (the labelled child is looked up once, then kept)."""
        self._child(self.hits, "h", source, outcome).inc()

    def count_delivery(self, destination: str, status: str) -> None:
        """One more delivery row in this status."""
        self._child(self.deliveries, "d", destination, status).inc()

    def _child(self, counter: Counter, kind: str, a: str, b: str) -> Any:
        key = (kind, a, b)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(a, b)
        return child

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
