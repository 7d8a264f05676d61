"""``kill -9`` of the main process during preprocessing takes every process it started with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux-only")
def test_kill_9_leaves_no_orphans(small_bids: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "m2m_bids", str(small_bids), str(out), "participant",
               "--skip-bids-validation", "--preset", "tiny", "--nprocs", "2"]
    main = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        deadline = time.monotonic() + 120
        while len(_session_members(main.pid)) < 3:  # main + forkserver + at least one worker
            assert main.poll() is None, "the run ended before its workers started"
            assert time.monotonic() < deadline, "no worker processes appeared"
            time.sleep(0.2)
        helpers = set(_session_members(main.pid)) - {main.pid}
        main.send_signal(signal.SIGKILL)
        main.wait()
        deadline = time.monotonic() + 15
        while _session_members(main.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _session_members(main.pid) == [], f"orphans left: {_session_members(main.pid)} (helpers {helpers})"
    finally:
        for pid in _session_members(main.pid):
            os.kill(pid, signal.SIGKILL)
