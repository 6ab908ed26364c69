"""The personal-data canary: unique plaintext in every field a person can type into, through every
source, to every destination type, under every consent case (contract §7, §8).

For each consent case one gateway runs with all seven destination types, every source sending
to all of them, and each source's hit carries its own canaries: user fields, custom and extra
fields, `cd[...]`, `ep.*`/`up.*`, TikTok `properties`, GA4 item parameters, page URL and
referrer query strings, and the `Referer` header. Then every byte of the SQLite files (main,
-wal, -shm), the captured logs and everything the fake platforms received is searched:

- no canary's plaintext, in any encoding, anywhere;
- when `ad_user_data` is denied, not even a canary's hashes (hex or base64url, by every
  platform's rules);
- when it is granted, each platform got its own hash of the user fields it takes (the control
  that proves the search looks where the data would be).
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlencode

import orjson
import pytest
import structlog
from aiohttp import web

from gateway import destinations
from gateway.config import Config
from gateway.personal_data import match_keys
from gateway.personal_data.hashing import sha256_hex
from tests.conftest import FakePlatform, Gateway, Recorded, eventually
from tests.rules.consent.tc_strings import GOOGLE, Core, disclosed

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

UA: Final = "Mozilla/5.0 (X11; Linux x86_64) Canary/1.0"
TCF_DENIED: Final = Core().encode() + "." + disclosed({1, 2, 3, GOOGLE})
"""A valid TC string with no purpose consented: the ad purposes are denied."""

SOURCES: Final = ("meta_get", "meta_post", "ga4_get", "ga4_post", "tiktok", "server")
DESTINATIONS: Final = {
    "meta": "meta_capi",
    "ga4": "ga4_mp",
    "tiktok": "tiktok_events",
    "pinterest": "pinterest_capi",
    "snapchat": "snapchat_capi",
    "meta_forward": "forward",
    "ga4_forward": "forward",
    "tiktok_forward": "forward",
    "audit": "dry_run",
}
BROWSER: Final = SOURCES[:5]
CASES: Final = {
    "granted": SOURCES,
    "gcs": ("ga4_get", "ga4_post"),  # gcs=G100
    "tcf": BROWSER,  # a TC string without purposes in the CMP's cookie
    "gpc": BROWSER,  # Sec-GPC: 1
    "server_denied": ("server",),  # explicit consent, all four purposes denied
    "limited": SOURCES,  # denied (TCF or explicit), every destination `on_denied: limited`
}
Platform = str
# Each platform's table of hashing rules, as its destination declares it.
_RULES: Final = {
    "meta": destinations.TYPES["meta_capi"].match_rules,
    "google": destinations.TYPES["ga4_mp"].match_rules,
    "tiktok": destinations.TYPES["tiktok_events"].match_rules,
    "pinterest": destinations.TYPES["pinterest_capi"].match_rules,
    "snapchat": destinations.TYPES["snapchat_capi"].match_rules,
}


def hashed(platform: Platform, field: str, value: str) -> str | None:
    """The value as `platform` hashes it."""
    return match_keys.hashed(_RULES[platform], field, value)


# The user fields a hashing rule exists for, and the platforms whose rules hash them.
_HASHED_BY: Final[dict[str, tuple[Platform, ...]]] = {
    "email": ("meta", "google", "tiktok", "pinterest", "snapchat"),
    "phone": ("meta", "google", "tiktok", "pinterest", "snapchat"),
    "first_name": ("meta", "google", "tiktok", "pinterest", "snapchat"),
    "last_name": ("meta", "google", "tiktok", "pinterest", "snapchat"),
    "external_id": ("meta", "google", "tiktok", "pinterest", "snapchat"),
}


@dataclass
class Canaries:
    """Unique values for one hit, and what each may leave behind."""

    prefix: int
    counter: Iterator[int] = field(default_factory=itertools.count)
    plain: list[tuple[str, list[str]]] = field(default_factory=list)
    """(where it was planted, every encoding of it to search for)."""
    user: list[tuple[str, str]] = field(default_factory=list)
    """(canonical user field, value): hashed by destinations."""
    keep: list[str] = field(default_factory=list)
    """Harmless values planted beside them: they must arrive (the controls)."""

    def _n(self) -> int:
        return self.prefix * 100 + next(self.counter)

    def email(self, where: str, user_field: bool = False) -> str:
        n = self._n()
        value = f"Cn{n:05d}x@Mail{n:05d}.example"
        self.plain.append((where, [f"cn{n:05d}x", f"Cn{n:05d}x"]))
        if user_field:
            self.user.append(("email", value))
        return value

    def phone(self, where: str, user_field: bool = False) -> str:
        n = self._n() % 1000
        value = f"+44 20 7946 0{n:03d}"
        self.plain.append(
            (where, [f"79460{n:03d}", f"7946 0{n:03d}", f"7946%200{n:03d}", f"7946+0{n:03d}"])
        )
        if user_field:
            self.user.append(("phone", value))
        return value

    def name(self, where: str, user_field: str) -> str:
        letters = "".join("abcdefghij"[int(d)] for d in f"{self._n():06d}")
        value = f"Cnry{letters}"
        self.plain.append((where, [value, value.lower()]))
        self.user.append((user_field, value))
        return value

    def external_id(self, where: str) -> str:
        value = f"Cnry-Ext-{self._n():06d}"
        self.plain.append((where, [value, value.lower()]))
        self.user.append(("external_id", value))
        return value

    def harmless(self) -> str:
        value = f"keep{self._n():06d}"
        self.keep.append(value)
        return value

    def hashes(self) -> list[str]:
        """Every hash of every user canary, as any platform would make it, hex and base64url."""
        found = set()
        for user_field, value in self.user:
            digests = {sha256_hex(value), sha256_hex(value.lower())}
            for platform in _HASHED_BY[user_field]:
                if made := hashed(platform, user_field, value):
                    digests.add(made)
            for digest in digests:
                found.add(digest)
                found.add(base64.urlsafe_b64encode(bytes.fromhex(digest)).rstrip(b"=").decode())
        return sorted(found)


def _answer(recorded: Recorded) -> web.Response:
    if recorded.path.startswith("/open_api/"):
        return web.json_response({"code": 0, "message": "OK"})
    if recorded.path.startswith(("/mp/", "/g/")):
        return web.Response(status=204)
    if recorded.path.startswith("/v5/ad_accounts/"):
        n = len(recorded.json()["data"])
        return web.json_response({"num_events_received": n, "num_events_processed": n})
    if recorded.path.startswith("/v3/"):
        return web.json_response({"status": "VALID"})
    if recorded.path.endswith("/events"):
        return web.json_response({"events_received": 1})
    return web.Response(status=200, body=b"GIF89a", content_type="image/gif")


def _config(make_config: MakeConfig, endpoint: str, case: str) -> Config:
    on_denied = "limited" if case == "limited" else "drop"
    every = "[" + ", ".join(DESTINATIONS) + "]"
    common = f"endpoint: {endpoint}, batch: {{max_wait_ms: 0}}"
    return make_config(
        f"""
