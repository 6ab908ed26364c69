"""`serve` on a storage folder it cannot write: one clear line and exit 1, not a traceback.

This is what a container with a root-owned or read-only `/data` volume hits first. As root the
child runs without CAP_DAC_OVERRIDE, so the folder's mode bits bind it as they bind uid 10001.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_unwritable_storage_folder_fails_at_start_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"listen: {{host: 127.0.0.1, port: 1}}\nstorage: {{path: {data / 'gw.sqlite3'}}}\n"
        "destinations: {dry_run: {type: dry_run}}\nsources: {meta_pixel: {send_to: [dry_run]}}\n"
    )
    data.chmod(0o555)
    try:
        # Control: the same process really cannot write the folder.
        touch = subprocess.run(
            [*_unprivileged(), "touch", str(data / "probe")], capture_output=True, check=False
        )
        assert touch.returncode != 0, "the folder is writable: the fault did not fire"

        proc = subprocess.run(
            [*_unprivileged(), sys.executable, "-m", "gateway", "serve", "--config", str(cfg)],
            capture_output=True,
            timeout=60,
            check=False,
        )
    finally:
        data.chmod(0o755)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1, proc.stderr.decode()
    assert lines == [
        f"tag-gateway: storage folder {data} is not writable by uid {os.getuid()}"
        " (Permission denied): give that user write access to it (in a container, to /data)"
    ]
    assert not (data / "gw.sqlite3").exists()
