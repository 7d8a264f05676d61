"""Tabular features from participants.tsv columns: impute, indicate missing, standardise, one-hot.

Statistics are fitted on the training participants of a fold only (fitting them on all
participants would leak the test fold's distribution into training). The fitted encoder is plain
data (:meth:`TabularEncoder.to_dict`) so the model card carries it and ``apply`` reproduces the
exact features for new participants. :func:`feature_rows` is the one place the rows of
participants are turned into features, for training and for application alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from m2m_bids.exitcodes import AppError, ExitCode


@dataclass
class NumericStats:
    """Median (imputation), mean and sd (standardisation) of one numeric column."""

    median: float
    mean: float
    std: float


@dataclass
class TabularEncoder:
    """Column -> feature mapping fitted on training participants.

    Numeric columns give a standardised value plus a 0/1 missing indicator; categorical columns
    give one-hot categories seen in training plus a missing/unseen indicator.
    """

    numeric: dict[str, NumericStats] = field(default_factory=dict)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, table: pd.DataFrame, columns: list[str]) -> TabularEncoder:
        """Fit on the rows of ``table`` (training participants only)."""
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise AppError(f"tabular column(s) {missing} are not in participants.tsv", ExitCode.DATA_ERROR,
                           hint=f"available columns: {sorted(map(str, table.columns))}")
        enc = cls(columns=list(columns))
        for col in columns:
            values = table[col]
            if _is_numeric(values):
                num = pd.to_numeric(values, errors="coerce").astype(float)
                median = float(num.median()) if num.notna().any() else 0.0
                filled = num.fillna(median)
                std = float(filled.std(ddof=0)) if len(filled) > 1 else 1.0
                enc.numeric[col] = NumericStats(median, float(filled.mean()), std if std > 1e-8 else 1.0)
            else:
                cats = sorted({str(v).strip() for v in values.dropna()})
                enc.categorical[col] = cats
        return enc

    @property
    def feature_names(self) -> list[str]:
        """Names of the output features, in order (recorded in the model card)."""
        names: list[str] = []
        for col in self.columns:
            if col in self.numeric:
                names += [col, f"{col}__missing"]
            else:
                names += [f"{col}={c}" for c in self.categorical[col]] + [f"{col}__missing"]
        return names

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """Features (rows of ``table`` x :attr:`n_features`) as float32; missing columns count as missing."""
        blocks: list[np.ndarray] = []
        n = len(table)
        for col in self.columns:
            raw = table[col] if col in table.columns else pd.Series([np.nan] * n, index=table.index)
            if col in self.numeric:
                st = self.numeric[col]
                num = pd.to_numeric(raw, errors="coerce").astype(float).to_numpy()
                miss = np.isnan(num)
                value = (np.where(miss, st.median, num) - st.mean) / st.std
                blocks.append(np.stack([value, miss.astype(float)], axis=1))
            else:
                cats = self.categorical[col]
                text = [None if pd.isna(v) else str(v).strip() for v in raw]
                onehot = np.array([[t == c for c in cats] for t in text], dtype=float).reshape(n, len(cats))
                unknown = np.array([t is None or t not in cats for t in text], dtype=float)[:, None]
                blocks.append(np.concatenate([onehot, unknown], axis=1))
        if not blocks:
            return np.zeros((n, 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for the model card."""
        return {"columns": self.columns,
                "numeric": {k: vars(v) for k, v in self.numeric.items()},
                "categorical": self.categorical,
                "feature_names": self.feature_names}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TabularEncoder:
        """Inverse of :meth:`to_dict` (used when a model bundle is applied)."""
        return cls(numeric={k: NumericStats(**v) for k, v in data.get("numeric", {}).items()},
                   categorical={k: list(v) for k, v in data.get("categorical", {}).items()},
                   columns=list(data.get("columns", [])))


def feature_rows(encoder: TabularEncoder, phenotype: pd.DataFrame, participants: list[str]) -> dict[str, np.ndarray]:
    """Each participant's ``(K,)`` float32 feature row from the participants table (indexed by label,
    as :func:`m2m_bids.bids.participants.read_participants` gives it); a participant without a row
    gets the imputed, marked-missing features."""
    features = encoder.transform(phenotype.reindex(participants))
    return dict(zip(participants, features, strict=True))


def _is_numeric(values: pd.Series) -> bool:
    present = values.dropna()
    if len(present) == 0:
        return True
    return bool(pd.to_numeric(present, errors="coerce").notna().all())
