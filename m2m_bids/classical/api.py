"""Group level for the classical baseline ``connectome-logreg``: same folds, same metrics, same files.

``train_classical(entries, phenotype, cfg, output_dir)`` mirrors
:func:`m2m_bids.training.api.train_group`: the labels come from :func:`derive_labels`, the folds
from :func:`make_splits` with the same seed (so a deep model and this baseline are tested on exactly
the same participants), and the metrics from :func:`classification_metrics` /
:func:`summarise`. Per fold, standardisation + L2 logistic regression is fitted on the training
participants for each ``C`` in ``c_grid``; the ``C`` with the best validation ROC-AUC (ties: the
smaller, more regularised one) is refitted on training + validation and scores the test fold.

Options come from ``model.overrides`` (``--model-option`` / config file): ``atlas`` (default
``aal``), ``c_grid`` (default ``[0.01, 0.1, 1, 10]``), ``max_iter``; ``preset`` is ignored.

Outputs: ``group/metrics.tsv``, ``metrics.json``, ``oof-predictions.tsv``, ``figures/{roc,pr}.svg``
(same formats as the deep models) and ``models/model-connectome-logreg/classical-model.json`` (the
final model's scaler and coefficients as plain JSON, plus the feature description). There is no
``model-card.json``: the participant level's ``apply`` rebuilds torch models only.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from m2m_bids.config import RunConfig
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.io_utils import write_json_atomic, write_text_atomic
from m2m_bids.classical.features import describe, make_parcellation, participant_features
from m2m_bids.training.api import GroupResult, _normalise_index
from m2m_bids.training.data import EntryLike, participant_of
from m2m_bids.training.labels import Labels, derive_labels
from m2m_bids.training.metrics import classification_metrics, summarise
from m2m_bids.training.splits import Split, make_splits

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {"atlas": "aal", "c_grid": [0.01, 0.1, 1.0, 10.0], "max_iter": 2000}


def options(overrides: dict[str, Any]) -> dict[str, Any]:
    """``DEFAULTS`` updated by ``overrides``; an unknown key is a usage error naming the valid ones."""
    given = {k: v for k, v in overrides.items() if k != "preset"}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise AppError(f"unknown option(s) {unknown} for arch connectome-logreg", ExitCode.USAGE,
                       hint=f"valid model options: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **given}


def make_classifier(c: float, max_iter: int, seed: int) -> Pipeline:
    """Standardise every feature on the training fold, then L2 logistic regression (balanced classes)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, class_weight="balanced",
                                                              random_state=seed))


