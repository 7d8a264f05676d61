"""Imported by the MultiProc forkserver before it forks workers: quiet nipype's per-node chatter.

nipype attaches its own stdout handler at import and logs every node start and finish at INFO.
In the parent process the runner routes those records to the run's log file only; in worker
processes there is no such handler, so this module removes nipype's and keeps nipype's records
from reaching Python's last-resort handler: a failing node's traceback goes to its crash file
(named by the participant's error message), not to the console. Warnings of m2m-bids' own steps
still reach the console through the last-resort handler, and the ones that change processing are
recorded with the run and logged by the parent. Importing is the hook: the forkserver's preload
list takes module names, not functions.
"""

import logging

import nipype  # noqa: F401  (attaches the handler removed below)

logging.getLogger("nipype").handlers.clear()
logging.getLogger("nipype").addHandler(logging.NullHandler())
logging.getLogger("nipype").propagate = False
