"""Progress of a nipype run, from MultiProc's ``status_callback``: a bar on a terminal, log lines elsewhere.

nipype itself reports nothing a person can follow (fmriprep#2262); counting finished nodes against
the graph's size gives an honest fraction, and the node name says which participant is where.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger(__name__)


class NodeProgress:
    """Callable ``(node, status)`` for nipype's MultiProc/Linear ``status_callback``."""

    def __init__(self, total: int, *, log_every_s: float = 10.0) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.failed = 0
        self.log_every_s = log_every_s
        self._last_log = 0.0
        self._bar: Any = None
        self._task: Any = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("preprocessing"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TimeElapsedColumn(), TextColumn("{task.description}"), transient=True)
            self._task = self._bar.add_task("", total=self.total)
            self._bar.start()

    def __call__(self, node: Any, status: str) -> None:
        if status not in {"end", "exception"}:
            return
        self.done += 1
        self.failed += status == "exception"
        where = _where(node)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, description=where)
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_every_s or self.done == self.total:
            self._last_log = now
            log.info("preprocessing: %d/%d steps done (%s)%s", self.done, self.total, where,
                     f", {self.failed} failed" if self.failed else "")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _where(node: Any) -> str:
    """``m2m_preproc_wf.sub_01_wf.bold_..._wf.smooth`` -> ``sub-01 smooth``."""
    parts = str(getattr(node, "fullname", node)).split(".")
    subject = next((p.removesuffix("_wf").replace("sub_", "sub-") for p in parts if p.startswith("sub_")), "")
    return f"{subject} {parts[-1]}".strip()
