"""First-party advertising cookies (`_fbp`, `_fbc`, `_ttp`, `ttclid`) set on pixel answers.

Pure: `plan()` reads the request's cookies and page URL and decides, once per request, which value
of each ID the events use and which `Set-Cookie` headers the answer carries. Server-set cookies on
the shop's registrable domain outlive the 7-day cap Safari puts on script-set ones
(docs/http.md §1).
Formats are in docs/platforms.md §1.3 (Meta) and §3.3 (TikTok).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from gateway.config import Cookies
from gateway.sources.coerce import url_param

FBP: Final = "_fbp"
FBC: Final = "_fbc"
TTP: Final = "_ttp"
TTCLID: Final = "ttclid"
EPIK: Final = "_epik"
RDT_UUID: Final = "_rdt_uuid"
SCID: Final = "_scid"

USER_FIELDS: Final[Mapping[str, str]] = {
    FBP: "fbp",
    FBC: "fbc",
    TTP: "ttp",
    TTCLID: "ttclid",
    EPIK: "epik",
    RDT_UUID: "rdt_uuid",
    SCID: "scid",
}
"""Cookie name → the `User` field of the canonical event that carries its value."""

VENDORS: Final = ("meta", "tiktok", "pinterest", "reddit", "snapchat")
"""The vendors whose IDs `plan()` knows; destinations name theirs the same way."""

# docs/platforms.md §1.3: `fb`, a decimal index, a 13-digit ms timestamp, a payload without dots,
# then optionally one 2- or 8-char appendix written by Meta's Parameter Builder. The payload is
# held to `[A-Za-z0-9_-]` (digits for fbp, the click ID for fbc) so a kept value can be set again
# byte for byte: anything outside the cookie-safe set would come back quoted.
_META_ID: Final = re.compile(
    r"fb\.(\d{1,2})\.(\d{13})\.([A-Za-z0-9_-]{1,1024})(?:\.(?:[A-Za-z0-9_-]{2}|[A-Za-z0-9_-]{8}))?"
)
# Meta click IDs are base64url-like; `-` and `_` must be accepted (docs/platforms.md §1.3).
_FBCLID: Final = re.compile(r"[A-Za-z0-9_-]{1,1024}")
# TikTok's `_ttp` and `ttclid` formats are undocumented (docs/platforms.md §3.1, §3.3).
# Observed values
# are url-safe letters and digits, with dots (`E.C.P.…` click IDs, `….tt.1` visitor IDs). Only
# values a cookie holds unquoted are accepted, so a renewed cookie is the same bytes.
_TIKTOK_ID: Final = re.compile(r"[A-Za-z0-9._~+-]{1,1024}")
# A click-ID cookie passed on but never set (`_epik`): opaque, base64-like.
_PASSED_ID: Final = re.compile(r"[A-Za-z0-9._~+/=-]{1,1024}")

TTP_LENGTH: Final = 27
"""New `_ttp` values: 27 url-safe random characters, the length of observed TikTok values. The
real format is undocumented; the pixel and the Events API treat the value as opaque."""
_TTP_ALPHABET: Final = string.ascii_letters + string.digits + "-_"


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
        """`values` keyed by `User` field name (`fbp`, `fbc`, `ttp`, `ttclid`)."""
        return {USER_FIELDS[name]: value for name, value in self.values.items()}

    def apply(self, response: web.StreamResponse) -> None:
        """Add every planned `Set-Cookie` to an answer that is not yet sent."""
        for cookie in self.set_cookies:
            cookie.apply(response)


def subdomain_index(domain: str) -> int:
    """Label count of the cookie domain minus one (`shop.example` → 1, `www.shop.co.uk` → 3)."""
    return _domain(domain).count(".")


def valid_meta_id(value: str) -> bool:
    """True for an `_fbp`/`_fbc` value of the shape in docs/platforms.md §1.3 (appendix allowed)."""
    return _META_ID.fullmatch(value) is not None


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

    def keep(name: str, value: str, renew: bool) -> None:
        values[name] = value
        if renew:
            to_set.append(SetCookie(name, value, domain, max_age))

    if "meta" in vendors:
        fbp = hit_cookies.get(FBP)
        own_fbp = own.get(USER_FIELDS[FBP])
        if own_fbp is not None and valid_meta_id(own_fbp):
            keep(FBP, own_fbp, renew=True)
        elif fbp is not None and valid_meta_id(fbp):
            keep(FBP, fbp, renew=True)
        else:
            # Meta's own pixel uses a random integer below 2**31; 10 digits keeps that shape.
            keep(FBP, f"fb.{index}.{now_ms}.{rng.randrange(10**9, 2**31)}", renew=True)
        fbc = hit_cookies.get(FBC)
        fbc_match = _META_ID.fullmatch(fbc) if fbc is not None else None
        fbclid = _click_id(page_url, "fbclid", _FBCLID)
        own_fbc = own.get(USER_FIELDS[FBC])
        if own_fbc is not None and valid_meta_id(own_fbc):
            # The pixel derived it from the same click (or knows a later one): its bytes win.
            # Set only when the cookie differs, so `_fbc` keeps counting from the click.
            keep(FBC, own_fbc, renew=own_fbc != fbc)
        elif fbclid is not None and (fbc_match is None or fbc_match[3] != fbclid):
            keep(FBC, f"fb.{index}.{now_ms}.{fbclid}", renew=True)
        elif fbc is not None and fbc_match is not None:
            keep(FBC, fbc, renew=False)

    if "tiktok" in vendors:
        ttp = hit_cookies.get(TTP)
        own_ttp = own.get(USER_FIELDS[TTP])
        if own_ttp is not None and _TIKTOK_ID.fullmatch(own_ttp):
            keep(TTP, own_ttp, renew=True)
        elif ttp is not None and _TIKTOK_ID.fullmatch(ttp):
            keep(TTP, ttp, renew=True)
        else:
            keep(TTP, "".join(rng.choices(_TTP_ALPHABET, k=TTP_LENGTH)), renew=True)
        ttclid_cookie = hit_cookies.get(TTCLID)
        cookie_ok = ttclid_cookie is not None and _TIKTOK_ID.fullmatch(ttclid_cookie) is not None
        ttclid = _click_id(page_url, "ttclid", _TIKTOK_ID)
        if ttclid is not None and (not cookie_ok or ttclid_cookie != ttclid):
            keep(TTCLID, ttclid, renew=True)
        elif ttclid_cookie is not None and cookie_ok:
            keep(TTCLID, ttclid_cookie, renew=False)

    if "pinterest" in vendors:
        # The Pinterest tag's own click-ID cookie, passed on as the browser has it and never
        # set: Pinterest documents no server-set `_epik` (docs/platforms.md §6).
        epik = hit_cookies.get(EPIK)
        if epik is not None and _PASSED_ID.fullmatch(epik):
            keep(EPIK, epik, renew=False)
    if "snapchat" in vendors:
        # The Snap pixel's `_scid`, Snapchat's `sc_cookie1`: passed on, never set, as `_epik`.
        scid = hit_cookies.get(SCID)
        if scid is not None and _PASSED_ID.fullmatch(scid):
            keep(SCID, scid, renew=False)

    if "reddit" in vendors:
        # Passed on, never set: Reddit documents no server-set `_rdt_uuid` (docs/platforms.md §7).
        rdt_uuid = hit_cookies.get(RDT_UUID)
        if rdt_uuid is not None and _PASSED_ID.fullmatch(rdt_uuid):
            keep(RDT_UUID, rdt_uuid, renew=False)

    return CookiePlan(values, tuple(to_set))


def _domain(configured: str) -> str:
    # A leading dot is legacy cookie syntax for the same thing; browsers ignore it.
    return configured.strip().lstrip(".").rstrip(".").lower()


def _click_id(page_url: str | None, name: str, shape: re.Pattern[str]) -> str | None:
    # Taken as it appears after URL decoding, the way the pixel sources read it, so the ID here
    # and the one a source derives from the same URL are equal. A value outside the shape is
    # ignored rather than repaired: a changed click ID is a different click ID.
    value = url_param(page_url, name)
    return value if value is not None and shape.fullmatch(value) else None
