"""Running out of disk in the work directory: refuse early, and never wait forever when it happens.

Two defences, both ending in exit 74 with the folder named:

* before preprocessing, :func:`check_free_space` compares the free space of the work and cache
  folders with a lower bound of what the runs will write (:func:`estimate_work_bytes`: one float32
  copy of every input image), so a full disk is reported in seconds, not after an hour;
* during preprocessing, :class:`GuardedMultiProcPlugin` replaces nipype's MultiProc. When a worker
  cannot write a node's result file (the disk filled up), nipype's own callback raises, the node
  is never marked done and the main process polls for it forever. Here the node is marked failed,
  the run is stopped at once, and :attr:`GuardedMultiProcPlugin.disk_full` names the folder.

The tensor cache writes each entry into a temporary folder and renames it, so a failed write
leaves no half-written entry behind.
"""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.pipeline.plugins.multiproc import MultiProcPlugin

from m2m_bids.exitcodes import FULL_ERRNOS, AppError, ExitCode

def estimate_work_bytes(images: Iterable[Path]) -> int:
    """A lower bound of what preprocessing writes: one float32 copy of each input image (from headers)."""
    return sum(4 * int(np.prod(nib.load(str(path)).shape, dtype=np.int64)) for path in images)


def check_free_space(folders: Iterable[Path], needed: int) -> None:
    """Exit 74 naming the first of ``folders`` with less than ``needed`` bytes free."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if free < needed:
            raise AppError(f"not enough free disk space: {free / 1e6:.1f} MB free, preprocessing needs at least "
                           f"{needed / 1e6:.1f} MB", ExitCode.IO_ERROR, path=str(folder),
                           hint="free some space, or point --work-dir (and --cache-dir) at a larger file system")


def disk_full_error(folder: Path, err: BaseException | None = None) -> AppError:
    """The exit-74 error for a file system that filled up during the run."""
    detail = f" ({err})" if err is not None else ""
    return AppError(f"the disk filled up during preprocessing{detail}", ExitCode.IO_ERROR, path=str(folder),
                    hint="free some space, or point --work-dir (and --cache-dir) at a larger file system, then "
                         "re-run: finished steps are reused and the tensor cache holds no half-written entry")


def _is_full(err: BaseException, work_dir: Path) -> bool:
    """ENOSPC/EDQUOT anywhere in the chain, or a missing node result while the work dir is (nearly) full."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return isinstance(err, FileNotFoundError) and shutil.disk_usage(work_dir).free < 1_000_000
    except OSError:
        return False


class GuardedMultiProcPlugin(MultiProcPlugin):
    """nipype's MultiProc, which stops (instead of hanging) when a node's result cannot be stored."""

    def __init__(self, work_dir: Path, plugin_args: dict | None = None) -> None:
        super().__init__(plugin_args=plugin_args)
        self.work_dir = Path(work_dir)
        self.disk_full: AppError | None = None

    def _async_callback(self, args) -> None:  # noqa: ANN001 - a concurrent.futures.Future, as in nipype
        try:
            super()._async_callback(args)
        except Exception as err:  # noqa: BLE001 - nipype would lose the task and poll for it forever
            taskid = next((tid for tid, future in self._task_obj.items() if future is args), None)
            if taskid is None:
                raise
            if _is_full(err, self.work_dir):
                self.disk_full = self.disk_full or disk_full_error(self.work_dir, err)
                self._config["execution"]["stop_on_first_crash"] = True  # nothing more can be written
            self._taskresult[taskid] = {"taskid": taskid, "result": None,
                                        "traceback": traceback.format_exception(err)}
