"""`tag-gateway healthcheck`, the image's HEALTHCHECK: it asks the port the config listens on."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

from tests.conftest import start_serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _healthcheck(*args: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "healthcheck", *args
    )
    return await asyncio.wait_for(proc.wait(), 60)


async def test_healthcheck_follows_the_configured_port(tmp_path: Path) -> None:
    port = _free_port()
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"listen: {{host: 0.0.0.0, port: {port}}}\n"
        f"storage: {{path: {tmp_path / 'gw.sqlite3'}}}\n"
        "destinations: {dry_run: {type: dry_run}}\nsources: {meta_pixel: {send_to: [dry_run]}}\n"
    )
    # Control: nothing listens yet, so the check fails.
    assert await _healthcheck("--config", str(cfg)) == 1
    proc = await start_serve(cfg, tmp_path / "gateway.log", port)
    try:
        assert await _healthcheck("--config", str(cfg)) == 0
        # The embedded default listens on 8080, not on this port: the config decides.
        other = _free_port()
        assert await _healthcheck("--config", str(cfg), "--port", str(other)) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
