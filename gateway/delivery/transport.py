"""One HTTP request to a platform, its failures as answers: the only place delivery touches the
network."""

from __future__ import annotations

import aiohttp

from gateway.destinations.base import Answer, OutRequest


async def transport(
    session: aiohttp.ClientSession, request: OutRequest, timeout_s: float
) -> Answer:
    """Make one HTTP request; timeouts and socket errors become an Answer with no status."""
    try:
        async with session.request(
            request.method,
            request.url,
            data=request.body,
            headers=dict(request.headers),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as response:
            body = await response.read()
            return Answer(response.status, body, dict(response.headers))
    except TimeoutError:
        return Answer(None, b"", {}, error=f"timeout after {timeout_s:.1f}s")
    except aiohttp.ClientError as exc:
        # Some errors quote the URL, and a URL may carry a secret (GA4's api_secret).
        detail = str(exc).replace(request.url, request.url.split("?", 1)[0])
        return Answer(None, b"", {}, error=f"{type(exc).__name__}: {detail[:200]}")
