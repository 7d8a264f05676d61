"""Process-level set-up done once by the runner: logging, writable caches, thread counts, device.

Kept out of import time on purpose (no side effects when a module is imported): the runner calls
these functions after the configuration is validated.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: Variables pointing third-party caches somewhere writable: containers run with a read-only root
#: (``docker run --read-only``, Apptainer SIF images) and HOME may be unwritable on clusters.
CACHE_VARIABLES = ("TMPDIR", "MPLCONFIGDIR", "XDG_CACHE_HOME", "TORCH_HOME", "NUMBA_CACHE_DIR",
                   "TRITON_CACHE_DIR", "CUDA_CACHE_PATH", "DENO_DIR")

#: multiprocessing puts its sockets in the temporary directory; AF_UNIX paths must stay short.
MAX_TMPDIR_LENGTH = 80


def configure_caches(work_dir: Path) -> dict[str, str]:
    """Point unset or unwritable cache variables at ``<work_dir>/.cache``; return what was set.

    TMPDIR counts too: ``docker run --read-only`` without ``--tmpfs /tmp`` leaves no writable
    temporary directory, and tempfile (hence ANTs, nipype, multiprocessing) would fail.
    """
    import tempfile

    changed: dict[str, str] = {}
    for name in CACHE_VARIABLES:
        current = os.environ.get(name) or (tempfile.gettempdir() if name == "TMPDIR" else None)
        if current and _writable(Path(current)):
            os.environ[name] = current
            continue
        target = work_dir / ".cache" / name.lower()
        target.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(target)
        changed[name] = str(target)
    tempfile.tempdir = None  # re-read TMPDIR
    if len(tempfile.gettempdir()) > MAX_TMPDIR_LENGTH:
        logging.getLogger(__name__).warning(
            "the temporary directory path is long (%s); parallel workers may fail with 'AF_UNIX path "
            "too long': set TMPDIR to a short path such as /tmp", tempfile.gettempdir())
    os.environ.setdefault("NIPYPE_NO_ET", "1")  # nipype's version check phones home otherwise
    return changed


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


def configure_threads(n_threads: int) -> None:
    """Limit BLAS/OpenMP/ITK/torch threads so ``--nprocs`` x ``--omp-nthreads`` fits the machine."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[name] = str(n_threads)
    import torch

    torch.set_num_threads(n_threads)


def setup_logging(verbosity: int, log_file: Path | None = None) -> None:
    """Console logging (rich when on a terminal) plus a full DEBUG log file for the run."""
    level = logging.WARNING - 10 * (verbosity + 1)  # default INFO, -v DEBUG
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        if getattr(handler, "_m2m", False):
            root.removeHandler(handler)
    console: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        console = RichHandler(show_path=False, rich_tracebacks=verbosity > 0)
        console.setFormatter(logging.Formatter("%(message)s"))
    else:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(LOG_FORMAT))
    console.setLevel(max(level, logging.DEBUG))
    if verbosity < 2:  # nipype reports every node, and every failure with its traceback: log file only
        console.addFilter(lambda record: not record.name.startswith("nipype"))
    console._m2m = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        file_handler.setLevel(logging.DEBUG)
        file_handler._m2m = True  # type: ignore[attr-defined]
        root.addHandler(file_handler)
    import nipype  # noqa: F401  (its import attaches a stdout handler; remove it, ours handle nipype too)

    logging.getLogger("nipype").handlers.clear()
    for noisy in ("bids", "bidsschematools", "matplotlib", "PIL", "fsspec", "numba", "h5py", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def is_main_process() -> bool:
    """False on every torchrun rank but 0: only rank 0 writes shared outputs (config, reports)."""
    return int(os.environ.get("RANK", "0")) == 0


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """The torch device for ``--device``, one rule for training, inference and torchrun ranks.

    ``auto`` takes this rank's GPU when one is visible, else the CPU; ``cuda`` means this rank's
    GPU; ``cuda:N`` is taken as given. A GPU request without a visible GPU falls back to the CPU
    with a warning that says how to expose one, rather than failing a long job at the last step.
    """
    import torch

    log = logging.getLogger(__name__)
    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if requested != "auto":
            log.warning("--device %s requested but no CUDA device is visible (with Apptainer pass --nv, "
                        "with Docker --gpus all); falling back to the CPU", requested)
        return torch.device("cpu")
    if requested.startswith("cuda:"):
        return torch.device(requested)
    return torch.device("cuda", local_rank % torch.cuda.device_count())
