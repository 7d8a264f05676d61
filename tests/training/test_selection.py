"""Which epoch a split keeps, and the alignment weight's ramp."""

from __future__ import annotations

import pytest

from m2m_bids.config import Train
from m2m_bids.training.loop import _better, align_weight_at, selection_rule

# Validation scores of a 6-epoch run on a small validation split: the AUC hits 1.0 by chance at
# epoch 2 (two participants), the loss is lowest at epoch 4, the run ends at epoch 6.
HISTORY = [{"val_auc": a, "val_loss": v} for a, v in
           [(0.0, 0.80), (1.0, 0.72), (0.5, 0.60), (1.0, 0.41), (0.0, 0.45), (0.5, 0.50)]]


def kept_epoch(rule: str) -> int:
    """The 1-based epoch :func:`fit` keeps when it offers every epoch to ``_better`` in order."""
    best, kept = None, -1
    for epoch, stats in enumerate(HISTORY, start=1):
        if _better(stats, best, rule):
            best, kept = stats, epoch
    return kept


@pytest.mark.parametrize(("rule", "epoch"), [("last", 6), ("val_loss", 4), ("val_auc", 4)])
def test_each_rule_keeps_its_epoch(rule, epoch):
    # val_auc: the first 1.0 (epoch 2) loses to the later 1.0 with the lower validation loss
    assert kept_epoch(rule) == epoch


def test_auto_uses_the_auc_only_with_enough_validation_participants():
    cfg = Train(min_val_per_class=3)
    assert selection_rule(cfg, [0, 1], 2) == "last"  # the tiny-dataset case: an AUC of 0 or 1
    assert selection_rule(cfg, [0, 0, 0, 1, 1], 2) == "last"  # one class short
    assert selection_rule(cfg, [0, 0, 0, 1, 1, 1], 2) == "val_auc"
    assert selection_rule(cfg, [0, 0, 0, 1, 1, 1], 3) == "last"  # a class absent from validation
    assert selection_rule(Train(epoch_selection="val_loss"), [0, 1], 2) == "val_loss"
    assert Train().epoch_selection == "auto"


def test_alignment_weight_ramps_from_zero():
    cfg = Train(epochs=10, align_weight=0.5, align_ramp=0.4)
    weights = [align_weight_at(e, cfg) for e in range(10)]
    assert weights[:5] == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5])
    assert weights[5:] == pytest.approx([0.5] * 5)
    assert align_weight_at(0, cfg.model_copy(update={"align_ramp": 0.0})) == 0.5  # no ramp: constant
