"""Hostile requests to every endpoint, and what came back: the shared core of
`tests/integration/test_fuzz.py` (a sample) and `bench/fuzz.py` (10,000 requests).

Requests are drawn from a seeded generator, so a run can be repeated exactly: hostile methods,
paths next to the real ones, vendor query parameters with broken values, headers that lie
(`Content-Encoding: gzip` on plain bytes, multipart without a boundary, a huge cookie), and
bodies from random bytes to almost-valid events. A few percent are raw bytes on a socket, for
what an HTTP client will not send (a request line of garbage, a header without a colon, a
`Content-Length` that is not a number). The promise checked: every request gets an answer,
and none is a 5xx (contract: a bad request is the caller's problem, never the gateway's).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import random
import string
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp
from yarl import URL

API_KEY = "fuzz-key-0123456789"
ADMIN_TOKEN = "fuzz-admin-token-0123"

ROUTES = (
    "/tr",
    "/tr/",
    "/g/collect",
    "/api/v2/pixel",
    "/api/v2/pixel/",
    "/api/v2/pixel/act",
    "/api/v2/pixel/track",
    "/api/v2/pixel/track/",
    "/api/v2/pixel/perf",
    "/v1/events",
    "/healthz",
    "/readyz",
    "/metrics",
    "/admin",
    "/fbevents.js",
)
ODD_PATHS = (
    "/",
    "//tr",
    "/tr%2F",
    "/TR",
    "/tr/x/y",
    "/g//collect",
    "/v1/events/",
    "/v1/events%00",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/admin/../metrics",
    "/admin/anything",
    "/preview/" + "a" * 40,
    "/api/v2/pixel/act/../../..",
    "/" + "x" * 3000,
    "/%ZZ",
    "/\u00e9t\u00e9",
)
METHODS = (
    ("GET", 30),
    ("POST", 40),
    ("HEAD", 5),
    ("PUT", 4),
    ("DELETE", 3),
    ("PATCH", 3),
    ("OPTIONS", 6),
    ("TRACE", 2),
    ("PROPFIND", 2),
    ("FUZZ", 2),
    ("CONNECT", 1),
)
PARAMS = [
    "id",
    "ev",
    "eid",
    "ts",
    "dl",
    "rl",
    "cd[value]",
    "cd[currency]",
    "cd[contents]",
    "cd[content_ids]",
    "cd[order_id]",
    "ud[em]",
    "ud[ph]",
    "udff[em]",
    "fbp",
    "fbc",
    "dpo",
    "dpoco",
    "dpost",
    "v",
    "tid",
    "cid",
    "uid",
    "en",
    "_p",
    "ep.event_id",
    "epn.value",
    "cu",
    "pr1",
    "pr2",
    "dt",
    "dr",
    "sid",
    "sct",
    "seg",
    "_et",
    "up.x",
    "em",
    "gcs",
    "gcd",
    "npa",
    "dma",
    "gdpr",
    "gdpr_consent",
    "_uip",
    "analytics_message",
    "noscript",
    "event",
    "event_id",
    "timestamp",
]
CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-16",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=zz",
    "text/plain;charset=UTF-8",
    "text/plain",
    "application/octet-stream",
    "image/gif",
    "\u00ff\u00fe",
    "",
    "a" * 2000,
)
ENCODINGS = ("gzip", "deflate", "br", "identity", "gzip, deflate", "x-gzip", "zstd", "chunked", "")


@dataclass(frozen=True, slots=True)
class Request:
    """One fuzzed request: through the HTTP client, or `raw` bytes on a socket."""

    method: str
    target: str  # path and query, already percent-encoded as it goes on the wire
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    raw: bytes | None = None

    @property
    def route(self) -> str:
        path = self.target.split("?", 1)[0]
        return path if path in ROUTES else "(other)"


@dataclass(slots=True)
class Result:
    """What the gateway answered."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_route: Counter[tuple[str, str]] = field(default_factory=Counter)
    unanswered: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def five_xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def _dumps(value: object) -> bytes:
    # The standard library's: it writes integers of any size, and NaN, which orjson refuses.
    return json.dumps(value).encode()


