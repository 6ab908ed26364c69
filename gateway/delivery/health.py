"""How a destination's requests have been going, for `/readyz`."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.destinations.base import Result, Verdict


@dataclass(slots=True)
class Health:
    """How a destination's requests have been going, for `/readyz`."""

    last_success_at: float | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    auth_error: str | None = None
    """Set while the platform refuses the credentials (an invalid or expired token)."""

    def record(self, result: Result, now: float) -> None:
        """Count one request's verdict."""
        if result.auth:
            self.auth_error = self.last_error = result.message[:300]
            return
        if result.verdict is not Verdict.RETRY:
            self.auth_error = None  # the platform took the credentials
        if result.verdict is Verdict.SENT:
            self.last_success_at, self.consecutive_failures = now, 0
        elif result.verdict is Verdict.RETRY:
            self.consecutive_failures += 1
            self.last_error = result.message[:300]
        else:
            # The platform answered: it is up, even if it refused this event.
            self.last_success_at, self.consecutive_failures = now, 0
            self.last_error = result.message[:300]

    @property
    def healthy(self) -> bool:
        """False after three transient failures in a row, and while the credentials fail."""
        return self.consecutive_failures < 3 and self.auth_error is None
