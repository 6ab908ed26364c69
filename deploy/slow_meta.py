"""A slow fake Meta Conversions API for deploy/check-image.sh (standard library only).

`python3 slow_meta.py PORT DELAY_S LOG` serves on 127.0.0.1:PORT. Each POST appends a line
`start` to LOG when it arrives, waits DELAY_S, appends one line `sent ID` per event it
carried and a line `end`, and answers as Meta does. The container reaches it through
slirp4netns' address for the host's loopback.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, DELAY_S, LOG = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
_lock = threading.Lock()


def _append(lines: list[str]) -> None:
    with _lock, open(LOG, "a") as log:
        log.writelines(line + "\n" for line in lines)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        _append(["start"])
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(DELAY_S)
        ids = [event["event_id"] for event in body["data"]]
        _append([*(f"sent {i}" for i in ids), "end"])
        answer = json.dumps({"events_received": len(ids)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
