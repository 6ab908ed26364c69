"""First-party advertising cookies (`_fbp`, `_fbc`, `_ttp`, `ttclid`) set on pixel answers.

Pure: `plan()` reads the request's cookies and page URL and decides, once per request, which value
of each ID the events use and which `Set-Cookie` headers the answer carries. Server-set cookies on
the shop's registrable domain outlive the 7-day cap Safari puts on script-set ones
(docs/http.md §1). Which cookies, their shapes and how a new one is made, each vendor's destination
declares (`gateway.identifiers.Identifier`; formats in docs/platforms.md §1.3 for Meta, §3.3 for
TikTok); this module only applies the declarations.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from gateway.config import Cookies
from gateway.destinations import IDENTIFIERS, VENDOR_IDENTIFIERS
from gateway.identifiers import Identifier
from gateway.sources.coerce import url_param

VENDORS: Final = tuple(
    vendor
    for vendor, declared in VENDOR_IDENTIFIERS.items()
    if any(i.cookie and i.shape for i in declared)
)
"""The vendors whose first-party cookies `plan()` reads (their destinations declare them)."""
_BY_COOKIE: Final = {i.cookie: i for i in IDENTIFIERS.values() if i.cookie}


@dataclass(frozen=True, slots=True)
class SetCookie:
    """One `Set-Cookie` header. Not HttpOnly: the vendors' pixel scripts read these cookies."""

    name: str
    value: str
    domain: str
    max_age: int
    path: str = "/"
    secure: bool = True
    samesite: str = "Lax"
    httponly: bool = False

    def apply(self, response: web.StreamResponse) -> None:
        """Add this cookie to an answer that is not yet sent."""
        response.set_cookie(
            self.name,
            self.value,
            domain=self.domain,
            max_age=self.max_age,
            path=self.path,
            secure=self.secure,
            httponly=self.httponly,
            samesite=self.samesite,
        )


@dataclass(frozen=True, slots=True)
class CookiePlan:
    """What one request does with the first-party IDs."""

    values: dict[str, str] = field(default_factory=dict)
    """Cookie name → the value every event of this request carries (kept or newly created)."""
    set_cookies: tuple[SetCookie, ...] = ()

    def user_fields(self) -> dict[str, str]:
        """`values` keyed by identifier field (`User.ids`: `fbp`, `fbc`, `ttp`, `ttclid`)."""
        return {_BY_COOKIE[name].field: value for name, value in self.values.items()}

    def apply(self, response: web.StreamResponse) -> None:
        """Add every planned `Set-Cookie` to an answer that is not yet sent."""
        for cookie in self.set_cookies:
            cookie.apply(response)


def subdomain_index(domain: str) -> int:
    """Label count of the cookie domain minus one (`shop.example` → 1, `www.shop.co.uk` → 3)."""
    return _domain(domain).count(".")


def plan(
    hit_cookies: Mapping[str, str],
    page_url: str | None,
    settings: Cookies,
    now_ms: int,
    ad_storage_denied: bool,
    rng: random.Random,
    vendors: Collection[str] = VENDORS,
    carried: Mapping[str, str] | None = None,
) -> CookiePlan:
    """Decide the request's `_fbp`, `_fbc`, `_ttp` and `ttclid` and the cookies to set.

    The hit's own IDs always win (docs/platforms.md §1.3): an ID the tag sent as a parameter
    (`carried`, by `User` field: the Meta pixel's `fbp`/`fbc`, the TikTok pixel's
    `anonymous_id` as `ttp`) is used and refreshed byte for byte, then a cookie the request
    carries; a new ID is minted only when the hit carries neither. A value not of the ID's
    shape is no ID.

    - `_fbp`: a valid cookie is kept byte for byte and renewed (same value, new Max-Age); a
      missing or invalid one is replaced by `fb.<subdomainIndex>.<now_ms>.<10 random digits>`.
    - `_fbc`: written only when the page URL carries a `fbclid` and the cookie is missing, invalid
      or holds a different click ID (the new click wins): `fb.<subdomainIndex>.<now_ms>.<fbclid>`.
      A cookie for the same click is kept and not renewed: docs/platforms.md §1.3 has the gateway
      set
      `_fbc` "only when the cookie is missing or its click ID differs", so its lifetime counts
      from the click.
    - `_ttp`: kept and renewed like `_fbp`, else 27 random url-safe characters (`TTP_LENGTH`).
    - `ttclid`: like `_fbc`, from the page URL's `ttclid`, written when missing or different.

    With `ad_storage_denied`, the plan is empty: no cookie is set or renewed, and no value is
    returned either, not even an existing cookie's, because the denial covers reading the
    browser's storage as well as writing it. Only the `vendors` given are planned (a shop
    without TikTok should not get a `_ttp` cookie).
    """
    if ad_storage_denied:
        return CookiePlan()
    own = carried or {}
    domain = _domain(settings.domain)
    index = subdomain_index(domain)
    max_age = settings.max_age_days * 86400
    values: dict[str, str] = {}
    to_set: list[SetCookie] = []
    for vendor in VENDORS:
        if vendor not in vendors:
            continue
        for ident in VENDOR_IDENTIFIERS[vendor]:
            if ident.cookie is None or ident.shape is None:
                continue
            decided = _decide(ident, hit_cookies, own, page_url, index, now_ms, rng)
            if decided is not None:
                value, renew = decided
                values[ident.cookie] = value
                if renew and ident.sets:
                    to_set.append(SetCookie(ident.cookie, value, domain, max_age))
    return CookiePlan(values, tuple(to_set))


def _decide(
    ident: Identifier,
    hit_cookies: Mapping[str, str],
    own: Mapping[str, str],
    page_url: str | None,
    index: int,
    now_ms: int,
    rng: random.Random,
) -> tuple[str, bool] | None:
    """(the value, whether to set the cookie) for one identifier, or None for no value.

    In order: the tag's own value (set when `refresh` or the cookie differs, so a click's cookie
    keeps counting from the click); a new click in the page URL that the cookie does not hold;
    the cookie (renewed when `refresh`); a new value (`mint`)."""
    assert ident.cookie is not None
    cookie = hit_cookies.get(ident.cookie)
    cookie_ok = ident.valid(cookie)
    mine = own.get(ident.field)
    if mine is not None and ident.valid(mine):
        return mine, ident.refresh or mine != cookie
    if ident.click_param is not None and ident.click_shape is not None:
        click = _click_id(page_url, ident.click_param, ident.click_shape)
        held = None
        if cookie is not None and cookie_ok:
            held = ident.click_of(cookie) if ident.click_of else cookie
        if click is not None and held != click:
            made = ident.from_click(click, index, now_ms) if ident.from_click else click
            return made, True
    if cookie is not None and cookie_ok:
        return cookie, ident.refresh
    if ident.mint is not None:
        return ident.mint(rng, index, now_ms), True
    return None


def _domain(configured: str) -> str:
    # A leading dot is legacy cookie syntax for the same thing; browsers ignore it.
    return configured.strip().lstrip(".").rstrip(".").lower()


def _click_id(page_url: str | None, name: str, shape: re.Pattern[str]) -> str | None:
    # Taken as it appears after URL decoding, the way the pixel sources read it, so the ID here
    # and the one a source derives from the same URL are equal. A value outside the shape is
    # ignored rather than repaired: a changed click ID is a different click ID.
    value = url_param(page_url, name)
    return value if value is not None and shape.fullmatch(value) else None
