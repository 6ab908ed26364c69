"""Consent: decode the signals a hit carries and resolve them into the four purposes.

Pure functions, no I/O and no logging: what is worth a log line (a gcd anomaly, why a TC string
is invalid) is returned for the caller to log. Section numbers refer to `docs/consent.md`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Final
from urllib.parse import unquote_plus

from gateway.event import HASHED_USER_FIELDS, PURPOSES, Consent, ConsentState, Event

GRANTED: Final = ConsentState.GRANTED
DENIED: Final = ConsentState.DENIED

AD_PURPOSES: Final = ("ad_storage", "ad_user_data", "ad_personalization")
"""The purposes GPC and a missing TC string deny; `analytics_storage` is never among them."""


class Basis(StrEnum):
    """Which level of the precedence table (§7) decided a purpose; stored in `Consent.basis`."""

    SERVER = "server"
    GCD = "gcd"
    GCS = "gcs"
    NPA = "npa"
    TCF = "tcf"
    DEFAULT = "default"
    GPC = "gpc"


# --- Google Consent Mode: gcs (§2.1) -----------------------------------------------------------

_GCS_PURPOSES: Final = (("ad_storage", 2), ("analytics_storage", 3))
_GCS_DIGITS: Final = {"0": DENIED, "1": GRANTED}


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


# --- Google Consent Mode: gcd (§2.2) -----------------------------------------------------------

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
_GCD_STATES: Final = {1: None, 2: DENIED, 3: GRANTED}
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


# --- IAB TCF v2 TC string (§3) -----------------------------------------------------------------

_B64URL: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SIX_BITS: Final = {char: format(v, "06b") for v, char in enumerate(_B64URL)}
_DECISECONDS: Final = 10
# A range entry can name 65,535 vendors in 33 bits: without a ceiling a short hostile string
# would expand into gigabytes of vendor IDs. The GVL has ~1,600 vendors; this is 2 full bitfields.
_MAX_IDS_PER_SEGMENT: Final = 131_072
MIN_POLICY_VERSION: Final = 4
"""Strings with a lower TcfPolicyVersion are invalid since 30 Sep 2023 (§3.2)."""


class SegmentType(IntEnum):
    """The 3-bit type that opens every segment after the core one (§3.1)."""

    CORE = 0
    DISCLOSED_VENDORS = 1
    ALLOWED_VENDORS = 2
    """Deprecated; decoded when present, used for nothing."""
    PUBLISHER_TC = 3


class RestrictionType(IntEnum):
    """A publisher restriction's type (§3.2)."""

    NOT_ALLOWED = 0
    REQUIRE_CONSENT = 1
    REQUIRE_LI = 2
    UNDEFINED = 3


@dataclass(frozen=True, slots=True)
class PublisherRestriction:
    """One publisher restriction: for this purpose, these vendors, this restriction."""

    purpose_id: int
    restriction_type: RestrictionType
    vendors: frozenset[int]


