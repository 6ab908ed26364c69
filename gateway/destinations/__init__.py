"""Destination types by their `type:` key. Adding a platform: one module (or folder), one line
in `TYPES` here.

The face of this package, all that code outside it may import: this registry (`TYPES`, and what
it collects from each type's declarations: `IDENTIFIERS`, `VENDOR_IDENTIFIERS`, `CLICK_PARAMS`)
and `gateway.destinations.base` (what every destination is). A destination module (`meta_capi`,
`pinterest_capi`, ...) is private: nothing else imports it, its siblings included; what one
destination needs of another (`forward` a vendor's hashing rules, `dry_run` Meta's user data)
the registry hands over below.
"""

from __future__ import annotations

from typing import Final

from gateway.destinations.base import Destination
from gateway.destinations.dry_run import DryRun
from gateway.destinations.forward import Forward
from gateway.destinations.ga4_mp import Ga4Mp
from gateway.destinations.meta_capi import MetaCapi
from gateway.destinations.pinterest_capi import PinterestCapi
from gateway.destinations.reddit_capi import RedditCapi
from gateway.destinations.snapchat_capi import SnapchatCapi
from gateway.destinations.tiktok_events import TikTokEvents
from gateway.identifiers import Identifier

TYPES: Final[dict[str, type[Destination]]] = {
    cls.type: cls
    for cls in (
        MetaCapi,
        Ga4Mp,
        TikTokEvents,
        PinterestCapi,
        RedditCapi,
        SnapchatCapi,
        Forward,
        DryRun,
    )
}

IDENTIFIERS: Final[dict[str, Identifier]] = {
    i.field: i for cls in TYPES.values() for i in cls.identifiers
}
"""Every vendor's first-party IDs by their canonical field name (`User.ids`, `user.<field>`)."""
VENDOR_IDENTIFIERS: Final[dict[str, tuple[Identifier, ...]]] = {
    cls.vendor: cls.identifiers for cls in TYPES.values() if cls.vendor and cls.identifiers
}
"""The same by vendor, in the registry's order (the order cookies are planned and set in)."""
CLICK_PARAMS: Final = frozenset(p for cls in TYPES.values() for p in cls.click_params)
"""Every platform's click-ID parameters of a landing URL (`limited` removes them)."""

# forward hashes a tag's plain-text value by the rules of that vendor's own destination.
Forward.match_rules_of.update({cls.vendor: cls.match_rules for cls in TYPES.values() if cls.vendor})

# dry_run records a hit in its own vendor's format, or in any type's format by name, and the
# canonical record's user data as Meta's.
DryRun.canonical_user = MetaCapi.user_data
for _cls in TYPES.values():
    DryRun.previews[_cls.type] = _cls.preview
    DryRun.requirements[_cls.type] = _cls.default_requires
    if _cls.vendor:
        DryRun.previews.setdefault(_cls.vendor, _cls.preview)
        DryRun.requirements.setdefault(_cls.vendor, _cls.default_requires)
        if _cls.vendor not in DryRun.vendors:
            DryRun.vendors.append(_cls.vendor)
