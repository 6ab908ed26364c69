"""The ingest stage: an HTTP request in, a `Hit` (or a server batch) handed to its source, the
events on to the pipeline, and the caller's answer out.

- `request` — the body, read in time, and the `Hit` built from the request;
- `signals` — the consent signals the request itself carries (`Sec-GPC`, the TCF cookie);
- `first_party` — the first-party cookies a browser answer creates or renews;
- `browser` — the handler of every browser tag's routes;
- `server_api` — the handler of `POST /v1/events`.
"""

from gateway.ingest.browser import browser_handler
from gateway.ingest.first_party import cookie_vendors
from gateway.ingest.server_api import server_handler

__all__ = ["browser_handler", "cookie_vendors", "server_handler"]
