"""The operator's room: `/healthz`, `/readyz`, `/metrics`, `/admin`, and the listener split
that keeps their detail off the public port (`listen.ops`).

Nothing here takes a hit; the pages read what the ingest and delivery stages left in the
store, the workers and the metrics.
"""
