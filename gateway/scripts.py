"""First-party copies of vendor scripts (`scripts:`): fetched, cached in memory, served with ETags.

A script served from the shop's own subdomain loads where a blocklist of vendor hosts would stop
it, and its `rewrite:` pairs can point its hits at the gateway. Only the configured paths are
proxied, and only to their configured upstreams: the request contributes some of its query
parameters and nothing else (no open proxy, docs/configuration.md).

The cache keeps the last good copy of every variant (path + the query parameters the script
is built from; others are ignored), and each upstream is fetched once at a time. After `ttl` a
request still gets the cached copy at once while one background fetch per variant revalidates it
against the upstream's own `ETag`/`Last-Modified`; when the upstream fails, the last good copy
goes on being served.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final

import aiohttp
import structlog
from aiohttp import hdrs, web
from pydantic import Field, field_validator
from yarl import URL

from gateway.settings import StrictModel
from gateway.times import parse_duration

log = structlog.get_logger("gateway.scripts")

MAX_BODY_BYTES: Final = 5 * 1_048_576
"""A script bigger than this (decompressed) is refused: vendor scripts are a few hundred KB."""
MAX_VARIANTS: Final = 50
"""Distinct query strings cached per path; the least recently served is evicted beyond it."""
MAX_TOTAL_BYTES: Final = 64 * 1_048_576
"""All cached bodies together (plain and gzip); least recently served first out beyond it."""
FETCH_TIMEOUT_S: Final = 10.0
RETRY_AFTER_S: Final = 30
"""`Retry-After` of a 503, and the longest wait before a failed refresh is tried again."""
DEFAULT_CONTENT_TYPE: Final = "application/javascript; charset=utf-8"
QUERY_KEYS: Final = ("id", "l", "gtm_auth", "gtm_preview", "gtm_cookies_win", "sdkid", "lib")
"""The request's query parameters vendor scripts are built from, when `query:` is not set:
gtag.js/gtm.js take the tag ID, the dataLayer name and an environment's three; TikTok's
events.js its pixel code and the global's name. fbevents.js reads none."""

MIN_TTL_S: Final = 1.0


def parse_ttl(text: str) -> float:
    """A script's `ttl` (`90s`, `15m`, `1h`, `1d`, or bare seconds) as seconds; ValueError below
    one second."""
    return parse_duration(text, at_least=MIN_TTL_S)


class Script(StrictModel):
    """A vendor script served first-party."""

    path: str = Field(pattern=r"^/")
    upstream: str = Field(pattern=r"^https?://")
    ttl: str = "1h"
    rewrite: dict[str, str] = Field(default_factory=dict)
    query: tuple[str, ...] | None = None
    """Request query parameters passed on to the upstream (the first value of each); None:
    the ones vendor scripts read (`QUERY_KEYS`). Others, such as cache busters, are
    ignored, so they cannot each make a fetch and a cache entry."""

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str) -> str:
        parse_ttl(value)  # raises ValueError with the reason, reported under scripts[i].ttl
        return value


