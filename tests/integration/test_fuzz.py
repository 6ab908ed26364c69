"""A sample of the fuzzing run (bench/fuzz.py sends 10,000): hostile methods, headers,
encodings and bodies to every endpoint of a real `serve`; every one answered, none a 5xx."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from tests import fuzzing
from tests.conftest import FakePlatform, start_serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_hostile_requests_get_answers_and_never_a_5xx(
    tmp_path: Path, fake_platform: FakePlatform
) -> None:
    port = free_port()
    cfg = tmp_path / "fuzz.yaml"
    cfg.write_text(fuzzing.config_text(port, fake_platform.url, str(tmp_path / "fuzz.sqlite3")))
    log = tmp_path / "gateway.log"
    proc = await start_serve(cfg, log, port, ready="/readyz")
    try:
        result = await fuzzing.run(f"http://127.0.0.1:{port}", fuzzing.generate(18, 400))
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    print("\nfuzz sample:", fuzzing.summary(result))
    assert result.sent == 400
    assert result.server_errors == []
    assert result.unanswered == []
    # Control: the sample reached the handlers, not only aiohttp's own 404 and 405.
    reached = {key for key, n in result.by_route.items() if n}
    assert {("/tr", "200"), ("/g/collect", "204"), ("/v1/events", "401")} <= reached
    assert ("/v1/events", "400") in reached
    text = log.read_text()
    assert "Traceback" not in text
    assert "http.unhandled" not in text
    assert proc.returncode == 0
