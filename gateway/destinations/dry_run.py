"""`dry_run`: records the payload it would send, sends nothing.

With `format: auto` (the default) a hit is recorded in the format of its own vendor's server API
(a Meta pixel hit as a Conversions API event, and so on); server events, and `format: canonical`,
are recorded as the canonical event with its personal data hashed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from decimal import Decimal
from typing import ClassVar, Final, Literal

from gateway.destinations.base import (
    Answer,
    Destination,
    Item,
    OutRequest,
    Rejected,
    Result,
    Verdict,
)
from gateway.event import JSON, Event, User, evolve
from gateway.settings import DestinationSettings

CANONICAL_REQUIRES: Final = ("ad_storage", "ad_user_data")


class DryRunSettings(DestinationSettings):
    """`type: dry_run`."""

    type: Literal["dry_run"]
    format: str = "auto"
    """`auto`, `canonical`, or a destination type whose payload to record (`meta_capi`, ...)."""


def _plain(value: object) -> JSON:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v not in (None, (), {})}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def canonical_payload(event: Event) -> JSON:
    """The canonical event as JSON, user data hashed (Meta's rules) and never in plain text."""
    hashed = DryRun.canonical_user(event.user)
    body = {
        "event_id": event.event_id,
        "event_name": event.event_name,
        "event_time": event.event_time,
        "action_source": event.action_source,
        "event_source_url": event.event_source_url,
        "referrer": event.referrer,
        "user": hashed,
        "custom": _plain(asdict(event.custom)),
        "consent": {
            k: str(v) for k, v in asdict(event.consent).items() if k != "basis" and v is not None
        },
        "source": event.source,
    }
    return {k: v for k, v in body.items() if v is not None}


class DryRun(Destination):
    """Records, never sends."""

    type = "dry_run"
    settings_model = DryRunSettings
    max_batch = 1000
    sends = False
    keeps_payload = True

    settings: DryRunSettings
    previews: ClassVar[dict[str, Callable[[Event], JSON | None]]] = {}
    """Filled by the registry: vendor or destination type → that format's payload builder."""
    requirements: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Filled by the registry: vendor or destination type → the consent that format needs."""
    vendors: ClassVar[list[str]] = []
    """Filled by the registry: the vendors whose hits `format: auto` records in their format."""
    canonical_user: ClassVar[Callable[[User], dict[str, str]]]
    """Filled by the registry: the canonical record's `user`, hashed as Meta's `user_data` (its
    keys are the canonical fields' short names, and Meta's rules hash every one of them)."""

    def _format(self, event: Event) -> str | None:
        """The vendor or type whose format this event is recorded in; None for canonical."""
        wanted = self.settings.format
        if wanted == "auto":
            return event.raw.vendor if event.raw else None
        return wanted if wanted in self.previews else None

    def requires_for(self, event: Event) -> tuple[str, ...]:
        """The consent of the format previewed (a Meta pixel hit needs what `meta_capi`
        needs), so a preview never holds what the real destination could not have. The
        canonical record carries user data hashed by Meta's rules: it needs what Meta needs."""
        return self.requires_for_format(self._format(event))

    def requires_text(self) -> str:
        if self.settings.requires is not None or self.settings.format != "auto":
            return ", ".join(self.requires_for_format(self._fixed())) or "nothing"
        by_vendor = (f"{v} {', '.join(self.requirements[v]) or 'nothing'}" for v in self.vendors)
        server = ", ".join(self.requires_for_format(None)) or "nothing"
        return f"by format: {'; '.join(by_vendor)}; server events {server}"

    def _fixed(self) -> str | None:
        wanted = self.settings.format
        return wanted if wanted in self.previews else None

    def requires_for_format(self, wanted: str | None) -> tuple[str, ...]:
        configured = self.settings.requires
        if configured is not None:
            return configured
        return self.requirements.get(wanted or "meta_capi", CANONICAL_REQUIRES)

    def prepare(self, event: Event) -> JSON | Rejected:
        # A record is final the moment it is written, and the contract keeps IP and user agent
        # only until every delivery is final: the record never holds them.
        event = evolve(event, user=evolve(event.user, client_ip=None, user_agent=None))
        wanted = self._format(event)
        builder = self.previews.get(wanted) if wanted else None
        built = builder(event) if builder else None
        return built if built is not None else canonical_payload(event)

    def build_requests(self, items: Sequence[Item]) -> list[OutRequest]:
        return [OutRequest("RECORD", "dry-run:", items)]

    def classify(self, request: OutRequest, answer: Answer) -> Result:
        return Result(Verdict.SENT, "dry run: recorded, not sent")

    def describe(self) -> str:
        return f"dry_run (format {self.settings.format}), sends nothing"
