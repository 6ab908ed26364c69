"""First-party cookies: `_fbp`, `_fbc`, `_ttp`, `ttclid` (docs/platforms.md §1.3, §3.3;
docs/http.md §1)."""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import Cookies
from gateway.cookies import CookiePlan, SetCookie, plan, subdomain_index
from gateway.destinations.meta_capi import FBC, FBP, valid_meta_id
from gateway.destinations.tiktok_events import TTCLID, TTP, TTP_LENGTH

NOW_MS = 1_790_000_000_123
SHOP = Cookies(domain="shop.example", max_age_days=90)
NINETY_DAYS = 90 * 86400
FBCLID = "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"
OLD_FBC = "fb.1.1554763741205.IwAR_an_older_click-0"
FBP_10 = "fb.1.1596403881668.1116446470"
FBP_APPENDIX = "fb.1.1778869247376.52390506499288804.AQYCAQMA"


def make(
    cookies: dict[str, str] | None = None,
    url: str | None = None,
    settings: Cookies = SHOP,
    denied: bool = False,
    seed: int = 7,
) -> CookiePlan:
    return plan(cookies or {}, url, settings, NOW_MS, denied, random.Random(seed))


def cookie(result: CookiePlan, name: str) -> SetCookie | None:
    found = [c for c in result.set_cookies if c.name == name]
    assert len(found) <= 1
    return found[0] if found else None


# --- _fbp ---------------------------------------------------------------------------------------


def test_fbp_created_when_missing() -> None:
    result = make()
    fbp = result.values[FBP]
    assert re.fullmatch(rf"fb\.1\.{NOW_MS}\.\d{{10}}", fbp)
    assert valid_meta_id(fbp)
    assert cookie(result, FBP) == SetCookie(FBP, fbp, "shop.example", NINETY_DAYS)


def test_fbp_renewed_with_the_same_value() -> None:
    result = make({FBP: FBP_10})
    assert result.values[FBP] == FBP_10
    renewed = cookie(result, FBP)
    assert renewed is not None
    assert (renewed.value, renewed.max_age) == (FBP_10, NINETY_DAYS)


@pytest.mark.parametrize(
    "kept",
    [
        FBP_APPENDIX,
        "fb.1.1596403881668.1116446470.Ag",
        "fb.2.1596403881668.123456789012345678",
        "fb.0.1596403881668.1116446470",
    ],
)
def test_valid_fbp_kept_byte_for_byte(kept: str) -> None:
    result = make({FBP: kept})
    assert result.values[FBP] == kept
    renewed = cookie(result, FBP)
    assert renewed is not None
    assert renewed.value == kept


@pytest.mark.parametrize(
    "invalid",
    [
        "",
        "garbage",
        "fb.1.159640388166.1116446470",  # 12-digit timestamp
        "fb.1.1596403881668",  # no random part
        "fb.1.1596403881668.1116446470.ABC",  # 3-char appendix
        "fb.1.1596403881668.1116446470.AQ.AQ",  # two appendices
        "FB.1.1596403881668.1116446470",
        'fb.1.1596403881668.111"6446470',
        "fb.x.1596403881668.1116446470",
    ],
)
def test_invalid_fbp_replaced(invalid: str) -> None:
    result = make({FBP: invalid})
    assert result.values[FBP] != invalid
    assert re.fullmatch(rf"fb\.1\.{NOW_MS}\.\d{{10}}", result.values[FBP])


# --- _fbc ---------------------------------------------------------------------------------------


def test_fbc_created_from_fbclid() -> None:
    result = make(url=f"https://shop.example/p?utm_source=fb&fbclid={FBCLID}")
    assert result.values[FBC] == f"fb.1.{NOW_MS}.{FBCLID}"
    assert cookie(result, FBC) == SetCookie(
        FBC, f"fb.1.{NOW_MS}.{FBCLID}", "shop.example", NINETY_DAYS
    )


def test_no_fbclid_no_fbc() -> None:
    result = make(url="https://shop.example/p?utm_source=fb")
    assert FBC not in result.values
    assert cookie(result, FBC) is None


def test_same_click_keeps_fbc_and_does_not_rewrite_it() -> None:
    existing = f"fb.1.1554763741205.{FBCLID}.AQ"
    result = make({FBC: existing}, url=f"https://shop.example/?fbclid={FBCLID}")
    assert result.values[FBC] == existing
    # docs/platforms.md §1.3: set "only when the cookie is missing or its click ID differs".
    assert cookie(result, FBC) is None


