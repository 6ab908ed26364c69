"""Source types by their name under `sources:`. Adding a platform: one module, one line here."""

from __future__ import annotations

from typing import Final

from gateway.sources.base import Source
from gateway.sources.ga4 import Ga4
from gateway.sources.meta_pixel import MetaPixel
from gateway.sources.server import ServerSource
from gateway.sources.tiktok_pixel import TikTokPixel

TYPES: Final[dict[str, type[Source] | type[ServerSource]]] = {
    cls.name: cls for cls in (MetaPixel, Ga4, TikTokPixel, ServerSource)
}
