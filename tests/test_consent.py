"""Consent signals and their precedence (docs/consent.md §2, §3, §7)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.consent import (
    GCD_ALPHABET,
    STRIPPED_USER_FIELDS,
    Basis,
    RestrictionType,
    TCString,
    decode_gcd,
    decode_gcs,
    decode_tc_string,
    limited,
    resolve,
    strip_click_ids,
    tcf_states,
    truncate_ip,
)
from gateway.event import PURPOSES, Consent, ConsentState, Custom, Event, RawHit, User

G = ConsentState.GRANTED
D = ConsentState.DENIED

# The spec's worked example (docs/consent.md §3.2).
GOLDEN_TC = "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA"
GOOGLE = 755  # Google Advertising Products in the GVL


# --- a small TC string encoder, so tests can build strings the spec describes ------------------

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class BitWriter:
    """Big-endian fields, bits numbered from the left, base64url without padding (§3.1)."""

    def __init__(self) -> None:
        self.bits: list[str] = []

    def number(self, value: int, width: int) -> BitWriter:
        assert 0 <= value < 1 << width
        self.bits.append(format(value, f"0{width}b"))
        return self

    def flag(self, value: bool) -> BitWriter:
        return self.number(int(value), 1)

    def letters(self, text: str) -> BitWriter:
        for char in text:
            self.number(ord(char.upper()) - ord("A"), 6)
        return self

    def timestamp(self, when: datetime) -> BitWriter:
        return self.number(round(when.timestamp() * 10), 36)

    def bitfield(self, ids: Iterable[int], width: int) -> BitWriter:
        chosen = set(ids)
        assert all(1 <= i <= width for i in chosen)
        self.bits.append("".join("1" if i in chosen else "0" for i in range(1, width + 1)))
        return self

    def ranges(self, spans: Iterable[tuple[int, int]]) -> BitWriter:
        spans = list(spans)
        self.number(len(spans), 12)
        for start, end in spans:
            self.flag(start != end).number(start, 16)
            if start != end:
                self.number(end, 16)
        return self

    def vendors(self, ids: Iterable[int], use_ranges: bool) -> BitWriter:
        chosen = sorted(set(ids))
        self.number(max(chosen, default=0), 16).flag(use_ranges)
        if use_ranges:
            return self.ranges(_spans(chosen))
        return self.bitfield(chosen, max(chosen, default=0))

    def encode(self) -> str:
        bits = "".join(self.bits)
        bits += "0" * (-len(bits) % 8)  # encoders pad to whole bytes, then drop the `=`
        bits += "0" * (-len(bits) % 6)
        return "".join(_B64URL[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def _spans(ids: list[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for i in ids:
        if spans and i == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], i)
        else:
            spans.append((i, i))
    return spans


DAY = datetime(2025, 6, 3, tzinfo=UTC)


@dataclass
class Core:
    """Core segment fields, defaulting to a valid TCF 2.2 string."""

    version: int = 2
    created: datetime = DAY
    last_updated: datetime = DAY
    cmp_id: int = 300
    cmp_version: int = 7
    consent_screen: int = 1
    consent_language: str = "DE"
    vendor_list_version: int = 178
    policy_version: int = 5
    is_service_specific: bool = True
    use_non_standard_texts: bool = False
    special_features: frozenset[int] = frozenset()
    purposes: frozenset[int] = frozenset()
    purposes_li: frozenset[int] = frozenset()
    purpose_one_treatment: bool = False
    publisher_cc: str = "DE"
    vendors: frozenset[int] = frozenset()
    vendors_li: frozenset[int] = frozenset()
    use_ranges: bool = False
    restrictions: list[tuple[int, int, list[tuple[int, int]]]] = field(default_factory=list)

    def encode(self) -> str:
        w = BitWriter().number(self.version, 6).timestamp(self.created)
        w.timestamp(self.last_updated).number(self.cmp_id, 12).number(self.cmp_version, 12)
        w.number(self.consent_screen, 6).letters(self.consent_language)
        w.number(self.vendor_list_version, 12).number(self.policy_version, 6)
        w.flag(self.is_service_specific).flag(self.use_non_standard_texts)
        w.bitfield(self.special_features, 12).bitfield(self.purposes, 24)
        w.bitfield(self.purposes_li, 24).flag(self.purpose_one_treatment)
        w.letters(self.publisher_cc)
        w.vendors(self.vendors, self.use_ranges).vendors(self.vendors_li, self.use_ranges)
        w.number(len(self.restrictions), 12)
        for purpose_id, restriction_type, spans in self.restrictions:
            w.number(purpose_id, 6).number(restriction_type, 2).ranges(spans)
        return w.encode()


def disclosed(ids: Iterable[int], use_ranges: bool = True) -> str:
    return BitWriter().number(1, 3).vendors(ids, use_ranges).encode()


def publisher_tc(consent: Iterable[int], li: Iterable[int], custom: tuple[int, int]) -> str:
    n, bits = custom
    w = BitWriter().number(3, 3).bitfield(consent, 24).bitfield(li, 24).number(n, 6)
    return (
        w.bitfield((i for i in range(1, n + 1) if bits >> (i - 1) & 1), n).bitfield((), n).encode()
    )


# A valid TCF 2.2 string: purposes 1, 3, 4, 7 consented, Google (755) among the vendors.
OURS = Core(purposes=frozenset({1, 3, 4, 7}), vendors=frozenset({1, 2, GOOGLE}), use_ranges=True)
OURS_TC = OURS.encode() + "." + disclosed({1, 2, 3, GOOGLE})


# --- gcs (§2.1) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gcs", "ad_storage", "analytics_storage"),
    [("G100", D, D), ("G101", D, G), ("G110", G, D), ("G111", G, G)],
)
def test_gcs_positions(gcs: str, ad_storage: ConsentState, analytics_storage: ConsentState) -> None:
    assert decode_gcs(gcs) == {"ad_storage": ad_storage, "analytics_storage": analytics_storage}


@pytest.mark.parametrize(
    "gcs", [None, "", "G1", "G1--", "G10", "G1000", "G200", "g111", "X111", "G1x?"]
)
def test_gcs_garbage_says_nothing(gcs: str | None) -> None:
    assert decode_gcs(gcs) == {"ad_storage": None, "analytics_storage": None}


def test_gcs_one_unknown_position_keeps_the_other() -> None:
    assert decode_gcs("G1-1") == {"ad_storage": None, "analytics_storage": G}


# --- gcd (§2.2) --------------------------------------------------------------------------------

GCD_TABLE = [
    # letter, v, default, update, effective, inferred
    ("l", 21, None, None, None, False),
    ("m", 22, None, D, D, False),
    ("n", 23, None, G, G, False),
    ("p", 25, D, None, D, False),
    ("q", 26, D, D, D, False),
    ("r", 27, D, G, G, False),
    ("t", 29, G, None, G, False),
    ("u", 30, G, D, D, False),
    ("v", 31, G, G, G, False),
    ("R", 53, None, None, None, True),
    ("Z", 61, G, None, G, True),
]


@pytest.mark.parametrize(("letter", "v", "default", "update", "effective", "inferred"), GCD_TABLE)
def test_gcd_letter_table(
    letter: str,
    v: int,
    default: ConsentState | None,
    update: ConsentState | None,
    effective: ConsentState | None,
    inferred: bool,
) -> None:
    assert GCD_ALPHABET.index(letter) == v
    result = decode_gcd(f"11{letter}1{letter}1{letter}1{letter}5")
    for purpose in PURPOSES:
        slot = result.slot(purpose)
        assert (slot.letter, slot.default, slot.update) == (letter, default, update)
        assert slot.state is effective
        assert slot.inferred is inferred
    assert result.anomalies == ()


def test_gcd_alphabet_order() -> None:
    assert GCD_ALPHABET[:10] == "0123456789"
    assert GCD_ALPHABET[10:36] == "abcdefghijklmnopqrstuvwxyz"
    assert GCD_ALPHABET[36:62] == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert GCD_ALPHABET[62:] == "-_"


@pytest.mark.parametrize(
    ("gcd", "expected", "inferred_ad_user_data"),
    [
        ("11p1p1p1p5", (D, D, D, D), False),  # all denied by default
        ("13r3r3r3r5l1", (G, G, G, G), False),  # update over a denied default
        ("13t3t3Z2t5l1", (G, G, G, G), True),  # seen with gcs=G111
        ("13l3l3R2l5l1", (None, None, None, None), True),  # nothing set
    ],
)
def test_gcd_worked_examples(
    gcd: str, expected: tuple[ConsentState | None, ...], inferred_ad_user_data: bool
) -> None:
    result = decode_gcd(gcd)
    assert tuple(result.states().values()) == expected
    assert list(result.states()) == list(PURPOSES)
    assert result.ad_user_data.inferred is inferred_ad_user_data
    assert not result.ad_storage.inferred
    assert result.anomalies == ()


def test_gcd_keeps_the_suffix_and_ignores_prefixes() -> None:
    assert decode_gcd("13r3r3r3r5l1").suffix == "l1"
    assert decode_gcd("11p1p1p1p5").suffix == ""
    # A vendor's generator uses `P` as prefix: the letters are what counts.
    assert decode_gcd("1PrPqPnPm5").states() == {
        "ad_storage": G,
        "analytics_storage": D,
        "ad_user_data": G,
        "ad_personalization": D,
    }


@pytest.mark.parametrize(
    "gcd",
    [
        None,
        "",
        "1",
        "11p1p1p1",  # too short
        "21p1p1p1p5",  # unknown version marker
        "1p1p1p1p5",  # shifted: prefix digits land in the letter slots
        "11*1*1*1*5",  # not in the alphabet
        "11313131315",  # `3` lacks bit 4: must not read as "granted by update"
        "1" * 40,
    ],
)
def test_gcd_garbage_is_not_set(gcd: str | None) -> None:
    result = decode_gcd(gcd)
    assert set(result.states().values()) == {None}
    if gcd:
        assert result.anomalies


def test_gcd_zero_state_reads_as_not_set_and_is_reported() -> None:
    # `i` = 18: default bits 0 (never observed), update bits 2 (denied).
    result = decode_gcd("11i1l1l1l5")
    assert (result.ad_storage.default, result.ad_storage.update) == (None, D)
    assert result.state("ad_storage") is D
    assert result.anomalies == ("ad_storage: 'i' has a zero state (read as not set)",)


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


# --- on_denied: limited (docs/consent.md §7) ------------------------------------------------------

FULL_USER = User(
    email="jane@example.com",
    phone="+14155550100",
    first_name="Jane",
    last_name="Doe",
    gender="f",
    date_of_birth="1990-04-01",
    city="San Francisco",
    state="CA",
    zip="94107",
    country="US",
    external_id="cust-42",
    client_ip="203.0.113.7",
    user_agent="Mozilla/5.0 (X11; Linux x86_64)",
    fbp="fb.1.1795000000000.123456789",
    fbc="fb.1.1795000000000.IwAR",
    ttp="ttp-cookie",
    ttclid="ttclid-1",
    gclid="gclid-1",
    ga_client_id="123.456",
)


def make_event(user: User = FULL_USER) -> Event:
    return Event(
        event_id="ord-1",
        event_name="purchase",
        event_time=1795000000,
        source="server",
        user=user,
        custom=Custom(order_id="1001", currency="EUR"),
        event_source_url="https://shop.example/thanks?order=1&gclid=abc&utm_source=x#top",
        referrer="https://shop.example/cart?fbclid=IwAR",
        raw=RawHit("meta", "GET", "/tr", "fbp=fb.1.2.3", b"", None),
    )


def test_limited_strips_identifiers_and_keeps_the_rest() -> None:
    event = make_event()
    out = limited(event)
    for name in STRIPPED_USER_FIELDS:
        assert getattr(out.user, name) is None, name
    assert out.user.user_agent == FULL_USER.user_agent
    assert out.user.client_ip == "203.0.113.0"
    assert out.event_source_url == "https://shop.example/thanks?order=1&utm_source=x#top"
    assert out.referrer == "https://shop.example/cart"
    assert out.raw is None
    assert (out.event_id, out.event_name, out.custom) == (
        event.event_id,
        event.event_name,
        event.custom,
    )
    assert event.user == FULL_USER  # the original is untouched


def test_limited_covers_every_identifier_field() -> None:
    # A new User field must be classified here on purpose: stripped, truncated or kept.
    kept_or_truncated = {"client_ip", "user_agent"}
    names = {f.name for f in fields(User)}
    assert names == set(STRIPPED_USER_FIELDS) | kept_or_truncated


@pytest.mark.parametrize(
    ("ip", "truncated"),
    [
        ("203.0.113.7", "203.0.113.0"),
        ("10.1.2.255", "10.1.2.0"),
        ("2001:db8:abcd:12:3456:789a:bcde:f012", "2001:db8:abcd::"),
        ("2001:0db8:00ab::1", "2001:db8:ab::"),
        ("::ffff:203.0.113.7", "203.0.113.0"),
        ("fe80::1:2:3:4%eth0", "fe80::"),
        ("not-an-ip", None),
        ("", None),
        (None, None),
    ],
)
def test_truncate_ip(ip: str | None, truncated: str | None) -> None:
    assert truncate_ip(ip) == truncated
    out = limited(make_event(User(client_ip=ip)))
    assert out.user.client_ip == truncated


@pytest.mark.parametrize(
    ("url", "stripped"),
    [
        (None, None),
        ("https://shop.example/", "https://shop.example/"),
        ("https://shop.example/?a=1&b=%20", "https://shop.example/?a=1&b=%20"),
        ("https://shop.example/?GCLID=1&a=1", "https://shop.example/?a=1"),
        ("https://shop.example/?_gl=1*abc&wbraid=x", "https://shop.example/"),
        ("https://shop.example/#/p?ttclid=1&q=2", "https://shop.example/#/p?q=2"),
        ("https://shop.example/?msclkid=1#frag", "https://shop.example/#frag"),
    ],
)
def test_strip_click_ids(url: str | None, stripped: str | None) -> None:
    assert strip_click_ids(url) == stripped


# --- never raise on garbage --------------------------------------------------------------------

_SIGNAL_TEXT = st.text(alphabet=_B64URL + ".=~GP0123", max_size=120)


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
