"""Consent: decode the signals a hit carries and resolve them into the four purposes.

Pure functions, no I/O and no logging: what is worth a log line (a gcd anomaly, why a TC string
is invalid) is returned for the caller to log. Section numbers refer to `docs/consent.md`.

- `gcm`: Google Consent Mode, the `gcs` and `gcd` parameters (§2).
- `tcf`: the IAB TCF v2 TC string, decoded bit by bit, and its purpose mapping (§3).
- `precedence`: `resolve`, which signal decides each purpose (§7).
- `strip`: `limited`, the event without identifiers for `on_denied: limited` (§7).
"""

from gateway.rules.consent.gcm import GcdResult, decode_gcd, decode_gcs
from gateway.rules.consent.precedence import Basis, resolve
from gateway.rules.consent.strip import limited
from gateway.rules.consent.tcf import TCString, decode_tc_string

__all__ = [
    "Basis",
    "GcdResult",
    "TCString",
    "decode_gcd",
    "decode_gcs",
    "decode_tc_string",
    "limited",
    "resolve",
]