@dataclass(frozen=True, slots=True)
class PublisherTC:
    """The optional PublisherTC segment: the publisher's own purposes (§3.2)."""

    purposes_consent: frozenset[int] = frozenset()
    purposes_li: frozenset[int] = frozenset()
    custom_purposes_consent: frozenset[int] = frozenset()
    custom_purposes_li: frozenset[int] = frozenset()
    num_custom_purposes: int = 0


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TCString:
    """A decoded TC string. Purpose, feature and vendor numbers are 1-based, as the spec has them.

    When `version` is not 2 nothing past it is decoded (the layout is unknown) and the other
    fields keep their defaults.
    """

    version: int
    created: datetime = _EPOCH
    last_updated: datetime = _EPOCH
    cmp_id: int = 0
    cmp_version: int = 0
    consent_screen: int = 0
    consent_language: str = ""
    vendor_list_version: int = 0
    policy_version: int = 0
    is_service_specific: bool = False
    use_non_standard_texts: bool = False
    special_feature_optins: frozenset[int] = frozenset()
    purposes_consent: frozenset[int] = frozenset()
    purposes_li: frozenset[int] = frozenset()
    purpose_one_treatment: bool = False
    publisher_cc: str = ""
    vendor_consents: frozenset[int] = frozenset()
    vendor_li: frozenset[int] = frozenset()
    publisher_restrictions: tuple[PublisherRestriction, ...] = ()
    disclosed_vendors: frozenset[int] | None = None
    """None when the segment is absent (TCF 2.3 makes it mandatory; not enforced, see below)."""
    allowed_vendors: frozenset[int] | None = None
    publisher_tc: PublisherTC | None = None
    validity: str | None = None
    """None when the string is valid; otherwise why not (§3.2), for the log."""

    @property
    def valid(self) -> bool:
        """True when the string passes the validity rules of §3.2."""
        return self.validity is None

    def restricted(self, purpose_id: int, vendor_id: int) -> bool:
        """True when a publisher restriction of type 0 (not allowed) covers this purpose/vendor."""
        return any(
            r.purpose_id == purpose_id
            and r.restriction_type is RestrictionType.NOT_ALLOWED
            and vendor_id in r.vendors
            for r in self.publisher_restrictions
        )

    def vendor_allowed(self, vendor_id: int, purposes: Iterable[int]) -> bool:
        """The consent-based vendor check of §3.3: a valid string, the vendor's consent bit, each
        purpose consented, and no type-0 restriction on it for this vendor.

        Legitimate interest is not considered: the gateway only acts on consent.
        """
        if not self.valid or vendor_id not in self.vendor_consents:
            return False
        return all(
            p in self.purposes_consent and not self.restricted(p, vendor_id) for p in purposes
        )


class _Malformed(ValueError):
    """The text is not a decodable TC string."""


