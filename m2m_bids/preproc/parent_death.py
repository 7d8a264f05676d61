"""Preloaded by the MultiProc forkserver: its processes die with the m2m process that started them.

``kill -9`` of the main process gives it no chance to stop its workers, and without this the
forkserver, the workers it forked (each holding a BOLD run in memory) and, through them, the
multiprocessing resource tracker stay alive until killed by hand. Linux can tie a process to its
parent (``prctl(PR_SET_PDEATHSIG)``): the forkserver gets SIGKILL when the main process dies, and
every worker gets SIGKILL when the forkserver dies. Work in progress is lost, but a worker writes
the cache atomically, so nothing half-written is left behind and a re-run resumes.

The main process names itself in :data:`MAIN_PID_VARIABLE` before the forkserver starts; the hook
runs only in a direct child of that process (importing this in the main process does nothing). Importing is the
hook because the forkserver's preload list takes module names, not functions.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: Environment variable holding the pid of the m2m process that owns the forkserver.
MAIN_PID_VARIABLE = "M2M_MAIN_PID"
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies; exit now if ``parent`` is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def arm() -> None:
    """In the forkserver: die with the main process, and make every process forked from here on
    (the workers, and anything they fork) die with the process that forked it."""
    main = os.environ.get(MAIN_PID_VARIABLE, "")
    if not sys.platform.startswith("linux") or not main.isdigit() or int(main) == os.getpid():
        return
    if not os.path.exists(f"/proc/{main}"):
        os._exit(1)  # the main process died while this one was starting
    if os.getppid() != int(main):
        return  # not a child of the process that set the variable
    die_with_parent(int(main))
    forking = [os.getpid()]  # the pid of the process that forks, seen by its child (memory is copied)
    os.register_at_fork(before=lambda: forking.__setitem__(0, os.getpid()),
                        after_in_child=lambda: die_with_parent(forking[0]))


arm()
