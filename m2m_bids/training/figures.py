"""Group figures: ROC and precision-recall curves of the out-of-fold predictions, training curves.

Each function returns the figure; the derivatives sink saves it. Uses :class:`matplotlib.figure.Figure`
directly (no pyplot, no global backend switch): it renders headless with the Agg canvas, which suits
containers and clusters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import auc, precision_recall_curve, roc_curve

def _curves(oof: pd.DataFrame, classes: list[str]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(split, class, y_true one-vs-rest, score) for each fold and class to draw."""
    shown = classes[1:] if len(classes) == 2 else classes
    items = []
    for split, rows in oof.groupby("split", sort=True):
        for cls in shown:
            items.append((str(split), cls, (rows["true_label"] == cls).to_numpy(int),
                          rows[f"prob_{cls}"].to_numpy(float)))
    return items


def roc_pr_figures(oof: pd.DataFrame, classes: list[str]) -> dict[str, Figure]:
    """``roc`` and ``pr``: one thin line per fold (and class), one thick pooled line."""
    drawn = {}
    for kind in ("roc", "pr"):
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
        for split, cls, y, s in _curves(oof, classes):
            if y.min() == y.max():
                continue
            x_, y_ = _xy(kind, y, s)
            ax.plot(x_, y_, lw=0.8, alpha=0.5, label=f"{split} {cls}" if len(classes) > 2 else split)
        for cls in (classes[1:] if len(classes) == 2 else classes):
            y = (oof["true_label"] == cls).to_numpy(int)
            if y.min() != y.max():
                x_, y_ = _xy(kind, y, oof[f"prob_{cls}"].to_numpy(float))
                ax.plot(x_, y_, lw=2.2, label=f"pooled {cls} (AUC {auc(x_, y_):.3f})")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, out-of-fold")
        else:
            ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, out-of-fold")
        ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
        drawn[kind] = fig
    return drawn


def _xy(kind: str, y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if kind == "roc":
        fpr, tpr, _ = roc_curve(y, score)
        return fpr, tpr
    precision, recall, _ = precision_recall_curve(y, score)
    return recall, precision


def training_curves(histories: dict[str, list[dict[str, float]]], kept: dict[str, int],
                    rules: dict[str, str]) -> Figure:
    """The training curves, one line per split: training cross-entropy and weighted alignment term,
    validation cross-entropy with the kept epoch marked, and validation ROC-AUC only for splits whose
    epoch was chosen by it (with a few validation participants the AUC jumps between 0, 0.5 and 1 and
    says nothing; see ``loop.selection_rule``)."""
    by_auc = [name for name, rule in rules.items() if rule == "val_auc"]
    fig = Figure(figsize=(15 if by_auc else 10, 4))
    axes = fig.subplots(1, 3 if by_auc else 2)
    loss_ax, val_ax = axes[0], axes[1]
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        line, = loss_ax.plot(epochs, [h["ce"] for h in history], label=f"{name} CE")
        weighted = [h.get("align_weight", 0.0) * h["align"] for h in history]
        if any(weighted):
            loss_ax.plot(epochs, weighted, ls="--", color=line.get_color(), label=f"{name} lambda x align")
        val_ax.plot(epochs, [h["val_loss"] for h in history], color=line.get_color(), label=f"{name} ({rules[name]})")
        if kept.get(name, 0) >= 1 and kept[name] <= len(history):
            val_ax.scatter([kept[name]], [history[kept[name] - 1]["val_loss"]], color=line.get_color(), zorder=3)
        if name in by_auc:
            axes[2].plot(epochs, [h["val_auc"] for h in history], color=line.get_color(), label=name)
    loss_ax.set(xlabel="epoch", ylabel="training loss terms", title="Training: CE (solid), lambda x align (dashed)")
    val_ax.set(xlabel="epoch", ylabel="validation cross-entropy", title="Validation loss (dot: kept epoch)")
    val_ax.legend(fontsize=7)
    if by_auc:
        axes[2].set(xlabel="epoch", ylabel="validation ROC-AUC", title="Validation ROC-AUC", ylim=(0, 1.02))
    return fig
