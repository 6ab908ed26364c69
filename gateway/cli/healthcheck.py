"""`healthcheck`: the container's probe of the local gateway."""

from __future__ import annotations

import sys
import urllib.request

from gateway.config import Config


def healthcheck(cfg: Config, port: int | None) -> int:
    """The container's HEALTHCHECK: it follows the config's port, where a fixed URL in the
    Dockerfile would probe 8080 whatever the gateway listens on."""
    host = cfg.listen.host
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    url = f"http://{host}:{port or cfg.listen.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:  # URLError and HTTPError (not 200) included
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