def test_new_click_wins() -> None:
    result = make({FBC: OLD_FBC}, url=f"https://shop.example/?fbclid={FBCLID}")
    assert result.values[FBC] == f"fb.1.{NOW_MS}.{FBCLID}"
    written = cookie(result, FBC)
    assert written is not None
    assert written.value == f"fb.1.{NOW_MS}.{FBCLID}"


def test_existing_fbc_used_without_a_click_in_the_url() -> None:
    result = make({FBC: OLD_FBC}, url="https://shop.example/checkout")
    assert result.values[FBC] == OLD_FBC
    assert cookie(result, FBC) is None


def test_invalid_fbc_replaced_by_a_click_and_dropped_without_one() -> None:
    broken = "fb.1.155.IwAR"
    replaced = make({FBC: broken}, url=f"https://shop.example/?fbclid={FBCLID}")
    assert replaced.values[FBC] == f"fb.1.{NOW_MS}.{FBCLID}"
    dropped = make({FBC: broken}, url="https://shop.example/")
    assert FBC not in dropped.values
    assert cookie(dropped, FBC) is None


@pytest.mark.parametrize("fbclid", ["has.dot", "has%20space", "a;b", "x" * 1025])
def test_fbclid_outside_the_shape_ignored(fbclid: str) -> None:
    result = make(url=f"https://shop.example/?fbclid={fbclid}")
    assert FBC not in result.values


# --- subdomainIndex -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "index"),
    [("shop.example", 1), ("www.shop.co.uk", 3), ("shop.co.uk", 2), (".Shop.Example", 1)],
)
def test_subdomain_index_from_the_configured_domain(domain: str, index: int) -> None:
    assert subdomain_index(domain) == index
    result = make(
        url=f"https://anything.example/?fbclid={FBCLID}",
        settings=Cookies(domain=domain, max_age_days=30),
    )
    assert result.values[FBP].startswith(f"fb.{index}.{NOW_MS}.")
    assert result.values[FBC] == f"fb.{index}.{NOW_MS}.{FBCLID}"
    assert {c.domain for c in result.set_cookies} == {domain.lstrip(".").lower()}
    assert {c.max_age for c in result.set_cookies} == {30 * 86400}


# --- TikTok -------------------------------------------------------------------------------------


def test_ttp_created_when_missing_and_renewed_when_present() -> None:
    created = make()
    ttp = created.values[TTP]
    assert re.fullmatch(rf"[A-Za-z0-9_-]{{{TTP_LENGTH}}}", ttp)
    assert cookie(created, TTP) == SetCookie(TTP, ttp, "shop.example", NINETY_DAYS)

    existing = "2Vjx0aBcDeFgHiJkLmNoPqRsTuV.tt.1"
    renewed = make({TTP: existing})
    assert renewed.values[TTP] == existing
    again = cookie(renewed, TTP)
    assert again is not None
    assert again.value == existing


@pytest.mark.parametrize("invalid", ["", "has space", "semi;colon", 'quo"te', "x" * 1025])
def test_invalid_ttp_replaced(invalid: str) -> None:
    result = make({TTP: invalid})
    assert len(result.values[TTP]) == TTP_LENGTH


def test_ttclid_from_the_page_url() -> None:
    click = "E.C.P.CsQBxYz-Ab_12"
    result = make(url=f"https://shop.example/?ttclid={click}")
    assert result.values[TTCLID] == click
    assert cookie(result, TTCLID) == SetCookie(TTCLID, click, "shop.example", NINETY_DAYS)

    same = make({TTCLID: click}, url=f"https://shop.example/?ttclid={click}")
    assert same.values[TTCLID] == click
    assert cookie(same, TTCLID) is None

    newer = make({TTCLID: "E.C.P.older"}, url=f"https://shop.example/?ttclid={click}")
    assert newer.values[TTCLID] == click
    assert cookie(newer, TTCLID) is not None

    kept = make({TTCLID: "E.C.P.older"}, url="https://shop.example/")
    assert kept.values[TTCLID] == "E.C.P.older"
    assert cookie(kept, TTCLID) is None


# --- consent, determinism, vendors --------------------------------------------------------------


