"""Command-line spellings: space-separated lists, label files, memory units, NAME=PATH."""

from __future__ import annotations

from pathlib import Path

import pytest

from m2m_bids.cli.argv import (
    expand_multi_value_flags,
    parse_mem_gb,
    parse_name_path,
    read_label_values,
    split_values,
)


def test_space_separated_values_become_repeated_flags() -> None:
    argv = ["/bids", "/out", "participant", "--participant-label", "01", "sub-02", "-v", "--task", "rest"]
    assert expand_multi_value_flags(argv) == [
        "/bids", "/out", "participant", "--participant-label", "01", "--participant-label", "sub-02",
        "-v", "--task", "rest"]


def test_single_value_flags_and_negative_numbers_untouched() -> None:
    argv = ["b", "o", "group", "--lr", "-0.1", "--classes", "CN", "AD", "--epochs", "3"]
    assert expand_multi_value_flags(argv) == ["b", "o", "group", "--lr", "-0.1", "--classes", "CN", "--classes",
                                              "AD", "--epochs", "3"]


def test_double_dash_stops_rewriting() -> None:
    assert expand_multi_value_flags(["--participant-label", "01", "--", "02"]) == [
        "--participant-label", "01", "--", "02"]


def test_label_file_and_commas(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("participant_id\nsub-01\t70\n# a comment\n\n02\n")
    assert read_label_values([str(labels), "03,sub-04"]) == ["sub-01", "02", "03", "sub-04"]
    assert split_values(["CN,AD", "MCI"]) == ["CN", "AD", "MCI"]


@pytest.mark.parametrize("text, gb", [("16", 16.0), ("16G", 16.0), ("16GB", 16.0), ("16000MB", 16.0),
                                      ("16000", 16.0), ("512m", 0.512), ("1T", 1000.0)])
def test_memory_units(text: str, gb: float) -> None:
    assert parse_mem_gb(text) == pytest.approx(gb)


def test_name_path() -> None:
    assert parse_name_path(["fmriprep=/d/fmriprep", "/x/other"]) == {
        "fmriprep": Path("/d/fmriprep"), "other": Path("/x/other")}
