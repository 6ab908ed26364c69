"""tag-gateway: a first-party server-side tagging gateway."""

__version__ = "0.1.0"
