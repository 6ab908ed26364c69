"""Configs: the shipped examples validate, every problem names its key path, no secret leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import cli, config
from gateway.settings import MIN_SECRET_CHARS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
ENV = {
    "META_CAPI_TOKEN": "meta-secret-1",
    "GA4_API_SECRET": "ga4-secret-2",
    "TIKTOK_TOKEN": "tiktok-secret-3",
    "PINTEREST_CONVERSION_TOKEN": "pinterest-secret-6-0123456789",
    "GATEWAY_API_KEY": "api-secret-4-0123456789",
    "ADMIN_TOKEN": "admin-secret-5-0123456789",
}


@pytest.mark.parametrize("name", ["example.yaml", "eu.yaml", "us.yaml", "default.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    cfg = config.parse((CONFIG_DIR / name).read_text(), name, ENV)
    assert cfg.destinations
    assert cfg.sources


def test_the_embedded_default_is_config_default_yaml() -> None:
    assert config.embedded_text() == (CONFIG_DIR / "default.yaml").read_text()


def test_check_prints_a_summary_without_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["check", "--config", str(CONFIG_DIR / "example.yaml")]) == 0
    out = capsys.readouterr().out
    assert "meta: meta_capi pixel 1234567890" in out
    assert "ga4: /g/collect -> ga4_forward, meta, tiktok, pinterest, audit" in out
    for secret in ENV.values():
        assert secret not in out


def test_every_problem_is_one_line_with_its_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
listen: {port: 0}
destinations:
  meta: {type: meta_capi, access_token: "${NOT_SET}"}
  tt: {type: tiktok_events, pixel_code: C1, access_token: x, endpont: http://x}
  x: {type: nope}
sources:
  meta_pixel: {send_to: [meta, missing]}
rules:
  - drop_events: {user_agent_matches: "(unclosed"}
"""
    )
    assert cli.main(["check", "--config", str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "destinations.meta.pixel_id: required" in lines
    assert "destinations.meta.access_token: environment variable NOT_SET is not set" in lines
    assert "destinations.tt.endpont: unknown key" in lines
    assert any(line.startswith("destinations.x.type: unknown type 'nope'") for line in lines)
    assert "sources.meta_pixel.send_to[1]: unknown destination 'missing'" in lines
    assert any(line.startswith("listen.port:") for line in lines)
    assert any(line.startswith("rules[0].drop_events.user_agent_matches:") for line in lines)


def test_a_secret_in_an_invalid_value_is_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'destinations: {m: {type: meta_capi, pixel_id: "sekrit-token", access_token: t}}'
    )
    assert cli.main(["check", "--config", str(bad)]) == 1
    assert "sekrit-token" not in capsys.readouterr().out


def test_credentials_in_an_endpoint_are_not_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(
        "destinations:\n"
        "  meta: {type: meta_capi, pixel_id: '1234567890', access_token: t,"
        " endpoint: 'https://gw:proxy-pass-9@proxy.example:8443'}\n"
        "sources: {meta_pixel: {send_to: [meta]}}\n"
    )
    assert cli.main(["check", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "via https://proxy.example:8443" in out
    assert "proxy-pass-9" not in out


# --- event names that can never match (destinations.<name>.events) -----------------------------


def _with_events(events: str, kind: str = "ga4_mp") -> str:
    body = {
        "ga4_mp": "type: ga4_mp, measurement_id: G-ABC123, api_secret: S",
        "meta_capi": 'type: meta_capi, pixel_id: "1234567890", access_token: T',
    }[kind]
    return (
        f"destinations:\n  d: {{{body}, events: {events}}}\n"
        "sources:\n  meta_pixel: {send_to: [d]}\n"
    )


@pytest.mark.parametrize(
    ("events", "problem"),
    [
        (
            "[purchase, generate_lead]",
            "destinations.d.events[1]: 'generate_lead' never matches: GA4's name for the"
            " canonical event 'lead'; write 'lead'",
        ),
        (
            "[Purchase, lead]",
            "destinations.d.events[0]: 'Purchase' never matches: Meta's name for the canonical"
            " event 'purchase'; write 'purchase'",
        ),
        (
            "[lead, purchse]",
            "destinations.d.events[1]: 'purchse' never matches: no source produces it; did you"
            " mean 'purchase'?",
        ),
        (
            "[Add_To_Cart]",
            "destinations.d.events[0]: 'Add_To_Cart' never matches: canonical names are"
            " snake_case; write 'add_to_cart'",
        ),
        (
            "[view_item, CompletePayment]",
            "destinations.d.events[0]: 'view_item' never matches: GA4's name for the canonical"
            " event 'view_content'; write 'view_content'",
        ),
    ],
)
def test_check_refuses_event_names_that_never_match(events: str, problem: str) -> None:
    with pytest.raises(config.ConfigError) as raised:
        config.parse(_with_events(events), "t.yaml", {})
    assert problem in raised.value.problems


@pytest.mark.parametrize(
    "events",
    [
        "[purchase, lead, page_view]",
        # Names no table maps pass through, so these can come from a source as they are.
        "[scroll, user_engagement, SubscribedButtonClick, Donate, PlaceAnOrder, my_event]",
    ],
)
def test_canonical_and_passthrough_event_names_pass(events: str) -> None:
    cfg = config.parse(_with_events(events, "meta_capi"), "t.yaml", {})
    assert cfg.destinations["d"].events


@pytest.mark.parametrize("name", ["example.yaml", "eu.yaml", "us.yaml"])
def test_shipped_examples_show_two_pixels(name: str) -> None:
    cfg = config.parse((CONFIG_DIR / name).read_text(), name, ENV)
    pixels = [getattr(d, "pixel_id", None) for d in cfg.destinations.values()]
    assert len({p for p in pixels if p}) == 2


@pytest.mark.parametrize("value", ["", "   ", "\u00a0", "short-key"])
def test_an_empty_or_short_secret_is_a_config_error(
    value: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # docker-compose passes an unset host variable as an empty string: `check` must refuse it
    # rather than leave /admin and /v1/events open to an empty credential.
    cfg = tmp_path / "open.yaml"
    cfg.write_text(
        'admin: {token: "${ADMIN_TOKEN}"}\n'
        "destinations: {audit: {type: dry_run}}\n"
        'sources: {server: {send_to: [audit], api_keys: ["${GATEWAY_API_KEY}", '
        "long-enough-key-0001]}}\n"
    )
    with pytest.raises(config.ConfigError) as caught:
        config.load(str(cfg), {"ADMIN_TOKEN": value, "GATEWAY_API_KEY": value})
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == ["sources.server.api_keys[0]", "admin.token"]
    for problem in problems:
        assert f"at least {MIN_SECRET_CHARS} characters" in problem
    # `check` says the same, one line each, and exits 1.
    monkeypatch.setenv("ADMIN_TOKEN", value)
    monkeypatch.setenv("GATEWAY_API_KEY", value)
    assert cli.main(["check", "--config", str(cfg)]) == 1
    assert capsys.readouterr().out.splitlines() == problems


def test_a_secret_padded_with_whitespace_is_a_config_error() -> None:
    # The server strips what a client sends, so a key with a trailing newline could never match.
    text = (
        "destinations: {audit: {type: dry_run}}\n"
        "sources: {server: {send_to: [audit], api_keys: ['long-enough-key-0001 ']}}\n"
    )
    with pytest.raises(config.ConfigError) as caught:
        config.parse(text, "t.yaml", {})
    assert caught.value.problems[0].startswith("sources.server.api_keys[0]: ")
    assert "whitespace" in caught.value.problems[0]


def test_retry_takes_a_time_budget_and_still_a_count() -> None:
    text = """
destinations:
  a: {type: dry_run, retry: {give_up_after: 90m, max_attempts: 8}}
  b: {type: dry_run}
sources:
  server: {send_to: [a, b], api_keys: [test-api-key-0001]}
"""
    cfg = config.parse(text, "t.yaml", {})
    assert cfg.destinations["a"].retry.give_up_after == 5400
    assert cfg.destinations["a"].retry.max_attempts == 8
    assert cfg.destinations["b"].retry.give_up_after == 4 * 3600  # Segment's 4 hours
    assert cfg.destinations["b"].retry.max_attempts is None
    for bad in ("soon", "8d"):
        with pytest.raises(config.ConfigError) as err:
            config.parse(text.replace("90m", bad), "t.yaml", {})
        assert "destinations.a.retry.give_up_after" in str(err.value)
