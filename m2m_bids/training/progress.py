"""Progress for people (rich, only on a terminal) and for machines (``logs/status.json`` heartbeat).

The heartbeat is rewritten atomically after every epoch so a cluster user can ``cat`` it (or a
watchdog can check its ``updated`` time) while a long group run is going.
"""

from __future__ import annotations

import datetime as _dt
import logging
import sys
from typing import Any

from m2m_bids.bids.derivatives import DerivativesWriter

log = logging.getLogger(__name__)


class Progress:
    """Per-epoch reporting for one training run; inert on non-main ranks (``enabled=False``)."""

    def __init__(self, writer: DerivativesWriter | None, *, total_splits: int, epochs: int, enabled: bool = True) -> None:
        self.status_path = writer.output_path("logs", "status.json") if writer is not None else None
        self.writer = writer
        self.total_splits = total_splits
        self.epochs = epochs
        self.enabled = enabled
        self.done_splits = 0
        self.split = ""
        self._bar: Any = None
        self._task: Any = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeRemainingColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self._bar.start()

    def start_split(self, name: str) -> None:
        self.split = name
        if self._bar is not None:
            self._task = self._bar.add_task(f"train {name}", total=self.epochs, info="")
        self._heartbeat({"state": "training", "split": name, "epoch": 0})

    def epoch(self, name: str, stats: dict[str, Any]) -> None:
        """Log one epoch (fold, epoch, loss, val AUC, throughput) and refresh the heartbeat."""
        if not self.enabled:
            return
        info = (f"loss {stats['loss']:.4f}  val AUC {stats['val_auc']:.3f}  "
                f"{stats['samples_per_s']:.1f} samples/s")
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=int(stats["epoch"]), info=info)
        log.info("%s epoch %d/%d: %s", name, int(stats["epoch"]), self.epochs, info)
        self._heartbeat({"state": "training", "split": name, **{k: float(v) for k, v in stats.items()}})

    def end_split(self) -> None:
        self.done_splits += 1
        self._heartbeat({"state": "split-done", "split": self.split})

    def close(self, state: str = "done", **extra: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self._heartbeat({"state": state, **extra})

    def _heartbeat(self, payload: dict[str, Any]) -> None:
        if not self.enabled or self.writer is None or self.status_path is None:
            return
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.writer.save_json({"stage": "group-training", "updated": now, "splits_done": self.done_splits,
                               "splits_total": self.total_splits, "epochs": self.epochs, **payload}, self.status_path)