consent: {{default: granted, honor_gpc: true, tcf: true, tcf_cookie: euconsent-v2}}
destinations:
  meta: {{type: meta_capi, pixel_id: "1234567890", access_token: T, on_denied: {on_denied},
    {common}}}
  ga4: {{type: ga4_mp, measurement_id: G-ABC123, api_secret: S, on_denied: {on_denied},
    {common}}}
  tiktok: {{type: tiktok_events, pixel_code: CABC123, access_token: T, on_denied: {on_denied},
    {common}}}
  pinterest: {{type: pinterest_capi, ad_account_id: "549755885175", access_token: T,
    on_denied: {on_denied}, {common}}}
  snapchat: {{type: snapchat_capi, pixel_id: 1ec32188-754e-4be2-8e55-c949a984a39f,
    access_token: T, on_denied: {on_denied}, {common}}}
  meta_forward: {{type: forward, vendor: meta, {common}}}
  ga4_forward: {{type: forward, vendor: ga4, {common}}}
  tiktok_forward: {{type: forward, vendor: tiktok, {common}}}
  audit: {{type: dry_run, on_denied: {on_denied}}}
sources:
  meta_pixel: {{send_to: {every}}}
  ga4: {{send_to: {every}}}
  tiktok_pixel: {{send_to: {every}}}
  server: {{send_to: {every}, api_keys: [test-api-key-0001]}}
