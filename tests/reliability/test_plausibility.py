"""Inputs that would make wrong tensors or exhaust memory are refused by name, before the damage."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from m2m_bids.bids.validation import check_bold, check_t1w
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.preproc.cache_cleanup import STALE_AFTER_S, remove_stale_temporaries
from m2m_bids.preproc.steps import bold_prepare, check_motion_plausible


def _huge_t1w(path: Path) -> Path:
    """A 1024^3 int16 header over a tiny (truncated) payload: the size is judged from the header."""
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.int16)
    header.set_qform(np.eye(4), code=1)
    with path.open("wb") as handle:
        handle.write(header.binaryblock)
        handle.write(b"\x00" * 4 + b"\x00" * 1024)
    return path


def test_huge_image_is_refused_from_its_header(tmp_path: Path) -> None:
    started = time.monotonic()
    problems = check_t1w(_huge_t1w(tmp_path / "sub-01_T1w.nii"), "01", max_gb=4.0)
    assert time.monotonic() - started < 5
    assert len(problems) == 1 and problems[0].code == ExitCode.DATA_ERROR
    assert "too large" in problems[0].message and "max_image_gb" in problems[0].hint


def test_image_limit_is_configurable(tmp_path: Path) -> None:
    bold = tmp_path / "sub-01_task-rest_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8, 30), dtype=np.float32), np.eye(4)), bold)
    _, _, problems = check_bold(bold, {"RepetitionTime": 2.0}, "01", min_volumes=10, max_gb=1e-6)
    assert [p.code for p in problems] == [ExitCode.DATA_ERROR] and "too large" in problems[0].message
    _, _, problems = check_bold(bold, {"RepetitionTime": 2.0}, "01", min_volumes=10)
    assert problems == []


@pytest.mark.parametrize("fill", [0.0, 7.5])
def test_constant_bold_is_named(tmp_path: Path, fill: float) -> None:
    bold = tmp_path / "sub-01_task-rest_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.full((6, 6, 6, 25), fill, np.float32), np.eye(4)), bold)
    with pytest.raises(AppError) as err:
        bold_prepare(str(bold), 0, 20, str(tmp_path))
    assert err.value.code == ExitCode.DATA_ERROR and "constant" in err.value.message
    assert err.value.path == str(bold)


def test_implausible_motion_is_refused() -> None:
    params = np.zeros((10, 6))
    params[5, 0] = 168.0  # a 168 mm jump
    fd = np.abs(np.diff(params[:, 0], prepend=0.0))
    with pytest.raises(AppError) as err:
        check_motion_plausible(params, fd, "run.nii.gz", max_fd_mm=50, max_rotation_deg=30)
    assert err.value.code == ExitCode.DATA_ERROR and "168.0 mm" in err.value.message
    assert "max_fd_mm" in err.value.hint and err.value.path == "run.nii.gz"
    rotated = np.zeros((10, 6))
    rotated[3:, 4] = np.deg2rad(37)
    with pytest.raises(AppError, match="37.0 degrees"):
        check_motion_plausible(rotated, np.zeros(10), "run.nii.gz", max_fd_mm=1e9, max_rotation_deg=30)


def test_ordinary_motion_passes() -> None:
    params = np.zeros((10, 6))
    params[:, 0] = np.linspace(0, 2, 10)
    params[:, 3] = np.deg2rad(np.linspace(0, 1.5, 10))
    check_motion_plausible(params, np.full(10, 0.3), "run.nii.gz", max_fd_mm=50, max_rotation_deg=30)


def test_motion_limits_do_not_change_the_cache_key(tmp_path: Path) -> None:
    from m2m_bids.preflight import build_config
    from m2m_bids.preproc.plan import preproc_params

    (tmp_path / "bids").mkdir()
    base = {"execution": {"bids_dir": str(tmp_path / "bids"), "output_dir": str(tmp_path / "out"),
                          "analysis_level": "participant"}}
    relaxed = {**base, "preproc": {"max_fd_mm": 500.0, "max_rotation_deg": 90.0, "max_image_gb": 64.0}}
    assert preproc_params(build_config(base)) == preproc_params(build_config(relaxed))


def test_only_abandoned_cache_temporaries_are_removed(tmp_path: Path) -> None:
    old = tmp_path / "ab" / ".tmp-abcdef-1"
    fresh = tmp_path / "ab" / ".tmp-abcdef-2"
    entry = tmp_path / "ab" / "abcdef0123"
    for folder in (old, fresh, entry):
        folder.mkdir(parents=True)
        (folder / "fmri.npy").write_bytes(b"x")
    stale = time.time() - STALE_AFTER_S - 60
    os.utime(old, (stale, stale))
    assert remove_stale_temporaries(tmp_path) == [old]
    assert not old.exists() and fresh.is_dir() and entry.is_dir()


def test_high_motion_and_skipped_slice_timing_reach_the_run_log(tmp_path: Path, caplog) -> None:
    import logging

    from m2m_bids.preproc.api import _log_run_warnings
    from m2m_bids.preproc.cache import CacheEntry

    from m2m_bids.preproc.entrymeta import BoldRecord, EntryMeta, Motion, Provenance, SliceTiming

    def meta(mean_fd: float, slice_timing: SliceTiming) -> EntryMeta:
        motion = Motion(mean_fd=mean_fd, max_fd=3.0, max_translation_mm=1.0, max_rotation_deg=1.0)
        return EntryMeta(participant="01", provenance=Provenance(source_bold="sub-01_task-rest_bold.nii.gz"),
                         bold=BoldRecord(task="rest", motion=motion, slice_timing=slice_timing))

    with caplog.at_level(logging.WARNING):
        _log_run_warnings("01", CacheEntry(path=tmp_path, key="ab" * 8, meta=meta(0.8, SliceTiming(
            warning="SliceTiming values reach 3 s"))), flag_mean_fd_mm=0.5)
    assert "sub-01: SliceTiming values reach 3 s" in caplog.text
    assert "high head motion" in caplog.text and "0.80 mm" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _log_run_warnings("01", CacheEntry(path=tmp_path, key="ab" * 8, meta=meta(0.1, SliceTiming(corrected=True))),
                          flag_mean_fd_mm=0.5)
    assert caplog.text == ""
