"""IAB TCF v2: a bit-level TC string decoder and its purpose mapping (docs/consent.md §3).

Never raises on input: an undecodable string is None and an invalid one says why in
`TCString.validity`, for the caller to log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import IntEnum
from typing import Final

from gateway.event import ConsentState

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
        return (
            ConsentState.GRANTED if all(p in consented for p in purposes) else ConsentState.DENIED
        )

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