def _text(rng: random.Random, limit: int = 40) -> str:
    kind = rng.randrange(10)
    n = rng.choice((0, 1, 3, 12, limit, limit * 50))
    if kind == 0:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(n))
    if kind == 1:
        return "".join(rng.choice("[]{}\"'\\%~.,:;=&?#\t ") for _ in range(n))
    if kind == 2:
        return rng.choice(("NaN", "-1", "1e309", "0x10", "-0", "99999999999999999999", "null"))
    if kind == 3:
        return base64.b64encode(rng.randbytes(n)).decode()
    if kind == 4:
        return rng.choice(("G100", "G1--", "11p1p1p1p5", "13t3t3Z2t5l1", "1", "", "\u0000"))
    return "".join(rng.choice(string.printable[:94]) for _ in range(n))


def _query(rng: random.Random) -> str:
    pairs = []
    for _ in range(rng.choice((0, 1, 3, 8, 30))):
        key = rng.choice(PARAMS) if rng.random() < 0.85 else _text(rng, 8)
        value = _text(rng)
        if key == "analytics_message" and rng.random() < 0.5:
            value = base64.b64encode(_dumps(_json(rng, 3))).decode()
        pairs.append(f"{quote(key, safe='[]')}={quote(value, safe='')}")
    if rng.random() < 0.05:
        pairs.append("%ZZ=%G0&&&==&" + "a=" * rng.randrange(1, 200))
    return "&".join(pairs)


def _json(rng: random.Random, depth: int) -> object:
    kind = rng.randrange(9 if depth > 0 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False, 0, -1, 1.5, 10**30, -(10**20), 1e300))
    if kind in (2, 3, 4):
        return _text(rng)
    if kind in (5, 6):
        return [_json(rng, depth - 1) for _ in range(rng.randrange(4))]
    keys = [
        "event_id",
        "event_name",
        "event_time",
        "user",
        "custom",
        "consent",
        "email",
        "phone",
        "value",
        "currency",
        "contents",
        "id",
        "quantity",
        "item_price",
        "ad_storage",
        "event",
        "timestamp",
        "context",
        "properties",
    ]
    return {
        (rng.choice(keys) if rng.random() < 0.8 else _text(rng, 10)): _json(rng, depth - 1)
        for _ in range(rng.randrange(5))
    }


def _event(rng: random.Random) -> dict[str, object]:
    """Nearly a canonical event: right keys, values of any type or size."""
    event: dict[str, object] = {
        "event_id": _json(rng, 0) if rng.random() < 0.3 else f"fz-{rng.randrange(10**9)}",
        "event_name": rng.choice(("purchase", "lead", "page_view", _text(rng))),
        "event_time": rng.choice((int(time.time()), 0, -5, 10**12, "now", None)),
        "event_source_url": rng.choice(("https://shop.example/?email=a@b.c", _text(rng))),
    }
    for key in ("user", "custom", "consent", "action_source", "referrer"):
        if rng.random() < 0.6:
            event[key] = _json(rng, 3)
    if rng.random() < 0.3:
        event["custom"] = {"value": _text(rng), "currency": _text(rng, 4)}
    return event


def _body(rng: random.Random, route: str) -> tuple[bytes, str | None]:
    """A body and the Content-Type it pretends to be."""
    kind = rng.randrange(12)
    if kind == 0:
        return b"", None
    if kind == 1:
        return rng.randbytes(rng.choice((1, 10, 1000, 20_000))), None
    if kind == 2:
        events = [_event(rng) for _ in range(rng.choice((0, 1, 3, 50)))]
        return _dumps({"events": events}), "application/json"
    if kind == 3:
        return _dumps(_json(rng, 5)), "application/json"
    if kind == 4:
        deep = rng.choice((50, 2000, 100_000))
        return (b"[" * deep + b"]" * rng.choice((0, deep))), "application/json"
    if kind == 5:
        return _query(rng).encode(), "application/x-www-form-urlencoded"
    if kind == 6:  # GA4: one event per line
        lines = [_query(rng) for _ in range(rng.choice((1, 2, 30)))]
        return "\n".join(lines).encode(), "text/plain;charset=UTF-8"
    if kind == 7:
        boundary = "zz"
        part = f'--{boundary}\r\nContent-Disposition: form-data; name="{_text(rng, 5)}"\r\n\r\n'
        tail = rng.choice(("", f"\r\n--{boundary}--\r\n", "\r\n--zz"))
        return (part + _text(rng) + tail).encode(), f"multipart/form-data; boundary={boundary}"
    if kind == 8:
        return b'{"events": [' + b'{"event_id": "x"},' * rng.randrange(1, 5), "application/json"
    if kind == 9:  # TikTok-shaped
        tiktok = {
            "event": _text(rng, 10),
            "event_id": _json(rng, 0),
            "timestamp": _text(rng),
            "context": _json(rng, 3),
            "properties": _json(rng, 3),
        }
        return _dumps(tiktok), "application/json"
    if kind == 10:
        return ("\ufeff" + _text(rng, 200)).encode("utf-8", "surrogatepass"), None
    return b"\x00" * rng.choice((1, 100)), None