class _UpstreamError(Exception):
    """The upstream answered, but not with a script we can keep."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Route:
    path: str
    upstream: URL
    upstream_keys: frozenset[str]
    query_keys: tuple[str, ...]
    ttl_s: float
    rewrite: tuple[tuple[bytes, bytes], ...]

    @property
    def cache_control(self) -> str:
        return f"public, max-age={max(1, round(self.ttl_s))}"


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str
    body: bytes
    gzip_body: bytes | None
    content_type: str
    etag: str
    """Ours: a strong validator over the served (rewritten) body."""
    gzip_etag: str
    upstream_etag: str | None
    upstream_last_modified: str | None
    fetched_at: float
    """Monotonic time of the last successful fetch or revalidation; stale after the ttl."""
    retry_at: float = 0.0
    """Monotonic time before which no refresh is tried again, set after a failed refresh."""

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzip_body or b"")


class ScriptProxy:
    """Serves the configured `scripts:` from an in-memory cache filled from their upstreams."""

    def __init__(
        self,
        scripts: Sequence[Script],
        session: aiohttp.ClientSession,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_variants: int = MAX_VARIANTS,
        max_total_bytes: int = MAX_TOTAL_BYTES,
        timeout_s: float = FETCH_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Check every script (ValueError naming its path); `session` must decompress (default)."""
        self._routes: dict[str, _Route] = {}
        for script in scripts:
            if script.path in self._routes:
                raise ValueError(f"scripts: path {script.path} is listed twice")
            upstream = URL(script.upstream)
            if upstream.scheme not in ("http", "https") or not upstream.host:
                raise ValueError(f"scripts {script.path}: upstream must be an http(s) URL")
            try:
                ttl_s = parse_ttl(script.ttl)
            except ValueError as exc:
                raise ValueError(f"scripts {script.path}: ttl {exc}") from exc
            self._routes[script.path] = _Route(
                path=script.path,
                upstream=upstream,
                upstream_keys=frozenset(upstream.query.keys()),
                query_keys=QUERY_KEYS if script.query is None else script.query,
                ttl_s=ttl_s,
                rewrite=tuple(
                    (old.encode(), new.encode()) for old, new in script.rewrite.items() if old
                ),
            )
        self._session = session
        self._max_body = max_body_bytes
        self._max_variants = max_variants
        self._max_total = max_total_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._fetching: dict[str, asyncio.Task[_Entry | None]] = {}
        self._upstream_locks = {path: asyncio.Lock() for path in self._routes}
        """One fetch at a time per configured upstream, however many variants are asked for."""

    @property
    def paths(self) -> tuple[str, ...]:
        """The configured paths, for `GET` routes (aiohttp adds `HEAD`)."""
        return tuple(self._routes)

    async def handle(self, request: web.Request) -> web.Response:
        """Answer `GET <path>` from the cache, fetching on a miss; never raises."""
        route = self._routes.get(request.path)
        if route is None:  # only configured paths are proxied
            return web.Response(status=404)
        # The upstream's own query parameters are fixed by the config; the request may add
        # the ones the script is built from (`/gtag/js?id=G-…`), one value each, but not
        # replace them. The rest (`?cb=<unique>`) would each be a fetch and a cache entry.
        query = request.query
        extra = [
            (k, query[k]) for k in route.query_keys if k in query and k not in route.upstream_keys
        ]
        url = route.upstream.extend_query(extra)
        key = f"{route.path}?{url.raw_query_string}"
        entry = self._cache.get(key)
        if entry is None:
            entry = await self._fetch_shared(route, key, url)
            if entry is None:
                # 5xx is kept from answers to bad input; this is not one: the upstream is
                # unreachable or broken and nothing is cached yet, so the client should retry.
                return web.Response(
                    status=503,
                    text="script unavailable\n",
                    headers={hdrs.RETRY_AFTER: str(RETRY_AFTER_S), hdrs.CACHE_CONTROL: "no-store"},
                )
        else:
            self._cache.move_to_end(key)
            now = self._clock()
            due = now >= entry.fetched_at + route.ttl_s and now >= entry.retry_at
            if due and key not in self._fetching:
                self._start_fetch(route, key, url)  # stale-while-revalidate
        return _answer(request, route, entry)

    async def close(self) -> None:
        """Cancel background fetches (before the session closes)."""
        tasks = list(self._fetching.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fetching.clear()

    # --- fetching ----------------------------------------------------------------------------

    async def _fetch_shared(self, route: _Route, key: str, url: URL) -> _Entry | None:
        task = self._fetching.get(key) or self._start_fetch(route, key, url)
        # Shielded: a client that goes away must not cancel the fetch others are waiting on.
        return await asyncio.shield(task)

    def _start_fetch(self, route: _Route, key: str, url: URL) -> asyncio.Task[_Entry | None]:
        task = asyncio.create_task(self._fetch(route, key, url), name=f"script {route.path}")
        self._fetching[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        return task

    def _forget(self, key: str, task: asyncio.Task[_Entry | None]) -> None:
        if self._fetching.get(key) is task:
            del self._fetching[key]

    async def _fetch(self, route: _Route, key: str, url: URL) -> _Entry | None:
        """Fetch or revalidate one variant; the new entry, else the old one (or None)."""
        old = self._cache.get(key)
        started = self._clock()
        try:
            async with self._upstream_locks[route.path]:
                entry = await self._download(route, url, old)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "script.upstream_failed",
                path=route.path,
                error=str(exc) if isinstance(exc, _UpstreamError) else type(exc).__name__,
                status=exc.status if isinstance(exc, _UpstreamError) else None,
                serving_stale=old is not None,
            )
            if old is None:
                return None
            # Keep serving the last good copy; try again after a pause, not on every request.
            retry = replace(old, retry_at=self._clock() + min(route.ttl_s, RETRY_AFTER_S))
            if key in self._cache:
                self._cache[key] = retry
            return retry
        log.info(
            "script.fetched",
            path=route.path,
            revalidated=old is not None and entry.body is old.body,
            bytes=len(entry.body),
            latency_ms=round((self._clock() - started) * 1000, 2),
        )
        self._store(key, entry)
        return entry

    async def _download(self, route: _Route, url: URL, old: _Entry | None) -> _Entry:
        headers = {}
        if old is not None and old.upstream_etag:
            headers[hdrs.IF_NONE_MATCH] = old.upstream_etag
        if old is not None and old.upstream_last_modified:
            headers[hdrs.IF_MODIFIED_SINCE] = old.upstream_last_modified
        async with self._session.get(url, headers=headers, timeout=self._timeout) as response:
            upstream_etag = response.headers.get(hdrs.ETAG)
            last_modified = response.headers.get(hdrs.LAST_MODIFIED)
            if response.status == 304 and old is not None:
                return replace(
                    old,
                    upstream_etag=upstream_etag or old.upstream_etag,
                    upstream_last_modified=last_modified or old.upstream_last_modified,
                    fetched_at=self._clock(),
                    retry_at=0.0,
                )
            if response.status != 200:
                raise _UpstreamError("unexpected status", response.status)
            raw = await self._read_capped(response)
            content_type = response.headers.get(hdrs.CONTENT_TYPE) or DEFAULT_CONTENT_TYPE
        body = raw
        for old_text, new_text in route.rewrite:  # in config order, once per fetch
            body = body.replace(old_text, new_text)
        # Compressed once per fetch, not per request; off the loop, as a body may be megabytes.
        packed = await asyncio.to_thread(gzip.compress, body, 6, mtime=0)
        digest = hashlib.sha256(body).hexdigest()[:32]
        return _Entry(
            path=route.path,
            body=body,
            gzip_body=packed if len(packed) < len(body) else None,
            content_type=content_type,
            etag=f'"{digest}"',
            gzip_etag=f'"{digest}-gz"',
            upstream_etag=upstream_etag,
            upstream_last_modified=last_modified,
            fetched_at=self._clock(),
        )

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        # The cap applies to decompressed bytes, so a small compressed bomb is refused as well.
        if response.content_length is not None and response.content_length > self._max_body:
            raise _UpstreamError("too large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(65536):
            size += len(chunk)
            if size > self._max_body:
                raise _UpstreamError("too large")
            chunks.append(chunk)
        return b"".join(chunks)

    # --- the cache ---------------------------------------------------------------------------

    def _store(self, key: str, entry: _Entry) -> None:
        previous = self._cache.pop(key, None)
        if previous is not None:
            self._bytes -= previous.size
        self._cache[key] = entry
        self._bytes += entry.size
        # Variants are bounded per path so random query strings cannot fill memory; the least
        # recently served goes first, so the shop's real variants stay hot.
        variants = [k for k, e in self._cache.items() if e.path == entry.path]
        for victim in variants[: max(0, len(variants) - self._max_variants)]:
            self._evict(victim)
        while self._bytes > self._max_total and len(self._cache) > 1:
            self._evict(next(k for k in self._cache if k != key))

    def _evict(self, key: str) -> None:
        evicted = self._cache.pop(key, None)
        if evicted is not None:
            self._bytes -= evicted.size


def _answer(request: web.Request, route: _Route, entry: _Entry) -> web.Response:
    gzipped = entry.gzip_body is not None and _accepts_gzip(
        request.headers.get(hdrs.ACCEPT_ENCODING, "")
    )
    headers = {
        hdrs.ETAG: entry.gzip_etag if gzipped else entry.etag,
        hdrs.CACHE_CONTROL: route.cache_control,
        hdrs.VARY: "Accept-Encoding",
    }
    if _etag_matches(request.headers.get(hdrs.IF_NONE_MATCH), (entry.etag, entry.gzip_etag)):
        return web.Response(status=304, headers=headers)
    headers[hdrs.CONTENT_TYPE] = entry.content_type
    if gzipped and entry.gzip_body is not None:
        headers[hdrs.CONTENT_ENCODING] = "gzip"
        return web.Response(body=entry.gzip_body, headers=headers)
    return web.Response(body=entry.body, headers=headers)


def _etag_matches(header: str | None, ours: tuple[str, ...]) -> bool:
    # If-None-Match uses the weak comparison (RFC 9110 §13.1.2): a `W/` prefix is ignored.
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(part.strip().removeprefix("W/") in ours for part in header.split(","))


def _accepts_gzip(header: str) -> bool:
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False