def test_ad_storage_denied_sets_and_returns_nothing() -> None:
    result = make(
        {FBP: FBP_10, FBC: OLD_FBC, TTP: "abc", TTCLID: "E.C.P.x"},
        url=f"https://shop.example/?fbclid={FBCLID}&ttclid=E.C.P.y",
        denied=True,
    )
    assert result == CookiePlan()
    assert result.values == {}
    assert result.set_cookies == ()


def test_one_value_per_request_for_every_destination() -> None:
    result = make(url=f"https://shop.example/?fbclid={FBCLID}&ttclid=E.C.P.y")
    assert result.user_fields() == {
        "fbp": result.values[FBP],
        "fbc": result.values[FBC],
        "ttp": result.values[TTP],
        "ttclid": "E.C.P.y",
    }
    assert make(seed=1).values == make(seed=1).values  # the rng decides; nothing else is random
    assert make(seed=1).values[FBP] != make(seed=2).values[FBP]


def test_only_the_vendors_asked_for() -> None:
    meta_only = plan({}, None, SHOP, NOW_MS, False, random.Random(1), vendors=("meta",))
    assert set(meta_only.values) == {FBP}
    tiktok_only = plan({}, None, SHOP, NOW_MS, False, random.Random(1), vendors=("tiktok",))
    assert set(tiktok_only.values) == {TTP}


# --- on the wire --------------------------------------------------------------------------------


async def test_set_cookie_headers_on_a_real_answer(
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> None:
    async def pixel(request: web.Request) -> web.StreamResponse:
        decided = plan(
            request.cookies,
            request.query.get("dl"),
            SHOP,
            NOW_MS,
            request.headers.get("Sec-GPC") == "1",
            random.Random(3),
        )
        response = web.Response(status=200, body=b"GIF89a")
        decided.apply(response)
        return response

    app = web.Application()
    app.router.add_get("/tr", pixel)
    client = await aiohttp_client(app)

    resp = await client.get(
        "/tr",
        params={"dl": f"https://www.shop.example/?fbclid={FBCLID}"},
        headers={"Cookie": f"_fbp={FBP_APPENDIX}"},
    )
    headers = {h.split("=", 1)[0]: h for h in resp.headers.getall("Set-Cookie")}
    assert set(headers) == {FBP, FBC, TTP}
    fbp_header = headers[FBP]
    assert fbp_header.startswith(f"{FBP}={FBP_APPENDIX};")  # byte for byte, not quoted
    for header in headers.values():
        attributes = {a.strip().split("=")[0].lower() for a in header.split(";")[1:]}
        assert attributes == {"domain", "max-age", "path", "samesite", "secure"}
        assert "Domain=shop.example" in header
        assert f"Max-Age={NINETY_DAYS}" in header
        assert "Path=/" in header
        assert "SameSite=Lax" in header
        assert "HttpOnly" not in header  # the pixel scripts read these cookies
    assert headers[FBC].startswith(f"{FBC}=fb.1.{NOW_MS}.{FBCLID};")

    denied = await client.get("/tr", headers={"Cookie": f"_fbp={FBP_10}", "Sec-GPC": "1"})
    assert "Set-Cookie" not in denied.headers


# --- the hit's own IDs (contract §3) ------------------------------------------------------------


def test_the_hits_own_ids_win_over_cookies_and_minting() -> None:
    carried = {"fbp": FBP_APPENDIX, "fbc": OLD_FBC, "ttp": "own.ttp-1"}
    result = plan(
        {FBP: FBP_10, TTP: "cookie-ttp"},
        f"https://shop.example/?fbclid={FBCLID}",
        SHOP,
        NOW_MS,
        False,
        random.Random(1),
        carried=carried,
    )
    assert result.values == {FBP: FBP_APPENDIX, FBC: OLD_FBC, TTP: "own.ttp-1"}
    assert {c.name: c.value for c in result.set_cookies} == result.values


def test_an_own_fbc_equal_to_the_cookie_is_not_rewritten() -> None:
    result = plan(
        {FBC: OLD_FBC}, None, SHOP, NOW_MS, False, random.Random(1), carried={"fbc": OLD_FBC}
    )
    assert result.values[FBC] == OLD_FBC
    assert cookie(result, FBC) is None


def test_an_own_value_of_no_ids_shape_is_no_id() -> None:
    result = plan({FBP: FBP_10}, None, SHOP, NOW_MS, False, random.Random(1), carried={"fbp": "x"})
    assert result.values[FBP] == FBP_10
