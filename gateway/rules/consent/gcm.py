"""Google Consent Mode: the `gcs` and `gcd` parameters of a Google tag's hit (docs/consent.md §2).

Pure decoding, no I/O: a `gcd` that does not fit the known format comes back with the reason in
`GcdResult.anomalies`, for the caller to log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.event import PURPOSES, ConsentState

# --- gcs (§2.1) --------------------------------------------------------------------------------

_GCS_PURPOSES: Final = (("ad_storage", 2), ("analytics_storage", 3))
_GCS_DIGITS: Final = {"0": ConsentState.DENIED, "1": ConsentState.GRANTED}


def decode_gcs(value: str | None) -> dict[str, ConsentState | None]:
    """`ad_storage` and `analytics_storage` from a `G1xy` value; None where it says nothing.

    Missing or empty means no default was set before the tag fired; anything but `0`/`1` in a
    position (`G1--`) or a value not shaped `G1xy` says nothing either (§2.1).
    """
    states: dict[str, ConsentState | None] = dict.fromkeys(p for p, _ in _GCS_PURPOSES)
    if value is None or len(value) != 4 or not value.startswith("G1"):
        return states
    for purpose, index in _GCS_PURPOSES:
        # Index 2 is ad_storage, index 3 analytics_storage. stape-io/facebook-tag#65 had them
        # the other way round; every other source, Stape's own TikTok tag included, agrees here.
        states[purpose] = _GCS_DIGITS.get(value[index])
    return states


# --- gcd (§2.2) --------------------------------------------------------------------------------

GCD_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
_GCD_VALUES: Final = {letter: v for v, letter in enumerate(GCD_ALPHABET)}
# String index of each purpose's state letter; the characters between them are prefixes whose
# meaning is undocumented, so nothing here reads them.
_GCD_SLOTS: Final = (
    ("ad_storage", 2),
    ("analytics_storage", 4),
    ("ad_user_data", 6),
    ("ad_personalization", 8),
)
# Two-bit state: 1 not set, 2 denied, 3 granted. 0 was never observed and reads as not set.
_GCD_STATES: Final = {1: None, 2: ConsentState.DENIED, 3: ConsentState.GRANTED}
_GCD_OBSERVED_BIT: Final = 16
_GCD_INFERRED_BIT: Final = 32


@dataclass(frozen=True, slots=True)
class GcdSlot:
    """One purpose's letter in a `gcd` value, decoded."""

    letter: str = ""
    default: ConsentState | None = None
    update: ConsentState | None = None
    inferred: bool = False
    """Bit 5 (the uppercase letters): undocumented; seen only on `ad_user_data`, where it fits
    "not set explicitly, inherited from `ad_storage`". Kept, never acted on."""

    @property
    def state(self) -> ConsentState | None:
        """The effective state: the update if set, else the default if set, else None."""
        return self.update if self.update is not None else self.default


_NOT_SET: Final = GcdSlot()


@dataclass(frozen=True, slots=True)
class GcdResult:
    """A decoded `gcd` value. Every slot is not set when the value is missing or garbage."""

    ad_storage: GcdSlot = _NOT_SET
    analytics_storage: GcdSlot = _NOT_SET
    ad_user_data: GcdSlot = _NOT_SET
    ad_personalization: GcdSlot = _NOT_SET
    suffix: str = ""
    """Whatever follows the closing digit (`l1`): meaning unverified, worth a log field only."""
    anomalies: tuple[str, ...] = ()
    """What did not fit the known format (for the log); the slots concerned read as not set."""

    def slot(self, purpose: str) -> GcdSlot:
        """The decoded letter of one purpose."""
        slot: GcdSlot = getattr(self, purpose)
        return slot

    def state(self, purpose: str) -> ConsentState | None:
        """The effective state of one purpose."""
        return self.slot(purpose).state

    def states(self) -> dict[str, ConsentState | None]:
        """The effective state of all four purposes."""
        return {purpose: self.state(purpose) for purpose in PURPOSES}


def _decode_gcd_letter(purpose: str, letter: str) -> tuple[GcdSlot, str | None]:
    v = _GCD_VALUES.get(letter)
    if v is None:
        return GcdSlot(letter=letter), f"{purpose}: {letter!r} is not in the gcd alphabet"
    if not v & _GCD_OBSERVED_BIT:
        # Every observed letter has bit 4. Without it the string is probably shifted (a prefix
        # digit such as `3` in a letter slot would otherwise read as "granted by update").
        return GcdSlot(letter=letter), f"{purpose}: {letter!r} lacks bit 4"
    default_bits, update_bits = (v >> 2) & 3, v & 3
    problem = None
    if default_bits == 0 or update_bits == 0:
        problem = f"{purpose}: {letter!r} has a zero state (read as not set)"
    slot = GcdSlot(
        letter=letter,
        default=_GCD_STATES.get(default_bits),
        update=_GCD_STATES.get(update_bits),
        inferred=bool(v & _GCD_INFERRED_BIT),
    )
    return slot, problem


def decode_gcd(value: str | None) -> GcdResult:
    """Decode a `gcd` value (`13r3r3r3r5l1`) exactly as §2.2 says. Never raises.

    Index 0 must be the version marker `1` and indexes 2, 4, 6, 8 hold the letters of
    `ad_storage`, `analytics_storage`, `ad_user_data`, `ad_personalization`; anything else reads
    as not set, with the reason in `anomalies`.
    """
    if not value:
        return GcdResult()
    if len(value) < 9:
        return GcdResult(anomalies=(f"too short ({len(value)} characters)",))
    if value[0] != "1":
        # An unknown version may lay its letters out differently: guessing could grant.
        return GcdResult(anomalies=(f"unknown version marker {value[0]!r}",))
    slots: list[GcdSlot] = []
    anomalies: list[str] = []
    for purpose, index in _GCD_SLOTS:
        slot, problem = _decode_gcd_letter(purpose, value[index])
        slots.append(slot)
        if problem:
            anomalies.append(problem)
    ad_storage, analytics_storage, ad_user_data, ad_personalization = slots
    return GcdResult(
        ad_storage=ad_storage,
        analytics_storage=analytics_storage,
        ad_user_data=ad_user_data,
        ad_personalization=ad_personalization,
        suffix=value[10:],
        anomalies=tuple(anomalies),
    )
