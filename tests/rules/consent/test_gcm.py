"""Google Consent Mode signals: gcs and gcd (docs/consent.md §2)."""

from __future__ import annotations

import pytest

from gateway.event import PURPOSES, ConsentState
from gateway.rules.consent.gcm import GCD_ALPHABET, decode_gcd, decode_gcs

G = ConsentState.GRANTED
D = ConsentState.DENIED


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