def _encode(rng: random.Random, body: bytes) -> tuple[bytes, str | None]:
    """Maybe compress the body, honestly or not, and say what it claims to be."""
    roll = rng.random()
    if roll < 0.75:
        return body, None
    if roll < 0.85:
        return gzip.compress(body), "gzip"
    if roll < 0.9:
        return zlib.compress(body), "deflate"
    if roll < 0.95:
        return gzip.compress(body)[: rng.randrange(1, 30)], "gzip"  # cut short
    return body, rng.choice(ENCODINGS)  # claims an encoding it does not have


def _headers(
    rng: random.Random, content_type: str | None, encoding: str | None
) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    if content_type is not None or rng.random() < 0.2:
        ct = content_type if content_type and rng.random() < 0.8 else rng.choice(CONTENT_TYPES)
        headers.append(("Content-Type", ct))
    if encoding is not None:
        headers.append(("Content-Encoding", encoding))
    choices = (
        ("Authorization", lambda: f"Bearer {API_KEY}"),
        ("Authorization", lambda: f"Bearer {ADMIN_TOKEN}"),
        ("Authorization", lambda: rng.choice(("Bearer", "Basic !!!", "Bearer " + _text(rng)))),
        (
            "Authorization",
            lambda: "Basic " + base64.b64encode(f"x:{ADMIN_TOKEN}".encode()).decode(),
        ),
        ("Cookie", lambda: f"_fbp={_text(rng)}; _fbc={_text(rng)}; _ttp={_text(rng)}"),
        ("Cookie", lambda: "euconsent-v2=" + _text(rng) + "; tg_preview=" + _text(rng)),
        ("Cookie", lambda: ";;;=;" + "a" * rng.choice((10, 4000))),
        ("X-Forwarded-For", lambda: ", ".join(_text(rng, 15) for _ in range(rng.randrange(1, 5)))),
        ("User-Agent", lambda: rng.choice(("", "Mozilla/5.0", "Googlebot", "x" * 5000))),
        ("Referer", lambda: rng.choice(("https://shop.example/?fbclid=" + _text(rng), _text(rng)))),
        ("Sec-GPC", lambda: rng.choice(("1", "0", "yes", " 1 "))),
        ("Origin", lambda: rng.choice(("https://shop.example", "null", "https://evil.example"))),
        ("Access-Control-Request-Method", lambda: rng.choice(("POST", "DELETE", "X"))),
        ("X-Tag-Gateway-Preview", lambda: _text(rng)),
        ("Range", lambda: rng.choice(("bytes=0-1", "bytes=-1", "bytes=x"))),
        ("If-None-Match", lambda: _text(rng)),
        ("Accept-Encoding", lambda: rng.choice(("gzip", "br", "*", "identity;q=0"))),
        ("Accept-Language", lambda: _text(rng)),
    )
    for _ in range(rng.choice((0, 1, 3, 6))):
        name, value = rng.choice(choices)
        headers.append((name, value()))
    # The HTTP client refuses control characters in a header: the raw requests send those.
    return [(name, _printable(value)) for name, value in headers]


def _printable(value: str) -> str:
    latin = value.encode("latin-1", "replace").decode("latin-1")
    return "".join(c if " " <= c != "\x7f" else " " for c in latin)


RAW_REQUESTS = (
    b"GARBAGE\r\n\r\n",
    b"GET /tr HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /tr\r\n\r\n",
    b"GET /tr HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /tr HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
    b"POST /tr HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
    b"0\r\n\r\n",
    b"POST /g/collect HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\nab",
    b"GET /tr HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /tr HTTP/1.1\r\nHost: x\r\nX: \x00\x01\x7f\r\n\r\n",
    b"GET /tr?id=1&ev=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET /tr HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd",
)


def generate(seed: int, count: int) -> Iterator[Request]:
    """`count` hostile requests, the same ones for the same seed."""
    rng = random.Random(seed)
    methods = [m for m, _ in METHODS]
    weights = [w for _, w in METHODS]
    for _ in range(count):
        if rng.random() < 0.03:
            yield Request("RAW", "(raw)", raw=rng.choice(RAW_REQUESTS))
            continue
        path = rng.choice(ROUTES) if rng.random() < 0.85 else rng.choice(ODD_PATHS)
        path = quote(path, safe="/%.")
        query = _query(rng) if rng.random() < 0.7 else ""
        method = rng.choices(methods, weights)[0]
        body, content_type = (
            _body(rng, path) if method not in ("GET", "HEAD") or rng.random() < 0.1 else (b"", None)
        )
        body, encoding = _encode(rng, body)
        headers = _headers(rng, content_type, encoding)
        yield Request(method, f"{path}?{query}" if query else path, tuple(headers), body)


