"""Crash-safe file writing shared by every stage.

Several participant jobs (SLURM array tasks, containers) write into one OUTPUT_DIR at once, and a
job may be killed at any moment. Every file is therefore written to a temporary name in the same
directory and moved into place with :func:`os.replace`, which is atomic on POSIX file systems:
readers see the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; move it onto ``target`` if the block succeeds.

    ``suffix`` keeps the extension (e.g. ``.nii.gz``) so writers that infer formats from the
    name still work. The temporary file is removed if the block raises.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".gz") else target.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json_atomic(target: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically (stable diffs, readable by people)."""
    return write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def output_lock(output_dir: str | os.PathLike[str], name: str) -> Path:
    """Where the lock of a shared output file lives: ``OUTPUT_DIR/logs/.locks/<name>.lock``.

    Not in the derivatives root (a user reads that folder; a lock file there looks like an output),
    and never deleted after use (unlinking a flock'ed file lets two jobs hold "the" lock at once).
    """
    return Path(output_dir) / "logs" / ".locks" / f"{name}.lock"


@contextlib.contextmanager
def file_lock(lock_path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) for a read-modify-write of a shared file.

    Needed where a file is *updated* by parallel jobs (the dataset-level predictions table, the
    shared tensor cache index): atomic replacement alone would lose one job's rows.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
