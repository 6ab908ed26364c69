"""`run_validate`: sample events to each platform's test mode, and what the platforms said."""

from __future__ import annotations

import io
from collections.abc import Callable

from aiohttp import web

from gateway.config import Config
from gateway.validate import run_validate
from tests.conftest import FakePlatform, Recorded

MakeConfig = Callable[[str], Config]

NAME_INVALID = {
    "fieldPath": "events",
    "description": "Event at index: [0] has invalid name [_badEventName]. Names must start with"
    " an alphabetic character.",
    "validationCode": "NAME_INVALID",
}


def _config(make_config: MakeConfig, endpoint: str, meta_test_code: str = "") -> Config:
    meta_extra = f"\n    test_event_code: {meta_test_code}" if meta_test_code else ""
    return make_config(
        f"""
destinations:
  ga4:
    type: ga4_mp
    measurement_id: G-ABC123
    api_secret: GA4-SECRET
    endpoint: {endpoint}
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: META-TOKEN
    endpoint: {endpoint}{meta_extra}
  tiktok:
    type: tiktok_events
    pixel_code: CABC123
    access_token: TT-TOKEN
    test_event_code: TEST67890
    endpoint: {endpoint}
  audit: {{type: dry_run}}
"""
    )


def _platforms(ga4_messages: list[dict[str, str]]) -> Callable[[Recorded], web.Response]:
    def answer(recorded: Recorded) -> web.Response:
        if recorded.path == "/debug/mp/collect":
            return web.json_response({"validationMessages": ga4_messages})
        if recorded.path.startswith("/open_api/"):
            return web.json_response({"code": 0, "message": "OK", "request_id": "r1"})
        if recorded.path.endswith("/events"):
            return web.json_response(
                {
                    "error": {
                        "message": "Invalid parameter",
                        "type": "OAuthException",
                        "code": 100,
                        "error_subcode": 2804050,
                    }
                },
                status=400,
            )
        return web.Response(status=404)

    return answer


async def test_a_validation_message_is_printed_and_fails_the_run(
    make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _platforms([NAME_INVALID])
    out = io.StringIO()
    code = await run_validate(_config(make_config, fake_platform.url), out)
    text = out.getvalue()
    assert code == 1
    assert text.splitlines() == [
        f"ga4: 2 sample events to {fake_platform.url}/debug/mp/collect: HTTP 200",
        "  NAME_INVALID events: Event at index: [0] has invalid name [_badEventName]."
        " Names must start with an alphabetic character.",
        "ga4: 1 problem(s)",
        "meta: skipped: no test_event_code configured (samples would count as real events)",
        "tiktok: 2 sample events with test_event_code TEST67890: HTTP 200",
        "  accepted: code 0: OK (request_id r1)",
        "audit: skipped: dry_run has no test mode",
        "validate: 1 problem(s) (2 checked, 2 skipped)",
    ]
    for secret in ("GA4-SECRET", "META-TOKEN", "TT-TOKEN"):
        assert secret not in text

    paths = [r.path for r in fake_platform.requests]
    assert paths == ["/debug/mp/collect", "/open_api/v1.3/event/track/"]  # nothing to Meta
    ga4, tiktok = fake_platform.requests
    assert ga4.query == {"measurement_id": "G-ABC123", "api_secret": "GA4-SECRET"}
    body = ga4.json()
    assert body["validation_behavior"] == "ENFORCE_RECOMMENDATIONS"
    assert [e["name"] for e in body["events"]] == ["view_item", "purchase"]
    assert body["client_id"] == "1234567890.1700000000"
    assert tiktok.json()["test_event_code"] == "TEST67890"
    assert tiktok.headers["Access-Token"] == "TT-TOKEN"


async def test_a_clean_run_exits_0_and_a_platform_error_exits_1(
    make_config: MakeConfig, fake_platform: FakePlatform
) -> None:
    fake_platform.default = _platforms([])
    cfg = make_config(
        f"""
destinations:
  ga4:
    type: ga4_mp
    measurement_id: G-ABC123
    api_secret: GA4-SECRET
    endpoint: {fake_platform.url}
"""
    )
    out = io.StringIO()
    assert await run_validate(cfg, out) == 0
    assert out.getvalue().splitlines()[1:] == [
        "  no validation messages",
        "validate: ok (1 checked, 0 skipped)",
    ]

    # Control: the same samples to Meta with a test code; the fake Meta refuses them.
    out = io.StringIO()
    assert await run_validate(_config(make_config, fake_platform.url, "TEST123"), out) == 1
    meta = [line for line in out.getvalue().splitlines() if "2804050" in line]
    assert meta == ["  refused: 100/2804050: Invalid parameter"]
    sent = [r for r in fake_platform.requests if r.path.endswith("/events")]
    assert sent[0].json()["test_event_code"] == "TEST123"


async def test_an_unreachable_platform_is_a_problem(make_config: MakeConfig) -> None:
    cfg = make_config(
        """
destinations:
  ga4:
    type: ga4_mp
    measurement_id: G-ABC123
    api_secret: GA4-SECRET
    endpoint: http://127.0.0.1:9
    timeout_ms: 1000
"""
    )
    out = io.StringIO()
    assert await run_validate(cfg, out) == 1
    first, *_ = out.getvalue().splitlines()
    assert first == "ga4: 2 sample events to http://127.0.0.1:9/debug/mp/collect: no answer"
    assert "GA4-SECRET" not in out.getvalue()