async def _raw(host: str, port: int, data: bytes, wait_s: float) -> int | None:
    """Send bytes as they are; the status of the answer, or None when none came."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), wait_s)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    parts = line.split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


async def run(
    base: str, requests: Iterator[Request], concurrency: int = 16, wait_s: float = 15.0
) -> Result:
    """Send every request, `concurrency` at a time; tally what came back."""
    url = URL(base)
    assert url.host is not None
    assert url.port is not None
    result = Result()
    queue: asyncio.Queue[Request | None] = asyncio.Queue(maxsize=concurrency * 2)
    started = time.monotonic()

    async def worker(session: aiohttp.ClientSession) -> None:
        while (request := await queue.get()) is not None:
            status: int | None
            try:
                if request.raw is not None:
                    status = await _raw(url.host or "", url.port or 0, request.raw, wait_s)
                else:
                    async with session.request(
                        request.method,
                        URL(base + request.target, encoded=True),
                        headers=list(request.headers),
                        data=request.body or None,
                        allow_redirects=False,
                        skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
                        auto_decompress=False,
                    ) as response:
                        await response.read()
                        status = response.status
            except aiohttp.ClientResponseError as exc:
                # An answer the client could not read through: aiohttp's own 400 for a
                # request it cannot parse carries a body even to HEAD. Still an answer.
                status, what = exc.status, ""
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status = None
                what = f"{type(exc).__name__}: {exc}"[:200]
            else:
                what = ""
            result.sent += 1
            label = f"{request.method} {request.target[:120]}"
            if status is None:
                result.unanswered.append(f"{label} ({what or 'no status line'})")
                continue
            result.statuses[status] += 1
            result.by_route[(request.route, str(status))] += 1
            if status >= 500:
                result.server_errors.append(f"{status} {label} {dict(request.headers)}"[:400])

    client_timeout = aiohttp.ClientTimeout(total=wait_s)
    # A connection per request: aiohttp's client may stop writing a body once an early answer
    # (a 405 before the body was read) came, and then reuse the connection with the rest of
    # that body unsent, which makes the next answer on it the client's confusion, not ours.
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        for request in requests:
            await queue.put(request)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    result.seconds = time.monotonic() - started
    return result


def config_text(port: int, platform: str, db: str) -> str:
    """Every source, every destination type (all of them talking to `platform` on
    127.0.0.1), a first-party script, cookies, CORS, admin, TCF and rules: every route on."""
    return f"""
listen: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {db}}}
destinations:
  meta: {{type: meta_capi, pixel_id: "1234567890", access_token: tok, endpoint: "{platform}"}}
  ga4: {{type: ga4_mp, measurement_id: G-ABC123, api_secret: sec, endpoint: "{platform}"}}
  tiktok: {{type: tiktok_events, pixel_code: CABC123, access_token: tok, endpoint: "{platform}"}}
  ga4_forward: {{type: forward, vendor: ga4, endpoint: "{platform}"}}
  audit: {{type: dry_run}}
sources:
  meta_pixel: {{send_to: [meta, audit]}}
  ga4: {{send_to: [ga4, ga4_forward, meta, audit]}}
  tiktok_pixel: {{send_to: [tiktok, audit]}}
  server: {{send_to: [meta, ga4, tiktok, audit], api_keys: [{API_KEY}]}}
cookies: {{domain: shop.example}}
scripts:
  - {{path: /fbevents.js, upstream: "{platform}/fbevents.js", ttl: 1m}}
allowed_origins: [https://shop.example]
admin: {{token: {ADMIN_TOKEN}}}
consent: {{tcf: true, tcf_cookie: euconsent-v2}}
rules:
  - redact_url_params: [token]
  - drop_events: {{user_agent_matches: "(?i)bot"}}
  - destination: tiktok
    drop_fields: [user.phone]
"""


def summary(result: Result) -> str:
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(result.statuses.items()))
    return (
        f"{result.sent} requests in {result.seconds:.1f} s; answers {statuses};"
        f" 5xx {result.five_xx}; unanswered {len(result.unanswered)}"
    )
