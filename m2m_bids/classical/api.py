"""Group level for the classical baselines ``connectome-logreg`` and ``connectome-svc``: same folds,
same metrics, same files.

``train_classical(entries, phenotype, cfg, output_dir)`` mirrors
:func:`m2m_bids.training.api.train_group`: the labels come from :func:`derive_labels`, the folds
from :func:`make_splits` with the same seed (so a deep model and this baseline are tested on exactly
the same participants), and the metrics from :func:`classification_metrics` /
:func:`summarise`. Per fold, a pipeline is fitted on the training + validation participants:
standardisation, ANOVA-F selection of ``k`` features and a linear classifier, with ``k`` from
``k_grid`` and ``C`` from ``c_grid`` chosen by an inner stratified 3-fold CV on those same
participants; the refitted model scores the test fold. The classifier is an L2 logistic
regression (``connectome-logreg``) or a linear SVC (``connectome-svc``, hinge loss); the SVC has
no probabilities of its own, so its decision values are mapped to probabilities by Platt scaling
(a sigmoid per class) fitted on out-of-fold decision values of the same inner folds
(:func:`calibrate`).

Options come from ``model.overrides`` (the ``[model.overrides]`` table of a ``--config-file``):
``atlas`` (default ``aal``), ``c_grid`` (default ``[0.1, 1, 10]``), ``k_grid`` (numbers of
features kept, default ``[10, 100]``; 0 = all), ``max_iter``; ``preset`` is ignored.

Outputs: ``group/metrics.tsv``, ``metrics.json``, ``oof-predictions.tsv``, ``figures/{roc,pr}.svg``
(same formats as the deep models) and ``models/model-<arch>/classical-model.json`` (the final
model's scaler, selection, coefficients and calibration as plain JSON, the feature description, the
preprocessing parameters, grid and splits), which the participant level applies
(:mod:`m2m_bids.classical.apply`).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.classical.features import Parcellation, describe, make_parcellation, participant_features
from m2m_bids.classical.model import export
from m2m_bids.classical.registry import ARCHS, CARD_FILE
from m2m_bids.config import RunConfig
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.model_inputs.windows import EntryLike, participant_of
from m2m_bids.training.labels import Labels, derive_labels
from m2m_bids.training.metrics import classification_metrics, summarise
from m2m_bids.training.outputs import cache_provenance, package_versions, write_metrics
from m2m_bids.training.result import GroupResult, normalise_index, oof_row
from m2m_bids.training.splits import Split, make_splits

log = logging.getLogger(__name__)

#: Inner cross-validation folds that choose ``k`` and ``C`` (fewer when a class has fewer participants).
INNER_FOLDS = 3
DEFAULTS: dict[str, Any] = {"atlas": "aal", "c_grid": [0.1, 1.0, 10.0], "k_grid": [10, 100], "max_iter": 2000}


def options(overrides: dict[str, Any], arch: str = "connectome-logreg") -> dict[str, Any]:
    """``DEFAULTS`` updated by ``overrides``; an unknown key is a usage error naming the valid ones."""
    given = {k: v for k, v in overrides.items() if k != "preset"}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise AppError(f"unknown option(s) {unknown} for arch {arch}", ExitCode.USAGE,
                       hint=f"valid model options: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **given}


def make_classifier(arch: str, c: float, max_iter: int, seed: int, k_best: int | str = "all",
                    binary: bool = True) -> Pipeline:
    """Standardise on the training fold, keep the ``k_best`` features by ANOVA F, linear classifier.

    With thousands of edges and tens of participants, a minimum-norm linear separator spreads its
    weight over every noise feature; univariate selection inside the fold (fitted on the training
    participants only, so it does not leak the test fold) lets a few informative edges or regions count.
    Logistic regression: liblinear is several times faster than lbfgs on these tiny problems; it is
    binary-only here (lbfgs fits the multinomial model). Linear SVC: squared-hinge L2 SVM
    (liblinear), one-vs-rest for more than two classes. Both weigh classes inversely to their size.
    """
    clf: BaseEstimator
    if ARCHS[arch].classifier_step == "linearsvc":
        clf = LinearSVC(C=c, max_iter=max_iter, class_weight="balanced", random_state=seed)
    else:
        clf = LogisticRegression(C=c, max_iter=max_iter, class_weight="balanced", random_state=seed,
                                 solver="liblinear" if binary else "lbfgs")
    return make_pipeline(StandardScaler(), SelectKBest(f_classif, k=k_best), clf)


def calibrate(model: Pipeline, x: np.ndarray, y: np.ndarray, inner: int, seed: int) -> CalibratedClassifierCV:
    """Platt scaling of a linear SVC: a sigmoid per class on out-of-fold decision values.

    Why Platt: the SVC's decision value ranks participants but is no probability, and PR-AUC,
    accuracy (argmax) and the participant predictions need one. A sigmoid has two parameters per
    class, the most that a few tens of participants can fit (isotonic regression needs far more);
    fitting it on decision values of participants the SVC did not see (the same inner stratified
    folds that chose ``k`` and ``C``, ``ensemble=False``: one SVC refitted on everyone, one sigmoid
    per class) avoids the overconfidence of in-sample values. The sigmoid is constrained to
    increase with the decision value (:func:`_monotone`). When a class has a single participant
    there are no inner folds, and the sigmoid is fitted on the in-sample decision values (logged).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        if inner >= 2:
            calibrated = CalibratedClassifierCV(model, method="sigmoid", ensemble=False,
                                                cv=StratifiedKFold(inner, shuffle=True, random_state=seed)).fit(x, y)
        else:
            log.warning("connectome-svc: a class has one participant; Platt scaling fitted in-sample (overconfident)")
            everyone = np.arange(len(y))  # one "split" scoring every participant: in-sample decision values
            calibrated = CalibratedClassifierCV(FrozenEstimator(model.fit(x, y)), method="sigmoid",
                                                cv=[(everyone, everyone)]).fit(x, y)
    _monotone(calibrated, y)
    return calibrated


