"""bids-validator-deno on inputs: errors fail (16), warnings do not, restriction to selected participants."""

from __future__ import annotations

from pathlib import Path

import pytest

from m2m_bids.bids.validator import validate_bids_dir
from m2m_bids.exitcodes import AppError, ExitCode

from m2m_bids.testing import BIDS_REAL as REAL  # noqa: E402


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """sub-01 valid; sub-02 with an empty BOLD file and a stray file."""
    from m2m_bids.testing import make_bids_dataset

    root = make_bids_dataset(tmp_path_factory.mktemp("val") / "bids", {"01": None, "02": None})
    (root / "sub-02" / "func" / "sub-02_task-rest_bold.nii.gz").write_bytes(b"")
    (root / "sub-02" / "notes.txt").write_text("stray\n", encoding="utf-8")
    return root


def test_errors_are_listed_and_raise_16(broken: Path) -> None:
    report = validate_bids_dir(broken)
    assert report.returncode == 16 and not report.ok
    text = "\n".join(report.errors)
    assert "EMPTY_FILE /sub-02/func/sub-02_task-rest_bold.nii.gz" in text
    assert "NOT_INCLUDED /sub-02/notes.txt" in text
    assert report.warnings, "the synthetic dataset lacks recommended keys, so warnings are expected"
    with pytest.raises(AppError) as info:
        report.raise_for_errors()
    assert info.value.code == ExitCode.INVALID_BIDS and "EMPTY_FILE" in info.value.message


def test_validation_restricted_to_selected_participants(broken: Path) -> None:
    report = validate_bids_dir(broken, ["sub-01"])
    assert report.ok and report.returncode == 0, report.errors
    report.raise_for_errors()  # warnings never fail
    assert report.dataset == broken  # messages name the real dataset, not the temporary view
    assert not validate_bids_dir(broken, ["02"]).ok
    with pytest.raises(AppError) as info:
        validate_bids_dir(broken, ["03"])
    assert info.value.code == ExitCode.NO_MATCH and "available: 01, 02" in info.value.message


def test_unwritable_temporary_folder_falls_back_to_whole_dataset(broken: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    report = validate_bids_dir(broken, ["01"], tmp_dir=blocker / "sub")
    assert not report.ok  # the whole dataset (with the broken sub-02) was validated


@pytest.mark.skipif(not REAL.is_dir(), reason="real test dataset not present")
def test_real_dataset_subset_is_valid() -> None:
    report = validate_bids_dir(REAL, ["04", "10"])
    assert report.ok, report.errors
    assert any(w.startswith("GZIP_HEADER_MTIME") for w in report.warnings)
