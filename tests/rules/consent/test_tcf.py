"""The TC string decoder and its purpose mapping (docs/consent.md §3)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.event import ConsentState
from gateway.rules.consent.tcf import RestrictionType, decode_tc_string, tcf_states
from tests.rules.consent.tc_strings import (
    GOLDEN_TC,
    GOOGLE,
    OURS_TC,
    BitWriter,
    Core,
    disclosed,
    publisher_tc,
)

G = ConsentState.GRANTED
D = ConsentState.DENIED


# --- TCF (§3) ----------------------------------------------------------------------------------


def test_tc_golden_vector_field_by_field() -> None:
    tc = decode_tc_string(GOLDEN_TC)
    assert tc is not None
    assert tc.version == 2
    assert tc.created == datetime(2025, 6, 3, tzinfo=UTC)
    assert tc.last_updated == datetime(2025, 6, 3, tzinfo=UTC)
    assert tc.cmp_id == 880
    assert tc.cmp_version == 0
    assert tc.consent_screen == 0
    assert tc.consent_language == "EN"
    assert tc.vendor_list_version == 48
    assert tc.policy_version == 2
    assert tc.is_service_specific is True
    assert tc.use_non_standard_texts is False
    assert tc.special_feature_optins == frozenset()
    assert tc.purposes_consent == frozenset()
    assert tc.purposes_li == frozenset()
    assert tc.purpose_one_treatment is False
    assert tc.publisher_cc == "DE"
    assert tc.vendor_consents == {1, 2, 3, 4}
    assert tc.vendor_li == frozenset()
    assert tc.publisher_restrictions == ()
    assert tc.disclosed_vendors == frozenset({1, 2, 3, 4, 5, 100, 404})
    assert tc.allowed_vendors is None
    assert tc.publisher_tc is not None
    assert tc.publisher_tc.purposes_consent == frozenset()
    assert tc.publisher_tc.purposes_li == frozenset()
    assert tc.publisher_tc.num_custom_purposes == 0
    assert tc.publisher_tc.custom_purposes_consent == frozenset()
    # A format example with policy version 2: a strict validator rejects it.
    assert not tc.valid
    assert tc.validity == "TcfPolicyVersion 2 < 4"


def test_tc_golden_core_and_segment_order() -> None:
    core, disclosed_segment, pub = GOLDEN_TC.split(".")
    swapped = decode_tc_string(f"{core}.{pub}.{disclosed_segment}")
    assert swapped == decode_tc_string(GOLDEN_TC)
    alone = decode_tc_string(core)
    assert alone is not None
    assert alone.vendor_consents == {1, 2, 3, 4}
    assert alone.disclosed_vendors is None
    assert alone.publisher_tc is None


def test_tc_golden_vector_is_what_the_bit_writer_writes() -> None:
    # Checks the test encoder against the spec's example, so the vectors below are trustworthy.
    core = Core(
        cmp_id=880,
        cmp_version=0,
        consent_screen=0,
        consent_language="EN",
        vendor_list_version=48,
        policy_version=2,
        vendors=frozenset({1, 2, 3, 4}),
    ).encode()
    golden = GOLDEN_TC.split(".")
    # The example pads with more zero bits than this writer does: compare up to the padding.
    assert core.rstrip("A") == golden[0].rstrip("A")
    assert disclosed({1, 2, 3, 4, 5, 100, 404}).rstrip("A") == golden[1].rstrip("A")
    assert publisher_tc((), (), (0, 0)).rstrip("A") == golden[2].rstrip("A")


def test_tc_our_vector_decodes_and_maps() -> None:
    tc = decode_tc_string(OURS_TC)
    assert tc is not None
    assert tc.valid, tc.validity
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (300, 7, 1)
    assert (tc.consent_language, tc.publisher_cc) == ("DE", "DE")
    assert (tc.vendor_list_version, tc.policy_version) == (178, 5)
    assert tc.purposes_consent == {1, 3, 4, 7}
    assert tc.vendor_consents == {1, 2, GOOGLE}
    assert tc.disclosed_vendors == frozenset({1, 2, 3, GOOGLE})
    assert tc.vendor_allowed(GOOGLE, (1, 3, 4))
    assert not tc.vendor_allowed(GOOGLE, (1, 2))  # purpose 2 not consented
    assert not tc.vendor_allowed(3, (1,))  # disclosed, not consented
    assert tcf_states(tc) == {
        "ad_storage": G,
        "analytics_storage": None,
        "ad_user_data": G,
        "ad_personalization": G,
    }


def test_tc_bitfield_and_ranges_decode_alike() -> None:
    vendors = frozenset({1, 2, 3, 10, 11, 500, GOOGLE})
    as_ranges = decode_tc_string(
        Core(vendors=vendors, vendors_li=vendors, use_ranges=True).encode()
    )
    as_bits = decode_tc_string(Core(vendors=vendors, vendors_li=vendors).encode())
    assert as_ranges is not None
    assert as_bits is not None
    assert as_ranges.vendor_consents == as_bits.vendor_consents == vendors
    assert as_ranges.vendor_li == as_bits.vendor_li == vendors


@pytest.mark.parametrize(
    ("purposes", "expected"),
    [
        ({1, 3, 4, 7}, (G, G, G)),
        ({1, 3, 4}, (G, D, G)),  # no P7: ad_user_data denied
        ({1, 7, 3}, (G, G, D)),  # no P4: ad_personalization denied
        ({3, 4, 7}, (D, D, G)),  # no P1: ad_storage and ad_user_data denied
        (set(), (D, D, D)),
    ],
)
def test_tcf_mapping(purposes: set[int], expected: tuple[ConsentState, ...]) -> None:
    tc = decode_tc_string(Core(purposes=frozenset(purposes)).encode())
    assert tc is not None
    states = tcf_states(tc)
    assert (states["ad_storage"], states["ad_user_data"], states["ad_personalization"]) == expected
    assert states["analytics_storage"] is None


def test_tcf_purpose_one_treatment_leaves_ad_storage_to_lower_levels() -> None:
    tc = decode_tc_string(Core(purposes=frozenset({7}), purpose_one_treatment=True).encode())
    assert tc is not None
    assert tc.purpose_one_treatment
    assert tcf_states(tc) == {
        "ad_storage": None,
        "analytics_storage": None,
        "ad_user_data": G,
        "ad_personalization": D,
    }


def test_tc_all_core_fields_round_trip() -> None:
    core = Core(
        created=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        last_updated=datetime(2025, 2, 3, tzinfo=UTC),
        cmp_id=4095,
        cmp_version=4095,
        consent_screen=63,
        consent_language="FR",
        vendor_list_version=4095,
        policy_version=4,
        use_non_standard_texts=True,
        special_features=frozenset({1, 2, 12}),
        purposes=frozenset({1, 2, 11, 24}),
        purposes_li=frozenset({2, 7, 9, 10}),
        purpose_one_treatment=True,
        publisher_cc="US",
        vendors=frozenset({65535}),
        vendors_li=frozenset(),
        use_ranges=True,
        restrictions=[(2, 0, [(GOOGLE, GOOGLE)]), (7, 2, [(1, 20), (40, 40)])],
    )
    pub = publisher_tc({1, 24}, {2}, (5, 0b10101))
    tc = decode_tc_string(f"{core.encode()}.{pub}")
    assert tc is not None
    assert tc.valid, tc.validity
    assert tc.created == core.created
    assert tc.last_updated == core.last_updated
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (4095, 4095, 63)
    assert (tc.consent_language, tc.publisher_cc, tc.vendor_list_version) == ("FR", "US", 4095)
    assert tc.use_non_standard_texts
    assert tc.special_feature_optins == {1, 2, 12}
    assert tc.purposes_consent == {1, 2, 11, 24}
    assert tc.purposes_li == {2, 7, 9, 10}
    assert tc.purpose_one_treatment
    assert tc.vendor_consents == {65535}
    assert tc.vendor_li == frozenset()
    first, second = tc.publisher_restrictions
    assert (first.purpose_id, first.restriction_type, first.vendors) == (
        2,
        RestrictionType.NOT_ALLOWED,
        frozenset({GOOGLE}),
    )
    assert (second.purpose_id, second.restriction_type) == (7, RestrictionType.REQUIRE_LI)
    assert second.vendors == {*range(1, 21), 40}
    assert tc.restricted(2, GOOGLE)
    assert not tc.restricted(7, GOOGLE)
    assert tc.publisher_tc is not None
    assert tc.publisher_tc.purposes_consent == {1, 24}
    assert tc.publisher_tc.purposes_li == {2}
    assert tc.publisher_tc.num_custom_purposes == 5
    assert tc.publisher_tc.custom_purposes_consent == {1, 3, 5}
    assert tc.publisher_tc.custom_purposes_li == frozenset()


def test_tc_publisher_restriction_blocks_the_vendor() -> None:
    core = Core(
        purposes=frozenset({1, 3, 4, 7}),
        vendors=frozenset({GOOGLE}),
        restrictions=[(3, 0, [(700, 800)])],
    )
    tc = decode_tc_string(core.encode())
    assert tc is not None
    assert not tc.vendor_allowed(GOOGLE, (1, 3, 4))
    assert tc.vendor_allowed(GOOGLE, (1, 7))


@pytest.mark.parametrize(
    ("core", "reason"),
    [
        (Core(is_service_specific=False), "IsServiceSpecific is 0"),
        (Core(policy_version=3), "TcfPolicyVersion 3 < 4"),
        (Core(purposes_li=frozenset({1})), "purpose 1 under legitimate interest"),
    ],
)
def test_tc_validity_rules(core: Core, reason: str) -> None:
    tc = decode_tc_string(core.encode())
    assert tc is not None
    assert not tc.valid
    assert tc.validity is not None
    assert reason in tc.validity


def test_tc_validity_reports_every_broken_rule() -> None:
    tc = decode_tc_string(Core(is_service_specific=False, policy_version=2).encode())
    assert tc is not None
    assert tc.validity == (
        "IsServiceSpecific is 0 (global scope is invalid since 1 Sep 2021); TcfPolicyVersion 2 < 4"
    )


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA", 1),  # a TCF v1 consent string
        ("DBABM~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA", 3),  # GPP starts with D
    ],
)
def test_tc_other_versions_are_invalid_not_misread(text: str, version: int) -> None:
    tc = decode_tc_string(text)
    assert tc is not None
    assert tc.version == version
    assert not tc.valid
    assert tc.purposes_consent == frozenset()
    assert tc.vendor_consents == frozenset()


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        ".",
        "C",  # truncated core
        GOLDEN_TC.split(".")[0][:30],
        GOLDEN_TC.replace("C", "*", 1),
        GOLDEN_TC + ".",  # empty segment
        GOLDEN_TC + ".IDKQA4AAgAKAGQAygAAA",  # DisclosedVendors twice
        "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA+",  # standard base64 character
    ],
)
def test_tc_undecodable_is_none(text: str | None) -> None:
    assert decode_tc_string(text) is None


def test_tc_padding_is_tolerated() -> None:
    core = GOLDEN_TC.split(".")[0]
    assert decode_tc_string(core + "==") == decode_tc_string(core)


def test_tc_hostile_ranges_are_refused_quickly() -> None:
    # 33 bits a range entry can name 65,535 vendors: 4,000 of them must not become a huge set.
    everyone = [(1, 65535)]
    core = Core(use_ranges=True, restrictions=[(p % 24 + 1, 0, everyone) for p in range(3000)])
    started = time.perf_counter()
    assert decode_tc_string(core.encode()) is None
    assert time.perf_counter() - started < 2


def test_tc_unknown_segment_types_are_skipped() -> None:
    core = GOLDEN_TC.split(".")[0]
    unknown = BitWriter().number(5, 3).number(0, 21).encode()
    tc = decode_tc_string(f"{core}.{unknown}")
    assert tc is not None
    assert tc.disclosed_vendors is None


@given(
    purposes=st.frozensets(st.integers(1, 24)),
    specials=st.frozensets(st.integers(1, 12)),
    vendors=st.frozensets(st.integers(1, 3000), max_size=60),
    vendors_li=st.frozensets(st.integers(1, 3000), max_size=60),
    use_ranges=st.booleans(),
    cmp_id=st.integers(0, 4095),
)
@settings(max_examples=150)
def test_tc_round_trip_property(
    purposes: frozenset[int],
    specials: frozenset[int],
    vendors: frozenset[int],
    vendors_li: frozenset[int],
    use_ranges: bool,
    cmp_id: int,
) -> None:
    core = Core(
        purposes=purposes,
        special_features=specials,
        vendors=vendors,
        vendors_li=vendors_li,
        use_ranges=use_ranges,
        cmp_id=cmp_id,
    )
    tc = decode_tc_string(core.encode())
    assert tc is not None
    assert (tc.purposes_consent, tc.special_feature_optins) == (purposes, specials)
    assert (tc.vendor_consents, tc.vendor_li, tc.cmp_id) == (vendors, vendors_li, cmp_id)
