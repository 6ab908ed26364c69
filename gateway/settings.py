"""Typed building blocks of the config, shared by `config.py` and every source and destination.

Each source and destination module declares its own settings model on top of these, so a
vendor's keys live beside the code that reads them.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

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


class Retry(StrictModel):
    """Capped exponential backoff with full jitter."""

    max_attempts: int = Field(default=8, ge=1, le=100)
    base_ms: int = Field(default=500, ge=1)
    max_ms: int = Field(default=300_000, ge=1)
    auth_probe_ms: int = Field(default=300_000, ge=100, le=86_400_000)
    """While the platform refuses the credentials (an expired token), deliveries wait queued
    and one event is tried this often to see whether the token works again."""

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