class _Reader:
    """Reads big-endian fields off one base64url segment, bits numbered from the left (§3.1)."""

    __slots__ = ("_bits", "_budget", "_pos")

    def __init__(self, segment: str) -> None:
        # Encoders pad to whole bytes with `=`, which the spec leaves out; accept either.
        segment = segment.rstrip("=")
        if not segment:
            raise _Malformed("empty segment")
        try:
            self._bits = "".join(_SIX_BITS[char] for char in segment)
        except KeyError:
            raise _Malformed("not base64url") from None
        self._pos = 0
        self._budget = _MAX_IDS_PER_SEGMENT

    def take(self, width: int) -> str:
        end = self._pos + width
        if end > len(self._bits):
            raise _Malformed(f"truncated at bit {self._pos}")
        bits = self._bits[self._pos : end]
        self._pos = end
        return bits

    def number(self, width: int) -> int:
        return int(self.take(width), 2)

    def flag(self) -> bool:
        return self.take(1) == "1"

    def letters(self, count: int) -> str:
        # 6 bits a letter, a=0 … z=25; a value past `z` is garbage, shown as `?`.
        values = (self.number(6) for _ in range(count))
        return "".join(chr(ord("A") + v) if v < 26 else "?" for v in values)

    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.number(36) / _DECISECONDS, tz=UTC)

    def _spend(self, count: int) -> None:
        self._budget -= count
        if self._budget < 0:
            raise _Malformed("too many vendor IDs")

    def bitfield(self, width: int) -> frozenset[int]:
        """Bit i set means number i+1."""
        ids = frozenset(i for i, bit in enumerate(self.take(width), start=1) if bit == "1")
        self._spend(len(ids))
        return ids

    def ranges(self) -> frozenset[int]:
        """NumEntries(12), then per entry IsARange(1), StartOrOnlyId(16), EndId(16) if a range."""
        spans: list[tuple[int, int]] = []
        for _ in range(self.number(12)):
            is_range = self.flag()
            start = self.number(16)
            end = self.number(16) if is_range else start
            if start == 0 or end < start:
                raise _Malformed(f"bad vendor range {start}-{end}")
            spans.append((start, end))
        # Merge overlapping spans first, so the budget counts distinct IDs only.
        merged: list[tuple[int, int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        self._spend(sum(end - start + 1 for start, end in merged))
        return frozenset(v for start, end in merged for v in range(start, end + 1))

    def vendors(self) -> frozenset[int]:
        """A vendor section: MaxVendorId(16), IsRangeEncoding(1), then a bitfield or ranges."""
        max_vendor_id = self.number(16)
        return self.ranges() if self.flag() else self.bitfield(max_vendor_id)


def _validity(tc: TCString) -> str | None:
    reasons = []
    if tc.version != 2:
        hint = " (a GPP string; not decoded here)" if tc.version == 3 else ""
        return f"version {tc.version}, not 2{hint}"
    if not tc.is_service_specific:
        reasons.append("IsServiceSpecific is 0 (global scope is invalid since 1 Sep 2021)")
    if tc.policy_version < MIN_POLICY_VERSION:
        reasons.append(f"TcfPolicyVersion {tc.policy_version} < {MIN_POLICY_VERSION}")
    if 1 in tc.purposes_li:
        reasons.append("purpose 1 under legitimate interest (it is consent-only)")
    return "; ".join(reasons) or None


def _decode_core(segment: str) -> TCString:
    r = _Reader(segment)
    version = r.number(6)
    # Field order and widths: the core segment table of §3.2.
    created = r.timestamp()
    last_updated = r.timestamp()
    cmp_id = r.number(12)
    cmp_version = r.number(12)
    consent_screen = r.number(6)
    consent_language = r.letters(2)
    vendor_list_version = r.number(12)
    policy_version = r.number(6)
    is_service_specific = r.flag()
    use_non_standard_texts = r.flag()
    special_feature_optins = r.bitfield(12)
    purposes_consent = r.bitfield(24)
    purposes_li = r.bitfield(24)
    purpose_one_treatment = r.flag()
    publisher_cc = r.letters(2)
    vendor_consents = r.vendors()
    vendor_li = r.vendors()
    restrictions = []
    for _ in range(r.number(12)):  # NumPubRestrictions: present even when 0
        purpose_id = r.number(6)
        restriction_type = RestrictionType(r.number(2))
        restrictions.append(PublisherRestriction(purpose_id, restriction_type, r.ranges()))
    return TCString(
        version=version,
        created=created,
        last_updated=last_updated,
        cmp_id=cmp_id,
        cmp_version=cmp_version,
        consent_screen=consent_screen,
        consent_language=consent_language,
        vendor_list_version=vendor_list_version,
        policy_version=policy_version,
        is_service_specific=is_service_specific,
        use_non_standard_texts=use_non_standard_texts,
        special_feature_optins=special_feature_optins,
        purposes_consent=purposes_consent,
        purposes_li=purposes_li,
        purpose_one_treatment=purpose_one_treatment,
        publisher_cc=publisher_cc,
        vendor_consents=vendor_consents,
        vendor_li=vendor_li,
        publisher_restrictions=tuple(restrictions),
    )


def _decode_publisher_tc(r: _Reader) -> PublisherTC:
    purposes_consent = r.bitfield(24)
    purposes_li = r.bitfield(24)
    num_custom = r.number(6)
    return PublisherTC(
        purposes_consent=purposes_consent,
        purposes_li=purposes_li,
        custom_purposes_consent=r.bitfield(num_custom),
        custom_purposes_li=r.bitfield(num_custom),
        num_custom_purposes=num_custom,
    )


def _decode(text: str) -> TCString:
    # The first character is the version. Anything but 2 has another layout (v1 strings start
    # with `B`, GPP strings with `D` and hold `~`), so nothing past it is read.
    version = _B64URL.find(text[0])
    if version < 0:
        raise _Malformed("not base64url")
    if version != 2:
        tc = TCString(version=version)
        return replace(tc, validity=_validity(tc))
    core_segment, *others = text.split(".")
    tc = _decode_core(core_segment)
    seen: set[SegmentType] = set()
    disclosed: frozenset[int] | None = None
    allowed: frozenset[int] | None = None
    publisher_tc: PublisherTC | None = None
    for segment in others:
        r = _Reader(segment)
        kind = r.number(3)
        if kind not in (1, 2, 3):
            # 0 (a second core) cannot follow the core; 4-7 are not defined. Skip, don't guess.
            continue
        segment_type = SegmentType(kind)
        if segment_type in seen:
            raise _Malformed(f"segment type {kind} appears twice")
        seen.add(segment_type)
        if segment_type is SegmentType.DISCLOSED_VENDORS:
            disclosed = r.vendors()
        elif segment_type is SegmentType.ALLOWED_VENDORS:
            allowed = r.vendors()
        else:
            publisher_tc = _decode_publisher_tc(r)
    tc = replace(
        tc, disclosed_vendors=disclosed, allowed_vendors=allowed, publisher_tc=publisher_tc
    )
    return replace(tc, validity=_validity(tc))


def decode_tc_string(text: str | None) -> TCString | None:
    """Decode a TC string (§3); None when it is missing or not decodable at all. Never raises.

    A decodable string that breaks a validity rule comes back with `validity` saying why; both
    cases count as no TCF signal.
    """
    if not text:
        return None
    try:
        return _decode(text)
    except _Malformed:
        return None


def tcf_states(tc: TCString) -> dict[str, ConsentState | None]:
    """Level 3 of §7 for a valid string: a purpose is granted only when every listed TCF purpose
    is consented, else denied. `analytics_storage` has no mapping and stays None.

    With PurposeOneTreatment set, purpose 1 was not disclosed at all (the publisher's country
    does not ask for it), so its bit is neither a grant nor a refusal: `ad_storage` stays None
    and `ad_user_data` rests on purpose 7 alone. (Decision; the spec is silent.)
    """
    consented = tc.purposes_consent

    def all_of(*purposes: int) -> ConsentState:
        return GRANTED if all(p in consented for p in purposes) else DENIED

    if tc.purpose_one_treatment:
        ad_storage, ad_user_data = None, all_of(7)
    else:
        ad_storage, ad_user_data = all_of(1), all_of(1, 7)
    return {
        "ad_storage": ad_storage,
        "analytics_storage": None,
        "ad_user_data": ad_user_data,
        "ad_personalization": all_of(3, 4),
    }


# --- Precedence (§7) --------------------------------------------------------------

_EXPLICIT_VALUES: Final = {"granted": GRANTED, "denied": DENIED}


def _explicit_state(explicit: Mapping[str, str] | None, purpose: str) -> ConsentState | None:
    if not explicit:
        return None
    value = explicit.get(purpose)
    # Measurement Protocol spells them GRANTED / DENIED; accept either case.
    return _EXPLICIT_VALUES.get(value.lower()) if isinstance(value, str) else None


def resolve(
    explicit: Mapping[str, str] | None,
    signals: Mapping[str, str],
    *,
    default: ConsentState | str,
    honor_gpc: bool,
    use_tcf: bool,
) -> Consent:
    """Resolve the four purposes by the precedence table of §7.

    Each purpose separately: the first level that says something decides it and "not set" falls
    through. `explicit` is a server event's `consent` (purpose to `granted`/`denied`); `signals`
    holds a hit's raw `gcs`, `gcd`, `npa`, `dma`, `gdpr`, `gdpr_consent` and `gpc` (`"1"` when
    `Sec-GPC: 1` came). `basis` records the deciding level of each purpose.
    """
    states: dict[str, ConsentState] = {}
    basis: dict[str, str] = {}

    def decide(purpose: str, state: ConsentState | None, level: Basis) -> None:
        if state is not None and purpose not in states:
            states[purpose] = state
            basis[purpose] = level.value

    # Level 1: the server event's own consent object.
    for purpose in PURPOSES:
        decide(purpose, _explicit_state(explicit, purpose), Basis.SERVER)

    # Level 2a: gcd, the update state over the default state.
    gcd = decode_gcd(signals.get("gcd"))
    for purpose in PURPOSES:
        decide(purpose, gcd.state(purpose), Basis.GCD)

    # Level 2b: gcs, only where gcd said nothing.
    gcs = decode_gcs(signals.get("gcs"))
    for purpose, state in gcs.items():
        decide(purpose, state, Basis.GCS)

    # Level 2c: npa=1 means non-personalised ads; and (recommendation) a v1 setup that only set
    # ad_storage has ad_user_data derived from it, as Google does (§2). The inherited value is
    # what the gcd/gcs signals said of ad_storage, and its basis names that signal.
    if signals.get("npa") == "1":
        decide("ad_personalization", DENIED, Basis.NPA)
    if (inherited := gcd.state("ad_storage")) is not None:
        decide("ad_user_data", inherited, Basis.GCD)
    elif (inherited := gcs["ad_storage"]) is not None:
        decide("ad_user_data", inherited, Basis.GCS)

    # Level 3: the TC string, only when configured and gdpr=1 (gdpr_consent counts only then).
    if use_tcf and signals.get("gdpr") == "1":
        tc_text = signals.get("gdpr_consent")
        if not tc_text:
            # (recommendation) GDPR applies and the CMP gave nothing: no consent to rely on.
            for purpose in AD_PURPOSES:
                decide(purpose, DENIED, Basis.TCF)
        elif (tc := decode_tc_string(tc_text)) is not None and tc.valid:
            for purpose, state in tcf_states(tc).items():
                decide(purpose, state, Basis.TCF)
        # An undecodable or invalid string counts as no TCF signal: the level is skipped.

    # Level 4: the configured default.
    fallback = ConsentState(default)
    for purpose in PURPOSES:
        decide(purpose, fallback, Basis.DEFAULT)

    # Override: GPC is a binding opt-out, not a preference, so it beats even an explicit grant
    # (docs/consent.md §4). analytics_storage is untouched.
    if honor_gpc and signals.get("gpc") == "1":
        for purpose in AD_PURPOSES:
            states[purpose] = DENIED
            basis[purpose] = Basis.GPC.value

    return Consent(
        ad_storage=states["ad_storage"],
        analytics_storage=states["analytics_storage"],
        ad_user_data=states["ad_user_data"],
        ad_personalization=states["ad_personalization"],
        basis=basis,
    )


# --- on_denied: limited (docs/consent.md §7) ------------------------------------------------------

# Every field hashed before storage counts as an identifier, address fields included: the
# contract strips "hashed personal data", and city + zip + date of birth narrow a person down.
STRIPPED_USER_FIELDS: Final = (
    *HASHED_USER_FIELDS,
    "fbp",
    "fbc",
    "ttp",
    "ttclid",
    "gclid",
    "ga_client_id",
    "epik",
    "rdt_uuid",
    "sccid",
    "scid",
)
"""User fields `limited` clears. `user_agent` stays and `client_ip` is truncated."""

CLICK_ID_PARAMS: Final = frozenset(
    {
        "gclid",
        "gbraid",
        "wbraid",
        "dclid",
        "fbclid",
        "ttclid",
        "msclkid",
        "_gl",
        "epik",
        "rdt_cid",
        "sccid",
    }
)
"""URL parameters `limited` removes from `event_source_url` and `referrer`: click IDs (and `_gl`,
Google's cross-domain linker, which carries the client ID and gclid) would otherwise travel on
inside the page URL."""

_IPV4_PREFIX: Final = 24
_IPV6_PREFIX: Final = 48


def truncate_ip(ip: str | None) -> str | None:
    """IPv4 to its /24, IPv6 to its /48 (docs/consent.md §7); None when it is not an address.

    An IPv4-mapped IPv6 address is treated as the IPv4 address it carries.
    """
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        mask = ((1 << _IPV4_PREFIX) - 1) << (32 - _IPV4_PREFIX)
        return str(ipaddress.IPv4Address(int(address) & mask))
    mask = ((1 << _IPV6_PREFIX) - 1) << (128 - _IPV6_PREFIX)
    return str(ipaddress.IPv6Address(int(address) & mask))  # drops any %zone too


def strip_click_ids(url: str | None) -> str | None:
    """The URL without click-ID query parameters; otherwise unchanged, byte for byte."""
    if not url or "?" not in url:
        return url
    base, _, rest = url.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    params = query.split("&")
    kept = [p for p in params if unquote_plus(p.partition("=")[0]).lower() not in CLICK_ID_PARAMS]
    if len(kept) == len(params):
        return url
    return base + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment


def limited(event: Event) -> Event:
    """The event stripped of identifiers, for `on_denied: limited` (docs/consent.md §7).

    Cleared: hashed personal data (address fields included), external_id, fbp/fbc/ttp and click
    IDs, and the raw hit (a `forward` destination would resend every identifier in it).
    Truncated: the client IP. Kept: the user agent and the business data.
    """
    user = replace(
        event.user,
        **dict.fromkeys(STRIPPED_USER_FIELDS),
        client_ip=truncate_ip(event.user.client_ip),
    )
    return replace(
        event,
        user=user,
        event_source_url=strip_click_ids(event.event_source_url),
        referrer=strip_click_ids(event.referrer),
        raw=None,
    )