def _monotone(calibrated: CalibratedClassifierCV, y: np.ndarray) -> None:
    """Constrain each sigmoid ``1 / (1 + exp(a d + b))`` to ``a <= 0`` (probability rising with ``d``).

    With a few participants per inner fold, the out-of-fold decision values can fall the wrong
    way by chance, and an unconstrained fit then inverts the SVC's ranking (a perfectly ranked
    test fold scored ROC-AUC 0 in our planted data). Platt's log-loss is convex in (a, b), so when
    the unconstrained optimum has ``a > 0`` the constrained one has ``a = 0``: every participant
    gets the class's (Platt-smoothed) base rate, i.e. "the held-out evidence does not support
    this SVC's ranking". Modifies the fitted calibrators in place.
    """
    (fitted,) = calibrated.calibrated_classifiers_
    classes = fitted.estimator.classes_
    positives = classes[1:] if len(classes) == 2 else classes
    for calibrator, positive in zip(fitted.calibrators, positives):
        if calibrator.a_ <= 0:
            continue
        n_pos, n = int(np.sum(y == positive)), len(y)
        target = (n_pos * (n_pos + 1) / (n_pos + 2) + (n - n_pos) / (n - n_pos + 2)) / n  # mean Platt target
        calibrator.a_, calibrator.b_ = 0.0, float(-np.log(target / (1 - target)))
        log.info("connectome-svc: out-of-fold decision values do not rise with class %s; its probability is "
                 "the base rate %.2f", positive, target)


