"""What a group run produced, in the form every backend returns it and the group files are written from.

Both backends (the torch loop of :mod:`m2m_bids.training.api` and the classical baselines of
:mod:`m2m_bids.classical.api`) cross-validate on the same labels and folds and report through the
same :class:`GroupResult`, out-of-fold rows (:func:`oof_row`) and strict JSON (:func:`strict_json`),
so their group outputs have one format and can be compared line by line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from m2m_bids.entity_labels import strip_prefix
from m2m_bids.training.splits import Split


@dataclass
class GroupResult:
    """What a group run produced (also written to disk by rank 0)."""

    bundle_dir: Path
    classes: list[str]
    per_fold: dict[str, dict[str, float]]
    summary: dict[str, dict[str, float]]
    oof: pd.DataFrame
    excluded: dict[str, str] = field(default_factory=dict)
    splits: list[Split] = field(default_factory=list)
    final_split: Split | None = None


def normalise_index(phenotype: pd.DataFrame) -> pd.DataFrame:
    """Index by label without ``sub-`` (accepts a ``participant_id`` column too)."""
    table = phenotype
    if "participant_id" in table.columns:
        table = table.set_index("participant_id")
    table = table.copy()
    table.index = [strip_prefix(str(i), "sub") for i in table.index]
    return table


def oof_row(participant: str, split: str, true_class: int, prob: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """One row of ``oof-predictions.tsv``: the participant's held-out class probabilities."""
    row: dict[str, Any] = {"participant_id": f"sub-{participant}", "split": split,
                           "true_label": classes[int(true_class)], "predicted_label": classes[int(prob.argmax())]}
    row.update({f"prob_{c}": float(prob[i]) for i, c in enumerate(classes)})
    return row


def strict_json(value: Any) -> Any:
    """NaN -> None so the JSON is strict (``NaN`` is not JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value
