"""Subject-level splits: stratified k-fold over participants, a validation split inside each fold.

Splitting happens on participant labels, never on sessions or runs, so every session and run of a
participant lands in the same fold (splitting runs would put the same brain in training and test
and inflate every metric).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from m2m_bids.exitcodes import AppError, ExitCode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Participant labels of one fold (``test`` is empty for the final model)."""

    name: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str] | str]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _validation_split(ids: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Stratified train/val split; falls back to unstratified when a class is too small to split."""
    n_val = max(1, int(round(fraction * len(ids))))
    if n_val >= len(ids):
        raise AppError(f"only {len(ids)} participant(s) in a training fold: too few for a validation split",
                       ExitCode.DATA_ERROR, hint="add participants, or lower --folds / train.val_fraction")
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 and n_val >= len(counts[counts > 0]) else None
    train, val = train_test_split(ids, test_size=n_val, random_state=seed, stratify=stratify)
    return sorted(map(str, train)), sorted(map(str, val))


def make_splits(y: pd.Series, *, folds: int, val_fraction: float, seed: int) -> tuple[list[Split], Split]:
    """The k cross-validation splits and the final split (all labelled participants, with validation).

    ``y`` holds one class index per participant label. Each class needs at least ``folds``
    participants for stratified k-fold; otherwise the error says how many there are.
    """
    ids = np.array(sorted(map(str, y.index)))
    labels = y.loc[ids].to_numpy(dtype=int)
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min()) if len(counts) else 0
    if len(np.unique(labels)) < 2:
        raise AppError("all labelled participants are in one class: nothing to classify", ExitCode.DATA_ERROR,
                       hint="check the label column / label rule and --classes")
    if smallest < folds:
        hint = (f"lower --folds to at most {smallest} or add participants" if smallest >= 2 else
                "cross-validation needs at least 2 participants per class (--folds is at least 2): "
                "add participants or leave that class out of --classes")
        raise AppError(f"the smallest class has {smallest} participant(s), fewer than the {folds} folds",
                       ExitCode.DATA_ERROR, hint=hint)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits: list[Split] = []
    for k, (train_idx, test_idx) in enumerate(skf.split(ids, labels)):
        train, val = _validation_split(ids[train_idx], labels[train_idx], val_fraction, seed + k + 1)
        splits.append(Split(name=f"fold-{k + 1}", train=tuple(train), val=tuple(val),
                            test=tuple(sorted(ids[test_idx]))))
    train, val = _validation_split(ids, labels, val_fraction, seed)
    final = Split(name="final", train=tuple(train), val=tuple(val))
    return splits, final
