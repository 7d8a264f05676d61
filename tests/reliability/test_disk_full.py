"""A full work directory: exit 74 within seconds, a clear message, nothing half-written in the cache.

The work directory is a size-limited tmpfs mounted in a private mount namespace (``unshare -m``,
as the read-only container test does), so the real disk is never filled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostile import tree_digest

from m2m_bids.exitcodes import ExitCode

SCRIPT = (
    'set -u; mount -t tmpfs -o size="$SIZE" tmpfs "$WORK"; '
    '"$@"; echo "M2M-EXIT=$?"; echo "CACHE:"; find "$WORK/tensor-cache" -mindepth 1 2>/dev/null; true'
)


def _can_mount_tmpfs() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


small_disk = pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root and a private mount namespace")


def _run_on_small_disk(bids: Path, tmp_path: Path, size: str) -> tuple[int, str, list[str], float]:
    work = tmp_path / "work"
    work.mkdir()
    command = [sys.executable, "-m", "m2m_bids", str(bids), str(tmp_path / "out"), "participant",
               "--skip-bids-validation", "--preset", "tiny", "--nprocs", "2", "--work-dir", str(work)]
    started = time.monotonic()
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", SCRIPT, "sh", *command],
                          env={**os.environ, "SIZE": size, "WORK": str(work), "TMPDIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=300, check=False)
    elapsed = time.monotonic() - started
    code = int(done.stdout.split("M2M-EXIT=")[1].split()[0])
    cache = done.stdout.split("CACHE:")[1].split()
    return code, done.stderr, cache, elapsed


@pytest.mark.integration
@small_disk
def test_full_work_dir_is_refused_before_preprocessing(small_bids: Path, tmp_path: Path) -> None:
    before = tree_digest(small_bids)
    code, err, cache, elapsed = _run_on_small_disk(small_bids, tmp_path, "1m")
    assert code == ExitCode.IO_ERROR, err[-2000:]
    assert "not enough free disk space" in err and str(tmp_path / "work") in err
    assert "Traceback" not in err and elapsed < 60
    assert tree_digest(small_bids) == before


@pytest.mark.integration
@small_disk
def test_disk_filling_during_preprocessing_exits_74_without_hanging(small_bids: Path, tmp_path: Path) -> None:
    """Enough space to start, not to finish: nipype used to wait forever for the lost node result."""
    before = tree_digest(small_bids)
    code, err, cache, elapsed = _run_on_small_disk(small_bids, tmp_path, "10m")
    assert code == ExitCode.IO_ERROR, err[-2000:]
    assert "the disk filled up" in err and "Traceback" not in err
    assert elapsed < 180
    half_written = [p for p in cache if Path(p).name.startswith(".tmp-")]
    assert half_written == [], half_written
    assert tree_digest(small_bids) == before


def test_a_step_that_runs_out_of_space_reports_exit_74(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC inside a preprocessing step becomes the participant's exit-74 error, not a generic failure."""
    import errno
    import json

    from m2m_bids.preproc.interfaces import ERROR_MARKER, BoldPrepare

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "bold_prepared.nii"))

    monkeypatch.setattr("m2m_bids.preproc.interfaces.bold_prepare", full)
    source = tmp_path / "bold.nii"
    source.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    node = BoldPrepare(in_file=str(source))
    with pytest.raises(RuntimeError) as err:
        node._run_interface(None)
    payload = json.loads(str(err.value).split(ERROR_MARKER)[1])
    assert payload["code"] == ExitCode.IO_ERROR and "disk is full" in payload["message"]
    assert payload["path"].endswith("bold_prepared.nii")
