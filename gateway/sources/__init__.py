"""Source types by their name under `sources:`. Adding a platform: one module, one line here."""

from __future__ import annotations

from typing import Final

from gateway.sources.base import Source
from gateway.sources.meta_pixel import MetaPixel

TYPES: Final[dict[str, type[Source]]] = {cls.name: cls for cls in (MetaPixel,)}
