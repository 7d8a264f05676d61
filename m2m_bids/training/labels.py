"""Class labels from ``participants.tsv``: a label column, or a derived label rule
(:mod:`m2m_bids.label_rule`: ``ttau / abeta42 > 0.24`` -> the last class when true).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import pandas as pd

from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.label_rule import LabelRule, RuleError

log = logging.getLogger(__name__)


def check_rule_columns(label_rule: str | None, phenotype: pd.DataFrame) -> None:
    """Exit 64 when ``label_rule`` reads a column that participants.tsv lacks (checked before preprocessing)."""
    if not label_rule:
        return
    missing = [c for c in LabelRule.parse(label_rule).columns if c not in phenotype.columns]
    if missing:
        raise AppError(f"the label rule uses column(s) {missing} that participants.tsv lacks",
                       ExitCode.USAGE, hint=f"use columns among {sorted(map(str, phenotype.columns))} "
                                            "in --label-rule (train.label_rule)")


@dataclass
class Labels:
    """Usable labels (class index per participant) and the participants left out, with reasons."""

    classes: list[str]
    y: pd.Series  # index: participant label (no 'sub-'), values: int class index
    excluded: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Number of participants per class name (for logs and the model card)."""
        return {c: int((self.y == i).sum()) for i, c in enumerate(self.classes)}


def derive_labels(phenotype: pd.DataFrame, participants: list[str], *, label_column: str,
                  classes: list[str], label_rule: str | None = None) -> Labels:
    """Class index for each of ``participants`` from the phenotype table (indexed by label).

    Participants without a row, with a missing value, or with a value outside ``classes`` are
    excluded from training and reported (they can still be predicted by the final model).
    """
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise AppError(f"classes must name at least two distinct classes, got {classes}", ExitCode.USAGE,
                       hint="e.g. --classes CN,AD or CN,MCI,AD")
    table = phenotype.reindex([p for p in participants if p in phenotype.index])
    if label_rule:
        try:
            names = LabelRule.parse(label_rule).evaluate(table, classes)
        except RuleError as err:
            raise AppError(str(err), ExitCode.USAGE, hint="fix --label-rule (train.label_rule)") from err
    else:
        if label_column not in phenotype.columns:
            raise AppError(f"participants.tsv has no column {label_column!r} to take labels from",
                           ExitCode.DATA_ERROR, hint=f"choose one of {sorted(map(str, phenotype.columns))} "
                           "with --label-column, or derive labels with --label-rule")
        names = table[label_column].map(lambda v: None if pd.isna(v) else str(v).strip())
    y: dict[str, int] = {}
    excluded: dict[str, str] = {}
    for p in participants:
        if p not in table.index:
            excluded[p] = "no row in participants.tsv"
            continue
        name = names.get(p)
        if name is None or (isinstance(name, float) and math.isnan(name)):
            excluded[p] = "label missing or rule inputs missing"
        elif name not in classes:
            excluded[p] = f"label {name!r} is not one of the classes {classes}"
        else:
            y[p] = classes.index(name)
    if excluded:
        log.warning("%d participant(s) without a usable label are left out of training: %s", len(excluded),
                    "; ".join(f"sub-{k} ({v})" for k, v in sorted(excluded.items())))
    series = pd.Series(y, dtype=int, name="label").sort_index()
    return Labels(classes=list(classes), y=series, excluded=excluded)
