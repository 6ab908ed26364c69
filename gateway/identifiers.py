"""First-party identifiers: what a vendor declares about each ID it matches on.

A destination lists its vendor's identifiers (`Destination.identifiers`); the registry in
`gateway.destinations` collects them, and the shared machinery reads only that: the canonical
event carries their values in `User.ids`, the server API takes them as `user.<field>`, the
first-party cookie plan (`gateway.cookies`) reads, mints and renews their cookies, `limited`
strips them and their click parameters, a preview shows their cookies. No module outside the
vendor's own names one of them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

OPAQUE: Final = re.compile(r"[A-Za-z0-9._~+/=-]{1,1024}")
"""The shape of a cookie passed on but never set (`_epik`): opaque, base64-like."""

Minter = Callable[[random.Random, int, int], str]
"""A new value from (the random source, the cookie domain's subdomain index, now in ms)."""
FromClick = Callable[[str, int, int], str]
"""A cookie value made from a click ID (the click ID, subdomain index, now in ms)."""


@dataclass(frozen=True, slots=True)
class Identifier:
    """One vendor ID: its canonical name, where the browser keeps it, and what the gateway does
    with it."""

    field: str
    """Its name in the canonical event (`user.ids`, the server API's `user.<field>`)."""
    cookie: str | None = None
    """The browser cookie that holds it, if any (a preview trace shows it)."""
    shape: re.Pattern[str] | None = None
    """What a value must look like to count (the whole value); with `cookie`, the cookie plan
    reads the cookie on every browser hit. None: the plan leaves the cookie alone (the vendor's
    own source reads it, or no one)."""
    sets: bool = False
    """The gateway sets the cookie on pixel answers; False: it passes on what the browser has,
    never a `Set-Cookie` (the vendor documents no server-set cookie)."""
    refresh: bool = False
    """A kept value is set again with a new lifetime on every hit (`_fbp`); False: a kept
    cookie counts from when it was made (a click's)."""
    mint: Minter | None = None
    """How the gateway makes a new value when the hit carries none; None: it never invents one."""
    click_param: str | None = None
    """The landing URL's parameter whose click ID a new cookie is made from (`fbclid`)."""
    click_shape: re.Pattern[str] | None = None
    """What the click ID must look like (a changed click ID is a different click ID)."""
    from_click: FromClick | None = None
    """The cookie value for a click (`fb.<index>.<ms>.<fbclid>`); None: the click ID itself."""
    click_of: Callable[[str], str | None] | None = None
    """The click ID a cookie value holds, to tell whether the URL's is a new click; None: the
    value itself."""
    limited_keeps: bool = False
    """`on_denied: limited` keeps it; by default a limited event goes without it."""

    def valid(self, value: str | None) -> bool:
        """True for a value of the declared shape."""
        return value is not None and self.shape is not None and bool(self.shape.fullmatch(value))