"""
    )


def _pages(c: Canaries) -> tuple[str, str]:
    page = f"https://shop.example/thanks?contact={quote(c.email('page URL'))}&sku=7"
    ref = f"https://shop.example/cart?tel={quote(c.phone('referrer'), safe='')}&step=2"
    return page, ref


def _meta_params(c: Canaries, eid: str) -> dict[str, str]:
    page, ref = _pages(c)
    return {
        "id": "1234567890",
        "ev": "Purchase",
        "eid": eid,
        "ts": str(int(time.time() * 1000)),
        "dl": page,
        "rl": ref,
        "ud[em]": c.email("ud[em]", user_field=True),
        "ud[ph]": c.phone("ud[ph]", user_field=True),
        "ud[fn]": c.name("ud[fn]", "first_name"),
        "ud[ln]": c.name("ud[ln]", "last_name"),
        "ud[external_id]": c.external_id("ud[external_id]"),
        "cd[value]": "10",
        "cd[currency]": "EUR",
        "cd[note]": f"write to {c.email('cd[note]')}",
        "cd[customer_phone]": c.phone("cd[customer_phone]"),
        "cd[content_name]": f"gift for {c.email('cd[content_name]')}",
        "cd[coupon]": c.harmless(),
    }


def _ga4_event(c: Canaries, eid: str) -> dict[str, str]:
    page, ref = _pages(c)
    email, phone = c.email("em.em", user_field=True), c.phone("em.pn", user_field=True)
    first, last = c.name("em.fn0", "first_name"), c.name("em.ln0", "last_name")
    return {
        "en": "purchase",
        "ep.event_id": eid,
        "ep.transaction_id": eid,
        "cu": "EUR",
        "epn.value": "10",
        "em": f"tv.1~em.{email}~pn.{phone}~fn0.{first}~ln0.{last}",
        "uid": c.external_id("uid"),
        "ep.note": f"write to {c.email('ep.note')}",
        "up.phone": c.phone("up.phone"),
        "up.contact": c.email("up.contact"),
        "dt": f"Order for {c.email('dt')}",
        "dl": page,
        "dr": ref,
        "pr1": f"id{c.harmless()}~nmMug~k0email~v0{c.email('pr1.v0')}~k1size~v1L",
        "pr2": f"ids2~nmfor {c.email('pr2.nm')}",
        "ep.coupon": c.harmless(),
    }


async def _send(gw: Gateway, source: str, case: str, c: Canaries, eid: str) -> None:
    headers = {"User-Agent": UA}
    if source != "server":
        headers["Referer"] = f"https://shop.example/p?m={c.email('Referer')}"
    if case == "gpc":
        headers["Sec-GPC"] = "1"
    if case in ("tcf", "limited") and source != "server":
        headers["Cookie"] = f"euconsent-v2={TCF_DENIED}"
    gcs = {"gcs": "G100"} if case == "gcs" else {}
    shared = {"v": "2", "tid": "G-ABC123", "cid": "111.222", **gcs}
    if source == "meta_get":
        response = await gw.client.get("/tr/?" + urlencode(_meta_params(c, eid)), headers=headers)
    elif source == "meta_post":
        body = urlencode(_meta_params(c, eid))
        response = await gw.client.post(
            "/tr/",
            data=body,
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        )
    elif source == "ga4_get":
        query = urlencode({**shared, **_ga4_event(c, eid)}, quote_via=quote)
        response = await gw.client.get(f"/g/collect?{query}", headers=headers)
    elif source == "ga4_post":
        lines = [urlencode(_ga4_event(c, f"{eid}-{i}"), quote_via=quote) for i in (1, 2)]
        response = await gw.client.post(
            "/g/collect?" + urlencode(shared), data="\n".join(lines), headers=headers
        )
    elif source == "tiktok":
        page, ref = _pages(c)
        message = {
            "event": "CompletePayment",
            "event_id": eid,
            "context": {
                "pixel": {"code": "CABC123"},
                "page": {"url": page, "referrer": ref},
                "user": {
                    "email": c.email("context.user.email", user_field=True),
                    "phone_number": c.phone("context.user.phone_number", user_field=True),
                    "external_id": c.external_id("context.user.external_id"),
                },
            },
            "properties": {
                "value": 10,
                "currency": "EUR",
                "description": f"call {c.phone('properties.description')}",
                "contents": [
                    {"content_id": "s1", "content_name": f"for {c.email('contents[].name')}"}
                ],
                "coupon": c.harmless(),
            },
        }
        response = await gw.client.post("/api/v2/pixel", json=message, headers=headers)
    else:
        page, ref = _pages(c)
        denied = dict.fromkeys(
            ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"), "denied"
        )
        event = {
            "event_id": eid,
            "event_name": "purchase",
            "event_time": int(time.time()) - 5,
            "event_source_url": page,
            "referrer": ref,
            "user": {
                "email": c.email("user.email", user_field=True),
                "phone": c.phone("user.phone", user_field=True),
                "first_name": c.name("user.first_name", "first_name"),
                "last_name": c.name("user.last_name", "last_name"),
                "external_id": c.external_id("user.external_id"),
                "client_ip": "203.0.113.9",
                "user_agent": UA,
                "ga_client_id": "111.222",
            },
            "custom": {
                "value": "10",
                "currency": "EUR",
                "note": f"write to {c.email('custom.note')}",
                "page_title": f"for {c.phone('custom.page_title')}",
                "search_string": c.email("custom.search_string"),
                "contents": [{"id": "s1", "name": f"gift {c.email('contents[].name')}"}],
                "coupon": c.harmless(),
            },
            "consent": denied if case != "granted" else {},
        }
        response = await gw.client.post(
            "/v1/events",
            json={"events": [event]},
            headers={"Authorization": "Bearer test-api-key-0001"},
        )
    assert response.status in (200, 202, 204), (source, response.status)


def _sent(platform: FakePlatform) -> str:
    return "\n".join(
        f"{r.path}?{r.raw_query} {r.headers} {r.body.decode('utf-8', 'replace')}"
        for r in platform.requests
    )


def _received_by(platform: FakePlatform, destination: str) -> str:
    """What one destination's requests carried (the fake serves them all, told by path)."""
    prefix = {
        "meta": "/v2",  # /v25.0/…; Pinterest's is /v5/, Snap's /v3/
        "pinterest": "/v5/ad_accounts/",
        "snapchat": "/v3/",
        "ga4": "/mp/",
        "tiktok": "/open_api/",
        "meta_forward": "/tr",
        "ga4_forward": "/g/",
        "tiktok_forward": "/api/v2/pixel",
    }[destination]
    return "\n".join(
        f"{r.raw_query} {r.body.decode('utf-8', 'replace')}"
        for r in platform.requests
        if r.path.startswith(prefix)
    )


