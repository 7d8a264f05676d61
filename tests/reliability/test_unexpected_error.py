"""A bug (an exception no check foresaw) prints one line naming the log; the traceback goes to the log."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from m2m_bids.exitcodes import ExitCode


def _raise(error: Exception):
    def run_level(cfg):
        raise error

    return run_level


def test_unexpected_error_keeps_the_traceback_in_the_log(m2m, small_bids: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("m2m_bids.runner._run_level", _raise(KeyError("no_such_key")))
    result = m2m(small_bids, tmp_path / "out", "participant", "--skip-bids-validation")
    assert result.code == ExitCode.FAILURE
    assert "unexpected error KeyError" in result.err and "m2m.log" in result.err
    log = next((tmp_path / "out" / "logs").glob("*/m2m.log")).read_text()
    assert "Traceback" in log and "no_such_key" in log


def test_disk_full_anywhere_in_the_run_exits_74(m2m, small_bids: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "models" / "x"))
    monkeypatch.setattr("m2m_bids.runner._run_level", _raise(full))
    result = m2m(small_bids, tmp_path / "out", "participant", "--skip-bids-validation")
    assert result.code == ExitCode.IO_ERROR and "the disk is full" in result.err and "models" in result.err
