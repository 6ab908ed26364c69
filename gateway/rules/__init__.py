"""Rules applied to canonical events between the sources and the outbox (contract §4, §7)."""