# Which platform's rules make the hash each destination gets of a user field, by the source the
# field came in on (a forward gets only its own vendor's hits, hashed by that vendor's rules).
_WANTS: Final[dict[str, tuple[Platform, tuple[str, ...]]]] = {
    "meta": ("meta", SOURCES),
    "ga4": ("google", SOURCES),
    "tiktok": ("tiktok", SOURCES),
    "pinterest": ("pinterest", SOURCES),
    "snapchat": ("snapchat", SOURCES),
    "meta_forward": ("meta", ("meta_get", "meta_post")),
    "ga4_forward": ("google", ("ga4_get", "ga4_post")),
    "tiktok_forward": ("tiktok", ("tiktok",)),
}


def _encoded(digest: str, destination: str) -> str:
    # gtag sends its user-provided data as base64url digests; the forward keeps that form.
    if destination == "ga4_forward":
        return base64.urlsafe_b64encode(bytes.fromhex(digest)).rstrip(b"=").decode()
    return digest


@pytest.mark.parametrize("case", list(CASES))
async def test_no_canary_survives(
    case: str,
    start_gateway: Start,
    make_config: MakeConfig,
    fake_platform: FakePlatform,
    db_path: Path,
) -> None:
    fake_platform.default = _answer
    sources = CASES[case]
    planted = {s: Canaries(prefix=10 * list(CASES).index(case) + i) for i, s in enumerate(SOURCES)}
    with structlog.testing.capture_logs() as logs:
        gw = await start_gateway(_config(make_config, fake_platform.url, case))
        for source in sources:
            await _send(gw, source, case, planted[source], f"{case}-{source}")

        async def settled() -> bool:
            rows = await gw.rows("SELECT status FROM deliveries")
            return len(rows) >= len(sources) and all(r[0] not in ("queued", "failed") for r in rows)

        await eventually(settled, within=30)
        rows = await gw.rows("SELECT event_id, destination, status FROM deliveries")
        await gw.client.close()

    haystacks = {
        "sqlite": on_disk(db_path).decode("utf-8", "replace"),
        "logs": repr(logs),
        "platforms": _sent(fake_platform),
    }
    # The controls: every source's event reached the store, and the files hold its rows.
    for source in sources:
        assert any(r[0].startswith(f"{case}-{source}") for r in rows), source
        assert f"{case}-{source}" in haystacks["sqlite"], source
    checks = 0
    for source in sources:
        c = planted[source]
        for where, needles in c.plain:
            for needle in needles:
                for name, text in haystacks.items():
                    assert needle not in text, f"{case}/{source}: {where} canary in {name}"
                    checks += 1
        if case != "granted":
            # ad_user_data is denied in every other case: not even a hash may remain.
            for needle in c.hashes():
                for name, text in haystacks.items():
                    assert needle not in text, f"{case}/{source}: a user-field hash in {name}"
                    checks += 1
    if case == "granted":
        for destination, (platform, takes) in _WANTS.items():
            received = _received_by(fake_platform, destination)
            for source in takes:
                for user_field, value in planted[source].user:
                    if destination == "ga4" and user_field == "external_id":
                        user_field_hash = hashed("google", "external_id", value)
                    else:
                        user_field_hash = hashed(platform, user_field, value)
                    if user_field_hash is None or (
                        platform == "tiktok" and user_field in ("first_name", "last_name")
                    ):
                        continue
                    wanted = _encoded(user_field_hash, destination)
                    if destination == "ga4_forward" and user_field == "external_id":
                        wanted = user_field_hash  # `uid` is hashed as hex
                    assert wanted in received, f"{destination} lacks {source}'s {user_field}"
                    checks += 1
                for value in planted[source].keep if destination.endswith("forward") else ():
                    assert value in received, f"{destination} lacks {source}'s {value}"
                    checks += 1
    planted_fields = sum(len(planted[s].plain) for s in sources)
    print(f"canary {case}: {len(sources)} sources, {planted_fields} fields, {checks} checks")


def on_disk(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))


def test_the_matrix_is_what_the_issue_asks() -> None:
    """Every source, destination type and consent case is in it."""
    assert set(DESTINATIONS.values()) == {
        "meta_capi",
        "ga4_mp",
        "tiktok_events",
        "pinterest_capi",
        "snapchat_capi",
        "forward",
        "dry_run",
    }
    assert {s for sources in CASES.values() for s in sources} == set(SOURCES)
    assert orjson.dumps(sorted(CASES)) == orjson.dumps(
        sorted(["granted", "gcs", "tcf", "gpc", "server_denied", "limited"])
    )
