"""The precedence of consent signals (docs/consent.md §7), and every decoder on garbage."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.event import PURPOSES, Consent, ConsentState
from gateway.rules.consent.gcm import GCD_ALPHABET, decode_gcd, decode_gcs
from gateway.rules.consent.precedence import Basis, resolve
from gateway.rules.consent.tcf import TCString, decode_tc_string
from tests.rules.consent.tc_strings import (
    B64URL,
    GOLDEN_TC,
    OURS_TC,
    Core,
)

G = ConsentState.GRANTED
D = ConsentState.DENIED


# --- precedence (§7) ---------------------------------------------------------------------------


def consent(
    explicit: Mapping[str, str] | None = None,
    default: str = "granted",
    honor_gpc: bool = True,
    use_tcf: bool = True,
    **signals: str,
) -> Consent:
    return resolve(explicit, signals, default=default, honor_gpc=honor_gpc, use_tcf=use_tcf)


def states(c: Consent) -> tuple[ConsentState | None, ...]:
    return tuple(c.get(p) for p in PURPOSES)


def test_nothing_at_all_is_the_default() -> None:
    assert states(consent()) == (G, G, G, G)
    assert states(consent(default="denied")) == (D, D, D, D)
    assert consent().basis == dict.fromkeys(PURPOSES, "default")
    assert states(consent(default=ConsentState.DENIED)) == (D, D, D, D)


def test_explicit_beats_gcd() -> None:
    c = consent({"ad_storage": "granted", "ad_user_data": "DENIED"}, gcd="11p1p1p1p5")
    assert states(c) == (G, D, D, D)
    assert c.basis == {
        "ad_storage": "server",
        "analytics_storage": "gcd",
        "ad_user_data": "server",
        "ad_personalization": "gcd",
    }


def test_explicit_unknown_values_fall_through() -> None:
    c = consent({"ad_storage": "maybe", "analytics_storage": "", "other": "granted"}, gcs="G100")
    assert (c.ad_storage, c.analytics_storage) == (D, D)
    assert c.basis["ad_storage"] == "gcs"


def test_gcd_update_beats_its_default_and_the_config_default() -> None:
    # r: granted after a denied default; u: withdrawn after a granted default.
    c = consent(default="denied", gcd="13r3u3r3u5")
    assert states(c) == (G, D, G, D)
    assert set(c.basis.values()) == {"gcd"}
    # p: denied by default only, still a signal that beats the configured default.
    assert consent(default="granted", gcd="11p1l1l1l5").ad_storage is D


def test_gcs_only_where_gcd_is_not_set() -> None:
    c = consent(gcd="13t3l3l3l5", gcs="G100")
    assert (c.ad_storage, c.basis["ad_storage"]) == (G, "gcd")
    assert (c.analytics_storage, c.basis["analytics_storage"]) == (D, "gcs")
    all_unset = consent(gcd="13l3l3R2l5l1", gcs="G101")
    assert (all_unset.ad_storage, all_unset.basis["ad_storage"]) == (D, "gcs")
    assert (all_unset.analytics_storage, all_unset.basis["analytics_storage"]) == (G, "gcs")


def test_ad_user_data_inherits_ad_storage_from_gcd_or_gcs() -> None:
    from_gcd = consent(gcd="13p3l3l3l5", default="granted")
    assert (from_gcd.ad_user_data, from_gcd.basis["ad_user_data"]) == (D, "gcd")
    from_gcs = consent(gcs="G110", default="denied")
    assert (from_gcs.ad_user_data, from_gcs.basis["ad_user_data"]) == (G, "gcs")
    # Its own letter wins over inheritance.
    own = consent(gcd="13p3l3n3l5")
    assert (own.ad_user_data, own.basis["ad_user_data"]) == (G, "gcd")
    # Seen in the wild: `Z` (inferred) in the ad_user_data slot alongside gcs=G111.
    seen = consent(gcd="13t3t3Z2t5l1", gcs="G111")
    assert states(seen) == (G, G, G, G)


def test_npa_denies_personalisation_only() -> None:
    c = consent(npa="1")
    assert states(c) == (G, G, G, D)
    assert c.basis["ad_personalization"] == "npa"
    assert consent(npa="0").ad_personalization is G
    # A gcd letter for ad_personalization is a stronger level than npa.
    assert consent(npa="1", gcd="13l3l3l3v5").ad_personalization is G


def test_tcf_level() -> None:
    c = consent(default="granted", gdpr="1", gdpr_consent=Core(purposes=frozenset({1})).encode())
    assert states(c) == (G, G, D, D)  # analytics_storage has no TCF mapping: default
    assert c.basis == {
        "ad_storage": "tcf",
        "analytics_storage": "default",
        "ad_user_data": "tcf",
        "ad_personalization": "tcf",
    }
    granted = consent(default="denied", gdpr="1", gdpr_consent=OURS_TC)
    assert states(granted) == (G, D, G, G)


def test_tcf_only_when_configured_and_gdpr_applies() -> None:
    refusing = Core().encode()
    assert states(consent(gdpr="1", gdpr_consent=refusing, use_tcf=False)) == (G, G, G, G)
    assert states(consent(gdpr="0", gdpr_consent=refusing)) == (G, G, G, G)
    assert states(consent(gdpr_consent=refusing)) == (G, G, G, G)


def test_tcf_gdpr_without_a_string_denies_ad_purposes() -> None:
    for c in (consent(gdpr="1"), consent(gdpr="1", gdpr_consent="")):
        assert states(c) == (D, G, D, D)
        assert c.basis["ad_storage"] == "tcf"


@pytest.mark.parametrize(
    "tc", [GOLDEN_TC, "not a tc string", "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"]
)
def test_tcf_invalid_or_undecodable_string_skips_the_level(tc: str) -> None:
    c = consent(gdpr="1", gdpr_consent=tc)
    assert states(c) == (G, G, G, G)
    assert set(c.basis.values()) == {"default"}


def test_consent_mode_beats_tcf() -> None:
    c = consent(gcs="G111", gdpr="1", gdpr_consent=Core().encode())
    assert states(c) == (G, G, G, D)
    assert c.basis["ad_user_data"] == "gcs"
    assert c.basis["ad_personalization"] == "tcf"


def test_gpc_overrides_even_an_explicit_grant() -> None:
    explicit = dict.fromkeys(PURPOSES, "granted")
    c = consent(explicit, gpc="1", gcd="13v3v3v3v5")
    assert states(c) == (D, G, D, D)
    assert c.basis == {
        "ad_storage": "gpc",
        "analytics_storage": "server",
        "ad_user_data": "gpc",
        "ad_personalization": "gpc",
    }


def test_gpc_only_when_honoured_and_exactly_one() -> None:
    assert states(consent(gpc="1", honor_gpc=False)) == (G, G, G, G)
    for value in ("0", "", "true", " 1"):
        assert states(consent(gpc=value)) == (G, G, G, G)


@pytest.mark.parametrize(("gcs", "analytics"), [("G100", D), ("G101", G)])
def test_regression_meta_tag_must_not_fire_on_ad_storage_denied(
    gcs: str, analytics: ConsentState
) -> None:
    # stape-io/facebook-tag#65: a Meta server tag fired on gcs=G100 (positions read reversed).
    # meta_capi requires ad_storage + ad_user_data (docs/consent.md §7, recommendation).
    c = consent(gcs=gcs, default="granted")
    assert c.ad_storage is D
    assert c.analytics_storage is analytics
    assert not all(c.granted(p) for p in ("ad_storage", "ad_user_data"))


def test_every_basis_value_is_a_known_level() -> None:
    known = {b.value for b in Basis}
    c = consent({"ad_storage": "denied"}, gcs="G111", npa="1", gpc="1")
    assert set(c.basis) == set(PURPOSES)
    assert set(c.basis.values()) <= known


# --- never raise on garbage --------------------------------------------------------------------

_SIGNAL_TEXT = st.text(alphabet=B64URL + ".=~GP0123", max_size=120)


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_decoders_never_raise_on_arbitrary_text(text: str) -> None:
    decode_gcs(text)
    decode_gcd(text)
    decode_tc_string(text)


@given(_SIGNAL_TEXT)
@settings(max_examples=300)
def test_decoders_never_raise_on_near_miss_text(text: str) -> None:
    decode_gcd(text)
    result = decode_tc_string(text)
    assert result is None or isinstance(result, TCString)


@given(
    gcd=st.text(alphabet=GCD_ALPHABET, min_size=9, max_size=14).map(lambda s: "1" + s[1:]),
    gcs=st.sampled_from(["", "G100", "G101", "G110", "G111", "G1--"]),
    npa=st.sampled_from(["", "0", "1"]),
    tc=_SIGNAL_TEXT,
    gpc=st.sampled_from(["", "1"]),
)
@settings(max_examples=200)
def test_resolve_always_decides_every_purpose(
    gcd: str, gcs: str, npa: str, tc: str, gpc: str
) -> None:
    signals = {"gcd": gcd, "gcs": gcs, "npa": npa, "gdpr": "1", "gdpr_consent": tc, "gpc": gpc}
    c = resolve(None, signals, default="denied", honor_gpc=True, use_tcf=True)
    assert None not in states(c)
    assert set(c.basis) == set(PURPOSES)
    if gpc == "1":
        assert (c.ad_storage, c.ad_user_data, c.ad_personalization) == (D, D, D)
