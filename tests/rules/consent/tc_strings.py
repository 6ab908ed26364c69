"""A small TC string encoder, so tests can build the strings docs/consent.md §3 describes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

# The spec's worked example (docs/consent.md §3.2).
GOLDEN_TC = "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA"
GOOGLE = 755  # Google Advertising Products in the GVL


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


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
        return "".join(B64URL[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


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
