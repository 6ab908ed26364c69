"""Rules applied to canonical events between the sources and the outbox
(docs/configuration.md, docs/consent.md §7)."""
