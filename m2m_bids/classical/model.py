"""A fitted classical baseline as plain JSON, and the same model evaluated from that JSON.

The group level fits scikit-learn pipelines (:mod:`m2m_bids.classical.api`); the participant level
must apply the final one without unpickling anything (a pickle runs code on load and breaks across
scikit-learn versions). Every step is linear, so a few arrays describe it exactly:

``z = (x - mean) / scale`` (StandardScaler) -> ``z[selected]`` (SelectKBest) -> decision
``d = z_sel @ coef.T + intercept`` -> probabilities through the model's ``link``:

- ``logistic``: binary logistic regression, ``p(positive) = 1 / (1 + exp(-d))``;
- ``softmax``: multinomial logistic regression, softmax over the class decisions;
- ``platt``: linear SVC with Platt scaling per class, ``p_k = 1 / (1 + exp(a_k d_k + b_k))``
  (one-vs-rest classes normalised to sum 1), as fitted by ``CalibratedClassifierCV(method="sigmoid")``.

:func:`export` writes these arrays from a fitted estimator and :class:`LinearModel` evaluates them;
``tests/baselines/test_classical_apply.py`` checks that both give scikit-learn's probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline

from m2m_bids.classical.registry import ARCHS

def export(model: BaseEstimator, arch: str) -> dict[str, Any]:
    """The ``model`` entry of ``classical-model.json`` from a fitted pipeline (or its Platt calibration)."""
    calibrators: list[Any] = []
    pipeline = model
    if isinstance(model, CalibratedClassifierCV):
        (calibrated,) = model.calibrated_classifiers_  # ensemble=False: one refitted pipeline
        pipeline, calibrators = calibrated.estimator, list(calibrated.calibrators)
    if hasattr(pipeline, "estimator") and not isinstance(pipeline, Pipeline):  # FrozenEstimator
        pipeline = pipeline.estimator
    assert isinstance(pipeline, Pipeline)
    scaler = pipeline.named_steps["standardscaler"]
    clf = pipeline.named_steps[ARCHS[arch].classifier_step]
    n_fitted = len(clf.classes_)
    if calibrators:
        link = "platt"
    else:
        link = "logistic" if n_fitted == 2 else "softmax"
    out = {"link": link, "fitted_classes": [int(c) for c in clf.classes_],
           "scaler": {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()},
           "selected_features": np.flatnonzero(pipeline.named_steps["selectkbest"].get_support()).tolist(),
           "coef": np.atleast_2d(clf.coef_).tolist(), "intercept": np.atleast_1d(clf.intercept_).tolist()}
    if calibrators:
        out["platt"] = {"a": [float(c.a_) for c in calibrators], "b": [float(c.b_) for c in calibrators]}
    return out


@dataclass(frozen=True)
class LinearModel:
    """The exported model, evaluated with numpy (see the module docstring for the formulas)."""

    n_classes: int
    fitted_classes: tuple[int, ...]
    mean: np.ndarray
    scale: np.ndarray
    selected: np.ndarray
    coef: np.ndarray  # (1 or K, n_selected)
    intercept: np.ndarray  # (1 or K,)
    link: str
    platt_a: np.ndarray | None = None
    platt_b: np.ndarray | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any], n_classes: int) -> LinearModel:
        platt = values.get("platt") or {}
        return cls(n_classes=n_classes, fitted_classes=tuple(int(c) for c in values["fitted_classes"]),
                   mean=np.asarray(values["scaler"]["mean"], float), scale=np.asarray(values["scaler"]["scale"], float),
                   selected=np.asarray(values["selected_features"], int), coef=np.asarray(values["coef"], float),
                   intercept=np.asarray(values["intercept"], float), link=str(values["link"]),
                   platt_a=np.asarray(platt["a"], float) if platt else None,
                   platt_b=np.asarray(platt["b"], float) if platt else None)

    @property
    def n_features(self) -> int:
        return len(self.mean)

    def standardised(self, x: np.ndarray) -> np.ndarray:
        """``(n, n_selected)`` standardised values of the selected features."""
        return ((np.atleast_2d(x) - self.mean) / self.scale)[:, self.selected]

    def decision(self, x: np.ndarray) -> np.ndarray:
        """``(n, 1 or K)`` linear decision values (one column for a binary model: the second fitted class)."""
        return self.standardised(x) @ self.coef.T + self.intercept

    def proba(self, x: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` class probabilities; classes the model never saw in training get 0."""
        d = self.decision(x)
        binary = len(self.fitted_classes) == 2
        if self.link == "platt":
            assert self.platt_a is not None and self.platt_b is not None
            p = expit(-(self.platt_a * d + self.platt_b))
            if binary:
                fitted = np.column_stack([1.0 - p[:, 0], p[:, 0]])
            else:
                total = p.sum(axis=1, keepdims=True)
                fitted = np.divide(p, total, out=np.full_like(p, 1.0 / p.shape[1]), where=total != 0)
        elif binary:
            p = expit(d[:, 0])
            fitted = np.column_stack([1.0 - p, p])
        else:
            fitted = softmax(d, axis=1)
        out = np.zeros((len(d), self.n_classes))
        out[:, list(self.fitted_classes)] = fitted
        return out

    def class_row(self, class_index: int) -> tuple[np.ndarray, int]:
        """Coefficient row whose decision grows with ``class_index`` and the sign to apply to it.

        A binary model has one row, for its second fitted class: the first class gets the row with
        the sign flipped. A model that never saw ``class_index`` has no row for it (ValueError).
        """
        position = self.fitted_classes.index(class_index)
        if len(self.fitted_classes) == 2:
            return self.coef[0], 1 if position == 1 else -1
        return self.coef[position], 1

    def importance(self) -> np.ndarray:
        """``(n_features,)`` |coefficient| per feature (0 for features not selected), mean over class rows.

        The features are standardised before the classifier, so coefficients of different
        features are on one scale: |w| is how much one standard deviation of the feature moves
        the decision.
        """
        full = np.zeros(self.n_features)
        full[self.selected] = np.abs(self.coef).mean(axis=0)
        return full

    def contributions(self, x: np.ndarray, class_index: int) -> np.ndarray:
        """``(n_features,)`` signed ``w_j z_j`` of one sample towards ``class_index`` (0 where not selected).

        These sum (with the intercept) to the decision value for that class, so they say which
        features pushed this participant towards, or away from, the class.
        """
        row, sign = self.class_row(class_index)
        full = np.zeros(self.n_features)
        full[self.selected] = sign * row * self.standardised(x)[0]
        return full


def region_values(per_feature: np.ndarray, n_regions: int) -> np.ndarray:
    """``(n_regions,)`` per-feature values summed onto regions (feature order of ``Parcellation.feature_names``).

    A regional mean-T1w feature belongs to its region; a connectivity edge (i, j) is shared by two
    regions, so half of its value goes to each. The regional totals therefore add up to the
    total over features.
    """
    n_edges = n_regions * (n_regions - 1) // 2
    if len(per_feature) != n_edges + n_regions:
        raise ValueError(f"{len(per_feature)} feature values do not fit {n_regions} regions "
                         f"({n_edges} edges + {n_regions} regional means)")
    i, j = np.triu_indices(n_regions, k=1)
    edges = np.asarray(per_feature[:n_edges], float)
    out = np.asarray(per_feature[n_edges:], float).copy()
    np.add.at(out, i, edges / 2)
    np.add.at(out, j, edges / 2)
    return out
