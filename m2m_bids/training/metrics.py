"""Classification metrics per fold and their mean ± sd over folds.

Binary: the positive class is the last of ``classes`` (e.g. AD in ``CN,AD``). Three or more
classes: ROC-AUC and PR-AUC one-vs-rest (macro mean), sensitivity/specificity/F1 macro-averaged.
A metric undefined for a fold (e.g. AUC with one class present) is NaN and skipped in the mean.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score,
                             confusion_matrix, f1_score, roc_auc_score)

METRICS = ("roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """All metrics for true class indices ``y`` (n,) and class probabilities ``prob`` (n, C)."""
    y = np.asarray(y, dtype=int)
    n_classes = prob.shape[1]
    pred = prob.argmax(axis=1)
    labels = list(range(n_classes))
    cm = confusion_matrix(y, pred, labels=labels)
    tp = np.diag(cm).astype(float)
    fn = cm.sum(axis=1) - tp
    fp = cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
    with warnings.catch_warnings():  # small folds: a predicted class may be absent from y (expected)
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(y, pred)) if len(np.unique(y)) > 1 else math.nan
    out = {"accuracy": float(accuracy_score(y, pred)), "balanced_accuracy": balanced}
    if n_classes == 2:
        out["sensitivity"], out["specificity"] = float(sens[1]), float(spec[1])
        out["f1"] = float(f1_score(y, pred, pos_label=1, zero_division=0))
    else:
        out["sensitivity"], out["specificity"] = float(np.nanmean(sens)), float(np.nanmean(spec))
        out["f1"] = float(f1_score(y, pred, average="macro", labels=labels, zero_division=0))
    out["roc_auc"], out["pr_auc"] = _aucs(y, prob)
    return {k: out[k] for k in METRICS}


def _aucs(y: np.ndarray, prob: np.ndarray) -> tuple[float, float]:
    n_classes = prob.shape[1]
    if len(np.unique(y)) < 2:
        return math.nan, math.nan
    if n_classes == 2:
        return float(roc_auc_score(y, prob[:, 1])), float(average_precision_score(y, prob[:, 1]))
    rocs, prs = [], []
    for c in range(n_classes):
        target = (y == c).astype(int)
        if 0 < target.sum() < len(target):
            rocs.append(roc_auc_score(target, prob[:, c]))
            prs.append(average_precision_score(target, prob[:, c]))
    return float(np.mean(rocs)), float(np.mean(prs))


def summarise(per_fold: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample sd (ddof=1) of every metric over folds, NaNs skipped."""
    summary: dict[str, dict[str, float]] = {}
    for name in METRICS:
        values = np.array([m[name] for m in per_fold if not math.isnan(m.get(name, math.nan))], dtype=float)
        summary[name] = {"mean": float(values.mean()) if len(values) else math.nan,
                         "sd": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                         "n": int(len(values))}
    return summary
