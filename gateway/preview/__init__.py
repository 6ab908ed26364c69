"""Preview: watch a traced hit from the browser's request to each platform's answer.

`traces` holds the sessions and the traces, `mask` what a trace may show, `pages` the admin
API, the page and the `/preview/<id>` link.
"""

from gateway.preview.traces import COOKIE, HEADER, HitTrace, Preview, Session

__all__ = ["COOKIE", "HEADER", "HitTrace", "Preview", "Session"]