def _stack(features: dict[str, np.ndarray], labels: Labels, ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([features[p] for p in ids]), np.array([int(labels.y[p]) for p in ids])


def fit_split(features: dict[str, np.ndarray], labels: Labels, split: Split, opts: dict[str, Any],
              seed: int, arch: str = "connectome-logreg") -> tuple[BaseEstimator, dict[str, Any], list[dict[str, Any]]]:
    """Choose ``k`` and ``C`` by inner stratified CV on the split's training + validation participants.

    A validation split of one or two participants cannot rank a grid (its ROC-AUC is undefined or
    tied), so the inner CV uses every non-test participant of the fold; the test participants are
    never seen. Ties go to fewer features, then the larger ``C``. Both archs are ranked by ROC-AUC
    (of the logistic probability or of the SVC's decision value). Returns (refitted model, Platt
    calibrated for the SVC; chosen parameters; inner-CV table).
    """
    step = ARCHS[arch].classifier_step
    x, y = _stack(features, labels, split.train + split.val)
    ks = sorted({int(k) for k in opts["k_grid"] if 0 < int(k) < x.shape[1]}) or ["all"]
    if any(int(k) <= 0 or int(k) >= x.shape[1] for k in opts["k_grid"]) and ks != ["all"]:
        ks.append("all")
    cs = [float(c) for c in opts["c_grid"]]
    binary = len(labels.classes) == 2
    counts = np.bincount(y)
    inner = int(min(INNER_FOLDS, counts[counts > 0].min()))
    best: dict[str, Any] = {"k": ks[0], "C": cs[len(cs) // 2]}
    table: list[dict[str, Any]] = []
    if inner >= 2 and len(ks) * len(cs) > 1:
        search = GridSearchCV(make_classifier(arch, cs[0], int(opts["max_iter"]), seed, binary=binary),
                              {"selectkbest__k": ks, f"{step}__C": cs},
                              scoring="roc_auc" if binary else "roc_auc_ovr",
                              cv=StratifiedKFold(inner, shuffle=True, random_state=seed), error_score=np.nan)
        with warnings.catch_warnings():  # a feature constant in an inner fold has F = 0/0: SelectKBest ranks it last
            warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
            search.fit(x, y)
        for params, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]):
            table.append({"k": params["selectkbest__k"], "C": params[f"{step}__C"], "auc": float(score)})
        finite = [row for row in table if not math.isnan(row["auc"])]
        if finite:
            n_features = x.shape[1]
            top = max(finite, key=lambda r: (r["auc"], -(n_features if r["k"] == "all" else r["k"]), r["C"]))
            best = {"k": top["k"], "C": top["C"]}
    model = make_classifier(arch, best["C"], int(opts["max_iter"]), seed, best["k"], binary)
    if ARCHS[arch].platt:
        return calibrate(model, x, y, inner, seed), best, table
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        return model.fit(x, y), best, table


def _proba(model: BaseEstimator, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities with one column per class, also when a class was absent in training."""
    prob = np.zeros((len(x), n_classes))
    prob[:, model.classes_] = model.predict_proba(x)
    return prob


def train_classical(entries: list[EntryLike], phenotype: pd.DataFrame, cfg: RunConfig,
                    output_dir: Path) -> GroupResult:
    """Cross-validate the connectome + T1w linear classifier of ``cfg.model.arch`` and write the group outputs."""
    if not entries:
        raise AppError("no cached samples to train on", ExitCode.DATA_ERROR, hint="run the participant level first")
    tc, seed, opts = cfg.train, cfg.execution.random_seed, options(dict(cfg.model.overrides), cfg.model.arch)
    participants = sorted({participant_of(e) for e in entries})
    phenotype = normalise_index(phenotype)
    labels = derive_labels(phenotype, participants, label_column=tc.label_column, classes=list(tc.classes),
                           label_rule=tc.label_rule)
    folds, final = make_splits(labels.y, folds=tc.folds, val_fraction=tc.val_fraction, seed=seed)
    parc = make_parcellation(entries[0], opts["atlas"])
    labelled = set(map(str, labels.y.index))
    features = participant_features([e for e in entries if participant_of(e) in labelled], parc)
    rows: list[dict[str, Any]] = []
    per_fold: dict[str, dict[str, float]] = {}
    chosen: dict[str, dict[str, Any]] = {}
    for split in folds:
        model, chosen[split.name], _ = fit_split(features, labels, split, opts, seed, cfg.model.arch)
        x_te, y_te = _stack(features, labels, split.test)
        prob = _proba(model, x_te, len(labels.classes))
        per_fold[split.name] = classification_metrics(y_te, prob)
        rows += _oof_rows(split, prob, y_te, labels.classes)
    final_model, chosen["final"], _ = fit_split(features, labels, final, opts, seed, cfg.model.arch)
    summary = summarise(list(per_fold.values()))
    bundle = Path(output_dir) / "models" / f"model-{cfg.model.arch}"
    result = GroupResult(bundle, labels.classes, per_fold, summary, pd.DataFrame(rows), labels.excluded, folds, final)
    writer = DerivativesWriter(output_dir)
    write_metrics(writer, result, labels, {"chosen_parameters": chosen})  # no training curves: no epochs here
    _write_model(writer, bundle, final_model, parc, labels, cfg, chosen, result, entries)
    log.info("%s: cross-validated ROC-AUC %.3f ± %.3f over %d folds (%d features)",
             cfg.model.arch, summary["roc_auc"]["mean"], summary["roc_auc"]["sd"], len(folds), len(parc.feature_names()))
    return result


def _oof_rows(split: Split, prob: np.ndarray, y: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    return [oof_row(p, split.name, int(t), pr, classes) for p, pr, t in zip(split.test, prob, y)]


def _write_model(writer: DerivativesWriter, bundle: Path, model: BaseEstimator, parc: Parcellation, labels: Labels,
                 cfg: RunConfig, chosen: dict[str, dict[str, Any]], result: GroupResult, entries: list[EntryLike]) -> Path:
    """The final model as plain JSON (no pickle, :func:`m2m_bids.classical.model.export`) with what
    the participant level needs to apply it safely: the feature description (atlas, regions), the
    grid, the preprocessing parameters (refused when new data differ) and the splits (participants
    of the final model's training set are refused unless allowed)."""
    return writer.save_json({
        "arch": cfg.model.arch, "classes": labels.classes,
        "positive_class": labels.classes[-1] if len(labels.classes) == 2 else None,
        "label_column": cfg.train.label_column, "label_rule": cfg.train.label_rule,
        "parameters": chosen["final"], "features": {**describe(parc), "names": parc.feature_names()},
        "model": export(model, cfg.model.arch),
        "grid": {"shape": list(parc.labels.shape), "affine": parc.affine.tolist()},
        "preproc": cfg.preproc.model_dump(mode="json"), "cache": cache_provenance(entries),
        "splits": {"folds": [s.to_dict() for s in result.splits],
                   "final": result.final_split.to_dict() if result.final_split else None},
        "excluded": labels.excluded, "metrics": {"summary": result.summary, "per_fold": result.per_fold},
        "seed": cfg.execution.random_seed, "folds": cfg.train.folds, "versions": package_versions()},
        bundle / CARD_FILE)
