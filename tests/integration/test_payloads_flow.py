"""What reaches each platform is the browser's own: its IDs, to its own pixel, and every skip has
a delivery row that says why. Gateway on a socket, real storage, fake platforms on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson
import pytest
from aiohttp import web

from gateway.config import Config
from tests.conftest import FakePlatform, Gateway, Recorded, eventually

Start = Callable[[Config], Awaitable[Gateway]]
MakeConfig = Callable[[str], Config]

UA = "Mozilla/5.0 (X11)"
FBP_OWN = "fb.1.1748957013743.1524724929324944"
FBP_APPENDIX = "fb.1.1778869247376.52390506499288804.AQYCAQMA"
FBC_OWN = "fb.1.1748957013743.IwAR_own_click-1"


def _answer(recorded: Recorded) -> web.Response:
    """Each fake platform's normal answer, by path."""
    if recorded.path.startswith("/open_api/"):
        return web.json_response({"code": 0, "message": "OK", "request_id": "r-ok", "data": {}})
    if recorded.path.startswith("/mp/"):
        return web.Response(status=204)
    return web.json_response({"events_received": 1})


def _ms() -> int:
    return int(time.time() * 1000)


def _config(make_config: MakeConfig, endpoint: str, extra: str = "") -> Config:
    return make_config(
        f"""
trusted_proxies: [127.0.0.1/32]
cookies: {{domain: shop.example, max_age_days: 90}}
destinations:
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: TOKEN-abc
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
  tiktok:
    type: tiktok_events
    pixel_code: CABC123
    access_token: TT-TOKEN
    endpoint: {endpoint}
    batch: {{max_wait_ms: 0}}
{extra}
sources:
  meta_pixel: {{send_to: [meta]}}
  tiktok_pixel: {{send_to: [tiktok]}}
"""
    )


def _set_cookies(response: object) -> dict[str, str]:
    headers = response.headers.getall("Set-Cookie", [])  # type: ignore[attr-defined]
    return {h.split("=", 1)[0]: h.split("=", 1)[1].split(";", 1)[0] for h in headers}


def _sent_user(platform: FakePlatform, key: str = "user_data") -> list[dict[str, str]]:
    return [e[key] for r in platform.requests for e in r.json()["data"]]


# --- the hit's own IDs win (contract §3) ------------------------------------------------------


@pytest.mark.parametrize("fbp", [FBP_OWN, FBP_APPENDIX])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_pixels_own_fbp_and_fbc_reach_meta_and_the_cookie(
    start_gateway: Start,
    make_config: MakeConfig,
    fake_platform: FakePlatform,
    fbp: str,
    method: str,
) -> None:
    fake_platform.default = _answer
    gw = await start_gateway(_config(make_config, fake_platform.url))
    params = (
        f"id=1234567890&ev=PageView&eid=pv-1&ts={_ms()}"
        "&dl=https%3A%2F%2Fshop.example%2F%3Ffbclid%3DIwAR_own_click-1"
        f"&fbp={fbp}&fbc={FBC_OWN}"
    )
    headers = {"User-Agent": UA}
    if method == "GET":
        response = await gw.client.get(f"/tr/?{params}", headers=headers)
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        response = await gw.client.post("/tr/", data=params, headers=headers)
    assert response.status == 200
    # No `_fbp` cookie on the request: the hit's own parameter is the browser's ID, refreshed
    # as it is, never overwritten by a minted one.
    assert _set_cookies(response)["_fbp"] == fbp
    await eventually(lambda: len(fake_platform.requests) == 1)
    (user,) = _sent_user(fake_platform)
    assert (user["fbp"], user["fbc"]) == (fbp, FBC_OWN)


async def test_a_minted_fbp_only_when_the_hit_carries_none(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    """Control: the same hit without `fbp=` does get a new ID, sent and set."""
    fake_platform.default = _answer
    gw = await start_gateway(_config(make_config, fake_platform.url))
    response = await gw.client.get(
        f"/tr/?id=1234567890&ev=PageView&eid=pv-2&ts={_ms()}&dl=https%3A%2F%2Fshop.example%2F",
        headers={"User-Agent": UA},
    )
    minted = _set_cookies(response)["_fbp"]
    assert minted.startswith("fb.1.")
    assert minted not in (FBP_OWN, FBP_APPENDIX)
    await eventually(lambda: len(fake_platform.requests) == 1)
    assert _sent_user(fake_platform)[0]["fbp"] == minted


async def test_the_tiktok_pixels_own_anonymous_id_reaches_tiktok(
    start_gateway: Start, make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _answer
    gw = await start_gateway(_config(make_config, fake_platform.url))
    own = "01HZX3Q8G1ABCDEFGHJKMNPQRS_.tt.1"
    hit = {
        "event": "ViewContent",
        "event_id": "tt-1",
        "context": {
            "pixel": {"code": "CABC123"},
            "page": {"url": "https://shop.example/p"},
            "user": {"anonymous_id": own},
        },
    }
    response = await gw.client.post(
        "/api/v2/pixel", data=orjson.dumps(hit), headers={"User-Agent": UA}
    )
    assert response.status == 200
    assert _set_cookies(response)["_ttp"] == own
    await eventually(lambda: len(fake_platform.requests) == 1)
    assert _sent_user(fake_platform, "user")[0]["ttp"] == own
