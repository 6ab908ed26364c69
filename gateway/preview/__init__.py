"""Preview: watch a traced hit from the browser's request to each platform's answer.

`traces` holds the sessions (`Preview`) and routes rows and attempts to their traces,
`session` one session's traces, `hits` the trace of one hit, `shown` and `mask` what a trace
may show, `pages` the admin API, the page and the `/preview/<id>` link.
"""

from gateway.preview.traces import COOKIE, HEADER, HitTrace, Preview, Session

__all__ = ["COOKIE", "HEADER", "HitTrace", "Preview", "Session"]
