"""``participants.tsv`` (+ ``participants.json``) as a typed table: labels, classes and tabular columns.

The table gives the group-level training its labels (e.g. ``diagnosis``) and the tabular branch
its columns (age, sex, scores). BIDS writes missing values as ``n/a``; columns whose values are all
numbers become floats, the others categorical, with the ``Levels`` of the JSON sidecar (when given)
as the category order so class indices are stable across runs and machines.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from m2m_bids.entity_labels import strip_prefix
from m2m_bids.exitcodes import AppError, ExitCode

log = logging.getLogger(__name__)

#: Spellings of a missing value seen in participants.tsv files (BIDS mandates ``n/a``).
MISSING_VALUES = ("n/a", "N/A", "NA", "na", "NaN", "nan", "")


def read_participants(bids_dir: str | Path) -> pd.DataFrame:
    """Read ``participants.tsv`` into a frame indexed by label (no ``sub-``), columns typed.

    ``df.attrs["sidecar"]`` holds the column descriptions of ``participants.json`` (``{}`` if
    absent). A dataset without ``participants.tsv`` gives an empty frame (training then says which
    column is missing), not an error: participant-level preprocessing does not need it.
    """
    bids_dir = Path(bids_dir)
    tsv = bids_dir / "participants.tsv"
    sidecar = _read_sidecar(bids_dir / "participants.json")
    if not tsv.is_file():
        log.warning("no participants.tsv in %s: no labels or tabular columns are available", bids_dir)
        return empty_participants(sidecar)
    try:
        raw = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False, na_values=list(MISSING_VALUES))
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise AppError(f"cannot read participants.tsv: {err}", ExitCode.DATA_ERROR, path=str(tsv),
                       hint="it must be UTF-8, tab-separated, with a header row") from err
    raw.columns = [str(c).strip() for c in raw.columns]
    if "participant_id" not in raw.columns:
        raise AppError("participants.tsv has no participant_id column", ExitCode.DATA_ERROR, path=str(tsv),
                       hint="the first column must be participant_id with values like sub-01 (tabs, not spaces)")
    labels = raw.pop("participant_id").astype(str).map(lambda v: strip_prefix(v, "sub"))
    duplicated = sorted(set(labels[labels.duplicated()]))
    if duplicated:
        raise AppError(f"participants.tsv lists participant(s) twice: {', '.join(duplicated)}",
                       ExitCode.DATA_ERROR, path=str(tsv), hint="keep one row per participant")
    raw.index = pd.Index(labels, name="participant_id")
    frame = pd.DataFrame({col: _typed_column(raw[col], sidecar.get(col)) for col in raw.columns},
                         index=raw.index)
    frame.attrs["sidecar"] = sidecar
    return frame


def empty_participants(sidecar: dict[str, Any] | None = None) -> pd.DataFrame:
    """The table of a dataset without participants.tsv: no rows, no columns, same index name."""
    frame = pd.DataFrame(index=pd.Index([], name="participant_id", dtype=str))
    frame.attrs["sidecar"] = sidecar or {}
    return frame


def _read_sidecar(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AppError(f"participants.json is not valid JSON: {err}", ExitCode.DATA_ERROR, path=str(path),
                       hint="fix the JSON syntax (a validator such as `python -m json.tool` shows where)") from err
    if not isinstance(data, dict):
        raise AppError("participants.json must hold an object keyed by column name", ExitCode.DATA_ERROR,
                       path=str(path))
    return data


def _typed_column(values: pd.Series, description: Any) -> pd.Series:
    """Numbers become float; anything else (or a column with ``Levels``) becomes categorical."""
    levels = description.get("Levels") if isinstance(description, dict) else None
    stripped = values.str.strip()
    if not levels:
        numeric = pd.to_numeric(stripped, errors="coerce")
        if numeric.notna().sum() == stripped.notna().sum() and stripped.notna().any():
            return numeric.astype(float)
    categories = [str(k) for k in levels] if isinstance(levels, dict) else None
    if categories is not None:
        unknown = sorted(set(stripped.dropna()) - set(categories))
        if unknown:
            log.warning("participants.tsv column %r has values not in participants.json Levels: %s",
                        values.name, ", ".join(unknown))
            categories += unknown
    if categories is None:
        return stripped.astype("category")
    return pd.Series(pd.Categorical(stripped, categories=categories), index=values.index, name=values.name)


def phenotype_row(frame: pd.DataFrame, label: str) -> dict[str, Any]:
    """One participant's row as plain Python values (missing -> ``None``); ``{}`` if not listed."""
    if label not in frame.index:
        return {}
    row: dict[str, Any] = {}
    for key, value in frame.loc[label].items():
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            row[str(key)] = None
        elif hasattr(value, "item"):
            row[str(key)] = value.item()
        else:
            row[str(key)] = value
    return row
