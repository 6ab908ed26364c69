"""The precedence table (docs/consent.md §7): which signal decides each of the four purposes."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from gateway.event import PURPOSES, Consent, ConsentState
from gateway.rules.consent.gcm import decode_gcd, decode_gcs
from gateway.rules.consent.tcf import decode_tc_string, tcf_states

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
