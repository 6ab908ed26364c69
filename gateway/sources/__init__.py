"""Source types by their name under `sources:`. Adding a tag: one module, one line here.

The face of this package, all that code outside it may import: this registry (`TYPES`, and the
source classes, whose declared data, `user_keys`, `personal_params`, is read through them),
`gateway.sources.base` (what every source is: `Hit`, `Parsed`, `Outcome`, `Source`), and the
parsing helpers every reader of a hit shares, `gateway.sources.coerce` and
`gateway.sources.forms`. A source module (`meta_pixel`, `ga4`, ...) is private to it, as are
its siblings to each other; `server` is the server API's parser, which the ingest stage reaches
through `gateway.sources.server` (its handler's only way in).
"""

from __future__ import annotations

from typing import Final

from gateway.sources.base import Source
from gateway.sources.ga4 import Ga4
from gateway.sources.meta_pixel import MetaPixel
from gateway.sources.server import ServerSource
from gateway.sources.tiktok_pixel import TikTokPixel

__all__ = ["TYPES", "Ga4", "MetaPixel", "ServerSource", "Source", "TikTokPixel"]

TYPES: Final[dict[str, type[Source] | type[ServerSource]]] = {
    cls.name: cls for cls in (MetaPixel, Ga4, TikTokPixel, ServerSource)
}