def _stack(features: dict[str, np.ndarray], labels: Labels, ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([features[p] for p in ids]), np.array([int(labels.y[p]) for p in ids])


def fit_split(features: dict[str, np.ndarray], labels: Labels, split: Split, opts: dict[str, Any],
              seed: int) -> tuple[Pipeline, float, dict[float, float]]:
    """Choose ``C`` on the validation participants, refit on train + val; returns (model, C, val AUCs)."""
    x_tr, y_tr = _stack(features, labels, split.train)
    x_val, y_val = _stack(features, labels, split.val)
    n_classes = len(labels.classes)
    val_auc: dict[float, float] = {}
    for c in opts["c_grid"]:
        if len(np.unique(y_tr)) < 2:
            break
        model = make_classifier(float(c), int(opts["max_iter"]), seed).fit(x_tr, y_tr)
        val_auc[float(c)] = classification_metrics(y_val, _proba(model, x_val, n_classes))["roc_auc"]
    scored = {c: a for c, a in val_auc.items() if not math.isnan(a)}
    best = max(scored, key=lambda c: (scored[c], -c)) if scored else float(np.median(opts["c_grid"]))
    x_all, y_all = np.concatenate([x_tr, x_val]), np.concatenate([y_tr, y_val])
    return make_classifier(best, int(opts["max_iter"]), seed).fit(x_all, y_all), best, val_auc


def _proba(model: Pipeline, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities with one column per class, also when a class was absent in training."""
    prob = np.zeros((len(x), n_classes))
    prob[:, model.classes_] = model.predict_proba(x)
    return prob


def train_classical(entries: list[EntryLike], phenotype: pd.DataFrame, cfg: RunConfig,
                    output_dir: Path) -> GroupResult:
    """Cross-validate the connectome + T1w logistic regression and write the group outputs."""
    if not entries:
        raise AppError("no cached samples to train on", ExitCode.DATA_ERROR, hint="run the participant level first")
    tc, seed, opts = cfg.train, cfg.execution.random_seed, options(dict(cfg.model.overrides))
    participants = sorted({participant_of(e) for e in entries})
    phenotype = _normalise_index(phenotype)
    labels = derive_labels(phenotype, participants, label_column=tc.label_column, classes=list(tc.classes),
                           label_rule=tc.label_rule)
    folds, final = make_splits(labels.y, folds=tc.folds, val_fraction=tc.val_fraction, seed=seed)
    parc = make_parcellation(entries[0], opts["atlas"])
    labelled = set(map(str, labels.y.index))
    features = participant_features([e for e in entries if participant_of(e) in labelled], parc)
    rows, per_fold, chosen = [], {}, {}
    for split in folds:
        model, c, _ = fit_split(features, labels, split, opts, seed)
        chosen[split.name] = c
        x_te, y_te = _stack(features, labels, split.test)
        prob = _proba(model, x_te, len(labels.classes))
        per_fold[split.name] = classification_metrics(y_te, prob)
        rows += _oof_rows(split, prob, y_te, labels.classes)
    final_model, final_c, _ = fit_split(features, labels, final, opts, seed)
    chosen["final"] = final_c
    summary = summarise(list(per_fold.values()))
    bundle = Path(output_dir) / "models" / f"model-{cfg.model.arch}"
    result = GroupResult(bundle, labels.classes, per_fold, summary, pd.DataFrame(rows), labels.excluded, folds, final)
    _write_outputs(Path(output_dir), result, labels, chosen)
    _write_model(bundle, final_model, parc, labels, cfg, chosen)
    log.info("connectome-logreg: cross-validated ROC-AUC %.3f ± %.3f over %d folds (%d features)",
             summary["roc_auc"]["mean"], summary["roc_auc"]["sd"], len(folds), len(parc.feature_names()))
    return result


def _oof_rows(split: Split, prob: np.ndarray, y: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    rows = []
    for p, pr, t in zip(split.test, prob, y):
        row = {"participant_id": f"sub-{p}", "split": split.name, "true_label": classes[int(t)],
               "predicted_label": classes[int(pr.argmax())]}
        row.update({f"prob_{c}": float(pr[i]) for i, c in enumerate(classes)})
        rows.append(row)
    return rows


def _write_outputs(output_dir: Path, result: GroupResult, labels: Labels, chosen: dict[str, float]) -> None:
    """The deep models' group files, minus training curves (nothing is trained by epochs here)."""
    from m2m_bids.training.figures import roc_pr_figures
    from m2m_bids.training.outputs import _clean, metrics_table

    group = output_dir / "group"
    write_text_atomic(group / "metrics.tsv", metrics_table(result).to_csv(sep="\t", index=False,
                                                                         float_format="%.4f", na_rep="n/a"))
    write_text_atomic(group / "oof-predictions.tsv", result.oof.to_csv(sep="\t", index=False, float_format="%.6f"))
    write_json_atomic(group / "metrics.json", _clean({
        "classes": result.classes, "positive_class": result.classes[-1] if len(result.classes) == 2 else None,
        "per_fold": result.per_fold, "summary": result.summary,
        "n_participants": {"labelled": int(len(labels.y)), "excluded": len(labels.excluded),
                           "per_class": labels.counts()},
        "excluded": result.excluded, "chosen_C": chosen}))
    roc_pr_figures(result.oof, result.classes, group / "figures")


def _write_model(bundle: Path, model: Pipeline, parc: Any, labels: Labels, cfg: RunConfig,
                 chosen: dict[str, float]) -> Path:
    """The final model as plain JSON (no pickle): scaler mean/scale, coefficients, intercepts, features."""
    scaler: StandardScaler = model.named_steps["standardscaler"]
    clf: LogisticRegression = model.named_steps["logisticregression"]
    path = bundle / "classical-model.json"
    write_json_atomic(path, {
        "arch": cfg.model.arch, "classes": labels.classes, "fitted_classes": [int(c) for c in clf.classes_],
        "C": chosen["final"], "features": {**describe(parc), "names": parc.feature_names()},
        "scaler": {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()},
        "coef": clf.coef_.tolist(), "intercept": clf.intercept_.tolist(),
        "seed": cfg.execution.random_seed, "folds": cfg.train.folds})
    return path
