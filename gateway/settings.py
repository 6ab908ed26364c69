"""Typed building blocks of the config, shared by `config.py` and every source and destination.

Each source and destination module declares its own settings model on top of these, so a
vendor's keys live beside the code that reads them.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from gateway.times import parse_duration

Purpose = Literal["ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"]


class StrictModel(BaseModel):
    """Immutable, and unknown keys are errors: a typo must never silently disable a rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Batch(StrictModel):
    """How a destination groups events into requests."""

    max_events: int | None = Field(default=None, ge=1)
    """At most the platform's own limit; None means that limit."""
    max_wait_ms: int = Field(default=250, ge=0, le=60_000)
    """How long a worker waits for a batch to fill once the queue ran dry."""


RETRY_FOR_AT_MOST_S: Final = 7 * 86400
"""No platform takes an event older than 7 days (Meta's limit, the longest of them)."""


class Retry(StrictModel):
    """Transient failures are retried with capped exponential backoff and jitter until
    `give_up_after` has passed since the first attempt (or `max_attempts` attempts, if set,
    whichever comes first), and never past the platform's own age limit; then `dead`."""

    max_attempts: int | None = Field(default=None, ge=1, le=100_000)
    base_ms: int = Field(default=500, ge=1)
    max_ms: int = Field(default=300_000, ge=1)
    auth_probe_ms: int = Field(default=300_000, ge=100, le=86_400_000)
    """While the platform refuses the credentials (an expired token), deliveries wait queued
    and one event is tried this often to see whether the token works again."""
    give_up_after: float = Field(default=4 * 3600, gt=0, le=RETRY_FOR_AT_MOST_S)
    """Seconds; the YAML takes a duration (`90m`, `4h`, `3d`) or a number of seconds."""

    @field_validator("give_up_after", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    def describe(self) -> str:
        """`retry for 4h, 500-300000 ms` (and the attempts, when they are limited too)."""
        seconds = self.give_up_after
        span = next(
            f"{seconds / unit:g}{name}"
            for unit, name in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))
            if seconds >= unit or unit == 1
        )
        attempts = f" or {self.max_attempts} attempts" if self.max_attempts is not None else ""
        return f"retry for {span}{attempts}, {self.base_ms}-{self.max_ms} ms"

    @model_validator(mode="after")
    def _base_within_max(self) -> Self:
        if self.base_ms > self.max_ms:
            raise ValueError(f"base_ms ({self.base_ms}) is above max_ms ({self.max_ms})")
        return self


class DestinationSettings(StrictModel):
    """Keys every destination takes (docs/configuration.md)."""

    type: str
    events: tuple[str, ...] | None = None
    requires: tuple[Purpose, ...] | None = None
    """None: the destination type's default (`Destination.default_requires`)."""
    on_denied: Literal["drop", "limited"] = "drop"
    batch: Batch = Batch()
    retry: Retry = Retry()
    concurrency: int | None = Field(default=None, ge=1, le=256)
    """Requests on the wire at once; None: the destination type's default."""
    timeout_ms: int = Field(default=10_000, ge=100, le=120_000)

    def secrets(self) -> tuple[SecretStr, ...]:
        """Values that must never be printed or logged (subclasses add theirs)."""
        return ()


class SourceSettings(StrictModel):
    """Keys every source takes."""

    send_to: tuple[str, ...] = ()
    path: str | None = Field(default=None, pattern=r"^/")
    """Base path of the source's routes; None keeps the vendor's default."""


MIN_SECRET_CHARS = 16
"""An API key or the admin token is at least this long: an empty one (an unset variable that
docker-compose passes as "") would open the door to an empty credential."""


def _strong(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if len(text.strip()) < MIN_SECRET_CHARS:
        raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters (an unset variable?)")
    if text != text.strip():
        # Clients' credentials are stripped before comparing: a padded secret never matches.
        raise ValueError("must not start or end with whitespace")
    return value


Secret = Annotated[SecretStr, AfterValidator(_strong)]
"""A credential clients must present to us (not a platform's token, which the platform checks)."""
