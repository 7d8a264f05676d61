"""participants.tsv + participants.json -> typed table indexed by label."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from m2m_bids.bids.participants import phenotype_row, read_participants
from m2m_bids.exitcodes import AppError, ExitCode

from m2m_bids.testing import BIDS_REAL as REAL  # noqa: E402


def _write(root: Path, tsv: str, sidecar: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "participants.tsv").write_text(tsv, encoding="utf-8")
    if sidecar is not None:
        (root / "participants.json").write_text(sidecar, encoding="utf-8")
    return root


def test_columns_are_typed_and_levels_order_categories(tmp_path: Path) -> None:
    root = _write(tmp_path, "participant_id\tage\tsex\tgroup\tmmse\n"
                            "sub-01\t71\tF\tAD\t22\nsub-02\tn/a\tM\tCN\t30\nsub-03\t65.5\tn/a\tCN\t29\n",
                  '{"group": {"Description": "diagnosis", "Levels": {"CN": "control", "AD": "Alzheimer"}},'
                  ' "age": {"Units": "years"}}')
    frame = read_participants(root)
    assert list(frame.index) == ["01", "02", "03"]
    assert frame["age"].dtype == float and pd.isna(frame.loc["02", "age"]) and frame.loc["03", "age"] == 65.5
    assert frame["mmse"].tolist() == [22.0, 30.0, 29.0]
    assert list(frame["group"].cat.categories) == ["CN", "AD"]  # the order of Levels, not alphabetical
    assert frame["sex"].dtype == "category" and pd.isna(frame.loc["03", "sex"])
    assert frame.attrs["sidecar"]["age"] == {"Units": "years"}
    assert phenotype_row(frame, "02") == {"age": None, "sex": "M", "group": "CN", "mmse": 30.0}
    assert phenotype_row(frame, "99") == {}


def test_values_outside_levels_are_kept(tmp_path: Path) -> None:
    root = _write(tmp_path, "participant_id\tgroup\n01\tCN\n02\tMCI\n", '{"group": {"Levels": {"CN": "", "AD": ""}}}')
    frame = read_participants(root)
    assert list(frame.index) == ["01", "02"]  # labels without sub- are tolerated
    assert list(frame["group"].cat.categories) == ["CN", "AD", "MCI"]


@pytest.mark.parametrize(("tsv", "sidecar", "expected"), [
    ("subject\tage\nsub-01\t3\n", None, "no participant_id column"),
    ("participant_id\tage\nsub-01\t3\nsub-01\t4\n", None, "twice: 01"),
    ("participant_id\tage\nsub-01\t3\n", "{not json", "not valid JSON"),
])
def test_broken_tables_name_the_file(tmp_path: Path, tsv: str, sidecar: str | None, expected: str) -> None:
    root = _write(tmp_path, tsv, sidecar)
    with pytest.raises(AppError) as info:
        read_participants(root)
    assert info.value.code == ExitCode.DATA_ERROR and expected in info.value.message
    assert info.value.path.startswith(str(root))


def test_missing_table_gives_empty_frame(tmp_path: Path) -> None:
    frame = read_participants(tmp_path)
    assert frame.empty and frame.index.name == "participant_id"


@pytest.mark.skipif(not REAL.is_dir(), reason="real test dataset not present")
def test_real_participants() -> None:
    frame = read_participants(REAL)
    assert len(frame) == 9 and "10" in frame.index
    assert frame["age"].dtype == float
    assert list(frame["diagnosis"].cat.categories) == ["CN", "MCI", "AD"]
    assert frame["diagnosis"].value_counts().to_dict() == {"CN": 4, "MCI": 3, "AD": 2}
