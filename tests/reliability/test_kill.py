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


FORK_TREE = r'''
import os, signal, sys, time
os.environ["M2M_MAIN_PID"] = str(os.getppid())  # as the main process names itself for its forkserver
import m2m_bids.preproc.parent_death  # noqa: F401  (arms this "server")
child = os.fork()
if child == 0:
    grandchild = os.fork()
    if grandchild == 0:
        time.sleep(60)
        os._exit(0)
    print(grandchild, flush=True)
    time.sleep(60)
    os._exit(0)
time.sleep(1)
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
time.sleep(60)
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux-only")
def test_forked_processes_live_until_their_parent_dies() -> None:
    """A worker's own children run normally, and die when the worker is killed."""
    server = subprocess.Popen([sys.executable, "-c", FORK_TREE], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        grandchild = int(server.stdout.readline())
        time.sleep(0.3)
        assert _alive(grandchild), "a process forked by a worker was killed at fork"
        deadline = time.monotonic() + 20
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(grandchild), "the grandchild outlived its killed parent"
        assert server.poll() is None, "the server itself must not be touched"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
