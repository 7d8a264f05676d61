"""Imported by the MultiProc forkserver before it forks workers: quiet nipype's per-node chatter.

nipype attaches its own stdout handler at import and logs every node start and finish at INFO.
In the parent process the runner routes those records to the run's log file only; in worker
processes there is no such handler, so this module removes nipype's and lets records propagate to
Python's last-resort handler, which prints WARNING and above (failures still reach the console,
and nipype writes each failure to a crash file as well). Importing is the hook: the forkserver's
preload list takes module names, not functions.
"""

import logging

import nipype  # noqa: F401  (attaches the handler removed below)

logging.getLogger("nipype").handlers.clear()
